package flows

import (
	"sync/atomic"
	"time"

	"github.com/packetflix/packetflix/capture"
)

// sweepEvery spaces a Sink's sweeps: Idle comes after every drained batch,
// far more often than flows can expire.
const sweepEvery = time.Second

// Sink is a capture.Sink that counts a session's packets into Tables, one
// per capture target: the packets of an interface of target i go to
// tables[i]. Like every capture.Sink it is called from one goroutine; only
// Skipped may be called from others.
type Sink struct {
	tables    []*Table
	ifaces    []sinkIface // by capture.Packet.Interface
	lastSweep []time.Time // by table
	skipped   atomic.Uint64
}

type sinkIface struct {
	table    *Table
	linkType uint16
}

var _ capture.Sink = (*Sink)(nil)

// NewSink returns a Sink for a session whose interfaces are ifaces
// (capture.Session.Interfaces, at the start; interfaces that join later
// come through AddInterface). tables[i] takes the packets of target i; a
// target without a table (beyond tables, or nil) is not counted.
func NewSink(ifaces []capture.Interface, tables ...*Table) *Sink {
	s := &Sink{tables: tables, lastSweep: make([]time.Time, len(tables))}
	for id, f := range ifaces {
		s.add(id, f)
	}
	return s
}

func (s *Sink) add(id int, f capture.Interface) {
	if id < 0 {
		return
	}
	for len(s.ifaces) <= id {
		s.ifaces = append(s.ifaces, sinkIface{})
	}
	var t *Table
	if f.Target >= 0 && f.Target < len(s.tables) {
		t = s.tables[f.Target]
	}
	s.ifaces[id] = sinkIface{table: t, linkType: f.LinkType}
	if t != nil {
		t.SetInterfaceName(id, f.Name)
	}
}

// WritePacket counts p into its target's table. It never fails: flows
// never stop a capture. A VLAN tag the kernel took out of the frame counts
// as the frame's outermost Dot1Q, as in the pcapng stream.
func (s *Sink) WritePacket(p *capture.Packet) error {
	if p.Interface < 0 || p.Interface >= len(s.ifaces) || s.ifaces[p.Interface].table == nil {
		s.skipped.Add(1)
		return nil
	}
	f := &s.ifaces[p.Interface]
	var aux uint32
	if p.VLANValid {
		aux = auxVLANValid | uint32(p.VLANTCI)
	}
	f.table.packet(p.Interface, f.linkType, p.Data, p.Timestamp, p.Length, aux)
	return nil
}

// Idle sweeps the tables' idle flows, at most once a second each.
func (s *Sink) Idle() error {
	for i, t := range s.tables {
		if t == nil {
			continue
		}
		now := t.cfg.Now()
		if now.Sub(s.lastSweep[i]) < sweepEvery {
			continue
		}
		s.lastSweep[i] = now
		t.Sweep(now)
	}
	return nil
}

// AddInterface remembers the link type and name of an interface that
// joined the capture.
func (s *Sink) AddInterface(id int, ifc capture.Interface) error {
	s.add(id, ifc)
	return nil
}

// Skipped counts packets of interfaces whose target has no table.
func (s *Sink) Skipped() uint64 { return s.skipped.Load() }

// Tee returns a capture.Sink that hands every packet to a, the primary
// (the pcapng stream), and then to b (the flows). a's errors are returned
// and decide whether the packet was delivered; b sees only the packets a
// took, and b's errors are ignored, so the flow side never stops or slows
// the pcapng side by failing. Idle and AddInterface go to both, a first.
func Tee(a, b capture.Sink) capture.Sink {
	return tee{a, b}
}

type tee struct{ a, b capture.Sink }

func (t tee) WritePacket(p *capture.Packet) error {
	if err := t.a.WritePacket(p); err != nil {
		return err
	}
	_ = t.b.WritePacket(p)
	return nil
}

func (t tee) Idle() error {
	err := t.a.Idle()
	_ = t.b.Idle()
	return err
}

func (t tee) AddInterface(id int, ifc capture.Interface) error {
	err := t.a.AddInterface(id, ifc)
	_ = t.b.AddInterface(id, ifc)
	return err
}
