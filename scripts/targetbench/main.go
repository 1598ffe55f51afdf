// Command targetbench measures what merging several capture targets into
// one stream costs the service: its CPU per million captured packets for 1,
// 2 and 10 targets (netns= repeated) at the same total packet rate. It
// builds a hub netns with N spoke netns on veth pairs, starts bin/packetflix,
// captures udp on every spoke's eth0 over one WebSocket and sends from the
// hub round-robin to a sink address behind each spoke, which the spoke drops.
// With -mode flows it measures flow captures instead: one POST /api/capture
// per spoke (all its interfaces, counted into a flow table, no stream), the
// packets counted read from the sink flows' counters (POST /api/topology).
// Not part of the product; needs root and the integration-test lock:
//
//	flock /tmp/pf-priv.lock go run ./scripts/targetbench -rate 50000
//	flock /tmp/pf-priv.lock go run ./scripts/targetbench -rate 50000 -mode flows
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/pcapng"
)

// result is one measurement, as printed in the JSON lines.
type result struct {
	Targets     int     `json:"targets"`
	Rep         int     `json:"rep"`
	Sent        int     `json:"sent"`
	SendErrors  int     `json:"send_errors"`
	Captured    int64   `json:"captured"`
	AchievedPPS float64 `json:"achieved_pps"`
	CPUSeconds  float64 `json:"svc_cpu_s"`
	CPUPerMpkt  float64 `json:"svc_cpu_s_per_mpkt"`
}

// cleaner runs the undo steps of everything set up, newest first, once:
// from main's defer or from the signal handler, whichever comes first.
type cleaner struct {
	mu  sync.Mutex
	fns []func()
}

func (c *cleaner) add(fn func()) { c.mu.Lock(); c.fns = append(c.fns, fn); c.mu.Unlock() }

func (c *cleaner) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

var clean cleaner

var (
	bin      = flag.String("bin", "bin/packetflix", "service binary")
	port     = flag.Int("port", 5098, "port for the service")
	targets  = flag.String("targets", "1,2,10", "comma-separated target counts, each 1-16")
	reps     = flag.Int("reps", 3, "repetitions per target count")
	rate     = flag.Int("rate", 50000, "total packets per second over all targets")
	dur      = flag.Duration("dur", 5*time.Second, "length of the measured phase")
	size     = flag.Int("size", 64, "UDP payload bytes")
	jsonPath = flag.String("json", "", "write the JSON lines here instead of stdout")
	mode     = flag.String("mode", "pcapng", "pcapng: one WebSocket capture of all targets (netns=, nif=eth0, filter udp); flows: a flow capture (POST /api/capture) of each target")
)

func main() {
	flag.Parse()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		log.Printf("targetbench: %v, cleaning up", <-sig)
		clean.run()
		// Exit with clean's lock held, so main cannot set up anything more.
		clean.mu.Lock()
		os.Exit(1)
	}()
	err := run()
	clean.run()
	if err != nil {
		log.Fatal("targetbench: ", err)
	}
}

func run() error {
	var counts []int
	for f := range strings.SplitSeq(*targets, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			return fmt.Errorf("-targets: %q is not a count of 1-16", f)
		}
		counts = append(counts, n)
	}
	if *reps < 1 || *rate < 1 || *size < 0 || *dur <= 0 {
		return errors.New("-reps, -rate and -dur must be positive, -size not negative")
	}
	if *mode != "pcapng" && *mode != "flows" {
		return fmt.Errorf("-mode %q: pcapng or flows", *mode)
	}
	out := os.Stdout
	if *jsonPath != "" {
		var err error
		if out, err = os.Create(*jsonPath); err != nil {
			return err
		}
		defer out.Close()
	}
	spokes, pids, fds, err := topology(slices.Max(counts))
	if err != nil {
		return err
	}
	svc, err := startService()
	if err != nil {
		return err
	}
	byN := map[int][]result{}
	for _, n := range counts {
		for rep := 1; rep <= *reps; rep++ {
			var r result
			var err error
			if *mode == "flows" {
				r, err = measureFlows(svc, pids[:n], fds[:n])
			} else {
				r, err = measure(svc, spokes[:n], fds[:n])
			}
			if err != nil {
				return fmt.Errorf("%d targets, rep %d: %w", n, rep, err)
			}
			r.Targets, r.Rep = n, rep
			byN[n] = append(byN[n], r)
			b, _ := json.Marshal(r)
			fmt.Fprintf(out, "%s\n", b)
		}
	}
	report(counts, byN)
	return nil
}

