package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
	"golang.org/x/sys/unix"
)

// TestIntegrationShutdown: stopping the service ends every session with its
// ISBs and 1001 "service shutting down".
func TestIntegrationShutdown(t *testing.T) {
	h := newHosts(t, false)
	srv, ts := startServer(t)
	c1 := dial(t, ts, q("netns", ino(h.a), "nif", "eth0"), nil)
	c2 := dial(t, ts, q("netns", ino(h.b)), nil)
	c1.waitLive()
	c2.waitLive()
	send(t, h.a.UDP("198.18.1.1:4000"), "198.18.1.2:4000", 'S', 10)
	c1.waitPackets(10)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("shutdown took %v", time.Since(start))
	for i, cl := range []*client{c1, c2} {
		code, why := cl.closeStatus()
		if code != websocket.StatusGoingAway || why != "service shutting down" {
			t.Fatalf("client %d: close %d %q", i, code, why)
		}
		s := parse(t, cl.bytes())
		if len(s.isbs) != len(s.ifaces) || len(s.isbs) == 0 {
			t.Fatalf("client %d: %d ISBs for %d interfaces", i, len(s.isbs), len(s.ifaces))
		}
	}
	if n := srv.Sessions(); n != 0 {
		t.Fatalf("%d sessions left after shutdown", n)
	}
	// New sessions are refused while shutting down.
	cl := dial(t, ts, q("netns", ino(h.a)), nil)
	if code, why := cl.closeStatus(); code != websocket.StatusGoingAway || why != "service shutting down" {
		t.Fatalf("after shutdown: close %d %q", code, why)
	}
}

// TestIntegrationSlowClientDropsCounted: a client that does not read while
// a flood runs makes the kernel drop; every packet is either in the stream
// or counted as dropped in the ISB, and the stream stays valid.
func TestIntegrationSlowClientDropsCounted(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	h.staticNeighbour() // keeps ARP out of the count

	u := url.Values{"netns": {ino(h.a)}, "nif": {"eth0"}, "filter": {"udp"}}
	wsURL := "ws" + strings.TrimPrefix(ts.URL, "http") + "/capture?" + u.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(4 << 20)
	// Read the header, then stop reading.
	_, hdr, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}

	ua := h.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	const n = 200000
	sent := 0
	for i := 0; i < n; i++ {
		if _, err := ua.WriteToUDP(payload('F', i), dst); err == nil {
			sent++
		}
	}
	// The kernel has counted every packet before the capture ends.
	waitUntil(t, "the kernel to count every packet sent", func() bool {
		_, c, ok := apiCounters(t, ts.URL)
		return ok && c.received >= uint64(sent)
	})
	h.b.IP("link", "del", "eth0") // the server ends the capture and sends ISBs

	data := append([]byte(nil), hdr...)
	var ce websocket.CloseError
	for {
		_, b, err := c.Read(ctx)
		if err != nil {
			if !asClose(err, &ce) {
				t.Fatalf("read: %v", err)
			}
			break
		}
		data = append(data, b...)
	}
	if ce.Code != websocket.StatusNormalClosure {
		t.Fatalf("close %d %q", ce.Code, ce.Reason)
	}
	s := parse(t, data)
	if len(s.isbs) != 1 {
		t.Fatalf("%d ISBs", len(s.isbs))
	}
	st := s.isbs[0].Stats
	got := len(s.pkts)
	t.Logf("sent %d, in stream %d, ISB received %d dropped %d delivered %d", sent, got, st.Received, st.Dropped, st.Delivered)
	if st.Dropped == 0 {
		t.Fatalf("no drops: the test did not overrun the ring (sent %d)", sent)
	}
	if uint64(got) != st.Delivered || st.Delivered+st.Dropped != st.Received || st.Received != uint64(sent) {
		t.Fatalf("accounting broken: sent %d, stream %d, ISB %+v", sent, got, st)
	}
	checkWireshark(t, data, []string{"eth0"}, got)
}

func asClose(err error, ce *websocket.CloseError) bool {
	s := websocket.CloseStatus(err)
	if s == -1 {
		return false
	}
	var e websocket.CloseError
	for x := err; x != nil; {
		if v, ok := x.(websocket.CloseError); ok {
			e = v
			break
		}
		u, ok := x.(interface{ Unwrap() error })
		if !ok {
			break
		}
		x = u.Unwrap()
	}
	*ce = e
	return true
}

