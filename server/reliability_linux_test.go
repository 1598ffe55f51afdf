package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
)

// TestIntegrationNetNSDeleted: the capture's netns loses its last holder
// (its bind mount) mid-capture; the session ends with ISBs and a reason
// naming the netns, while a session on another netns goes on.
func TestIntegrationNetNSDeleted(t *testing.T) {
	h := newHosts(t, false)
	x, y := testns.New(t), testns.New(t)
	testns.Veth(t, x, "eth0", "198.18.6.1/24", y, "eth0", "198.18.6.2/24")
	_, ts := startServer(t, func(c *server.Config) { c.NetNSCheckInterval = 100 * time.Millisecond })
	victim := dial(t, ts, q("netns", ino(h.a)), nil)
	other := dial(t, ts, q("netns", ino(x), "nif", "eth0"), nil)
	victim.waitLive()
	other.waitLive()
	start := time.Now()
	h.a.Delete()
	code, why := victim.closeStatus()
	t.Logf("noticed after %v: %d %q", time.Since(start), code, why)
	if code != websocket.StatusNormalClosure || !strings.Contains(why, "network namespace vanished") || !strings.Contains(why, ino(h.a)) {
		t.Fatalf("close %d %q", code, why)
	}
	s := parse(t, victim.bytes())
	if len(s.isbs) != len(s.ifaces) {
		t.Fatalf("%d ISBs for %d interfaces", len(s.isbs), len(s.ifaces))
	}
	// The other session still captures.
	send(t, x.UDP("198.18.6.1:4000"), "198.18.6.2:4000", 'O', 5)
	other.waitPackets(5)
	other.stop()
}

// TestIntegrationInterfaceMoved: the captured veth moves to another netns;
// the session ends naming it.
func TestIntegrationInterfaceMoved(t *testing.T) {
	h := newHosts(t, false)
	elsewhere := testns.New(t)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0"), nil)
	cl.waitLive()
	h.a.IP("link", "set", "eth0", "netns", elsewhere.Name)
	code, why := cl.closeStatus()
	if code != websocket.StatusNormalClosure || why != fmt.Sprintf(`capture ended: interface "eth0" vanished from netns %s`, ino(h.a)) {
		t.Fatalf("close %d %q", code, why)
	}
	if s := parse(t, cl.bytes()); len(s.isbs) != 1 {
		t.Fatalf("%d ISBs", len(s.isbs))
	}
}

