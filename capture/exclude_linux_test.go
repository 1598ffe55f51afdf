package capture_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

// fakeExclusions is a capture.Exclusions the test changes.
type fakeExclusions struct {
	mu  sync.Mutex
	eps []netip.AddrPort
	ch  chan struct{}
}

func (f *fakeExclusions) In(uint64) ([]netip.AddrPort, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.eps, f.ch
}

func (f *fakeExclusions) set(eps ...netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.eps = eps
	close(f.ch)
	f.ch = make(chan struct{})
}

// TestIntegrationExclusionChanges: when the endpoints to leave out change
// during a capture, the running rings take the new program: a TCP
// connection's segments stop (and, when the endpoint is dropped again,
// start) appearing, while every other packet appears exactly once across
// each change. Each TCP write is followed by a marker datagram on the
// same interface: once the marker is in, the segment before it would be.
func TestIntegrationExclusionChanges(t *testing.T) {
	a := testns.New(t)
	h := a.Open()
	var ln net.Listener
	if err := netns.Do(h, func() (err error) { ln, err = net.Listen("tcp4", "127.0.0.1:7000"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		if c, err := ln.Accept(); err == nil {
			_, _ = io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	var conn net.Conn
	if err := netns.Do(h, func() (err error) { conn, err = net.Dial("tcp4", "127.0.0.1:7000"); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	u := a.UDP("127.0.0.1:4000")

	fx := &fakeExclusions{ch: make(chan struct{})}
	s, err := capture.Open(capture.Config{NetNS: h, Interfaces: []string{"lo"}, Filter: "tcp port 7000 or udp port 4000", Exclude: fx})
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	defer stop()

	tcpText := func(g got) string {
		p := gopacket.NewPacket(g.data, layers.LayerTypeEthernet, gopacket.NoCopy)
		if l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok {
			return "tcp " + string(l.Payload)
		}
		return ""
	}
	// step writes tag+i on the connection and sends marker tag,i; it
	// reports whether the segment was captured.
	step := func(tag byte, i int) bool {
		t.Helper()
		text := fmt.Sprintf("%c%04d", tag, i)
		if _, err := conn.Write([]byte(text)); err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteToUDP(payload(tag, i), &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4000}); err != nil {
			t.Fatal(err)
		}
		marker := payload(tag, i)
		seen := false
		waitFor(t, "marker "+text, func() bool {
			for _, g := range c.snapshot() {
				if bytes.Equal(udpPayload(g.data), marker) {
					return true
				}
			}
			return false
		})
		for _, g := range c.snapshot() {
			seen = seen || tcpText(g) == "tcp "+text
		}
		return seen
	}
	// untilSeen steps until the segments' capture is as wanted; the
	// program changes between two packets, at most a few steps after set.
	untilSeen := func(tag byte, want bool) int {
		t.Helper()
		for i := range 200 {
			if step(tag, i) == want {
				return i + 1
			}
		}
		t.Fatalf("after 200 steps, segments still captured = %v", !want)
		return 0
	}

	if !step('A', 0) {
		t.Fatal("a segment of the connection was not captured before any exclusion")
	}
	fx.set(netip.MustParseAddrPort("127.0.0.1:7000"))
	nb := untilSeen('B', false)
	fx.set(netip.MustParseAddrPort("127.0.0.1:7000")) // the same again: nothing changes
	for i := range 20 {
		if step('C', i) {
			t.Fatalf("segment C%04d captured after the exclusion took effect", i)
		}
	}
	fx.set()
	nd := untilSeen('D', true)

	// Every marker exactly once, across both changes.
	count := map[string]int{}
	for _, g := range c.snapshot() {
		if pl := udpPayload(g.data); bytes.HasPrefix(pl, []byte("PFTEST")) {
			count[string(pl)]++
		}
	}
	want := 1 + nb + 20 + nd
	if len(count) != want {
		t.Fatalf("%d distinct markers, want %d", len(count), want)
	}
	for m, n := range count {
		if n != 1 {
			t.Fatalf("marker %q captured %d times", m, n)
		}
	}
	t.Logf("exclusion took effect after %d steps, was lifted after %d", nb, nd)
}
