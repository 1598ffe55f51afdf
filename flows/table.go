package flows

import (
	"crypto/sha1"
	"errors"
	"fmt"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	// DefaultMaxFlows is the cap of a table when Config.MaxFlows is 0:
	// about 1 MiB of slab and index per target (see SlotSize).
	DefaultMaxFlows = 4096
	// DefaultIdleTimeout is Skydive's flow expiry (flow.expire, 600 s).
	DefaultIdleTimeout = 10 * time.Minute
	// MaxMaxFlows bounds Config.MaxFlows (slab indexes are int32, and a
	// table preallocates everything).
	MaxMaxFlows = 1 << 20
)

// Snaplen is enough of a packet for the decoder: Ethernet, two VLAN tags,
// IPv6 with extension headers and the transport header. A flows-only
// capture opens its rings with it.
const Snaplen = 256

// SlotSize is the bytes a table preallocates per flow (slab entry and two
// index entries), for sizing MaxFlows.
const SlotSize = slotBytes + 2*4

// Config configures a Table. The zero value of every field means its
// documented default.
type Config struct {
	// MaxFlows caps the flows tracked at once; 0 means DefaultMaxFlows.
	// All their memory is allocated by New. A new flow at the cap evicts
	// the flow idle longest (counted in Stats.Evicted).
	MaxFlows int
	// IdleTimeout ends a flow that has seen no packet for this long
	// (counted in Stats.Expired): at the next Sweep, or when its next
	// packet comes, which then starts a new flow. 0 means
	// DefaultIdleTimeout.
	IdleTimeout time.Duration
	// NodeTID is the capture target's TID, every flow's NodeTID; it is
	// part of each flow's UUID.
	NodeTID string
	// Now is the clock of Sink.Idle's sweeps; nil means time.Now. Packet
	// times come from the packets.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.MaxFlows == 0 {
		c.MaxFlows = DefaultMaxFlows
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

func (c Config) validate() error {
	if c.MaxFlows < 0 || c.MaxFlows > MaxMaxFlows {
		return fmt.Errorf("flows: MaxFlows %d out of range [0, %d]", c.MaxFlows, MaxMaxFlows)
	}
	if c.IdleTimeout < 0 {
		return errors.New("flows: negative IdleTimeout")
	}
	return nil
}

// Stats are a table's counters, for Prometheus: Tracked is a gauge, the
// others count since New.
type Stats struct {
	Tracked   uint64 // flows in the table now
	Created   uint64 // flows started
	Evicted   uint64 // flows ended to make room at MaxFlows
	Expired   uint64 // flows ended after IdleTimeout without packets
	Packets   uint64 // packets counted in a flow
	Undecoded uint64 // packets that made no flow (link type, truncated)
}

// counts are one direction's counters.
type counts struct {
	packets, bytes uint64
}

// slot is one flow in the slab. It holds no pointer, so the garbage
// collector never scans the slab, and reusing a slot writes no pointer.
type slot struct {
	key  key
	hash uint64
	seq  uint64 // creation number in this table, part of the UUID

	prev, next int32 // LRU list (head: last touched), or free list (next)

	start, last int64 // packet times, Unix ns
	ab, ba      counts
	// Counters at the last Updated, and the time of the first packet
	// since then (dirty says there was one).
	uab, uba counts
	ustart   int64
	dirty    bool

	aLo     bool // A is the key's lo endpoint
	hasLink bool
	macA    [6]byte
	macB    [6]byte
	npath   uint8
	path    [maxPath]layer
}

const slotBytes = 200 // checked by a test against unsafe.Sizeof(slot{})

// auxVLANValid marks a Sink's auxVLAN argument as a tag the kernel
// removed from the frame.
const auxVLANValid = 1 << 16

// Table is a bounded flow table: packets go in through Packet (or a Sink),
// flows come out through Flows and Updated, in Skydive's flow JSON.
//
// Packet is meant for one goroutine at a high rate; Flows, Updated, Sweep,
// Stats and SetInterfaceName may be called from any goroutine at any time.
// They share one mutex, which Packet holds only for the lookup and the
// counter update (decoding and hashing happen before); readers hold it to
// copy the slab entries they report and build the JSON values after
// releasing it.
type Table struct {
	cfg    Config
	idleNs int64
	seed   maphash.Seed
	tid    [sha1.Size]byte // of NodeTID, for UUIDs

	undecoded atomic.Uint64

	mu    sync.Mutex
	slots []slot
	// index is an open-addressing hash table (linear probing, backward
	// shift deletion, no tombstones) of slot index + 1, 0 meaning empty.
	// Its size is a power of two at least twice MaxFlows, so probes stay
	// short; the seeded hash keeps crafted packets from colliding on
	// purpose. A Go map would do, but its deletions leave tombstones that
	// can make a later insertion grow (allocate) the map.
	index      []int32
	mask       uint64
	head, tail int32 // LRU ends, -1 when empty
	free       int32 // free list through slot.next, -1 when empty
	seq        uint64
	stats      Stats
	names      []string // interface names by id (SetInterfaceName)
}

// New returns an empty Table with all its memory allocated.
func New(cfg Config) (*Table, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	n := cfg.MaxFlows
	size := uint64(1) << bits.Len64(uint64(2*n-1))
	t := &Table{
		cfg:    cfg,
		idleNs: int64(cfg.IdleTimeout),
		seed:   maphash.MakeSeed(),
		tid:    sha1.Sum([]byte(cfg.NodeTID)),
		slots:  make([]slot, n),
		index:  make([]int32, size),
		mask:   size - 1,
		head:   -1,
		tail:   -1,
	}
	for i := range t.slots {
		t.slots[i].next = int32(i + 1)
	}
	t.slots[n-1].next = -1
	t.free = 0
	return t, nil
}

// Config returns the table's configuration, defaults filled in.
func (t *Table) Config() Config { return t.cfg }

// Packet counts one packet into its flow, creating the flow if it is new.
// data starts with the link-layer header of linkType (LinkType*); it is
// not kept. ts is the capture time in Unix nanoseconds, wireLen the length
// on the wire (counted in the byte counters). iface separates flows of
// different interfaces (the capture's Packet.Interface; 0 if there is one)
// and names them in Flow.Interface (SetInterfaceName). Packet reports
// whether the packet was counted in a flow; one that was not (an unknown
// link type, a truncated header) counts in Stats.Undecoded.
//
// Packet does not allocate.
func (t *Table) Packet(iface int, linkType uint16, data []byte, ts int64, wireLen int) bool {
	return t.packet(iface, linkType, data, ts, wireLen, 0)
}

func (t *Table) packet(iface int, linkType uint16, data []byte, ts int64, wireLen int, auxVLAN uint32) bool {
	var p packetInfo
	if !p.decode(linkType, data, auxVLAN) {
		t.undecoded.Add(1)
		return false
	}
	var k key
	srcLo := p.makeKey(&k, iface)
	h := maphash.Bytes(t.seed, k[:])

	t.mu.Lock()
	i := t.lookup(h, &k)
	if i >= 0 && ts-t.slots[i].last > t.idleNs {
		// Idle too long and not swept yet: that flow has ended.
		t.remove(i)
		t.stats.Expired++
		i = -1
	}
	if i < 0 {
		i = t.insert(h, &k, &p, srcLo, ts)
	} else {
		t.touch(i)
	}
	s := &t.slots[i]
	if srcLo == s.aLo {
		s.ab.packets++
		s.ab.bytes += uint64(wireLen)
	} else {
		s.ba.packets++
		s.ba.bytes += uint64(wireLen)
	}
	if ts > s.last {
		s.last = ts
	}
	if !s.dirty {
		s.dirty = true
		s.ustart = ts
	}
	t.stats.Packets++
	t.mu.Unlock()
	return true
}

// lookup returns the slot of k, or -1.
func (t *Table) lookup(h uint64, k *key) int32 {
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		e := t.index[j]
		if e == 0 {
			return -1
		}
		if s := &t.slots[e-1]; s.hash == h && s.key == *k {
			return e - 1
		}
	}
}

