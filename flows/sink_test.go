package flows_test

import (
	"errors"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/flows"
)

func ifc(target int, name string, linkType uint16) capture.Interface {
	return capture.Interface{Name: name, Target: target, LinkType: linkType}
}

func capPacket(iface int, data []byte, ts int64) capture.Packet {
	return capture.Packet{Interface: iface, Timestamp: ts, Length: len(data), Data: data}
}

type nopSink struct{}

func (nopSink) WritePacket(*capture.Packet) error         { return nil }
func (nopSink) Idle() error                               { return nil }
func (nopSink) AddInterface(int, capture.Interface) error { return nil }

// recSink records calls and fails with err.
type recSink struct {
	packets, idles, adds int
	err                  error
}

func (r *recSink) WritePacket(*capture.Packet) error {
	r.packets++
	return r.err
}

func (r *recSink) Idle() error {
	r.idles++
	return r.err
}

func (r *recSink) AddInterface(int, capture.Interface) error {
	r.adds++
	return r.err
}

func TestSink(t *testing.T) {
	now := time.Unix(0, t0)
	clock := func() time.Time { return now }
	a := newTable(t, flows.Config{NodeTID: "a", IdleTimeout: 10 * time.Second, Now: clock})
	b := newTable(t, flows.Config{NodeTID: "b", IdleTimeout: 10 * time.Second, Now: clock})
	s := flows.NewSink([]capture.Interface{
		ifc(0, "eth0", flows.LinkTypeEthernet),
		ifc(1, "tun0", flows.LinkTypeRaw),
		ifc(2, "eth9", flows.LinkTypeEthernet), // a target without a table
	}, a, b)

	eth := udpFrame(t, macClient, macServer, ipClient, ipServer, 40000, 9999, 10)
	raw := serialize(t, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40000, 9999), payload(10))
	write := func(p capture.Packet) {
		t.Helper()
		if err := s.WritePacket(&p); err != nil {
			t.Fatal(err)
		}
	}
	write(capPacket(0, eth, t0))
	write(capPacket(1, raw, t0))
	write(capPacket(2, eth, t0))
	write(capPacket(7, eth, t0)) // unknown interface
	if s.Skipped() != 2 {
		t.Errorf("Skipped = %d, want 2", s.Skipped())
	}

	// An interface joins target 1, with the kernel's VLAN tag.
	if err := s.AddInterface(3, ifc(1, "vlan0", flows.LinkTypeEthernet)); err != nil {
		t.Fatal(err)
	}
	p := capPacket(3, eth, t0+5e9)
	p.VLANValid, p.VLANTCI = true, 3<<13|42 // priority 3, VID 42
	write(p)

	fa := only(t, a)
	if fa.NodeTID != "a" || fa.Interface != "eth0" || fa.LayersPath != "Ethernet/IPv4/UDP" {
		t.Errorf("a: %s", js(fa))
	}
	fb := b.Flows()
	if len(fb) != 2 {
		t.Fatalf("b: %s", js(fb))
	}
	if fb[0].Interface != "vlan0" || fb[0].LayersPath != "Ethernet/Dot1Q/IPv4/UDP" || fb[0].Link.ID != 42 {
		t.Errorf("b's VLAN flow: %s", js(fb[0]))
	}
	if fb[1].Interface != "tun0" || fb[1].LayersPath != "IPv4/UDP" || fb[1].Link != nil {
		t.Errorf("b's raw flow: %s", js(fb[1]))
	}

	// Idle sweeps on the tables' clocks.
	now = now.Add(12 * time.Second)
	if err := s.Idle(); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Expired != 1 || st.Tracked != 0 {
		t.Errorf("a after Idle: %+v", st)
	}
	if st := b.Stats(); st.Expired != 1 || st.Tracked != 1 {
		t.Errorf("b after Idle: %+v", st)
	}
}

func TestTee(t *testing.T) {
	d := udpFrame(t, macClient, macServer, ipClient, ipServer, 40000, 9999, 10)
	p := capPacket(0, d, t0)
	errA, errB := errors.New("a fails"), errors.New("b fails")

	t.Run("flow side fails", func(t *testing.T) {
		a, b := &recSink{}, &recSink{err: errB}
		s := flows.Tee(a, b)
		if err := s.WritePacket(&p); err != nil {
			t.Errorf("WritePacket = %v", err)
		}
		if err := s.Idle(); err != nil {
			t.Errorf("Idle = %v", err)
		}
		if err := s.AddInterface(1, capture.Interface{}); err != nil {
			t.Errorf("AddInterface = %v", err)
		}
		if *a != (recSink{packets: 1, idles: 1, adds: 1}) || *b != (recSink{packets: 1, idles: 1, adds: 1, err: errB}) {
			t.Errorf("a %+v, b %+v", *a, *b)
		}
	})
	t.Run("pcapng side fails", func(t *testing.T) {
		a, b := &recSink{err: errA}, &recSink{}
		s := flows.Tee(a, b)
		if err := s.WritePacket(&p); err != errA {
			t.Errorf("WritePacket = %v, want a's error", err)
		}
		if err := s.Idle(); err != errA {
			t.Errorf("Idle = %v, want a's error", err)
		}
		if err := s.AddInterface(1, capture.Interface{}); err != errA {
			t.Errorf("AddInterface = %v, want a's error", err)
		}
		// The packet a refused was not delivered: b does not count it,
		// but b hears of idles and interfaces.
		if b.packets != 0 || b.idles != 1 || b.adds != 1 {
			t.Errorf("b %+v", *b)
		}
	})
	t.Run("feeds a table", func(t *testing.T) {
		tb := newTable(t, flows.Config{})
		s := flows.Tee(nopSink{}, flows.NewSink([]capture.Interface{ifc(0, "eth0", flows.LinkTypeEthernet)}, tb))
		if err := s.WritePacket(&p); err != nil {
			t.Fatal(err)
		}
		if f := only(t, tb); f.Metric.ABPackets != 1 || f.Interface != "eth0" {
			t.Errorf("flow %s", js(f))
		}
	})
}
