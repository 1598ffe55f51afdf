package capture

import (
	"fmt"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fakeRing is a ring in plain memory, one block handed to user space
// holding packets of size bytes with the timestamps ts (Unix ns), laid out
// as the kernel lays out TPACKET_V3 blocks; the second block stays the
// kernel's.
func fakeRing(ts []int64, size int) *ring {
	const bs = 1 << 16
	r := &ring{bs: bs, nb: 2, mem: make([]byte, 2*bs)}
	fillBlock(r, ts, size)
	return r
}

// fillBlock writes ts into block 0 and hands it to user space again.
func fillBlock(r *ring, ts []int64, size int) {
	align := func(n, a int) int { return (n + a - 1) &^ (a - 1) }
	h := r.blockHdr(0)
	first := align(int(unsafe.Sizeof(unix.TpacketBlockDesc{})), 8)
	mac := align(sllOffset+sllSize, 16)
	off := first
	for i, t := range ts {
		th := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[off]))
		next := align(mac+size, 8)
		if i == len(ts)-1 {
			next = 0
		}
		*th = unix.Tpacket3Hdr{Next_offset: uint32(next), Sec: uint32(t / 1e9), Nsec: uint32(t % 1e9), Snaplen: uint32(size), Len: uint32(size), Mac: uint16(mac)}
		sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&r.mem[off+sllOffset]))
		sll.Pkttype = unix.PACKET_HOST
		off += next
	}
	h.Num_pkts = uint32(len(ts))
	h.Offset_to_first_pkt = uint32(first)
	h.Block_status = unix.TP_STATUS_USER
	r.cur = 0
}

// order is a Sink that records interface and timestamp of each packet.
type order struct{ got [][2]int64 }

func (o *order) WritePacket(p *Packet) error {
	o.got = append(o.got, [2]int64{int64(p.Interface), p.Timestamp})
	return nil
}
func (o *order) Idle() error                       { return nil }
func (o *order) AddInterface(int, Interface) error { return nil }
func newReader(sink Sink, rings ...*ring) *reader {
	rd := &reader{sink: sink}
	for i, r := range rings {
		rd.active = append(rd.active, &readerRing{r: r, p: Packet{Interface: i}})
	}
	return rd
}

// Test_merge: the oldest packet at hand goes first, whichever ring it is
// in; a packet younger than ReorderWindow is held back while a ring has
// nothing to compare it with, and goes once it is old enough; every packet
// is counted delivered.
func Test_merge(t *testing.T) {
	base := time.Now().Add(-time.Second).UnixNano()
	a := fakeRing([]int64{base + 1, base + 4, base + 5}, 60)
	b := fakeRing([]int64{base + 2, base + 3, base + 6}, 60)
	o := &order{}
	rd := newReader(o, a, b)
	if progressed, hold, err := rd.merge(); !progressed || hold != 0 || err != nil {
		t.Fatalf("merge: %v %d %v", progressed, hold, err)
	}
	want := [][2]int64{{0, base + 1}, {1, base + 2}, {1, base + 3}, {0, base + 4}, {0, base + 5}, {1, base + 6}}
	if len(o.got) != len(want) {
		t.Fatalf("got %v, want %v", o.got, want)
	}
	for i := range want {
		if o.got[i] != want[i] {
			t.Fatalf("got %v, want %v", o.got, want)
		}
	}
	if a.delivered.Load() != 3 || b.delivered.Load() != 3 || a.skipped.Load() != 0 || a.ready(0) {
		t.Fatalf("counters a %d/%d, b %d; block released: %v", a.delivered.Load(), a.skipped.Load(), b.delivered.Load(), !a.ready(0))
	}

	// A fresh packet while the other ring is empty: held for the window.
	now := time.Now().UnixNano()
	fillBlock(a, []int64{now}, 60)
	o.got = nil
	progressed, hold, err := rd.merge()
	if progressed || err != nil || hold <= 0 || hold > ReorderWindow || len(o.got) != 0 {
		t.Fatalf("fresh packet: progressed %v, hold %v (want up to %v), delivered %v", progressed, hold, ReorderWindow, o.got)
	}
	// An older one arrives on the other ring meanwhile: it goes, and the
	// fresh one is still held (the other ring is empty again).
	fillBlock(b, []int64{now - 1}, 60)
	if _, hold, err := rd.merge(); err != nil || len(o.got) != 1 || o.got[0] != [2]int64{1, now - 1} || hold == 0 {
		t.Fatalf("after the older packet: %v, hold %v", o.got, hold)
	}

	// Take the held packet, then: the wall clock stepped back an hour, so
	// a packet captured before the step is an hour "in the future". Held
	// while the other ring is empty, it still goes once it was held for
	// the window, not an hour later.
	rd.active[0].heldSince = time.Now().Add(-ReorderWindow)
	if _, _, err := rd.merge(); err != nil || len(o.got) != 2 {
		t.Fatalf("the held packet after the window: %v", o.got)
	}
	future := time.Now().Add(time.Hour).UnixNano()
	fillBlock(a, []int64{future}, 60)
	o.got = nil
	if _, hold, err := rd.merge(); err != nil || len(o.got) != 0 || hold <= 0 || hold > ReorderWindow {
		t.Fatalf("a packet from before the step: delivered %v, hold %v; want it held at most %v", o.got, hold, ReorderWindow)
	}
	rd.active[0].heldSince = time.Now().Add(-ReorderWindow)
	if _, _, err := rd.merge(); err != nil || len(o.got) != 1 || o.got[0] != [2]int64{0, future} {
		t.Fatalf("a packet from before the step, held for the window: %v", o.got)
	}
}

