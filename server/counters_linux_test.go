package server_test

import (
	"context"
	"net"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"golang.org/x/sys/unix"
)

// stallConn stops reading while stalled, as a client that stopped reading
// (its TCP window closes, the service's writes block).
type stallConn struct {
	net.Conn
	mu     sync.Mutex
	resume chan struct{}
}

func (c *stallConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	ch := c.resume
	c.mu.Unlock()
	if ch != nil {
		<-ch
	}
	return c.Conn.Read(b)
}

func (c *stallConn) stall() {
	c.mu.Lock()
	c.resume = make(chan struct{})
	c.mu.Unlock()
}

func (c *stallConn) unstall() {
	c.mu.Lock()
	if c.resume != nil {
		close(c.resume)
		c.resume = nil
	}
	c.mu.Unlock()
}

// ifCounters is one interface's counters in /api/v1/captures.
type ifCounters struct{ received, delivered, kdropped, skipped, dropped, pending uint64 }

func apiCounters(t *testing.T, ts string) (id string, c ifCounters, ok bool) {
	t.Helper()
	_, body := getJSON(t, "GET", ts+"/api/v1/captures", nil)
	caps, _ := body["captures"].([]any)
	if len(caps) != 1 {
		return "", c, false
	}
	cp := caps[0].(map[string]any)
	ifs, _ := cp["interfaces"].([]any)
	if len(ifs) != 1 {
		return "", c, false
	}
	m := ifs[0].(map[string]any)
	u := func(k string) uint64 { v, _ := m[k].(float64); return uint64(v) }
	return cp["id"].(string), ifCounters{u("kernel_received"), u("packets"), u("kernel_dropped"), u("skipped"), u("dropped"), u("pending")}, true
}

// TestIntegrationStalledClientCounters: a WebSocket client stops reading
// during a UDP flood. While it is stalled, /api/v1/captures shows received
// and dropped advancing; afterwards the API and the ISB agree that received
// = delivered + dropped, with received = what was sent and delivered = the
// EPBs in the stream.
func TestIntegrationStalledClientCounters(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	h.staticNeighbour()

	rc, sc := dialStalled(t, ts, h)

	fl := h.flood(t, 'S')

	// Stalled: the sender blocks on the socket, the reader on the send
	// queue; the API must still show the kernel counting.
	var first, later ifCounters
	waitUntil(t, "drops while stalled", func() bool {
		_, first, _ = apiCounters(t, ts.URL)
		return first.kdropped > 0
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, later, _ = apiCounters(t, ts.URL)
		if later.received > first.received && later.dropped > first.dropped && later.kdropped > first.kdropped {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counters frozen while the client is stalled: %+v then %+v", first, later)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, x := range []ifCounters{first, later} {
		if x.received != x.delivered+x.dropped+x.pending || x.dropped != x.kdropped+x.skipped {
			t.Fatalf("API counters do not add up while stalled: %+v", x)
		}
	}
	t.Logf("stalled: %+v, later %+v", first, later)
	fl.stop()
	sc.unstall()

	var id string
	var end ifCounters
	waitUntil(t, "everything accounted for in the API", func() bool {
		id, end, _ = apiCounters(t, ts.URL)
		return end.pending == 0 && end.received == uint64(fl.sent.Load())
	})
	if end.received != end.delivered+end.dropped || end.dropped != end.kdropped+end.skipped {
		t.Fatalf("API counters at the end: %+v (sent %d)", end, fl.sent.Load())
	}
	if code, body := getJSON(t, "DELETE", ts.URL+"/api/v1/captures/"+id, nil); code != 200 {
		t.Fatalf("DELETE: %d %v", code, body)
	}
	ce := <-rc.done
	if ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q", ce.Code, ce.Reason)
	}
	data := rc.bytes()
	s := parse(t, data)
	st := s.isbs[0].Stats
	t.Logf("sent %d; API %+v; ISB received %d delivered %d dropped %d; %d EPBs", fl.sent.Load(), end, st.Received, st.Delivered, st.Dropped, len(s.pkts))
	if st.Received != st.Delivered+st.Dropped || st.Received != uint64(fl.sent.Load()) || uint64(len(s.pkts)) != st.Delivered ||
		st.Delivered < end.delivered || st.Dropped == 0 {
		t.Fatalf("ISB %+v, %d EPBs, sent %d, API at the end %+v", *st, len(s.pkts), fl.sent.Load(), end)
	}
}

// TestIntegrationCookedTshark: an interface of a hardware type libpcap has
// no link type for (a tun set to ARPHRD_IPGRE) is streamed as
// LINKTYPE_LINUX_SLL2, and tshark decodes the freshly written stream: the
// cooked header's fields and the IP/UDP packet after it.
func TestIntegrationCookedTshark(t *testing.T) {
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Skip("tshark not installed")
	}
	a := testns.New(t)
	tun := a.Tun("gre7")
	if err := unix.IoctlSetInt(int(tun.Fd()), unix.TUNSETLINK, unix.ARPHRD_IPGRE); err != nil {
		t.Fatalf("TUNSETLINK: %v", err)
	}
	a.IP("link", "set", "gre7", "up")
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(a), "nif", "gre7"), nil)
	cl.waitLive()
	for i := 0; i < 3; i++ {
		pkt := testns.IPv4UDP(net.IPv4(198, 18, 9, 2), net.IPv4(198, 18, 9, 1), 4000, 4001, payload('G', i))
		if _, err := tun.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "3 packets", func() bool { return len(parse(t, cl.bytes()).pkts) >= 3 })
	cl.stop()
	data := cl.bytes()
	if lt := parse(t, data).ifaces[0].LinkType; lt != 276 {
		t.Fatalf("IDB link type %d, want LINUX_SLL2 (276)", lt)
	}
	ctx, cancelT := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelT()
	out, err := exec.CommandContext(ctx, "tshark", "-r", writeFile(t, data), "-T", "fields",
		"-e", "frame.interface_name", "-e", "sll.hatype", "-e", "sll.pkttype", "-e", "ip.src", "-e", "udp.dstport").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 {
		t.Fatalf("tshark read %d packets, want 3:\n%s", len(lines), out)
	}
	for _, l := range lines {
		// The protocol field (0x0800) is shown as sll.gretype for
		// ARPHRD_IPGRE; that tshark finds the IP packet behind it says it
		// was read.
		if f := strings.Split(l, "\t"); len(f) != 5 || f[0] != "gre7" || f[1] != "778" || f[2] != "0" || f[3] != "198.18.9.2" || f[4] != "4001" {
			t.Fatalf("tshark line %q, want gre7, hatype 778, pkttype 0, 198.18.9.2, port 4001", l)
		}
	}
}

