package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/packetflix/packetflix/pcapng"
)

// fileMode is the mode of the files pfcat writes, dumpcap's: captured
// packets are nobody else's business.
const fileMode = 0o600

// ring writes the stream into a series of files, as dumpcap's ring buffer
// (-b filesize:KB,files:N) does, for captures that run unattended for
// long: each file a complete pcapng file that Wireshark opens on its own.
// Every file begins with the stream's SHB and every IDB seen so far, byte
// for byte, then the blocks that follow. The next file begins, before a
// packet, once the current one has reached the size; blocks are never
// cut. With a number of files, the oldest is deleted when one more would
// be kept. Files are named as dumpcap names them (ringName).
//
// A ring is written by one goroutine; it is not safe for concurrent use.
type ring struct {
	path  string // -w: the prefix and extension of every name
	limit int64  // bytes after which the next file begins
	keep  int    // files kept; 0: all
	now   func() time.Time

	split  splitter
	header []byte // the current section's SHB and IDBs, raw

	f    *os.File
	w    *bufio.Writer
	size int64    // bytes written to f
	seq  int      // number of the last file begun
	kept []string // files begun and not deleted, oldest first
}

func newRing(path string, o ringOptions, now func() time.Time) *ring {
	return &ring{path: path, limit: o.fileSize, keep: o.files, now: now, w: bufio.NewWriterSize(nil, 64<<10)}
}

// Write takes the next piece of the stream; whole blocks reach the file
// (and the disk, through a flush) before Write returns.
func (r *ring) Write(p []byte) (int, error) {
	if err := r.split.feed(p, r.block); err != nil {
		return 0, err
	}
	if r.f != nil {
		if err := r.w.Flush(); err != nil {
			return 0, fmt.Errorf("write %s: %w", r.f.Name(), err)
		}
	}
	return len(p), nil
}

func (r *ring) block(typ uint32, b []byte) error {
	switch typ {
	case pcapng.BlockTypeSHB:
		// A new section: the IDBs of the last one do not apply to it.
		r.header = append(r.header[:0], b...)
		if r.f == nil {
			return r.next()
		}
	case pcapng.BlockTypeIDB:
		r.header = append(r.header, b...)
	case pcapng.BlockTypeISB:
		// Statistics end the stream: they belong with its last packets,
		// never alone in a file of their own.
	default:
		if r.size >= r.limit {
			if err := r.next(); err != nil {
				return err
			}
		}
	}
	return r.put(b)
}

func (r *ring) put(b []byte) error {
	if r.f == nil {
		return errors.New("ring: no file open")
	}
	n, err := r.w.Write(b)
	r.size += int64(n)
	if err != nil {
		return fmt.Errorf("write %s: %w", r.f.Name(), err)
	}
	return nil
}

// next closes the current file, begins the next with the header, and
// deletes the oldest file when there is one too many.
func (r *ring) next() error {
	if err := r.closeFile(); err != nil {
		return err
	}
	r.seq++
	name := ringName(r.path, r.seq, r.now())
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return fmt.Errorf("ring: %w", err)
	}
	r.f, r.size = f, 0
	r.w.Reset(f)
	r.kept = append(r.kept, name)
	if r.keep > 0 && len(r.kept) > r.keep {
		// A file someone else removed already is gone as wanted.
		if err := os.Remove(r.kept[0]); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("ring: delete the oldest file: %w", err)
		}
		r.kept = r.kept[1:]
	}
	return r.put(r.header)
}

func (r *ring) closeFile() error {
	if r.f == nil {
		return nil
	}
	f := r.f
	r.f = nil
	err := r.w.Flush()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", f.Name(), err)
	}
	return nil
}

// Close closes the current file. A block the stream did not finish (the
// connection broke inside it) is left out, so every file stays whole.
func (r *ring) Close() error {
	return r.closeFile()
}
