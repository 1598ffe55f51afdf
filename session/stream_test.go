package session

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/packetflix/packetflix/pcapng"

	"github.com/packetflix/packetflix/capture"
	"golang.org/x/sys/unix"
)

// discard is a sender that takes every message, as a fast client would.
var discard = Sender{Write: func([]byte) error { return nil }, Ping: func() error { return nil }, Idle: 1 << 62, Fail: func(error) {}}

// Test_streamAllocs: the per-packet path (encode into the message buffer,
// write full buffers) allocates nothing.
func Test_streamAllocs(t *testing.T) {
	s := New(discard, 0, nil)
	data := make([]byte, 64)
	p := &capture.Packet{Timestamp: 1, Length: 64, Data: data, PktType: unix.PACKET_OUTGOING}
	if n := testing.AllocsPerRun(10000, func() {
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
	if err := s.Finish(nil); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkStreamWritePacket: 64-byte packets through the session sink into
// a sender that discards (no network).
func BenchmarkStreamWritePacket(b *testing.B) {
	s := New(discard, 0, nil)
	p := &capture.Packet{Timestamp: 1, Length: 64, Data: make([]byte, 64), PktType: unix.PACKET_HOST}
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for b.Loop() {
		if err := s.WritePacket(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	if err := s.Finish(nil); err != nil {
		b.Fatal(err)
	}
}

// Test_streamWrites: the reader's own writes. Full messages go out when the
// next EPB would not fit, Idle writes what is buffered, a quiet client is
// pinged after Sender.Idle, the first write error ends the stream (the session
// is told once) and nothing is written after it.
func Test_streamWrites(t *testing.T) {
	var msgs [][]byte
	var pings, fails int
	writeErr := error(nil)
	out := Sender{
		Write: func(b []byte) error {
			if writeErr != nil {
				return writeErr
			}
			msgs = append(msgs, append([]byte(nil), b...))
			return nil
		},
		Ping: func() error { pings++; return nil },
		Idle: time.Hour,
		Fail: func(error) { fails++ },
	}
	s := New(out, 0, nil)
	p := &capture.Packet{Timestamp: 1, Length: 1500, Data: make([]byte, 1500), PktType: unix.PACKET_HOST}
	perMsg := MessageSize / pcapng.EPBSize(&pcapng.Packet{}, 1500)
	for range perMsg + 1 {
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}
	if len(msgs) != 1 || len(msgs[0]) > MessageSize || len(msgs[0]) < MessageSize-2000 {
		t.Fatalf("after %d packets: %d messages (first %d bytes), want one full message", perMsg+1, len(msgs), len(msgs[0]))
	}
	if err := s.Idle(); err != nil || len(msgs) != 2 {
		t.Fatalf("Idle: %v, %d messages; want the buffered packet written", err, len(msgs))
	}
	if err := s.Idle(); err != nil || len(msgs) != 2 || pings != 0 {
		t.Fatalf("Idle with nothing buffered: %v, %d messages, %d pings; want nothing", err, len(msgs), pings)
	}
	s.out.Idle = 0 // the client has been quiet for long enough
	if err := s.Idle(); err != nil || pings != 1 {
		t.Fatalf("Idle of a quiet stream: %v, %d pings; want one ping", err, pings)
	}

	writeErr = errors.New("connection reset")
	if err := s.WritePacket(p); err != nil {
		t.Fatalf("WritePacket into a buffer with room: %v", err)
	}
	err := s.Idle()
	if !errors.Is(err, ErrClientGone) || !errors.Is(err, writeErr) || fails != 1 {
		t.Fatalf("Idle after a write error: %v (fails %d); want ErrClientGone wrapping it, told once", err, fails)
	}
	if err := s.WritePacket(p); err == nil {
		t.Fatal("WritePacket after a write error succeeded")
	}
	writeErr = nil
	if err := s.Finish([]byte("ISB")); err == nil || len(msgs) != 2 || fails != 1 {
		t.Fatalf("finish after a write error: %v, %d messages, fails %d; want the error and nothing written", err, len(msgs), fails)
	}
}

// Test_streamCount: count= ends the stream after that many packets, and
// finish writes the rest and the tail.
func Test_streamCount(t *testing.T) {
	var got []byte
	reached := 0
	out := discard
	out.Write = func(b []byte) error { got = append(got, b...); return nil }
	out.Limit = func() { reached++ }
	s := New(out, 2, nil)
	p := &capture.Packet{Timestamp: 1, Length: 4, Data: []byte{1, 2, 3, 4}}
	for i := range 3 {
		err := s.WritePacket(p)
		if (i < 2) != (err == nil) || (i == 2 && !errors.Is(err, ErrLimit)) {
			t.Fatalf("packet %d: %v", i, err)
		}
		if want := []int{0, 1, 1}[i]; reached != want {
			t.Fatalf("after packet %d: Limit told %d times, want %d (once, at the count)", i, reached, want)
		}
	}
	if err := s.Finish([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	want := 2*pcapng.EPBSize(&s.pkt, 4) + len("tail") // s.pkt: the last EPB written, flags and all
	if len(got) != want || string(got[len(got)-4:]) != "tail" {
		t.Fatalf("wrote %d bytes, want %d ending in the tail", len(got), want)
	}
}

// Test_streamAddInterfaceDescription: an interface that joins mid-capture
// is described like the first ones.
func Test_streamAddInterfaceDescription(t *testing.T) {
	var got []byte
	out := discard
	out.Write = func(b []byte) error { got = append(got, b...); return nil }
	s := New(out, 0, func(f capture.Interface) pcapng.Interface { return IDB(f, "netns 4026532999, target blue") })
	if err := s.AddInterface(2, capture.Interface{Name: "veth9", LinkType: pcapng.LinkTypeEthernet, Snaplen: 96}); err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(nil); err != nil {
		t.Fatal(err)
	}
	r := pcapng.NewReader(bytes.NewReader(append(pcapng.AppendSHB(nil, pcapng.SectionInfo{}), got...)))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	b, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if b.Type != pcapng.BlockTypeIDB || b.Interface.Name != "veth9" || b.Interface.Description != "netns 4026532999, target blue" {
		t.Fatalf("block %#x %+v, want the IDB of veth9 with the session's description", b.Type, b.Interface)
	}
}

// TestISBs: one ISB per interface, in order, with the session's counters,
// read back by the pcapng reader.
func TestISBs(t *testing.T) {
	start, end := time.Unix(100, 0), time.Unix(160, 5)
	b := pcapng.AppendSHB(nil, pcapng.SectionInfo{})
	b = pcapng.AppendIDB(b, pcapng.Interface{LinkType: 1})
	b = pcapng.AppendIDB(b, pcapng.Interface{LinkType: 1})
	b = append(b, ISBs([]capture.Stats{{Received: 10, Dropped: 2, Delivered: 8}, {Received: 3, Delivered: 3}}, start, end)...)
	r := pcapng.NewReader(bytes.NewReader(b))
	var got []pcapng.Stats
	var ids []uint32
	for {
		blk, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if blk.Stats != nil {
			got = append(got, *blk.Stats)
			ids = append(ids, blk.InterfaceID)
		}
	}
	if len(got) != 2 || ids[0] != 0 || ids[1] != 1 ||
		got[0].Received != 10 || got[0].Dropped != 2 || got[0].Delivered != 8 || got[1].Received != 3 ||
		got[0].StartTime != start.UnixNano() || got[0].EndTime != end.UnixNano() {
		t.Fatalf("ISBs read back: ids %v, %+v", ids, got)
	}
}