// insert starts a flow for the packet p, evicting the least recently
// touched flow when the table is full, and returns its slot, at the head
// of the LRU list.
func (t *Table) insert(h uint64, k *key, p *packetInfo, srcLo bool, ts int64) int32 {
	if t.free < 0 {
		t.remove(t.tail)
		t.stats.Evicted++
	}
	i := t.free
	s := &t.slots[i]
	t.free = s.next
	t.seq++
	// A is the source of the first packet, unless that packet answers
	// (SYN-ACK, echo reply): then the side that began is its destination.
	aIsSrc := !p.answers()
	*s = slot{
		key:     *k,
		hash:    h,
		seq:     t.seq,
		start:   ts,
		last:    ts,
		aLo:     srcLo == aIsSrc,
		hasLink: p.hasLink,
		npath:   p.npath,
		path:    p.path,
	}
	if aIsSrc {
		s.macA, s.macB = p.srcMAC, p.dstMAC
	} else {
		s.macA, s.macB = p.dstMAC, p.srcMAC
	}
	for j := h & t.mask; ; j = (j + 1) & t.mask {
		if t.index[j] == 0 {
			t.index[j] = i + 1
			break
		}
	}
	t.linkHead(i)
	t.stats.Created++
	t.stats.Tracked++
	return i
}

