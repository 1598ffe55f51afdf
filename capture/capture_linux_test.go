package capture_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
	"golang.org/x/sys/unix"
)

type got struct {
	iface   int
	pktType uint8
	ts      int64
	length  int
	data    []byte
	vlan    bool
	tpid    uint16
	tci     uint16
}

// collector is a Sink that keeps copies of every packet.
type collector struct {
	mu    sync.Mutex
	pkts  []got
	idles int
	added []capture.Interface
}

func (c *collector) WritePacket(p *capture.Packet) error {
	c.mu.Lock()
	c.pkts = append(c.pkts, got{p.Interface, p.PktType, p.Timestamp, p.Length, bytes.Clone(p.Data), p.VLANValid, p.VLANTPID, p.VLANTCI})
	c.mu.Unlock()
	return nil
}

func (c *collector) Idle() error { c.mu.Lock(); c.idles++; c.mu.Unlock(); return nil }

func (c *collector) AddInterface(id int, ifc capture.Interface) error {
	c.mu.Lock()
	c.added = append(c.added, ifc)
	c.mu.Unlock()
	return nil
}

func (c *collector) snapshot() []got {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]got(nil), c.pkts...)
}

// payload is a 32-byte test datagram (testns.Payload).
func payload(tag byte, seq int) []byte { return testns.Payload(tag, seq, 32) }

var udpPayload = testns.UDPPayload

type pair struct {
	a, b *testns.NS
}

// twoHosts: a (198.18.1.1, eth0) <-veth-> b (198.18.1.2, eth0).
func twoHosts(t *testing.T) pair {
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.1.1/24", b, "eth0", "198.18.1.2/24")
	return pair{a, b}
}

func run(t *testing.T, s *capture.Session, sink capture.Sink) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	return func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(5 * time.Second):
			t.Fatal("Run did not return within 5 s of cancel")
			return nil
		}
	}
}

// waitFor polls cond until it holds. The limit is generous, so that a
// 2-core machine loaded by other processes (and -race) does not fail a
// correct build; the condition normally holds within milliseconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIntegrationVethDirectionAndBytes(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Promiscuous: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Interfaces(); len(got) != 1 || got[0].Name != "eth0" || got[0].LinkType != capture.LinkTypeEthernet {
		t.Fatalf("interfaces = %+v", got)
	}
	c := &collector{}
	stop := run(t, s, c)

	ua, ub := p.a.UDP("198.18.1.1:4000"), p.b.UDP("198.18.1.2:4000")
	const n = 50
	for i := 0; i < n; i++ {
		if _, err := ua.WriteToUDP(payload('A', i), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}); err != nil {
			t.Fatal(err)
		}
		if _, err := ub.WriteToUDP(payload('B', i), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 1), Port: 4000}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() (m map[string]got) {
		m = map[string]got{}
		for _, g := range c.snapshot() {
			if pl := udpPayload(g.data); bytes.HasPrefix(pl, []byte("PFTEST")) {
				k := string(pl)
				if _, dup := m[k]; dup {
					t.Fatalf("packet %q captured twice", pl[:12])
				}
				m[k] = g
			}
		}
		return m
	}
	waitFor(t, "all packets", func() bool { return len(count()) == 2*n })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	m := count()
	for i := 0; i < n; i++ {
		for _, tc := range []struct {
			tag  byte
			want uint8
		}{{'A', unix.PACKET_OUTGOING}, {'B', unix.PACKET_HOST}} {
			g, ok := m[string(payload(tc.tag, i))]
			if !ok {
				t.Fatalf("packet %c%d missing", tc.tag, i)
			}
			if g.pktType != tc.want || g.iface != 0 || g.length != len(g.data) || len(g.data) != 14+20+8+32 {
				t.Errorf("packet %c%d: pkttype %d (want %d) iface %d len %d caplen %d", tc.tag, i, g.pktType, tc.want, g.iface, g.length, len(g.data))
			}
		}
	}
	st := s.Stats()
	if st[0].Dropped != 0 || st[0].Delivered < 2*n || st[0].Received != st[0].Delivered {
		t.Errorf("stats %+v", st[0])
	}
}