// TestIntegrationSilentClient: a client whose network goes silent (its
// link goes down: no FIN, no RST) is noticed within ClientTimeout, and the
// session is released.
func TestIntegrationSilentClient(t *testing.T) {
	srvNS, cliNS := testns.New(t), testns.New(t)
	testns.Veth(t, srvNS, "eth0", "198.18.5.1/24", cliNS, "eth0", "198.18.5.2/24")
	const timeout = 2 * time.Second
	srv := server.New(server.Config{Log: testLogger(t), ClientTimeout: timeout})
	hs := &http.Server{}
	srv.Configure(hs)
	var ln net.Listener
	if err := netns.Do(srvNS.Open(), func() (err error) {
		ln, err = net.Listen("tcp", "198.18.5.1:5001")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	go hs.Serve(ln)
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	cliHandle := cliNS.Open()
	dialer := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(cliHandle, func() (err error) {
			c, err = net.DialTimeout(network, addr, 2*time.Second)
			return err
		})
		return c, err
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://198.18.5.1:5001/capture?netns="+ino(srvNS), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if _, _, err := c.Read(ctx); err != nil { // the header: the session runs
		t.Fatal(err)
	}
	waitUntil(t, "session registered", func() bool { return srv.Sessions() == 1 })
	cliNS.IP("link", "set", "eth0", "down")
	start := time.Now()
	deadline := start.Add(4 * timeout)
	for srv.Sessions() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("session still alive %v after the client fell silent", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("silent client noticed after %v (ClientTimeout %v)", time.Since(start), timeout)
}

// slowConn reads at most rate bytes per second while throttled.
type slowConn struct {
	net.Conn
	mu        sync.Mutex
	throttled bool
	rate      int
}

func (c *slowConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	slow := c.throttled
	c.mu.Unlock()
	if !slow {
		return c.Conn.Read(b)
	}
	chunk := min(len(b), c.rate/10)
	time.Sleep(100 * time.Millisecond)
	return c.Conn.Read(b[:chunk])
}

// TestIntegrationSlowClientBounded: a client reading 1 KiB/s during a
// flood: the service's memory stays bounded, the kernel counts every packet
// not delivered, and the stream stays valid pcapng.
func TestIntegrationSlowClientBounded(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	h.staticNeighbour()

	var sc *slowConn
	rc := dialReading(t, ts, url.Values{"netns": {ino(h.a)}, "nif": {"eth0"}, "filter": {"udp"}},
		func(c net.Conn) net.Conn { sc = &slowConn{Conn: c, rate: 1024}; return sc })
	sc.mu.Lock()
	sc.throttled = true
	sc.mu.Unlock()

	var before, peak runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ua := h.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	sent := 0
	floodEnd := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(floodEnd); i++ {
		if _, err := ua.WriteToUDP(payload('F', i), dst); err == nil {
			sent++
		}
		if i%20000 == 0 {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.HeapInuse {
				peak = m
			}
		}
	}
	growth := int64(peak.HeapInuse) - int64(before.HeapInuse)
	t.Logf("flood: %d packets in 3 s at 1 KiB/s reading; heap in use %d KiB before, peak growth %d KiB",
		sent, before.HeapInuse>>10, growth>>10)
	if growth > 8<<20 {
		t.Fatalf("heap grew %d KiB during the flood: buffering is not bounded", growth>>10)
	}
	sc.mu.Lock()
	sc.throttled = false
	sc.mu.Unlock()
	h.b.IP("link", "del", "eth0")
	ce := <-rc.done
	if ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q", ce.Code, ce.Reason)
	}
	data := rc.bytes()
	s := parse(t, data)
	st := s.isbs[0].Stats
	t.Logf("sent %d, delivered %d, dropped %d (ISB)", sent, st.Delivered, st.Dropped)
	if uint64(len(s.pkts)) != st.Delivered || st.Delivered+st.Dropped != st.Received || st.Received != uint64(sent) || st.Dropped == 0 {
		t.Fatalf("accounting: sent %d, stream %d, ISB %+v", sent, len(s.pkts), st)
	}
	checkWireshark(t, data, []string{"eth0"}, len(s.pkts))
}

// TestIntegrationCycles: 1000 connect/capture/disconnect cycles, half closed
// cleanly, half dropped abruptly: fds, goroutines, threads and memory come
// back to their baseline.
func TestIntegrationCycles(t *testing.T) {
	h := newHosts(t, false)
	// Idle rings would hold fds on purpose. Every cycle comes from one
	// address, and an abruptly dropped session stays registered until its
	// teardown ends: the per-client cap is for another test.
	srv, ts := startServer(t, noPool, func(c *server.Config) { c.MaxSessionsPerClient = -1 })
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/capture?" + q("netns", ino(h.a), "nif", "eth0/lo").Encode()
	cycle := func(i int) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, wsURL, nil)
		if err != nil {
			return err
		}
		if _, _, err := c.Read(ctx); err != nil { // header: capture live
			c.CloseNow()
			return err
		}
		if i%2 == 0 {
			return c.Close(websocket.StatusNormalClosure, "bye")
		}
		return c.CloseNow()
	}
	const n, workers = 1000, 4
	run := func(n int) error {
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := 0; w < workers; w++ {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					if err := cycle(i); err != nil {
						errs <- fmt.Errorf("cycle %d: %w", i, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		return <-errs
	}
	settle := func() { waitUntil(t, "sessions gone", func() bool { return srv.Sessions() == 0 }) }
	// Warm up with the same concurrency: the Go runtime keeps the OS
	// threads it made for blocking syscalls (ring setup and teardown wait
	// for an RCU grace period), so their number is set by concurrency, and
	// must not grow with the number of cycles.
	if err := run(100); err != nil {
		t.Fatal(err)
	}
	settle()
	runtime.GC()
	g0, fd0, thr0, rss0, heap0 := runtime.NumGoroutine(), countFDs(t), threads(t), rssKiB(t), heapKiB()

	start := time.Now()
	if err := run(n); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	settle()
	waitUntil(t, "goroutines and fds at baseline", func() bool {
		return runtime.NumGoroutine() <= g0 && countFDs(t) <= fd0
	})
	runtime.GC()
	g1, fd1, thr1, rss1, heap1 := runtime.NumGoroutine(), countFDs(t), threads(t), rssKiB(t), heapKiB()
	t.Logf("%d cycles in %v: goroutines %d -> %d, fds %d -> %d, threads %d -> %d, Go heap %d -> %d KiB, RSS %d -> %d KiB",
		n, elapsed, g0, g1, fd0, fd1, thr0, thr1, heap0, heap1, rss0, rss1)
	if thr1 > thr0+4 {
		t.Fatalf("threads grew from %d to %d", thr0, thr1)
	}
	// A leak of one small object per cycle is 1000 objects: the heap
	// after GC may wobble by a few hundred KiB, not by 4 MiB.
	if heap1 > heap0+4<<10 {
		t.Fatalf("Go heap grew from %d to %d KiB", heap0, heap1)
	}
	// Kernel-side memory (rings are mmapped, outside the Go heap) shows in
	// RSS, except under -race (see raceEnabled); fds above catch a ring
	// left open either way.
	if !raceEnabled && rss1 > rss0+32<<10 {
		t.Fatalf("RSS grew from %d to %d KiB", rss0, rss1)
	}
	home, _ := os.Readlink("/proc/self/ns/net")
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		if l, err := os.Readlink("/proc/self/task/" + tk.Name() + "/ns/net"); err == nil && l != home {
			t.Fatalf("thread %s left in %s", tk.Name(), l)
		}
	}
}

func threads(t *testing.T) int {
	e, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

// heapKiB is the Go heap in use after a garbage collection.
func heapKiB() int {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int(m.HeapAlloc >> 10)
}

func rssKiB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			v, _ := strconv.Atoi(strings.Fields(l)[1])
			return v
		}
	}
	return 0
}

