package capture_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"golang.org/x/sys/unix"
)

// stallSink takes the first packets and then blocks, as a stream does
// when its client stops reading, until released or the capture ends.
type stallSink struct {
	take    int64 // packets taken before stalling
	taken   atomic.Int64
	release chan struct{}
	ctx     context.Context
}

func (s *stallSink) WritePacket(p *capture.Packet) error {
	if s.taken.Load() >= s.take {
		select {
		case <-s.release:
		case <-s.ctx.Done():
			return s.ctx.Err()
		}
	}
	s.taken.Add(1)
	return nil
}

func (s *stallSink) Idle() error                                      { return nil }
func (s *stallSink) AddInterface(id int, ifc capture.Interface) error { return nil }

// flooder sends UDP datagrams from a (198.18.1.1) to b as fast as it can.
type flooder struct {
	sent atomic.Int64
	stop func() int
}

// flood starts senders goroutines; Stop ends them and returns the number
// of datagrams sent.
func flood(t *testing.T, p pair, port, senders int) *flooder {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f := &flooder{}
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: port}
	for g := 0; g < senders; g++ {
		u := p.a.UDP("198.18.1.1:0")
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := u.WriteToUDP(payload('F', i), dst); err == nil {
					f.sent.Add(1)
				}
			}
		})
	}
	var once sync.Once
	f.stop = func() int {
		once.Do(func() { cancel(); wg.Wait() })
		return int(f.sent.Load())
	}
	t.Cleanup(func() { f.stop() })
	return f
}

func checkExact(t *testing.T, what string, st capture.Stats) {
	t.Helper()
	if st.Received != st.Delivered+st.Dropped+st.Pending || st.Dropped != st.KernelDropped+st.Skipped {
		t.Fatalf("%s: counters do not add up: %+v", what, st)
	}
}

// TestIntegrationCountersStalledSink: while the sink is stalled (a client
// that stopped reading) under a flood, Received and KernelDropped advance
// in Stats; once it is over, Received = Delivered + Dropped exactly, live
// and final, and Delivered is what the sink took.
func TestIntegrationCountersStalledSink(t *testing.T) {
	p := twoHosts(t)
	mac := strings.Fields(p.b.IP("-br", "link", "show", "dev", "eth0"))[2]
	p.a.IP("neigh", "replace", "198.18.1.2", "lladdr", mac, "dev", "eth0", "nud", "permanent")
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp",
		Ring: capture.RingOptions{BlockSize: 64 << 10, NumBlocks: 2}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sink := &stallSink{take: 10, release: make(chan struct{}), ctx: ctx}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	defer func() { cancel(); <-done }()

	fl := flood(t, p, 4000, 1)
	waitFor(t, "the sink to stall", func() bool { return sink.taken.Load() >= 10 })
	first := s.Stats()[0]
	checkExact(t, "stalled", first)
	var later capture.Stats
	waitFor(t, "counters to advance while stalled", func() bool {
		later = s.Stats()[0]
		return later.Received > first.Received+1000 && later.KernelDropped > first.KernelDropped+1000
	})
	checkExact(t, "stalled, later", later)
	// Delivered advances a block at a time: the packets of the block the
	// reader is stuck in count once it is done with that block.
	if later.Delivered > uint64(sink.taken.Load()) {
		t.Fatalf("delivered %d while the sink took %d", later.Delivered, sink.taken.Load())
	}
	t.Logf("stalled: %+v then %+v", first, later)
	sent := fl.stop()
	close(sink.release)
	var live capture.Stats
	waitFor(t, "the ring to drain", func() bool {
		live = s.Stats()[0]
		return live.Pending == 0 && live.Received == uint64(sent)
	})
	checkExact(t, "drained", live)
	if live.Received != live.Delivered+live.Dropped {
		t.Fatalf("drained: %+v", live)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	done <- nil
	final := s.Stats()[0]
	t.Logf("sent %d, final %+v", sent, final)
	if final.Received != final.Delivered+final.Dropped || final.Pending != 0 || final.KernelDropped == 0 ||
		final.Received != uint64(sent) || final.Delivered != uint64(sink.taken.Load()) {
		t.Fatalf("final counters %+v (sent %d, sink took %d)", final, sent, sink.taken.Load())
	}
}

// TestIntegrationCountersPoolReuse: a finished capture's counters stay its
// own after another capture reuses its ring, and the reusing capture's add
// up, skipped packets included.
func TestIntegrationCountersPoolReuse(t *testing.T) {
	p := twoHosts(t)
	pool := capture.NewPool(4, time.Minute)
	t.Cleanup(pool.Close)
	ua := p.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4001}

	// The first capture sees nothing: its final counters are all zero.
	s1, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp port 9", Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	stop1 := run(t, s1, &collector{})
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ring idle in the pool", func() bool { return pool.Idle() == 1 })

	s2, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp port 4001", Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	if pool.Idle() != 0 {
		t.Fatal("the second capture did not take the pooled ring")
	}
	c2 := &collector{}
	stop2 := run(t, s2, c2)
	for i := 0; i < 20; i++ {
		ua.WriteToUDP(payload('R', i), dst)
	}
	waitFor(t, "packets of the second capture", func() bool { return s2.Stats()[0].Delivered == 20 })
	if st := s1.Stats()[0]; st != (capture.Stats{}) {
		t.Fatalf("the finished capture's counters changed with its reused ring: %+v", st)
	}
	if err := stop2(); err != nil {
		t.Fatal(err)
	}
	st := s2.Stats()[0]
	checkExact(t, "second capture", st)
	if st.Received != 20 || st.Delivered != 20 || st.Pending != 0 || len(c2.snapshot()) != 20 {
		t.Fatalf("second capture %+v, %d packets", st, len(c2.snapshot()))
	}
}