// topology creates the hub and n spokes, every netns registered for
// deletion before it exists. It returns the spokes' inodes, the PIDs of
// their processes and, per spoke, a hub socket connected to its sink:
// connected, a send does no route lookup.
func topology(n int) (inos []uint64, pids []int, fds []int, err error) {
	pid := os.Getpid()
	hubName := fmt.Sprintf("pftb-hub-%d", pid)
	names := []string{hubName}
	for k := 1; k <= n; k++ {
		names = append(names, fmt.Sprintf("pftb-%d-%d", k, pid))
	}
	for _, name := range names {
		clean.add(func() { _ = runAll([]string{"ip", "netns", "del", name}) })
		// Before the veths exist, so that default.disable_ipv6 keeps IPv6
		// (router solicitations, MLD) off their wire.
		if err := runAll(
			[]string{"ip", "netns", "add", name},
			[]string{"ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
				"net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0"},
			[]string{"ip", "-n", name, "link", "set", "lo", "up"}); err != nil {
			return nil, nil, nil, err
		}
	}
	hub, err := netns.OpenPath("/run/netns/" + hubName)
	if err != nil {
		return nil, nil, nil, err
	}
	defer hub.Close()
	clean.add(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	})
	for i, spoke := range names[1:] {
		k := i + 1
		// The spoke's MAC is ours to choose, so the neighbour entry needs
		// no lookup.
		h, mac := fmt.Sprintf("h%d", k), fmt.Sprintf("02:00:c6:12:%02x:02", k)
		if err := runAll(
			[]string{"ip", "link", "add", h, "netns", hubName, "type", "veth", "peer", "name", "eth0", "netns", spoke, "address", mac},
			[]string{"ip", "-n", hubName, "addr", "add", fmt.Sprintf("198.18.%d.1/24", k), "dev", h},
			[]string{"ip", "-n", spoke, "addr", "add", fmt.Sprintf("198.18.%d.2/24", k), "dev", "eth0"},
			[]string{"ip", "-n", hubName, "link", "set", h, "up"},
			[]string{"ip", "-n", spoke, "link", "set", "eth0", "up"},
			// The sink has no owner: the spoke sees the datagram and, not
			// forwarding, drops it without an answer.
			[]string{"ip", "-n", hubName, "neigh", "replace", fmt.Sprintf("198.18.%d.3", k),
				"lladdr", mac, "dev", h, "nud", "permanent"}); err != nil {
			return nil, nil, nil, err
		}
		// Real targets have processes; a netns with one looks like them.
		c := exec.Command("ip", "netns", "exec", spoke, "sleep", "infinity")
		if err := c.Start(); err != nil {
			return nil, nil, nil, err
		}
		clean.add(func() { _ = c.Process.Kill(); _ = c.Wait() })
		// ip netns exec execs sleep: the same PID, which names the target.
		pids = append(pids, c.Process.Pid)
		ns, err := netns.OpenPath("/run/netns/" + spoke)
		if err != nil {
			return nil, nil, nil, err
		}
		inos = append(inos, ns.Inode())
		ns.Close()
		err = netns.Do(hub, func() error {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			fds = append(fds, fd)
			return unix.Connect(fd, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{198, 18, byte(k), 3}})
		})
		if err != nil {
			return nil, nil, nil, fmt.Errorf("socket in hub: %w", err)
		}
	}
	return inos, pids, fds, nil
}

// runAll runs commands in order and stops at the first that fails.
func runAll(cmds ...[]string) error {
	for _, c := range cmds {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// startService starts the service and returns its PID once /version answers.
func startService() (int, error) {
	c := exec.Command(*bin, "--port", strconv.Itoa(*port))
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Start(); err != nil {
		return 0, err
	}
	// The sessions are over by then: nothing is lost by not asking
	// politely.
	clean.add(func() { _ = c.Process.Kill(); _ = c.Wait() })
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/version", *port)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c.Process.Pid, nil
			}
		}
	}
	return 0, fmt.Errorf("%s: /version did not answer within 10s", *bin)
}

// stream counts the EPBs of one capture as they arrive.
type stream struct {
	epbs   atomic.Int64
	last   atomic.Int64  // Unix ns of the latest EPB
	ifaces atomic.Uint64 // bit i: interface i has shown a packet
	done   chan error
}

// waitQuiet returns once no EPB has arrived for d, or fails after limit.
func (s *stream) waitQuiet(d, limit time.Duration) error {
	for end := time.Now().Add(limit); time.Since(time.Unix(0, s.last.Load())) < d; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			return fmt.Errorf("packets still arriving after %v", limit)
		}
	}
	return nil
}