// TestIntegrationStopStalledClient: an operator stops a session whose
// client has stopped reading under a flood (the session's reader is
// blocked in its write). The session still ends: the client is cut off
// once it has not taken the rest for the finish timeout (5 s), and the
// session leaves the API while the client is still stalled.
func TestIntegrationStopStalledClient(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	h.staticNeighbour()

	rc, sc := dialStalled(t, ts, h)
	defer sc.unstall()

	h.flood(t, 'T')

	// The reader is blocked in its write once the kernel drops: nothing
	// is read from the ring any more.
	var id string
	waitUntil(t, "drops while stalled", func() bool {
		var c ifCounters
		var ok bool
		id, c, ok = apiCounters(t, ts.URL)
		return ok && c.kdropped > 0
	})
	stopped := time.Now()
	if code, body := getJSON(t, "DELETE", ts.URL+"/api/v1/captures/"+id, nil); code != 200 {
		t.Fatalf("stop: %d %v", code, body)
	}
	waitUntil(t, "the stopped session gone from the API", func() bool {
		_, _, ok := apiCounters(t, ts.URL)
		return !ok
	})
	t.Logf("session gone %v after the stop, client still stalled", time.Since(stopped).Round(time.Millisecond))
	sc.unstall()
	select {
	case <-rc.done:
	case <-time.After(waitLimit):
		t.Fatal("the cut-off client's connection did not end")
	}
}

// dialStalled captures udp on h.a's eth0 through a client that has
// stopped reading.
func dialStalled(t *testing.T, ts *httptest.Server, h hosts) (*readingClient, *stallConn) {
	var sc *stallConn
	rc := dialReading(t, ts, url.Values{"netns": {ino(h.a)}, "nif": {"eth0"}, "filter": {"udp"}},
		func(c net.Conn) net.Conn { sc = &stallConn{Conn: c}; return sc })
	sc.stall()
	return rc, sc
}