// TestIntegrationVLANTagRestored: a tagged frame, whose tag the kernel
// strips on receive, appears in the stream exactly as it was on the wire.
func TestIntegrationVLANTagRestored(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0", "filter", "vlan or not vlan"), nil)
	cl.waitLive()

	macOf := func(ns *testns.NS) net.HardwareAddr {
		m, err := net.ParseMAC(strings.Fields(ns.IP("-br", "link", "show", "dev", "eth0"))[2])
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	frame := make([]byte, 0, 80)
	frame = append(frame, macOf(h.a)...)
	frame = append(frame, macOf(h.b)...)
	frame = binary.BigEndian.AppendUint16(frame, 0x8100)
	frame = binary.BigEndian.AppendUint16(frame, 5<<13|100) // PCP 5, VID 100
	frame = binary.BigEndian.AppendUint16(frame, 0x88b5)    // local experimental ethertype
	frame = append(frame, []byte("PFVLAN-tagged-frame-payload-0123456789abcdef")...)

	hb := h.b.Open()
	var fd int
	err := netns.Do(hb, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifi, err := ifIndexIn(hb, "eth0")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifi}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(waitLimit)
	var found int
	for time.Now().Before(deadline) && found < 3 {
		found = 0
		for _, b := range parse(t, cl.bytes()).pkts {
			if bytes.Contains(b.Data, []byte("PFVLAN")) {
				if !bytes.Equal(b.Data, frame) || int(b.Packet.OrigLen) != len(frame) {
					t.Fatalf("captured\n% x\nwant\n% x (origlen %d)", b.Data, frame, b.Packet.OrigLen)
				}
				found++
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cl.stop()
	if found != 3 {
		t.Fatalf("%d tagged frames captured, want 3", found)
	}
}

func ifIndexIn(ns *netns.NetNS, name string) (int, error) {
	var idx int
	err := netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		idx = ifc.Index
		return nil
	})
	return idx, err
}

// TestIntegrationContainerReference: a fresh netns+pid+starttime reference
// captures; the same reference after the process is gone is refused.
func TestIntegrationContainerReference(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	cmd := exec.Command("ip", "netns", "exec", h.a.Name, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f := &netns.Finder{}
	waitUntil(t, "sleep in netns", func() bool {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		return l == fmt.Sprintf("net:[%d]", h.a.Inode)
	})
	st, err := f.StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprintf(`{"netns":%d,"pid":%d,"starttime":%d,"name":"tenant","type":"proc","network-interfaces":["eth0"],"node-name":"n7","cluster":{"context":"kind-kind","uid":"c1"}}`, h.a.Inode, pid, st)
	cl := dial(t, ts, q("container", ref), nil)
	cl.waitLive()
	send(t, h.a.UDP("198.18.1.1:4000"), "198.18.1.2:4000", 'R', 5)
	cl.waitPackets(5)
	cl.stop()
	s := parse(t, cl.bytes())
	if want := "---\n# capture target information\ncontainer-name: tenant\ncontainer-type: proc\nnode-name: n7\ncluster:\n    uid: c1\n"; s.section.Comment != want {
		t.Fatalf("SHB comment %q, want %q", s.section.Comment, want)
	}
	if len(s.ifaces) != 1 || s.ifaces[0].Name != "eth0" || s.ifaces[0].Description != fmt.Sprintf("netns %d, target tenant", h.a.Inode) {
		t.Fatalf("interfaces %+v, want the reference's eth0 described by netns and name", s.ifaces)
	}

	cmd.Process.Kill()
	cmd.Wait()
	// Stale, with a name: looked up by name, which no longer exists.
	cl = dial(t, ts, q("container", ref), nil)
	code, why := cl.closeStatus()
	if code != websocket.StatusPolicyViolation || why != `no container named "tenant" found by discovery` {
		t.Fatalf("close %d %q", code, why)
	}
	// Stale, without a name: fails safe.
	noName := fmt.Sprintf(`{"netns":%d,"pid":%d,"starttime":%d}`, h.a.Inode, pid, st)
	cl = dial(t, ts, q("container", noName), nil)
	code, why = cl.closeStatus()
	if code != websocket.StatusPolicyViolation || !strings.HasPrefix(why, "stale container reference: process") {
		t.Fatalf("close %d %q", code, why)
	}
}

// TestIntegrationNoLeaks: after many sessions ended every way, goroutines
// and fds are back at their baseline and no thread is left in a foreign
// netns.
func TestIntegrationNoLeaks(t *testing.T) {
	h := newHosts(t, false)
	srv, ts := startServer(t, noPool) // idle rings would hold fds on purpose
	// Warm up lazily started runtime and http goroutines.
	cl := dial(t, ts, q("netns", ino(h.a)), nil)
	cl.waitLive()
	cl.stop()
	waitUntil(t, "the warm-up session to end", func() bool { return srv.Sessions() == 0 })
	g0, fd0 := runtime.NumGoroutine(), countFDs(t)

	for i := 0; i < 30; i++ {
		switch i % 3 {
		case 0: // client closes
			cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0/lo"), nil)
			cl.waitLive()
			cl.stop()
		case 1: // client vanishes without a close frame
			cl := dial(t, ts, q("netns", ino(h.a)), nil)
			cl.waitLive()
			cl.c.CloseNow()
			<-cl.done
		case 2: // refused
			cl := dial(t, ts, q("netns", ino(h.a), "nif", "nope0"), nil)
			cl.closeStatus()
		}
	}
	waitUntil(t, "goroutines and fds back at baseline", func() bool {
		return runtime.NumGoroutine() <= g0 && countFDs(t) <= fd0
	})
	self, _ := os.Readlink("/proc/self/ns/net")
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, tk := range tasks {
		if l, err := os.Readlink("/proc/self/task/" + tk.Name() + "/ns/net"); err == nil && l != self {
			t.Fatalf("thread %s is in %s, not %s", tk.Name(), l, self)
		}
	}
	t.Logf("goroutines %d (baseline %d), fds %d (baseline %d), threads %d", runtime.NumGoroutine(), g0, countFDs(t), fd0, len(tasks))
}

func countFDs(t *testing.T) int {
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

// TestIntegrationClientCloseGetsISBs: when the client ends the capture
// (close frame, as csharg does, then reading on until the server's close),
// it gets the ISBs with the final counters before the answer to its close,
// with and without ring reuse.
func TestIntegrationClientCloseGetsISBs(t *testing.T) {
	h := newHosts(t, false)
	for i, opt := range []func(*server.Config){func(*server.Config) {}, noPool} {
		_, ts := startServer(t, opt)
		w := dialRaw(t, ts, q("netns", ino(h.a), "nif", "eth0", "filter", "udp"))
		var data []byte
		op, b, err := w.next() // the header: live
		if err != nil || op != 2 {
			t.Fatalf("first frame %d %v", op, err)
		}
		data = append(data, b...)
		send(t, h.a.UDP(fmt.Sprintf("198.18.1.1:%d", 4000+i)), "198.18.1.2:4000", 'Z', 25)
		// The 25 are read from the ring before the close. (Packets still in
		// the ring's open block when a client closes are counted as
		// dropped, not delivered: the kernel hands a block over only when
		// it is full or its timeout passes.)
		waitUntil(t, "the 25 packets delivered", func() bool {
			_, c, ok := apiCounters(t, ts.URL)
			return ok && c.delivered >= 25
		})
		start := time.Now()
		w.sendClose(1000)
		var closeCode uint16
		for {
			op, b, err := w.next()
			if err != nil {
				t.Fatalf("run %d: no close frame: %v", i, err)
			}
			if op == 8 {
				if len(b) >= 2 {
					closeCode = binary.BigEndian.Uint16(b)
				}
				break
			}
			data = append(data, b...)
		}
		t.Logf("run %d: close answered after %v", i, time.Since(start))
		s := parse(t, data)
		if closeCode != 1000 || len(s.pkts) != 25 || len(s.isbs) != 1 || s.isbs[0].Stats.Delivered != 25 || s.isbs[0].Stats.Received != 25 {
			t.Fatalf("run %d: close %d, %d packets, ISBs %+v", i, closeCode, len(s.pkts), s.isbs)
		}
		checkWireshark(t, data, []string{"eth0"}, 25)
	}
}