// Test_mergeUnordered: with Config.Unordered a fresh packet goes at once,
// though another ring has nothing to compare it with.
func Test_mergeUnordered(t *testing.T) {
	now := time.Now().UnixNano()
	a := fakeRing([]int64{now}, 60)
	b := fakeRing(nil, 60)
	b.blockHdr(0).Block_status = 0 // the kernel's: nothing to read
	o := &order{}
	rd := newReader(o, a, b)
	rd.unordered = true
	if progressed, hold, err := rd.merge(); !progressed || hold != 0 || err != nil || len(o.got) != 1 {
		t.Fatalf("unordered: progressed %v, hold %v, delivered %v", progressed, hold, o.got)
	}
}

// Test_mergeAllocs: reading packets out of the rings and merging them
// allocates nothing.
func Test_mergeAllocs(t *testing.T) {
	base := time.Now().Add(-time.Second).UnixNano()
	ts := make([]int64, 200)
	for i := range ts {
		ts[i] = base + int64(i)
	}
	a, b := fakeRing(ts, 64), fakeRing(ts, 64)
	rd := newReader(discardSink{}, a, b)
	if n := testing.AllocsPerRun(100, func() {
		a.setUser(0)
		b.setUser(0)
		if _, _, err := rd.merge(); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per merge of 400 packets", n)
	}
}

type discardSink struct{}

func (discardSink) WritePacket(*Packet) error         { return nil }
func (discardSink) Idle() error                       { return nil }
func (discardSink) AddInterface(int, Interface) error { return nil }

// setUser hands block i back to user space as it was.
func (r *ring) setUser(i int) { r.blockHdr(i).Block_status = unix.TP_STATUS_USER; r.cur = i }

// BenchmarkMergeQuietRings: one busy ring among quiet ones, as in an
// all-interfaces capture of a netns where one interface carries the
// traffic. The cost per packet should not grow with the quiet rings.
func BenchmarkMergeQuietRings(b *testing.B) {
	base := time.Now().Add(-time.Second).UnixNano()
	ts := make([]int64, 500)
	for i := range ts {
		ts[i] = base + int64(i)
	}
	for _, n := range []int{1, 10, 40} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			rings := []*ring{fakeRing(ts, 64)}
			for range n - 1 {
				rings = append(rings, fakeRing(nil, 64))
				rings[len(rings)-1].blockHdr(0).Block_status = 0 // the kernel's: nothing to read
			}
			rd := newReader(discardSink{}, rings...)
			b.ResetTimer()
			for b.Loop() {
				rings[0].setUser(0)
				if _, _, err := rd.merge(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(ts)), "ns/packet")
		})
	}
}