// TestIntegrationCountersFlap: counters add up across an interface going
// down and up.
func TestIntegrationCountersFlap(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	ua := p.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	sent := 0
	for round := 0; round < 3; round++ {
		p.a.IP("link", "set", "eth0", "up")
		waitFor(t, "route back", func() bool { _, err := ua.WriteToUDP(payload('w', round), dst); return err == nil })
		sent++
		for i := 0; i < 10; i++ {
			if _, err := ua.WriteToUDP(payload('P', i), dst); err == nil {
				sent++
			}
		}
		waitFor(t, "packets", func() bool { return len(c.snapshot()) == sent })
		p.a.IP("link", "set", "eth0", "down")
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	st := s.Stats()[0]
	checkExact(t, "after flaps", st)
	if st.Received != uint64(sent) || st.Delivered != uint64(sent) || st.Dropped != 0 {
		t.Fatalf("after flaps: %+v, sent %d", st, sent)
	}
}

// TestIntegrationChaste: a capture without Promiscuous leaves the
// interface's promiscuity alone; one with it raises it by one while it
// runs, and both leave it as it was.
func TestIntegrationChaste(t *testing.T) {
	p := twoHosts(t)
	before := p.a.Promiscuity("eth0")
	for _, promisc := range []bool{false, true, false} {
		s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}, Promiscuous: promisc})
		if err != nil {
			t.Fatal(err)
		}
		stop := run(t, s, &collector{})
		want := before
		if promisc {
			want++
		}
		if got := p.a.Promiscuity("eth0"); got != want {
			t.Fatalf("promiscuous=%v: promiscuity %d while capturing, want %d", promisc, got, want)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if got := p.a.Promiscuity("eth0"); got != before {
			t.Fatalf("promiscuous=%v: promiscuity %d after, want %d", promisc, got, before)
		}
	}
}

