package main

import (
	"fmt"
	"math"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// captureOptions is one capture, as the command line gave it.
type captureOptions struct {
	target  string // a name from list; "" with netns
	netns   uint64 // with no target
	ifaces  []string
	filter  string
	chaste  bool
	count   int64         // 0: no limit
	dur     time.Duration // 0: no limit
	snaplen int           // 0: the service's default
	buffer  int           // MiB; 0: the service's default
	write   string        // "" or "-": stdout
	ring    ringOptions   // with write, when -b was given
	onEOF   bool          // stop at end of file on stdin (a pipe or socket)
}

// ringOptions are dumpcap's ring buffer options (-b).
type ringOptions struct {
	fileSize int64 // bytes after which the next file begins; 0: no ring
	files    int   // files kept, the oldest deleted; 0: all
}

// parseAutostop reads dumpcap's -a conditions: duration:SECONDS (a number,
// or a Go duration such as 5m) and packets:N. Each value may hold several,
// comma-separated.
func parseAutostop(vals []string) (dur time.Duration, packets int64, err error) {
	for _, kv := range splitOptions(vals) {
		k, v, ok := strings.Cut(kv, ":")
		if !ok {
			return 0, 0, usagef("-a %s: want duration:SECONDS or packets:N", kv)
		}
		switch k {
		case "duration":
			d, err := parseSeconds(v)
			if err != nil {
				return 0, 0, usagef("-a duration:%s: %v", v, err)
			}
			dur = d
		case "packets":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 1 {
				return 0, 0, usagef("-a packets:%s: want a positive number", v)
			}
			packets = n
		default:
			return 0, 0, usagef("-a %s: pfcat stops on duration: or packets: only", kv)
		}
	}
	return dur, packets, nil
}

// parseSeconds reads a positive number of seconds (dumpcap's unit) or a
// Go duration.
func parseSeconds(v string) (time.Duration, error) {
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f*float64(time.Second) > math.MaxInt64 {
			return 0, fmt.Errorf("too long")
		}
		d = time.Duration(f * float64(time.Second))
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, fmt.Errorf("want seconds or a duration such as 5m")
	}
	// The service counts in whole milliseconds at best; less is nothing.
	if d < time.Millisecond {
		return 0, fmt.Errorf("want a positive duration of at least 1ms")
	}
	return d, nil
}

// parseRing reads dumpcap's -b options: filesize:KB (kB of 1000 bytes,
// as dumpcap counts) and files:N.
func parseRing(vals []string) (ringOptions, error) {
	var r ringOptions
	for _, kv := range splitOptions(vals) {
		k, v, ok := strings.Cut(kv, ":")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || n < 1 {
			return r, usagef("-b %s: want filesize:KB or files:N with a positive number", kv)
		}
		switch k {
		case "filesize":
			if n > math.MaxInt64/1000 {
				return r, usagef("-b %s: too large", kv)
			}
			r.fileSize = n * 1000
		case "files":
			if n > math.MaxInt32 {
				return r, usagef("-b %s: too large", kv)
			}
			r.files = int(n)
		default:
			return r, usagef("-b %s: pfcat's ring switches files by filesize: and keeps files:", kv)
		}
	}
	if len(vals) > 0 && r.fileSize == 0 {
		return r, usagef("-b needs filesize:KB: nothing else switches files")
	}
	return r, nil
}

// splitOptions splits repeated, comma-separated key:value options.
func splitOptions(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, kv := range strings.Split(v, ",") {
			if kv = strings.TrimSpace(kv); kv != "" {
				out = append(out, kv)
			}
		}
	}
	return out
}

// query is the /capture query for o; tgt is the looked-up target's JSON
// when o names one.
func (o *captureOptions) query(tgt []byte) url.Values {
	q := url.Values{}
	if tgt != nil {
		q.Set("container", string(tgt))
	} else {
		q.Set("netns", strconv.FormatUint(o.netns, 10))
	}
	if len(o.ifaces) > 0 {
		q.Set("nif", strings.Join(o.ifaces, "/"))
	}
	if o.filter != "" {
		q.Set("filter", o.filter)
	}
	if o.chaste {
		q.Set("chaste", "")
	}
	if o.count > 0 {
		q.Set("count", strconv.FormatInt(o.count, 10))
	}
	if o.dur > 0 {
		q.Set("duration", o.dur.String())
	}
	if o.snaplen > 0 {
		q.Set("snaplen", strconv.Itoa(o.snaplen))
	}
	if o.buffer > 0 {
		q.Set("buffer", strconv.Itoa(o.buffer))
	}
	return q
}

// ringName is dumpcap's name for file number seq of the ring -w path
// gives: PREFIX_NNNNN_YYYYmmddHHMMSS.EXT for PREFIX.EXT.
func ringName(path string, seq int, t time.Time) string {
	ext := filepath.Ext(path)
	return fmt.Sprintf("%s_%05d_%s%s", strings.TrimSuffix(path, ext), seq, t.Format("20060102150405"), ext)
}