// TestIntegrationLimits: the session cap, the host-netns policy and the
// bearer token.
func TestIntegrationLimits(t *testing.T) {
	h := newHosts(t, false)
	t.Run("max sessions", func(t *testing.T) {
		_, ts := startServer(t, func(c *server.Config) { c.MaxSessions = 2 })
		a := dial(t, ts, q("netns", ino(h.a)), nil)
		b := dial(t, ts, q("netns", ino(h.b)), nil)
		a.waitLive()
		b.waitLive()
		c := dial(t, ts, q("netns", ino(h.a)), nil)
		if code, why := c.closeStatus(); code != websocket.StatusPolicyViolation || why != "too many capture sessions, try again later" {
			t.Fatalf("close %d %q", code, why)
		}
		a.stop()
		waitUntil(t, "slot free", func() bool {
			d := dial(t, ts, q("netns", ino(h.a)), nil)
			defer d.c.CloseNow()
			select {
			case <-d.done:
				return false
			case <-time.After(200 * time.Millisecond):
				return len(parse(t, d.bytes()).ifaces) > 0
			}
		})
	})
	t.Run("deny host netns", func(t *testing.T) {
		_, ts := startServer(t, func(c *server.Config) { c.DenyHostNetNS = true })
		self, err := os.Readlink("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t, ts, q("netns", strings.TrimSuffix(strings.TrimPrefix(self, "net:["), "]")), nil)
		if code, why := c.closeStatus(); code != websocket.StatusPolicyViolation || !strings.Contains(why, "--deny-host-netns") {
			t.Fatalf("close %d %q", code, why)
		}
		ok := dial(t, ts, q("netns", ino(h.a)), nil)
		ok.waitLive()
		ok.stop()
	})
	t.Run("auth token", func(t *testing.T) {
		_, ts := startServer(t, func(c *server.Config) { c.AuthToken = "s3cret" })
		get := func(path, auth string) int {
			req, _ := http.NewRequest("GET", ts.URL+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		for _, tc := range []struct {
			path, auth string
			want       int
		}{
			{"/version", "", 200},
			{"/capture", "", 401},
			{"/capture", "Bearer wrong", 401},
			{"/capture", "Bearer s3cret", 426},
			{"/capture", "bearer s3cret", 426},
			{"/capture", "BEARER s3cret", 426},
			{"/capture", "Basic s3cret", 401},
			{"/nosuch", "", 401},
		} {
			if got := get(tc.path, tc.auth); got != tc.want {
				t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.want)
			}
		}
		u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/capture?netns=" + ino(h.a)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, resp, err := websocket.Dial(ctx, u, nil); err == nil || resp == nil || resp.StatusCode != 401 {
			t.Fatalf("websocket without token: err %v resp %v", err, resp)
		}
		cl := dial(t, ts, q("netns", ino(h.a)), http.Header{"Authorization": {"Bearer s3cret"}})
		cl.waitLive()
		cl.stop()
	})
	t.Run("slow headers", func(t *testing.T) {
		srv := server.New(server.Config{Log: testLogger(t)})
		ts := httptest.NewUnstartedServer(nil)
		srv.Configure(ts.Config)
		ts.Config.ReadHeaderTimeout = 300 * time.Millisecond
		ts.Start()
		defer ts.Close()
		c, err := net.Dial("tcp", ts.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /version HTTP/1.1\r\nHost: x\r\n") // never finishes
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		_, err = io.ReadAll(c)
		if err != nil || time.Since(start) > 3*time.Second {
			t.Fatalf("slow-header client kept for %v (err %v)", time.Since(start), err)
		}
	})
}

// TestIntegrationInterfaceJoins: an interface created during an
// all-interfaces capture appears with its own IDB mid-stream, and
// Wireshark reads the stream.
func TestIntegrationInterfaceJoins(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(a), "filter", "udp"), nil)
	cl.waitLive()
	testns.Veth(t, a, "eth3", "198.18.9.1/24", b, "eth3", "198.18.9.2/24")
	ua := a.UDP("198.18.9.1:4000")
	waitUntil(t, "eth3 in the stream", func() bool {
		for _, f := range parse(t, cl.bytes()).ifaces {
			if f.Name == "eth3" {
				return true
			}
		}
		return false
	})
	send(t, ua, "198.18.9.2:4000", 'J', 5)
	cl.waitPackets(5)
	// Deleting eth3 ends its reader; lo keeps the session, whose stream
	// (checked below) must still name eth3 with the packets it carried.
	b.IP("link", "del", "eth3")
	cl.stop()
	s := parse(t, cl.bytes())
	if len(s.ifaces) != 2 || s.ifaces[1].Name != "eth3" {
		t.Fatalf("interfaces %+v", s.ifaces)
	}
	for _, f := range s.ifaces {
		if want := fmt.Sprintf("netns %d", a.Inode); f.Description != want {
			t.Fatalf("%s: if_description %q, want %q (joined interfaces too)", f.Name, f.Description, want)
		}
	}
	for _, p := range s.ours(t) {
		if p.InterfaceID != 1 {
			t.Fatalf("packet on interface %d, want eth3", p.InterfaceID)
		}
	}
	checkWireshark(t, cl.bytes(), []string{"lo", "eth3"}, 5)
}