// TestIntegrationFilterFromFirstPacket: no packet the filter rejects gets
// into a ring, not even in its first microseconds. A filter attached after
// bind leaves a window of a few microseconds (two syscalls): the flood runs
// flat out from both cores' worth of senders before and while every ring
// opens, the capture is checked right after (the packets of the window are
// the first in the ring, and the kernel counts them in tp_packets even if
// they were never read), and the open is repeated enough times that such a
// window is hit every run.
func TestIntegrationFilterFromFirstPacket(t *testing.T) {
	p := twoHosts(t)
	mac := strings.Fields(p.b.IP("-br", "link", "show", "dev", "eth0"))[2]
	p.a.IP("neigh", "replace", "198.18.1.2", "lladdr", mac, "dev", "eth0", "nud", "permanent")
	fl := flood(t, p, 4000, 2)
	waitFor(t, "the flood", func() bool { return fl.sent.Load() > 1000 })

	const rounds = 40
	for round := 0; round < rounds; round++ {
		s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp port 4001"})
		if err != nil {
			t.Fatal(err)
		}
		c := &collector{}
		stop := run(t, s, c)
		// Two block timeouts: the block holding the window's packets is
		// handed over by then.
		time.Sleep(2*capture.DefaultRingOptions.BlockTimeout + time.Millisecond)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if n := len(c.snapshot()); n != 0 {
			t.Fatalf("round %d: %d packets passed a filter that matches none", round, n)
		}
		if st := s.Stats()[0]; st.Received != 0 {
			t.Fatalf("round %d: kernel counted %d accepted packets", round, st.Received)
		}
	}
	t.Logf("%d opens during a flood of %d packets", rounds, fl.stop())
}