func measure(svc int, spokes []uint64, fds []int) (result, error) {
	q := url.Values{"nif": {"eth0"}, "filter": {"udp"}}
	for _, ino := range spokes {
		q.Add("netns", strconv.FormatUint(ino, 10))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/capture?%s", *port, q.Encode()), nil)
	if err != nil {
		return result{}, err
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	s := &stream{done: make(chan error, 1)}
	s.last.Store(time.Now().UnixNano())
	pr, pw := io.Pipe()
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err == nil {
				_, err = pw.Write(b)
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
	}()
	go func() {
		rd := pcapng.NewReader(pr)
		for {
			b, err := rd.Next()
			if err != nil {
				pr.CloseWithError(err)
				s.done <- err
				return
			}
			if b.Type == pcapng.BlockTypeEPB {
				s.last.Store(time.Now().UnixNano())
				s.ifaces.Or(1 << min(b.InterfaceID, 63))
				s.epbs.Add(1)
			}
		}
	}()

	// Live once every target has shown a probe, and settled once the
	// probes in flight have arrived: what is counted after is ours.
	payload := make([]byte, *size)
	all := uint64(1)<<len(spokes) - 1
	for end := time.Now().Add(10 * time.Second); s.ifaces.Load()&all != all; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			return result{}, fmt.Errorf("capture not live after 10s: interfaces seen %b", s.ifaces.Load())
		}
		for _, fd := range fds {
			_, _ = unix.Write(fd, payload)
		}
	}
	if err := s.waitQuiet(200*time.Millisecond, 10*time.Second); err != nil {
		return result{}, err
	}
	base := s.epbs.Load()
	cpu0, err := cpuTicks(svc)
	if err != nil {
		return result{}, err
	}

	// Paced in 1 ms ticks against the start time, so a late tick sends
	// what the ticks it overslept would have.
	var r result
	total := int(float64(*rate) * dur.Seconds())
	start := time.Now()
	for i := 0; i < total; {
		el := time.Since(start)
		for due := min(total, int(float64(*rate)*el.Seconds())); i < due; i++ {
			if _, err := unix.Write(fds[i%len(fds)], payload); err != nil {
				r.SendErrors++
			} else {
				r.Sent++
			}
		}
		time.Sleep(time.Until(start.Add(el.Truncate(time.Millisecond) + time.Millisecond)))
	}
	r.AchievedPPS = float64(r.Sent) / time.Since(start).Seconds()

	if err := s.waitQuiet(500*time.Millisecond, 30*time.Second); err != nil {
		return result{}, err
	}
	cpu1, err := cpuTicks(svc)
	if err != nil {
		return result{}, err
	}
	select {
	case err := <-s.done:
		return result{}, fmt.Errorf("stream ended during the measurement: %w", err)
	default:
	}
	r.Captured = s.epbs.Load() - base
	r.CPUSeconds = float64(cpu1-cpu0) / 100 // USER_HZ
	r.CPUPerMpkt = r.CPUSeconds / float64(max(r.Captured, 1)) * 1e6
	// Once the close handshake is done, how the reader saw the end no
	// longer matters, only that it has stopped.
	err = c.Close(websocket.StatusNormalClosure, "")
	<-s.done
	return r, err
}

// api sends a JSON request to the service and decodes the answer into out
// (if not nil); a status other than 200 is an error.
func api(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", *port, path), rd)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// flowPackets sums the packets of the sink flows (to port 9) of every
// flow capture: a topology query, which costs the service far less than a
// /metrics scrape while its CPU is being measured.
func flowPackets() (int64, error) {
	var fs []struct {
		Metric struct{ ABPackets, BAPackets int64 }
	}
	if err := api("POST", "/api/topology", map[string]string{"GremlinQuery": "G.Flows().Has('Transport.B', 9)"}, &fs); err != nil {
		return 0, err
	}
	var n int64
	for _, f := range fs {
		n += f.Metric.ABPackets + f.Metric.BAPackets
	}
	return n, nil
}

// flowsQuiet returns the packets counted once the count has not changed
// for d, or fails after limit.
func flowsQuiet(d, limit time.Duration) (int64, error) {
	last, err := flowPackets()
	if err != nil {
		return 0, err
	}
	since := time.Now()
	for end := time.Now().Add(limit); time.Since(since) < d; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			return 0, fmt.Errorf("packets still counted after %v", limit)
		}
		n, err := flowPackets()
		if err != nil {
			return 0, err
		}
		if n != last {
			last, since = n, time.Now()
		}
	}
	return last, nil
}

