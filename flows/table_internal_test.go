package flows

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"testing"
	"time"
	"unsafe"
)

func Test_slotSize(t *testing.T) {
	if got := unsafe.Sizeof(slot{}); got != slotBytes {
		t.Errorf("slot is %d bytes; set slotBytes", got)
	}
}

func Test_names(t *testing.T) {
	for l := layerEthernet; l <= layerICMPv6Redirect; l++ {
		if l.String() == "" {
			t.Errorf("layer %d has no name", l)
		}
	}
	for k := icmpUnknown; k <= icmpPacketTooBig; k++ {
		if k.String() == "" {
			t.Errorf("ICMP kind %d has no name", k)
		}
	}
}

// rawUDP is a raw IPv4/UDP packet from 198.18.x.y:port to 198.19.0.1:53.
func rawUDP(x, y byte, port uint16) []byte {
	b := make([]byte, 28)
	b[0], b[9] = 0x45, protoUDP
	copy(b[12:16], []byte{198, 18, x, y})
	copy(b[16:20], []byte{198, 19, 0, 1})
	binary.BigEndian.PutUint16(b[20:], port)
	binary.BigEndian.PutUint16(b[22:], 53)
	return b
}

// check verifies the table's structures: every used slot is found through
// the index, the index holds exactly the used slots, the LRU list is
// consistent both ways, and used and free slots add up.
func (t *Table) check(tb testing.TB) {
	tb.Helper()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	prev := int32(-1)
	used := map[int32]bool{}
	for i := t.head; i >= 0; i = t.slots[i].next {
		s := &t.slots[i]
		if s.prev != prev {
			tb.Fatalf("slot %d: prev %d, want %d", i, s.prev, prev)
		}
		if got := t.lookup(s.hash, &s.key); got != i {
			tb.Fatalf("slot %d: lookup finds %d", i, got)
		}
		used[i] = true
		prev = i
		n++
	}
	if t.tail != prev {
		tb.Fatalf("tail %d, want %d", t.tail, prev)
	}
	if uint64(n) != t.stats.Tracked {
		tb.Fatalf("LRU list has %d flows, Tracked %d", n, t.stats.Tracked)
	}
	entries := 0
	for _, e := range t.index {
		if e != 0 {
			entries++
			if !used[e-1] {
				tb.Fatalf("index holds unused slot %d", e-1)
			}
		}
	}
	if entries != n {
		tb.Fatalf("index has %d entries, LRU list %d", entries, n)
	}
	free := 0
	for i := t.free; i >= 0; i = t.slots[i].next {
		if used[i] {
			tb.Fatalf("slot %d both used and free", i)
		}
		free++
	}
	if free+n != len(t.slots) {
		tb.Fatalf("%d free + %d used != %d", free, n, len(t.slots))
	}
}

// Test_tableChurn drives a small table through random creation, eviction
// and expiry, checking its structures as it goes, and its counts against
// a model of which flows must be tracked.
func Test_tableChurn(t *testing.T) {
	for _, maxFlows := range []int{1, 2, 7, 64} {
		tb, err := New(Config{MaxFlows: maxFlows, IdleTimeout: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(1, uint64(maxFlows)))
		ts := int64(1e18)
		idle := int64(50 * time.Millisecond)
		// The model: per conversation, its packets and last time, while
		// tracked. Times only grow here, so "idle longest" is the
		// smallest last time.
		type mflow struct{ packets, last int64 }
		model := map[int]*mflow{}
		for i := range 20000 {
			ts += int64(rng.IntN(2e6))
			k := rng.IntN(3 * maxFlows)
			if m := model[k]; m != nil && ts-m.last > idle {
				delete(model, k)
			}
			if model[k] == nil {
				if len(model) == maxFlows {
					oldest := -1
					for j, m := range model {
						if oldest < 0 || m.last < model[oldest].last {
							oldest = j
						}
					}
					delete(model, oldest)
				}
				model[k] = &mflow{}
			}
			model[k].packets++
			model[k].last = ts
			d := rawUDP(byte(k>>8), byte(k), 40000)
			if rng.IntN(2) == 0 { // the other direction
				d = rawUDP(byte(k>>8), byte(k), 40000)
				copy(d[12:16], []byte{198, 19, 0, 1})
				copy(d[16:20], []byte{198, 18, byte(k >> 8), byte(k)})
				binary.BigEndian.PutUint16(d[20:], 53)
				binary.BigEndian.PutUint16(d[22:], 40000)
			}
			if !tb.Packet(0, LinkTypeRaw, d, ts, len(d)) {
				t.Fatal("not counted")
			}
			if rng.IntN(100) == 0 {
				tb.Sweep(time.Unix(0, ts))
				for j, m := range model {
					if m.last < ts-idle {
						delete(model, j)
					}
				}
			}
			if i%97 == 0 {
				tb.check(t)
			}
		}
		tb.check(t)
		st := tb.Stats()
		if st.Created != st.Tracked+st.Evicted+st.Expired || st.Tracked > uint64(maxFlows) || st.Packets != 20000 {
			t.Errorf("MaxFlows %d: Stats %+v", maxFlows, st)
		}
		fs := tb.Flows()
		if len(fs) != len(model) {
			t.Errorf("MaxFlows %d: %d flows, model %d", maxFlows, len(fs), len(model))
		}
		for _, f := range fs {
			a := net.ParseIP(f.Network.A).To4()
			if f.Network.A == "198.19.0.1" {
				a = net.ParseIP(f.Network.B).To4()
			}
			k := int(a[2])<<8 | int(a[3])
			m := model[k]
			if m == nil || m.packets != f.Metric.ABPackets+f.Metric.BAPackets || m.last/1e6 != f.Last {
				t.Errorf("MaxFlows %d: flow %d: %+v, model %+v", maxFlows, k, f.Metric, m)
			}
		}
	}
}