// remove ends the flow in slot i: out of the index and the LRU list, onto
// the free list.
func (t *Table) remove(i int32) {
	s := &t.slots[i]
	j := s.hash & t.mask
	for t.index[j] != i+1 {
		j = (j + 1) & t.mask
	}
	// Backward shift: move later entries of the probe run into the hole
	// unless their home slot lies cyclically in (hole, their position].
	t.index[j] = 0
	hole := j
	for k := (j + 1) & t.mask; t.index[k] != 0; k = (k + 1) & t.mask {
		home := t.slots[t.index[k]-1].hash & t.mask
		if (k-home)&t.mask >= (k-hole)&t.mask {
			t.index[hole] = t.index[k]
			t.index[k] = 0
			hole = k
		}
	}
	t.unlink(i)
	s.next = t.free
	t.free = i
	t.stats.Tracked--
}

func (t *Table) linkHead(i int32) {
	s := &t.slots[i]
	s.prev = -1
	s.next = t.head
	if t.head >= 0 {
		t.slots[t.head].prev = i
	} else {
		t.tail = i
	}
	t.head = i
}

func (t *Table) unlink(i int32) {
	s := &t.slots[i]
	if s.prev >= 0 {
		t.slots[s.prev].next = s.next
	} else {
		t.head = s.next
	}
	if s.next >= 0 {
		t.slots[s.next].prev = s.prev
	} else {
		t.tail = s.prev
	}
}

// touch moves slot i to the head of the LRU list.
func (t *Table) touch(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.linkHead(i)
}

// Sweep ends the flows idle for longer than IdleTimeout at now and returns
// how many it ended. It walks the LRU list from its idle end, so it costs
// only the flows it ends.
func (t *Table) Sweep(now time.Time) int {
	limit := now.UnixNano() - t.idleNs
	n := 0
	t.mu.Lock()
	for t.tail >= 0 && t.slots[t.tail].last < limit {
		t.remove(t.tail)
		n++
	}
	t.stats.Expired += uint64(n)
	t.mu.Unlock()
	return n
}

// Stats returns the table's counters.
func (t *Table) Stats() Stats {
	t.mu.Lock()
	s := t.stats
	t.mu.Unlock()
	s.Undecoded = t.undecoded.Load()
	return s
}

// SetInterfaceName names the interface id (Packet's iface) in Flow.Interface.
func (t *Table) SetInterfaceName(id int, name string) {
	if id < 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	// Copy on write: readers use the slice they took after unlocking.
	names := make([]string, max(len(t.names), id+1))
	copy(names, t.names)
	names[id] = name
	t.names = names
}

// Flows returns every flow in the table, most recently active first.
// Each flow's LastUpdateMetric holds what it counted since the last
// Updated call.
func (t *Table) Flows() []Flow {
	t.mu.Lock()
	ss := make([]slot, 0, t.stats.Tracked)
	for i := t.head; i >= 0; i = t.slots[i].next {
		ss = append(ss, t.slots[i])
	}
	names := t.names
	t.mu.Unlock()
	return t.build(ss, names)
}

// Updated returns the flows that counted packets since the previous
// Updated call, most recently active first, with LastUpdateMetric set to
// what they counted since then: what a subscriber push sends every
// interval. Flows that ended (evicted, expired) since are not reported.
func (t *Table) Updated() []Flow {
	t.mu.Lock()
	var ss []slot
	// Every packet moves its flow to the head and marks it dirty, and
	// Updated clears every mark: the dirty flows are a prefix of the list.
	for i := t.head; i >= 0 && t.slots[i].dirty; i = t.slots[i].next {
		s := &t.slots[i]
		ss = append(ss, *s)
		s.uab, s.uba, s.dirty = s.ab, s.ba, false
	}
	names := t.names
	t.mu.Unlock()
	return t.build(ss, names)
}

func (t *Table) build(ss []slot, names []string) []Flow {
	fs := make([]Flow, len(ss))
	for i := range ss {
		ss[i].flow(&fs[i], t.cfg.NodeTID, &t.tid, names)
	}
	return fs
}