// measureFlows is measure for flow captures: one POST /api/capture per
// spoke, selected by its process's netns path, the packets counted read
// from the flows.
func measureFlows(svc int, pids []int, fds []int) (result, error) {
	var ids []string
	defer func() {
		for _, id := range ids {
			_ = api("DELETE", "/api/capture/"+id, nil, nil)
		}
	}()
	for _, pid := range pids {
		var c struct{ UUID string }
		q := fmt.Sprintf("G.V().Has('Path', '/proc/%d/ns/net')", pid)
		if err := api("POST", "/api/capture", map[string]string{"GremlinQuery": q}, &c); err != nil {
			return result{}, err
		}
		ids = append(ids, c.UUID)
	}
	// Live once every spoke's sink flow has counted a probe.
	payload := make([]byte, *size)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var n int
		if err := api("POST", "/api/topology", map[string]string{"GremlinQuery": "G.Flows().Has('Transport.B', 9).Count()"}, &n); err != nil {
			return result{}, err
		}
		if n == len(pids) {
			break
		}
		if time.Now().After(end) {
			return result{}, fmt.Errorf("flow captures not live after 10s: %d of %d sink flows", n, len(pids))
		}
		for _, fd := range fds {
			_, _ = unix.Write(fd, payload)
		}
	}
	base, err := flowsQuiet(200*time.Millisecond, 10*time.Second)
	if err != nil {
		return result{}, err
	}
	cpu0, err := cpuTicks(svc)
	if err != nil {
		return result{}, err
	}
	var r result
	total := int(float64(*rate) * dur.Seconds())
	start := time.Now()
	for i := 0; i < total; {
		el := time.Since(start)
		for due := min(total, int(float64(*rate)*el.Seconds())); i < due; i++ {
			if _, err := unix.Write(fds[i%len(fds)], payload); err != nil {
				r.SendErrors++
			} else {
				r.Sent++
			}
		}
		time.Sleep(time.Until(start.Add(el.Truncate(time.Millisecond) + time.Millisecond)))
	}
	r.AchievedPPS = float64(r.Sent) / time.Since(start).Seconds()
	counted, err := flowsQuiet(500*time.Millisecond, 30*time.Second)
	if err != nil {
		return result{}, err
	}
	cpu1, err := cpuTicks(svc)
	if err != nil {
		return result{}, err
	}
	r.Captured = counted - base
	r.CPUSeconds = float64(cpu1-cpu0) / 100 // USER_HZ
	r.CPUPerMpkt = r.CPUSeconds / float64(max(r.Captured, 1)) * 1e6
	return r, nil
}

// cpuTicks returns utime+stime of pid, fields 14 and 15 of its stat.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces; the fields after it do not.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after comm", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	return u + s, errors.Join(err1, err2)
}

func report(counts []int, byN map[int][]result) {
	fmt.Printf("\nService CPU per million captured packets (%s), %d pps in total, %d-byte UDP payload, %v per run; median [min–max] of %d runs\n\n",
		*mode, *rate, *size, *dur, *reps)
	fmt.Println("| targets | CPU s / M pkts | vs 1 target | send rate (pps) | captured / sent |")
	fmt.Println("|---:|---:|---:|---:|---:|")
	cpu := func(r result) float64 { return r.CPUPerMpkt }
	var base float64
	if rs := byN[1]; rs != nil {
		base = stat(rs, cpu)[0]
	}
	for _, n := range slices.Compact(slices.Sorted(slices.Values(counts))) {
		c := stat(byN[n], cpu)
		vs := "–"
		if base > 0 {
			vs = fmt.Sprintf("%.2f×", c[0]/base)
		}
		p := stat(byN[n], func(r result) float64 { return r.AchievedPPS })
		l := stat(byN[n], func(r result) float64 { return float64(r.Captured) / float64(max(r.Sent, 1)) })
		fmt.Printf("| %d | %.2f [%.2f–%.2f] | %s | %.0f [%.0f–%.0f] | %.4f [%.4f–%.4f] |\n",
			n, c[0], c[1], c[2], vs, p[0], p[1], p[2], l[0], l[1], l[2])
	}
}

// stat returns the median, min and max of f over rs; the median of an
// even count is the mean of the middle two.
func stat(rs []result, f func(result) float64) [3]float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	m := len(v) / 2
	return [3]float64{(v[m] + v[(len(v)-1)/2]) / 2, v[0], v[len(v)-1]}
}