func TestIntegrationLoopbackOnce(t *testing.T) {
	a := testns.New(t)
	s, err := capture.Open(capture.Config{NetNS: a.Open(), Interfaces: []string{"lo"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	u := a.UDP("127.0.0.1:4000")
	const n = 20
	for i := 0; i < n; i++ {
		u.WriteToUDP(payload('L', i), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000})
	}
	seen := func() int {
		k := 0
		for _, g := range c.snapshot() {
			if bytes.HasPrefix(udpPayload(g.data), []byte("PFTEST")) {
				k++
			}
		}
		return k
	}
	waitFor(t, "loopback packets", func() bool { return seen() >= n })
	time.Sleep(50 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if k := seen(); k != n {
		t.Fatalf("saw %d loopback packets, want each of %d exactly once", k, n)
	}
}

func TestIntegrationOpenErrors(t *testing.T) {
	a := testns.New(t)
	for _, tc := range []struct {
		name string
		cfg  capture.Config
		want error
	}{
		{"no such interface", capture.Config{Interfaces: []string{"eth9"}}, capture.ErrNoSuchInterface},
		{"bad filter", capture.Config{Filter: "udp prot 53"}, capture.ErrBadFilter},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.NetNS = a.Open()
			s, err := capture.Open(tc.cfg)
			if !errors.Is(err, tc.want) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
}

func TestIntegrationInterfaceRemoved(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	c := &collector{}
	go func() { done <- s.Run(context.Background(), c) }()
	// A reader calls Idle once it has drained its ring: it runs.
	waitFor(t, "the reader to run", func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.idles > 0 })
	p.b.IP("link", "del", "eth0")
	select {
	case err := <-done:
		if !errors.Is(err, capture.ErrInterfaceGone) {
			t.Fatalf("Run = %v, want ErrInterfaceGone", err)
		}
		t.Log(err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not notice the interface vanished")
	}
}

// TestIntegrationDownInterface: an interface that is down can be captured;
// packets flow once it is up, a later down and up does not end the capture,
// and only its removal does.
func TestIntegrationDownInterface(t *testing.T) {
	p := twoHosts(t)
	p.a.IP("link", "set", "eth0", "down")
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background(), c) }()
	ua := p.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	sendSome := func(tag byte) {
		for i := 0; i < 5; i++ {
			ua.WriteToUDP(payload(tag, i), dst)
		}
	}
	count := func(tag byte) (k int) {
		for _, g := range c.snapshot() {
			if pl := udpPayload(g.data); len(pl) > 6 && pl[6] == tag {
				k++
			}
		}
		return k
	}
	for round, tag := range []byte{'1', '2'} {
		p.a.IP("link", "set", "eth0", "up")
		waitFor(t, "route back", func() bool { _, err := ua.WriteToUDP(payload('w', 0), dst); return err == nil })
		sendSome(tag)
		waitFor(t, fmt.Sprintf("packets of round %d", round), func() bool { return count(tag) == 5 })
		p.a.IP("link", "set", "eth0", "down")
		select {
		case err := <-done:
			t.Fatalf("capture ended when the interface went down: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.a.IP("link", "del", "eth0")
	select {
	case err := <-done:
		if !errors.Is(err, capture.ErrInterfaceGone) {
			t.Fatalf("Run = %v, want ErrInterfaceGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("removal not noticed")
	}
}

// TestIntegrationInterfaceAdded: an interface created in the netns during
// an all-interfaces capture joins it, announced before its packets.
func TestIntegrationInterfaceAdded(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	s, err := capture.Open(capture.Config{NetNS: a.Open(), Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	testns.Veth(t, a, "eth7", "198.18.8.1/24", b, "eth7", "198.18.8.2/24")
	waitFor(t, "eth7 announced", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.added) == 1 && c.added[0].Name == "eth7"
	})
	ua := a.UDP("198.18.8.1:4000")
	for i := 0; i < 5; i++ {
		ua.WriteToUDP(payload('N', i), &net.UDPAddr{IP: net.IPv4(198, 18, 8, 2), Port: 4000})
	}
	id := len(s.Interfaces()) - 1
	waitFor(t, "packets on eth7", func() bool {
		k := 0
		for _, g := range c.snapshot() {
			if g.iface == id && bytes.HasPrefix(udpPayload(g.data), []byte("PFTEST")) {
				k++
			}
		}
		return k == 5
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); len(st) != id+1 || st[id].Delivered < 5 {
		t.Fatalf("stats %+v", st)
	}
}

// TestIntegrationPoolReuse: a ring given back to the pool is taken by the
// next capture of the interface, which then starts without the kernel's
// ring setup; nothing of the first capture (packets, counters, filter,
// promiscuity) reaches the second.
func TestIntegrationPoolReuse(t *testing.T) {
	p := twoHosts(t)
	pool := capture.NewPool(4, time.Minute)
	t.Cleanup(pool.Close)
	before := p.a.Promiscuity("eth0")
	ua := p.a.UDP("198.18.1.1:4000")
	send := func(tag byte, port, n int) {
		for i := 0; i < n; i++ {
			ua.WriteToUDP(payload(tag, i), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: port})
		}
	}
	count := func(c *collector, tag byte) (k int) {
		for _, g := range c.snapshot() {
			if pl := udpPayload(g.data); len(pl) > 6 && pl[6] == tag {
				k++
			}
		}
		return k
	}

	s1, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Promiscuous: true, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	c1 := &collector{}
	stop1 := run(t, s1, c1)
	send('A', 4000, 10)
	waitFor(t, "A packets", func() bool { return count(c1, 'A') == 10 })
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	send('B', 4001, 10) // between the captures: must reach neither
	waitFor(t, "ring idle in the pool", func() bool { return pool.Idle() == 1 })
	if got := p.a.Promiscuity("eth0"); got != before {
		t.Fatalf("promiscuity %d with the ring idle, want %d", got, before)
	}
	send('B', 4001, 10)

	start := time.Now()
	s2, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp dst port 4001", Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Open with a pooled ring: %v", time.Since(start))
	if pool.Idle() != 0 {
		t.Fatal("the second capture did not take the pooled ring")
	}
	c2 := &collector{}
	stop2 := run(t, s2, c2)
	send('C', 4000, 10)
	send('D', 4001, 10)
	waitFor(t, "D packets", func() bool { return count(c2, 'D') == 10 })
	time.Sleep(20 * time.Millisecond)
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	for _, tag := range []byte{'A', 'B', 'C'} {
		if k := count(c2, tag); k != 0 {
			t.Fatalf("the second capture saw %d %c packets", k, tag)
		}
	}
	if st := s2.Stats()[0]; st.Received != 10 || st.Delivered != 10 || st.Dropped != 0 {
		t.Fatalf("second capture's counters %+v, want its own 10", st)
	}
	if got := p.a.Promiscuity("eth0"); got != before {
		t.Fatalf("promiscuity %d after a chaste capture on a reused ring, want %d", got, before)
	}
}

// TestIntegrationMergedInTimestampOrder: packets of two interfaces reach
// the Sink in timestamp order, not ring by ring: a sends datagrams to b
// and c in turn, over eth0 and eth1, and the capture of both interfaces
// delivers every one of them with timestamps that never decrease.
func TestIntegrationMergedInTimestampOrder(t *testing.T) {
	a, b, c := testns.New(t), testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.1.1/24", b, "eth0", "198.18.1.2/24")
	testns.Veth(t, a, "eth1", "198.18.2.1/24", c, "eth0", "198.18.2.2/24")
	s, err := capture.Open(capture.Config{NetNS: a.Open(), Interfaces: []string{"eth0", "eth1"}, Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	stop := run(t, s, col)
	ua := a.UDP("198.18.1.1:4000")
	uc := a.UDP("198.18.2.1:4000")
	const n = 3000
	for i := range n {
		// In turn, so that every block of one ring spans the time of
		// blocks of the other.
		if _, err := ua.WriteToUDP(payload('M', i), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}); err != nil {
			t.Fatal(err)
		}
		if _, err := uc.WriteToUDP(payload('M', i), &net.UDPAddr{IP: net.IPv4(198, 18, 2, 2), Port: 4000}); err != nil {
			t.Fatal(err)
		}
	}
	ours := func() []got {
		var out []got
		for _, g := range col.snapshot() {
			if bytes.HasPrefix(udpPayload(g.data), []byte("PFTEST")) {
				out = append(out, g)
			}
		}
		return out
	}
	waitFor(t, "every datagram captured", func() bool { return len(ours()) == 2*n })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	per := map[int]int{}
	pkts := ours()
	for i, g := range pkts {
		per[g.iface]++
		if i > 0 && g.ts < pkts[i-1].ts {
			t.Fatalf("packet %d (interface %d, %d) is older than packet %d (interface %d, %d): not in timestamp order",
				i, g.iface, g.ts, i-1, pkts[i-1].iface, pkts[i-1].ts)
		}
	}
	if per[0] != n || per[1] != n {
		t.Fatalf("per interface %v, want %d each", per, n)
	}
}

// TestIntegrationTargetsLine: one session captures every namespace of a
// line of 3, and of 10: a datagram sent from the first to the last
// appears once on each interface it crossed (twice per link), with the
// target and netns of that interface, in timestamp order.
func TestIntegrationTargetsLine(t *testing.T) {
	for _, n := range []int{3, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			line := testns.Line(t, n)
			var tgs []capture.Target
			for i, x := range line {
				tgs = append(tgs, capture.Target{NetNS: x.Open(), Name: fmt.Sprintf("r%d", i)})
			}
			s, err := capture.Open(capture.Config{Targets: tgs, Filter: "udp", Ring: capture.RingOptions{BlockSize: 64 << 10, NumBlocks: 8}})
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Targets(); len(got) != n || got[n-1].Name != fmt.Sprintf("r%d", n-1) || got[n-1].NetNS != line[n-1].Inode {
				t.Fatalf("targets %+v", got)
			}
			col := &collector{}
			stop := run(t, s, col)
			u := line[0].UDP("198.18.1.1:4000")
			dst := &net.UDPAddr{IP: net.IPv4(198, 18, byte(n-1), 2), Port: 4000}
			// One datagram first, until it arrives: it resolves the
			// neighbours along the line, which otherwise hold back (and
			// beyond a queue of ~100 KiB drop) what is sent meanwhile.
			if _, err := u.WriteToUDP(payload('W', 0), dst); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the first datagram at the end of the line", func() bool {
				for _, g := range col.snapshot() {
					if pl := udpPayload(g.data); bytes.HasPrefix(pl, []byte("PFTEST")) && pl[6] == 'W' && s.Interfaces()[g.iface].Target == n-1 {
						return true
					}
				}
				return false
			})
			const count, batch = 200, 20
			ours := func() []got {
				var out []got
				for _, g := range col.snapshot() {
					if pl := udpPayload(g.data); bytes.HasPrefix(pl, []byte("PFTEST")) && pl[6] == 'L' {
						out = append(out, g)
					}
				}
				return out
			}
			crossings := 2 * (n - 1)
			// In batches, each waited for: a burst through nine forwarding
			// hops on a loaded machine is more than this test is about.
			for i := 0; i < count; i += batch {
				for j := i; j < i+batch; j++ {
					if _, err := u.WriteToUDP(payload('L', j), dst); err != nil {
						t.Fatal(err)
					}
				}
				deadline := time.Now().Add(20 * time.Second)
				for len(ours()) < (i+batch)*crossings {
					if time.Now().After(deadline) {
						per := map[int]int{}
						for _, g := range ours() {
							per[g.iface]++
						}
						t.Fatalf("datagrams %d..%d: per interface %v, want %d each; kernel counters %+v", i, i+batch-1, per, i+batch, s.Stats())
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			ifaces := s.Interfaces()
			seen := map[string]int{} // target/interface -> datagrams
			pkts := ours()
			for i, g := range pkts {
				f := ifaces[g.iface]
				if f.NetNS != line[f.Target].Inode {
					t.Fatalf("interface %+v: netns %d, want target %d's %d", f, f.NetNS, f.Target, line[f.Target].Inode)
				}
				seen[fmt.Sprintf("r%d/%s", f.Target, f.Name)]++
				if i > 0 && g.ts < pkts[i-1].ts {
					t.Fatalf("packet %d older than packet %d: not in timestamp order", i, i-1)
				}
			}
			if len(pkts) != count*crossings || len(seen) != crossings {
				t.Fatalf("%d packets on %d interfaces %v, want %d on %d", len(pkts), len(seen), seen, count*crossings, crossings)
			}
			for k, v := range seen {
				if v != count {
					t.Fatalf("%s: %d datagrams, want %d (all: %v)", k, v, count, seen)
				}
			}
		})
	}
}

// TestIntegrationEndTarget: ending one target of a capture ends its
// interfaces only; the other goes on; ending the last makes Run return
// that error.
func TestIntegrationEndTarget(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{Filter: "udp", Targets: []capture.Target{
		{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Name: "a"},
		{NetNS: p.b.Open(), Interfaces: []string{"eth0"}, Name: "b"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	col := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, col) }()
	errB, errA := errors.New("b is gone"), errors.New("a is gone")
	s.EndTarget(1, errB)
	s.EndTarget(1, errA) // a second time: nothing
	ua := p.a.UDP("198.18.1.1:4000")
	var sent int
	waitFor(t, "target a still captured, b ended", func() bool {
		ua.WriteToUDP(payload('E', sent), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000})
		sent++
		perIf := map[int]int{}
		for _, g := range col.snapshot() {
			perIf[g.iface]++
		}
		// a's eth0 sees each datagram leave; b's would see it arrive,
		// until its end: then its count stops growing.
		return perIf[0] >= 5
	})
	bBefore := 0
	for _, g := range col.snapshot() {
		if g.iface == 1 {
			bBefore++
		}
	}
	for i := range 5 {
		ua.WriteToUDP(payload('F', i), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000})
	}
	waitFor(t, "the last datagrams on a", func() bool {
		k := 0
		for _, g := range col.snapshot() {
			if pl := udpPayload(g.data); g.iface == 0 && len(pl) > 6 && pl[6] == 'F' {
				k++
			}
		}
		return k == 5
	})
	for _, g := range col.snapshot() {
		if pl := udpPayload(g.data); g.iface == 1 && len(pl) > 6 && pl[6] == 'F' {
			t.Fatalf("ended target b still delivered a packet (had %d before)", bBefore)
		}
	}
	s.EndTarget(0, errA)
	select {
	case err := <-done:
		if !errors.Is(err, errB) && !errors.Is(err, errA) {
			t.Fatalf("Run returned %v, want the error of an ended target", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its last target ended")
	}
	if st := s.Stats(); len(st) != 2 || st[1].Pending != 0 || st[0].Pending != 0 {
		t.Fatalf("final stats %+v", st)
	}
}