// TestIntegrationTargetGone: in a stream of two targets, the netns of one
// loses its last holder mid-capture. Only its interfaces end (a log line,
// the targets-gone counter); the other target goes on streaming; when it
// goes too, the session ends with ISBs for every interface and a reason
// naming it.
func TestIntegrationTargetGone(t *testing.T) {
	h := newHosts(t, false)
	x, y := testns.New(t), testns.New(t)
	testns.Veth(t, x, "eth0", "198.18.6.1/24", y, "eth0", "198.18.6.2/24")
	_, ts := startServer(t, func(c *server.Config) { c.NetNSCheckInterval = 100 * time.Millisecond })
	cl := dial(t, ts, url.Values{"netns": {ino(h.a), ino(x)}, "nif": {"eth0"}}, nil)
	cl.waitLive()
	x.Delete()
	waitUntil(t, "the gone target counted", func() bool {
		resp, err := http.Get(ts.URL + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), "packetflix_capture_targets_gone_total 1\n")
	})
	// The other target still streams.
	send(t, h.a.UDP("198.18.1.1:4000"), "198.18.1.2:4000", 'G', 5)
	cl.waitPackets(5)
	h.a.Delete()
	code, why := cl.closeStatus()
	if code != websocket.StatusNormalClosure || !strings.Contains(why, "network namespace vanished") {
		t.Fatalf("close %d %q", code, why)
	}
	s := parse(t, cl.bytes())
	if len(s.ifaces) != 2 || len(s.isbs) != 2 {
		t.Fatalf("%d IDBs, %d ISBs; want 2 and 2", len(s.ifaces), len(s.isbs))
	}
	if s.ifaces[1].Name != "netns:"+ino(x)+"/eth0" {
		t.Fatalf("IDB names %q, %q", s.ifaces[0].Name, s.ifaces[1].Name)
	}
}