// TestIntegrationVLANTagReported: the kernel strips an 802.1Q tag on
// receive; the Packet carries it (TCI with PCP and VID) so it can be put
// back.
func TestIntegrationVLANTagReported(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Interfaces: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	macOf := func(ns *testns.NS) net.HardwareAddr {
		m, err := net.ParseMAC(strings.Fields(ns.IP("-br", "link", "show", "dev", "eth0"))[2])
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	const tci = 5<<13 | 100 // PCP 5, VID 100
	body := []byte("PFVLAN-tagged-frame-payload-0123456789abcdef")
	frame := append(append([]byte{}, macOf(p.a)...), macOf(p.b)...)
	frame = binary.BigEndian.AppendUint16(frame, 0x8100)
	frame = binary.BigEndian.AppendUint16(frame, tci)
	frame = binary.BigEndian.AppendUint16(frame, 0x88b5) // local experimental ethertype
	frame = append(frame, body...)
	hb := p.b.Open()
	var fd, ifindex int
	err = netns.Do(hb, func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	var g got
	waitFor(t, "the tagged frame", func() bool {
		for _, x := range c.snapshot() {
			if bytes.Contains(x.data, []byte("PFVLAN")) {
				g = x
				return true
			}
		}
		return false
	})
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	untagged := append(append([]byte{}, frame[:12]...), frame[16:]...)
	if !g.vlan || g.tci != tci || (g.tpid != 0 && g.tpid != 0x8100) || !bytes.Equal(g.data, untagged) {
		t.Fatalf("tagged frame: vlan %v tci %#x tpid %#x data\n% x\nwant tci %#x and\n% x", g.vlan, g.tci, g.tpid, g.data, tci, untagged)
	}
}

// TestIntegrationCookedUnknownLinkType: an interface whose hardware type
// libpcap has no link type for (here a tun set to ARPHRD_IPGRE with
// TUNSETLINK: no gre module on this kernel) is captured as
// LINKTYPE_LINUX_SLL2: a 20-byte cooked header, then the IP packet.
func TestIntegrationCookedUnknownLinkType(t *testing.T) {
	a := testns.New(t)
	tun := a.Tun("gre7")
	if err := unix.IoctlSetInt(int(tun.Fd()), unix.TUNSETLINK, unix.ARPHRD_IPGRE); err != nil {
		t.Fatalf("TUNSETLINK: %v", err)
	}
	a.IP("link", "set", "gre7", "up")
	s, err := capture.Open(capture.Config{NetNS: a.Open(), Interfaces: []string{"gre7"}, Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	ifc := s.Interfaces()[0]
	if ifc.LinkType != capture.LinkTypeLinuxSLL2 {
		t.Fatalf("link type %d, want LINUX_SLL2 (%d)", ifc.LinkType, capture.LinkTypeLinuxSLL2)
	}
	c := &collector{}
	stop := run(t, s, c)
	pkt := testns.IPv4UDP(net.IPv4(198, 18, 9, 2), net.IPv4(198, 18, 9, 1), 4000, 4000, payload('G', 1))
	if _, err := tun.Write(pkt); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the packet", func() bool { return len(c.snapshot()) == 1 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	g := c.snapshot()[0]
	hdr := []byte{0x08, 0x00, 0, 0, 0, 0, 0, 0, 0x03, 0x0a, unix.PACKET_HOST, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[4:], uint32(ifc.Index))
	if want := append(hdr, pkt...); !bytes.Equal(g.data, want) || g.length != len(want) {
		t.Fatalf("captured (len %d)\n% x\nwant (len %d)\n% x", g.length, g.data, len(want), want)
	}
	if st := s.Stats()[0]; st.Received != 1 || st.Delivered != 1 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// slowSink is a client slower than the traffic: every packet takes a
// millisecond, so under a flood the reader always has a block to read.
type slowSink struct {
	mu    sync.Mutex
	added []string
}

func (s *slowSink) WritePacket(p *capture.Packet) error { time.Sleep(time.Millisecond); return nil }
func (s *slowSink) Idle() error                         { return nil }
func (s *slowSink) AddInterface(id int, ifc capture.Interface) error {
	s.mu.Lock()
	s.added = append(s.added, ifc.Name)
	s.mu.Unlock()
	return nil
}

// TestIntegrationInterfaceAddedWhileBusy: an interface created while the
// reader never runs out of work (a slow client under a flood) still joins
// an all-interfaces capture at once, and is read: its ring is not left to
// fill until the flood ends.
func TestIntegrationInterfaceAddedWhileBusy(t *testing.T) {
	p := twoHosts(t)
	s, err := capture.Open(capture.Config{NetNS: p.a.Open(), Filter: "udp"})
	if err != nil {
		t.Fatal(err)
	}
	sink := &slowSink{}
	stop := run(t, s, sink)
	fl := flood(t, p, 4000, 1)
	eth0 := slices.IndexFunc(s.Interfaces(), func(f capture.Interface) bool { return f.Name == "eth0" })
	waitFor(t, "the reader busy: packets pending in eth0's ring", func() bool {
		return s.Stats()[eth0].Pending > 0
	})
	c := testns.New(t)
	testns.Veth(t, p.a, "eth7", "198.18.8.1/24", c, "eth7", "198.18.8.2/24")
	waitFor(t, "eth7 announced during the flood", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return slices.Contains(sink.added, "eth7")
	})
	if fl.sent.Load() == 0 {
		t.Fatal("no flood")
	}
	fl.stop()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}
