package capture

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetflix/packetflix/netns"
	"golang.org/x/sys/unix"
)

// DefaultSnaplen is the most bytes kept of each packet unless configured.
const DefaultSnaplen = 262144

// Config says what to capture.
type Config struct {
	// NetNS is the namespace to capture in. Open only uses it; the caller
	// keeps ownership and may close it once Open returns.
	NetNS *netns.NetNS
	// Interfaces names the interfaces; empty means every interface of the
	// netns, each as its own interface in the stream. Interfaces that are
	// down are captured too: packets flow once they come up, as with
	// tcpdump on Linux.
	Interfaces []string
	// Targets, instead of NetNS and Interfaces, captures several
	// namespaces in one session: their interfaces are read by the one
	// reader and merged in timestamp order. The caps below count all
	// targets together.
	Targets []Target
	// Filter is a tcpdump (pcap-filter(7)) expression; empty keeps all.
	Filter string
	// Snaplen limits the bytes kept per packet; 0 means DefaultSnaplen.
	Snaplen int
	// Promiscuous puts each interface into promiscuous mode for the
	// session's lifetime.
	Promiscuous bool
	// Ring sizes each interface's kernel ring; zero fields take defaults.
	Ring RingOptions
	// FitRing lets Open make each ring smaller than Ring, down to
	// MinFitBlocks blocks, when the rings of all selected interfaces
	// would not fit MaxRingMemory at Ring's size: an all-interfaces
	// capture of a netns with many interfaces then runs with smaller
	// rings instead of being refused. For a size the client asked for,
	// leave it false.
	FitRing bool
	// Pool, if set, lends rings of ended captures and takes this
	// capture's rings back when it ends.
	Pool *Pool

	// MaxInterfaces caps the interfaces of this capture, counting those
	// that join an all-interfaces capture later (which are left out once
	// it is reached); 0 means no cap. Over it, Open fails with
	// ErrTooManyInterfaces.
	MaxInterfaces int
	// MaxRingMemory caps the bytes this capture's rings lock (Ring.Size()
	// per interface), enforced like MaxInterfaces; 0 means no cap. Over
	// it, Open fails with ErrSessionRingMemory.
	MaxRingMemory int64
	// Unordered hands packets to the Sink as each ring has them, without
	// merging the rings in timestamp order: no packet is held back for
	// ReorderWindow, and the reader wakes only for blocks. For a Sink that
	// needs no order across interfaces (a flow table: a flow is one
	// interface's); a pcapng stream wants the order.
	Unordered bool
	// Exclude, if set, names TCP traffic to leave out in each target's
	// netns (the service's own connections), in the kernel, before the
	// filter; when it changes, the rings of that netns get the new program
	// in one step (SO_ATTACH_FILTER swaps it atomically), so no other
	// packet is lost or doubled.
	Exclude Exclusions
	// Budget, if set, is charged for every ring this capture opens, until
	// the ring is closed (also when that happens in Pool, later); when it
	// has not enough left even after Pool gave back its idle rings, Open
	// fails with ErrRingMemory.
	Budget *Budget
}

// Target is one namespace of a capture.
type Target struct {
	// NetNS is used by Open only; the caller keeps ownership.
	NetNS *netns.NetNS
	// Interfaces as Config.Interfaces: empty means every interface.
	Interfaces []string
	// Name is the caller's name for the target (Interface.Target
	// indexes Session.Targets, which keeps it).
	Name string
}

// Ring set-up runs on locked OS threads (netns.Do), each of which the Go
// runtime keeps once created: at most MaxSetupThreads run at once for one
// capture and maxSetupThreadsTotal for the whole process, so that a netns
// with hundreds of interfaces, or many captures at once, cannot make the
// process create a thread per interface. Ring set-up mostly waits for an
// RCU grace period (synchronize_net, ~16 ms), so a few concurrent ones
// already overlap most of that wait.
const (
	MaxSetupThreads      = 4
	maxSetupThreadsTotal = 16
)

// setupSlots is the process-wide bound on concurrent ring set-ups.
var setupSlots = make(chan struct{}, maxSetupThreadsTotal)

// setupActive and setupPeak count ring set-ups inside netns.Do, for the
// tests of the bound.
var setupActive, setupPeak atomic.Int64

// Interface describes one captured interface. Its position in
// Session.Interfaces is the Packet.Interface value of its packets.
type Interface struct {
	Name     string
	Index    int    // kernel ifindex in the captured netns
	Target   int    // index into Session.Targets
	NetNS    uint64 // inode of the target's netns
	LinkType uint16 // LINKTYPE_* of the captured bytes
	Snaplen  int
	Filter   string
}

// Packet is one captured packet as handed to a Sink. Data points into the
// kernel ring and is valid only during the Sink call.
type Packet struct {
	Interface int   // index into Session.Interfaces
	Timestamp int64 // Unix nanoseconds, from the kernel
	Length    int   // length on the wire (before snaplen)
	Data      []byte
	// PktType is the sll_pkttype: unix.PACKET_HOST, _BROADCAST,
	// _MULTICAST, _OTHERHOST or _OUTGOING.
	PktType uint8
	// VLAN tag the kernel moved out of the frame, to be put back.
	VLANValid bool
	VLANTPID  uint16 // 0 when the kernel did not say (means 0x8100)
	VLANTCI   uint16
}

// Sink receives packets. Its methods are called from one goroutine, the
// one running Session.Run, never concurrently. WritePacket may block,
// which is how backpressure works: the reader stops draining, the kernel
// rings fill and the kernel drops and counts packets. Run returns only
// after the Sink does, so once the context given to Run is cancelled a
// blocked Sink must return within a bound of its own (the server's stream:
// its client is cut off after a finish timeout).
type Sink interface {
	WritePacket(p *Packet) error
	// Idle is called when the reader has nothing more to hand over for
	// now (every ring drained, or a packet held back for the reorder
	// window), a natural moment to send what is buffered, and at least
	// once a second while the capture is quiet.
	Idle() error
	// AddInterface announces an interface that joined an all-interfaces
	// capture after it started; id is its Packet.Interface value. It is
	// called before any packet of that interface.
	AddInterface(id int, ifc Interface) error
}

// Stats are one interface's counters since its capture began; see
// "# Counters" in the package doc. Always
//
//	Received = Delivered + Dropped + Pending
//	Dropped  = KernelDropped + Skipped
//
// and once the capture has ended Pending is 0, so Received = Delivered +
// Dropped.
type Stats struct {
	// Received counts packets the filter accepted: the kernel's
	// tp_packets, which includes the packets it dropped.
	Received uint64
	// Delivered counts packets the Sink took (WritePacket returned nil).
	Delivered uint64
	// Dropped counts received packets that will never be delivered:
	// KernelDropped + Skipped.
	Dropped uint64
	// KernelDropped counts packets the kernel dropped because the ring
	// was full (tp_drops): the client was slower than the traffic.
	KernelDropped uint64
	// Skipped counts packets that reached the ring but were not
	// delivered: on a reused ring, packets older than the capture; the
	// packet the Sink refused and the rest of its block; and the packets
	// still in the ring when the capture ended.
	Skipped uint64
	// Pending counts packets in the ring that the reader has not reached
	// yet; 0 once the capture has ended.
	Pending uint64
	// Bytes counts captured bytes the Sink took.
	Bytes uint64
}

// Session is an open capture. Open it, hand it to Run once, or Close it
// without running. Interfaces, NetNS and Stats may be called from any
// goroutine.
type Session struct {
	netns   uint64 // the first target's, for errors not about one target
	cfg     Config // NetNS and Targets are not kept: the caller owns them
	progs   map[uint16][]unix.SockFilter
	targets []*target

	mu     sync.Mutex
	ifaces []Interface
	rings  []*ring
	// Final counters per interface, once done: set before the ring goes
	// back to the pool, so that no counter of this session is ever read
	// from a ring another session has taken.
	stats   []Stats
	done    []bool
	started bool
	closed  bool
	// ended holds the targets EndTarget ended, and why; rd is the running
	// reader, which drops their interfaces.
	ended map[int]error
	rd    *reader
}

// EndTarget stops capturing target ti, as when all its interfaces vanish:
// their rings are closed and their final counters kept, and the other
// targets go on. When no interface of any target is left, Run returns
// err. Safe from any goroutine, before or during Run; ending a target
// twice does nothing more.
func (s *Session) EndTarget(ti int, err error) {
	s.mu.Lock()
	if s.ended == nil {
		s.ended = map[int]error{}
	}
	if _, dup := s.ended[ti]; dup || ti < 0 || ti >= len(s.targets) {
		s.mu.Unlock()
		return
	}
	s.ended[ti] = err
	if t := s.targets[ti]; t.mon != nil {
		t.mon.stop() // no interface will join it any more
	}
	// Under mu: Run clears rd before it closes the poller.
	if rd := s.rd; rd != nil {
		rd.offered.Store(true)
		rd.pl.wake()
	}
	s.mu.Unlock()
}

// target is one captured namespace of a Session.
type target struct {
	name string
	ino  uint64
	id   netns.ID
	// For all-interfaces targets: our own handle to the netns and the
	// link monitor, to take in interfaces created later.
	ns  *netns.NetNS
	mon *monitor
	// What Config.Exclude leaves out here, and its generation (each
	// change adds one); under Session.mu.
	excl    []netip.AddrPort
	exclGen uint64
	exclCh  <-chan struct{}
}

// TargetInfo describes one captured namespace.
type TargetInfo struct {
	Name  string
	NetNS uint64
}

// Targets returns the captured namespaces; Interface.Target indexes it.
func (s *Session) Targets() []TargetInfo {
	out := make([]TargetInfo, len(s.targets))
	for i, t := range s.targets {
		out[i] = TargetInfo{Name: t.name, NetNS: t.ino}
	}
	return out
}

// Excluded returns the TCP endpoints that target ti leaves out now
// (Config.Exclude).
func (s *Session) Excluded(ti int) []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.targets[ti].excl
}

// Open is OpenContext without a context: the filter compile is bounded by
// its budget alone.
func Open(cfg Config) (*Session, error) {
	return OpenContext(context.Background(), cfg)
}

// OpenContext resolves the interfaces and opens their rings inside
// cfg.NetNS (or each of cfg.Targets). Packets are buffered by the kernel
// from the moment it returns. When ctx ends while the filter compiles, the
// compile is killed (unless another session waits for the same one) and
// ctx's error is returned.
func OpenContext(ctx context.Context, cfg Config) (*Session, error) {
	tgs := cfg.Targets
	if len(tgs) == 0 {
		tgs = []Target{{NetNS: cfg.NetNS, Interfaces: cfg.Interfaces}}
	}
	for _, t := range tgs {
		if t.NetNS == nil {
			return nil, errors.New("capture: no netns given")
		}
	}
	ino := tgs[0].NetNS.Inode()
	if cfg.Snaplen <= 0 {
		cfg.Snaplen = DefaultSnaplen
	}
	cfg.Ring = cfg.Ring.withDefaults()

	// Compile before any netns work, in compiler children (filter.go):
	// the locked thread should do only the namespace-bound work. Both
	// programs are compiled at once so a filter error is reported early;
	// the one an interface needs is picked by its link type.
	progs, ferr := compileFilters(ctx, cfg.Snaplen, cfg.Filter, LinkTypeEthernet, LinkTypeRaw)
	if len(progs) == 0 {
		return nil, &OpError{Op: OpSetFilter, NetNS: ino, Err: ferr}
	}

	s := &Session{netns: ino, cfg: cfg, progs: progs}
	s.cfg.NetNS, s.cfg.Targets, s.cfg.Interfaces = nil, nil, nil
	sels := make([][]link, len(tgs))
	total := 0
	for i, t := range tgs {
		tg := &target{name: t.Name, ino: t.NetNS.Inode(), id: t.NetNS.ID()}
		if cfg.Exclude != nil {
			tg.excl, tg.exclCh = cfg.Exclude.In(tg.ino)
		}
		s.targets = append(s.targets, tg)
		var err error
		if sels[i], err = s.listTarget(tg, t); err != nil {
			s.closeAll()
			return nil, err
		}
		total += len(sels[i])
	}
	if cfg.FitRing {
		s.cfg.Ring = fitRing(s.cfg.Ring, total, cfg.MaxRingMemory)
	}
	if err := checkCaps(s.cfg, total, ino); err != nil {
		s.closeAll()
		return nil, err
	}
	for i, t := range tgs {
		ifaces, rings, err := s.openRings(i, t.NetNS, sels[i])
		if err != nil {
			s.closeAll() // also the rings of the targets before this one
			return nil, err
		}
		s.ifaces = append(s.ifaces, ifaces...)
		s.rings = append(s.rings, rings...)
	}
	return s, nil
}

// listTarget lists the interfaces of one target and picks those it asks
// for; for an all-interfaces target it first subscribes to link changes,
// so that none created after the listing is missed, and keeps its own
// handle to the netns.
func (s *Session) listTarget(tg *target, t Target) ([]link, error) {
	all := len(t.Interfaces) == 0
	var links []link
	err := netns.Do(t.NetNS, func() error {
		var err error
		if all {
			if tg.mon, err = openMonitor(); err != nil {
				return err
			}
		}
		links, err = listLinks()
		return err
	})
	if err != nil {
		return nil, &OpError{Op: OpListInterfaces, NetNS: tg.ino, Err: err}
	}
	sel, err := selectLinks(links, t.Interfaces, tg.ino)
	if err != nil {
		return nil, err
	}
	if all {
		if tg.ns, err = t.NetNS.Dup(); err != nil {
			return nil, err
		}
	}
	return sel, nil
}

// MinFitBlocks is the fewest blocks FitRing shrinks a ring to (1 MiB at
// the default block size).
const MinFitBlocks = 4

// fitRing returns o with fewer blocks when n rings of o would exceed
// limit (0: no limit): as many as fit, but no fewer than MinFitBlocks (or
// than o has, if that is fewer). It never grows a ring.
func fitRing(o RingOptions, n int, limit int64) RingOptions {
	if limit <= 0 || n <= 0 || int64(n)*o.Size() <= limit {
		return o
	}
	o.NumBlocks = max(int(limit/int64(n)/int64(o.BlockSize)), min(MinFitBlocks, o.NumBlocks))
	return o
}

// checkCaps refuses a capture of n interfaces that is over a per-capture
// cap, before anything is opened.
func checkCaps(cfg Config, n int, ino uint64) error {
	if cfg.MaxInterfaces > 0 && n > cfg.MaxInterfaces {
		return &OpError{Op: OpOpenRing, NetNS: ino, Err: &LimitError{Err: ErrTooManyInterfaces, Want: int64(n), Max: int64(cfg.MaxInterfaces)}}
	}
	if want := int64(n) * cfg.Ring.Size(); cfg.MaxRingMemory > 0 && want > cfg.MaxRingMemory {
		return &OpError{Op: OpOpenRing, NetNS: ino, Err: &LimitError{Err: ErrSessionRingMemory, Want: want, Max: cfg.MaxRingMemory}}
	}
	return nil
}

// openRings opens one ring per link, one Do per interface, up to
// MaxSetupThreads at once: setting up a ring waits for an RCU grace period
// in the kernel (synchronize_net in packet_set_ring, about 16 ms here), and
// concurrent waits overlap. Rings taken from the Pool are already charged
// to the Budget; the others are charged, all at once, before any is
// opened.
func (s *Session) openRings(ti int, ns *netns.NetNS, sel []link) ([]Interface, []*ring, error) {
	tg := s.targets[ti]
	ifaces := make([]Interface, len(sel))
	rings := make([]*ring, len(sel))
	errs := make([]error, len(sel))
	type fresh struct {
		i    int
		l    link
		st   int
		prog []unix.SockFilter
		key  poolKey
		lm   linkMode
		// progOf records the ring's programs for later exclusion changes.
		progOf func(*ring)
	}
	var todo []fresh
	s.mu.Lock()
	excl, gen := tg.excl, tg.exclGen
	s.mu.Unlock()
	for i, l := range sel {
		lm := linkTypeFor(l.hatype)
		lt, st := lm.filterType, lm.sockType
		ifaces[i] = Interface{Name: l.name, Index: l.index, Target: ti, NetNS: tg.ino, LinkType: lm.linkType, Snaplen: s.cfg.Snaplen, Filter: s.cfg.Filter}
		user, ok := s.progs[lt]
		if !ok {
			var err error
			// Another link type than Open compiled for: not cancelled with
			// the request, but bounded by the compile budget all the same.
			if user, err = compileFilter(context.Background(), lt, s.cfg.Snaplen, s.cfg.Filter); err != nil {
				errs[i] = &OpError{Op: OpSetFilter, NetNS: tg.ino, Interface: l.name, Err: err}
				continue
			}
		}
		prog, err := excludeProgram(lt, excl, user)
		if err != nil {
			errs[i] = &OpError{Op: OpSetFilter, NetNS: tg.ino, Interface: l.name, Err: err}
			continue
		}
		progOf := func(r *ring) { r.filterType, r.userProg, r.exclGen = lt, user, gen }
		key := poolKey{netns: tg.id, ifindex: l.index, name: l.name, hatype: l.hatype, sockType: st, ring: s.cfg.Ring}
		if r := s.cfg.Pool.take(key); r != nil {
			if err := r.reuse(l.index, prog, s.cfg.Promiscuous); err == nil {
				r.promisc = s.cfg.Promiscuous
				r.cooked, r.cookedSnap = lm.cooked, cookedSnap(s.cfg.Snaplen)
				progOf(r)
				rings[i] = r
				continue
			}
			r.close() // e.g. the interface is gone: open afresh, or fail there
		}
		todo = append(todo, fresh{i, l, st, prog, key, lm, progOf})
	}
	size := s.cfg.Ring.Size()
	if err := errors.Join(errs...); err != nil {
		todo = nil // failed already: open nothing more
	} else if err := s.cfg.Budget.charge(int64(len(todo))*size, s.cfg.Pool); err != nil {
		errs = append(errs, &OpError{Op: OpOpenRing, NetNS: tg.ino, Err: err})
		todo = nil
	}
	var wg sync.WaitGroup
	threads := make(chan struct{}, MaxSetupThreads)
	for _, f := range todo {
		threads <- struct{}{}
		wg.Go(func() {
			defer func() { <-threads }()
			setupSlots <- struct{}{}
			defer func() { <-setupSlots }()
			errs[f.i] = netns.Do(ns, func() error {
				n := setupActive.Add(1)
				defer setupActive.Add(-1)
				for p := setupPeak.Load(); n > p && !setupPeak.CompareAndSwap(p, n); p = setupPeak.Load() {
				}
				r, err := openRing(f.l.index, f.st, f.prog, f.l.hatype == unix.ARPHRD_LOOPBACK, s.cfg.Promiscuous, s.cfg.Ring)
				if err != nil {
					return &OpError{Op: OpOpenRing, NetNS: tg.ino, Interface: f.l.name, Err: err}
				}
				r.key = f.key
				r.cooked, r.cookedSnap = f.lm.cooked, cookedSnap(s.cfg.Snaplen)
				f.progOf(r)
				rings[f.i] = r
				return nil
			})
			if rings[f.i] != nil {
				// From here the ring gives its charge back when it closes.
				rings[f.i].budget, rings[f.i].charged = s.cfg.Budget, size
			} else {
				s.cfg.Budget.release(size)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, r := range rings {
			if r != nil {
				r.close()
			}
		}
		return nil, nil, err
	}
	return ifaces, rings, nil
}

// cookedSnap is how much of a packet is kept after its cooked header, so
// that both fit in snaplen.
func cookedSnap(snaplen int) int { return max(snaplen-sll2Len, 0) }

// selectLinks picks the requested interfaces (all when names is empty), in
// the order requested.
func selectLinks(links []link, names []string, ino uint64) ([]link, error) {
	if len(names) == 0 {
		return links, nil
	}
	var sel []link
	for _, n := range names {
		i := slices.IndexFunc(links, func(l link) bool { return l.name == n })
		if i < 0 {
			return nil, &OpError{Op: OpListInterfaces, NetNS: ino, Interface: n, Err: ErrNoSuchInterface}
		}
		if !slices.ContainsFunc(sel, func(l link) bool { return l.name == n }) {
			sel = append(sel, links[i])
		}
	}
	return sel, nil
}

// RingSize is the size of each of this capture's rings, after FitRing.
func (s *Session) RingSize() int64 { return s.cfg.Ring.Size() }

// NetNS returns the inode of the captured namespace.
func (s *Session) NetNS() uint64 { return s.netns }

// Interfaces returns the captured interfaces, in stream order; an
// all-interfaces capture may gain more while it runs.
func (s *Session) Interfaces() []Interface {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ifaces)
}

// statsInterval bounds how long kernel counters go unread: they are 32-bit
// in the kernel and would wrap after 2^32 packets. Run reads them at this
// interval from its own goroutine, whatever the readers do; Stats reads
// them on every call.
const statsInterval = time.Second

// Run reads every interface and hands packets to sink until ctx is
// cancelled (returns nil), the sink fails (returns its error), or every
// interface has gone (returns the first interface's error, wrapping
// ErrInterfaceGone). When one of several interfaces goes away, the others
// keep running; in an all-interfaces capture, interfaces created in the
// netns join (Sink.AddInterface). Run closes all rings before it returns;
// Stats then holds the final counters. Run may be called only once.
//
// One goroutine, the caller's, reads all rings and calls the Sink (see
// poller_linux.go for why not one per ring).
func (s *Session) Run(ctx context.Context, sink Sink) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return errors.New("capture: session already run or closed")
	}
	s.started = true
	rings := slices.Clone(s.rings)
	ifaces := slices.Clone(s.ifaces)
	s.stats = make([]Stats, len(rings))
	s.done = make([]bool, len(rings))
	s.mu.Unlock()
	defer s.closeAll()

	pl, err := newPoller()
	if err != nil {
		for i, r := range rings {
			s.finish(i, r, err)
		}
		return &OpError{Op: OpRead, NetNS: s.netns, Err: err}
	}
	defer pl.close()
	rd := &reader{s: s, pl: pl, sink: sink, unordered: s.cfg.Unordered}
	s.mu.Lock()
	s.rd = rd
	rd.offered.Store(len(s.ended) > 0)
	s.mu.Unlock()
	defer func() { // before pl.close: EndTarget must not wake a closed poller
		s.mu.Lock()
		s.rd = nil
		s.mu.Unlock()
	}()
	for i, r := range rings {
		rd.active = append(rd.active, &readerRing{r: r, ifc: ifaces[i], p: Packet{Interface: i}})
	}
	for _, rr := range rd.active {
		if err := pl.add(rr.r.fd, rr.p.Interface); err != nil {
			err = &OpError{Op: OpRead, NetNS: rr.ifc.NetNS, Interface: rr.ifc.Name, Err: err}
			rd.end(err) // every ring, watched or not
			return err
		}
	}
	watched := slices.ContainsFunc(s.targets, func(t *target) bool { return t.mon != nil })
	if len(rings) == 0 && !watched {
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Stops the reader and the link watcher once ctx ends; Run cancels ctx
	// itself when the reader returns, and waits for this to have run.
	stopped := make(chan struct{})
	context.AfterFunc(ctx, func() {
		defer close(stopped)
		pl.stop()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range s.targets {
			if t.mon != nil {
				t.mon.stop()
			}
		}
	})

	var wg sync.WaitGroup
	var watchMu sync.Mutex
	var watchErr error
	for ti, t := range s.targets {
		if t.mon == nil {
			continue
		}
		wg.Go(func() {
			if err := s.watchLinks(ctx, ti, rd.offer); err != nil {
				watchMu.Lock()
				watchErr = cmp.Or(watchErr, err)
				watchMu.Unlock()
				cancel()
			}
		})
	}
	for _, t := range s.targets {
		if t.exclCh == nil {
			continue
		}
		wg.Go(func() { s.watchExclusions(ctx, t, rd) })
	}
	// The kernel counters are read here too, not only by the reader: a
	// reader blocked in the Sink (a stalled client) reads nothing, and
	// that is when the kernel counts drops.
	wg.Go(func() {
		t := time.NewTicker(statsInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				s.pollStats()
			}
		}
	})
	err = rd.run()
	cancel()
	<-stopped
	wg.Wait()
	rd.end(err)
	if err == nil && watchErr != nil {
		err = watchErr
	}
	return err
}

// reader is the one goroutine reading a session's rings.
type reader struct {
	s    *Session
	pl   *poller
	sink Sink

	active    []*readerRing
	gone      error // why the first interface left the set
	unordered bool  // Config.Unordered: nothing is held back

	mu      sync.Mutex // guards pending and ended
	pending []*readerRing
	ended   bool
	// offered says takeOffers has work: rings offered, targets ended,
	// exclusions changed; looked at even while busy.
	offered atomic.Bool
}

type readerRing struct {
	r    *ring
	ifc  Interface
	p    Packet // the ring's next packet (when has), reused
	has  bool   // p holds the ring's next packet, not yet taken
	seen bool   // a packet was read since the last presence check
	// heldSince is when merge first held p back (zero: not held).
	heldSince time.Time
}

// offer hands the reader a ring of an interface that joined; it announces
// the interface to the Sink and starts reading it. Safe from any
// goroutine; after the reader has ended, the ring is closed.
func (rd *reader) offer(i int, r *ring, ifc Interface) {
	rd.mu.Lock()
	if rd.ended {
		rd.mu.Unlock()
		rd.s.finish(i, r, errStopped)
		return
	}
	rd.pending = append(rd.pending, &readerRing{r: r, ifc: ifc, p: Packet{Interface: i}})
	rd.offered.Store(true)
	rd.mu.Unlock()
	rd.pl.wake()
}

// takeOffers does what offered announced: it starts reading the rings
// offered since, drops the interfaces of targets EndTarget ended, and
// gives the rings of a target whose exclusions changed the new program (a
// ring opened meanwhile may carry the old one). The reader calls it only
// when offered was set, so it may look at everything.
func (rd *reader) takeOffers() error {
	rd.mu.Lock()
	offers := rd.pending
	rd.pending = nil
	rd.mu.Unlock()
	for k, rr := range offers {
		if err := rd.sink.AddInterface(rr.p.Interface, rr.ifc); err != nil {
			for _, o := range offers[k:] {
				rd.s.finish(o.p.Interface, o.r, err)
			}
			return err
		}
		if err := rd.pl.add(rr.r.fd, rr.p.Interface); err != nil {
			rd.s.finish(rr.p.Interface, rr.r, err)
			continue // the capture goes on without it, as when opening fails
		}
		rd.active = append(rd.active, rr)
	}
	// After the offers: an interface of an ended target that was offered
	// meanwhile is announced, then dropped like the others, so that its
	// final counters follow an IDB as every interface's do (see end).
	rd.s.mu.Lock()
	ended := maps.Clone(rd.s.ended)
	excl := make([]exclusion, len(rd.s.targets))
	for i, t := range rd.s.targets {
		excl[i] = exclusion{t.excl, t.exclGen}
	}
	rd.s.mu.Unlock()
	for k := len(rd.active) - 1; k >= 0; k-- {
		rr := rd.active[k]
		if err, ok := ended[rr.ifc.Target]; ok {
			rd.drop(k, err)
			continue
		}
		e := excl[rr.ifc.Target]
		if rr.r.exclGen == e.gen {
			continue
		}
		prog, err := excludeProgram(rr.r.filterType, e.eps, rr.r.userProg)
		if err == nil {
			err = rr.r.setFilter(prog)
		}
		if err != nil {
			// Kept going with the old program, the interface would take in
			// what it must leave out (the service's own stream): it ends,
			// saying why.
			rd.drop(k, &OpError{Op: OpSetFilter, NetNS: rr.ifc.NetNS, Interface: rr.ifc.Name, Err: err})
			continue
		}
		rr.r.exclGen = e.gen
	}
	return nil
}

// exclusion is one target's Config.Exclude endpoints and their
// generation.
type exclusion struct {
	eps []netip.AddrPort
	gen uint64
}

// watchExclusions follows the changes of target t's exclusions until ctx
// ends, and has the reader attach the new programs.
func (s *Session) watchExclusions(ctx context.Context, t *target, rd *reader) {
	for {
		s.mu.Lock()
		ch := t.exclCh
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		eps, next := s.cfg.Exclude.In(t.ino)
		s.mu.Lock()
		same := slices.Equal(eps, t.excl)
		t.excl, t.exclCh = eps, next
		if !same {
			t.exclGen++
		}
		s.mu.Unlock()
		if !same {
			rd.offered.Store(true)
			rd.pl.wake()
		}
	}
}

// anyNew reports whether a ring without a packet at hand has a block
// for the reader.
func (rd *reader) anyNew() bool {
	for _, rr := range rd.active {
		if !rr.has && rr.r.ready(rr.r.cur) {
			return true
		}
	}
	return false
}

// mergeBudget bounds the packets of one merge call, so that a reader that
// never runs out of work still gets to its housekeeping.
const mergeBudget = 4096

// ReorderWindow is how long the reader holds a packet back while another
// captured interface has nothing to compare it with: a packet reaches the
// reader only when its block is handed over, up to the block timeout
// after it was captured, so a packet of a quiet interface may still come
// that is older. Within it, the stream is in timestamp order across all
// interfaces (docs/capture-engine.md).
const ReorderWindow = 8 * time.Millisecond

// merge hands the rings' packets to the Sink in timestamp order: each
// ring's next packet is at hand (its head), and the oldest head goes
// first. While some ring has no packet at hand and the oldest head is
// younger than ReorderWindow, it is held back, hold says for how long
// (at most ReorderWindow in all, measured on the monotonic clock too, so
// that a step of the wall clock cannot hold a packet longer). A single
// ring needs no wait.
func (rd *reader) merge() (progressed bool, hold time.Duration, err error) {
	now := time.Now().UnixNano()
	// A ring without a packet at hand is looked at once per call, not per
	// packet: within the call only the ring a packet came from is read on.
	// A block that a quiet ring hands over meanwhile holds packets at most
	// a block timeout old, younger than any packet released while that
	// ring had nothing (the hold below), so the order holds.
	for _, rr := range rd.active {
		if !rr.has {
			rr.has = rr.r.head(&rr.p)
		}
	}
	for range mergeBudget {
		var best *readerRing
		all := true
		for _, rr := range rd.active {
			if !rr.has {
				all = false
				continue
			}
			if best == nil || rr.p.Timestamp < best.p.Timestamp {
				best = rr
			}
		}
		if best == nil {
			return progressed, 0, nil
		}
		if !all && !rd.unordered && best.p.Timestamp > now-int64(ReorderWindow) {
			if d := best.holdFor(); d > 0 {
				return progressed, d, nil
			}
		}
		progressed, best.seen, best.heldSince = true, true, time.Time{}
		if err := rd.sink.WritePacket(&best.p); err != nil {
			best.p.Data = nil
			best.has = false
			best.r.closeBlock() // the refused packet and the rest: skipped
			return true, 0, err
		}
		best.r.taken(&best.p)
		best.has = best.r.head(&best.p)
	}
	return progressed, 0, nil
}

// holdFor returns how much longer rr's packet is held back while
// another ring has nothing to compare it with: until it is ReorderWindow
// old, or was held that long (a clock stepped back); 0 lets it go. It
// reads the clock itself, not the merge call's: a write earlier in the
// call may have blocked for long (a slow client), and the hold must count
// from now. merge calls it once per call in the steady state: either the
// call returns to hold, or a packet held for the window goes.
func (rr *readerRing) holdFor() time.Duration {
	now := time.Now()
	young := time.Duration(rr.p.Timestamp + int64(ReorderWindow) - now.UnixNano())
	if young <= 0 {
		return 0
	}
	if rr.heldSince.IsZero() {
		rr.heldSince = now
	}
	return max(min(young, ReorderWindow-now.Sub(rr.heldSince)), 0)
}

// drop ends interface k of the reader's set: its ring is closed (err
// says why), its final counters kept; the first such error is what run
// returns once no interface is left.
func (rd *reader) drop(k int, err error) {
	rr := rd.active[k]
	rd.pl.remove(rr.r.fd)
	rd.active = slices.Delete(rd.active, k, k+1)
	rd.s.finish(rr.p.Interface, rr.r, err)
	if rd.gone == nil {
		rd.gone = err
	}
}

// run reads until the poller is stopped (nil), the Sink fails (its error),
// a ring fails (that error) or every interface is gone (the first one's
// error, wrapping ErrInterfaceGone).
func (rd *reader) run() error {
	drop := rd.drop
	opErr := func(rr *readerRing, op string, err error) error {
		return &OpError{Op: op, NetNS: rr.ifc.NetNS, Interface: rr.ifc.Name, Err: err}
	}
	// checkErrs handles the socket errors the last wait reported.
	checkErrs := func() error {
		for _, id := range rd.pl.errs {
			k := slices.IndexFunc(rd.active, func(rr *readerRing) bool { return rr.p.Interface == id })
			if k < 0 {
				continue
			}
			rr := rd.active[k]
			err := rr.r.sockError()
			switch {
			case err == nil:
			case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
				// The kernel says ENETDOWN both when the interface goes
				// down and when it is unregistered; only the second ends
				// this interface. After a down, delivery resumes when it
				// comes up.
				if !rr.r.present(rr.ifc.Index, rr.ifc.Name) {
					drop(k, opErr(rr, OpRead, ErrInterfaceGone))
				}
			default:
				return opErr(rr, OpRead, err)
			}
		}
		return nil
	}
	// checkQuiet drops interfaces that read nothing since the last check
	// and no longer exist: one that vanished while down gets no socket
	// error from the kernel.
	checkQuiet := func() {
		for k := len(rd.active) - 1; k >= 0; k-- {
			rr := rd.active[k]
			if !rr.seen && !rr.r.present(rr.ifc.Index, rr.ifc.Name) {
				drop(k, opErr(rr, OpRead, ErrInterfaceGone))
			} else {
				rr.seen = false
			}
		}
	}
	ever := len(rd.active) > 0
	nextCheck := time.Now().Add(statsInterval)
	for {
		progressed, hold, err := rd.merge()
		if err != nil {
			return err
		}
		if rd.pl.stopped.Load() {
			return nil
		}
		if progressed {
			// Busy, perhaps for as long as the client is slower than the
			// traffic: the housekeeping of a quiet moment must not wait
			// for one. Joining interfaces are taken at once, the rest
			// once a second.
			if rd.offered.Swap(false) {
				if err := rd.takeOffers(); err != nil {
					return err
				}
			}
			if now := time.Now(); !now.Before(nextCheck) {
				rd.pl.poll()
				if err := checkErrs(); err != nil {
					return err
				}
				checkQuiet()
				nextCheck = now.Add(statsInterval)
				if len(rd.active) == 0 {
					return rd.gone
				}
			}
			continue
		}
		if err := rd.sink.Idle(); err != nil {
			return err
		}
		if rd.offered.Swap(false) {
			if err := rd.takeOffers(); err != nil {
				return err
			}
		}
		ever = ever || len(rd.active) > 0
		if now := time.Now(); !now.Before(nextCheck) {
			checkQuiet()
			nextCheck = now.Add(statsInterval)
		}
		if ever && len(rd.active) == 0 {
			return rd.gone
		}
		deadline := nextCheck
		if h := time.Now().Add(hold); hold > 0 && h.Before(deadline) {
			deadline = h // a packet held back for ReorderWindow
		}
		err = rd.pl.wait(deadline, rd.anyNew)
		switch {
		case err == nil, errors.Is(err, errTimeout):
		case errors.Is(err, errStopped):
			return nil
		default:
			return &OpError{Op: OpRead, NetNS: rd.s.netns, Err: err}
		}
		if err := checkErrs(); err != nil {
			return err
		}
		if ever && len(rd.active) == 0 {
			return rd.gone
		}
	}
}

// end finishes every ring the reader still has, and those offered but
// not taken; it runs once the reader has stopped, on its goroutine.
// Rings of a reader that stopped normally, or because the Sink failed, go
// to the Pool; after a ring error none does. They are finished
// concurrently: handing a ring to the Pool waits a few block timeouts for
// it to empty.
func (rd *reader) end(err error) {
	rd.mu.Lock()
	rd.ended = true
	pending := rd.pending
	rings := append(rd.active, pending...)
	rd.active, rd.pending = nil, nil
	rd.mu.Unlock()
	// Announce interfaces offered but not yet taken: the caller writes
	// final counters (ISBs) for every interface of the session, which
	// must follow an IDB. A Sink that has failed writes nothing more.
	for _, rr := range pending {
		_ = rd.sink.AddInterface(rr.p.Interface, rr.ifc)
	}
	var opErr *OpError
	if !errors.As(err, &opErr) {
		err = nil // stopped, or the Sink failed: the rings are fine
	}
	var wg sync.WaitGroup
	for _, rr := range rings {
		rd.pl.remove(rr.r.fd)
		wg.Go(func() { rd.s.finish(rr.p.Interface, rr.r, err) })
	}
	wg.Wait()
}

// watchLinks takes interfaces created in target ti's netns into the
// capture: it opens a ring and offers it to the reader, which announces the
// interface to the sink (the IDB goes out before any of its packets) and
// reads it.
func (s *Session) watchLinks(ctx context.Context, ti int, offer func(int, *ring, Interface)) error {
	tg := s.targets[ti]
	for {
		links, err := tg.mon.next()
		if errors.Is(err, errStopped) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return &OpError{Op: OpListInterfaces, NetNS: tg.ino, Err: err}
		}
		for _, l := range links {
			s.mu.Lock()
			known := slices.ContainsFunc(s.ifaces, func(f Interface) bool { return f.Target == ti && f.Index == l.index })
			n := len(s.ifaces)
			s.mu.Unlock()
			if known {
				continue
			}
			if checkCaps(s.cfg, n+1, tg.ino) != nil {
				// Over a per-capture cap (interfaces that have vanished
				// count too): the capture goes on without it.
				continue
			}
			ifaces, rings, err := s.openRings(ti, tg.ns, []link{l})
			if err != nil {
				// It may be gone already, or the service's Budget is
				// exhausted; the capture goes on without it.
				continue
			}
			s.mu.Lock()
			if ctx.Err() != nil {
				s.mu.Unlock()
				rings[0].close()
				return nil
			}
			i := len(s.rings)
			s.ifaces = append(s.ifaces, ifaces[0])
			s.rings = append(s.rings, rings[0])
			s.stats = append(s.stats, Stats{})
			s.done = append(s.done, false)
			s.mu.Unlock()
			offer(i, rings[0], ifaces[0])
		}
	}
}

// finish records interface i's final counters and then closes its ring, or
// gives it to the pool when its reader stopped normally (not on a vanished
// interface or an error, after which the socket may be unusable). The
// counters are recorded, under mu, before the ring leaves this session:
// Stats never reads a ring another session may have taken.
func (s *Session) finish(i int, r *ring, err error) {
	r.closeBlock() // a block the reader was in the middle of
	st := r.final()
	s.mu.Lock()
	s.stats[i], s.done[i] = st, true
	s.mu.Unlock()
	if s.cfg.Pool != nil && err == nil {
		s.cfg.Pool.give(r.key, r, r.promisc)
	} else {
		r.close()
	}
}

// pollStats reads the kernel counters of the running readers' rings.
func (s *Session) pollStats() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.rings {
		if i < len(s.done) && !s.done[i] {
			_ = r.readStats()
		}
	}
}

// Stats returns per-interface counters: live while running (the kernel's
// read at this call), final once an interface's reader has ended.
func (s *Session) Stats() []Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Stats, len(s.rings))
	for i, r := range s.rings {
		if i < len(s.done) && s.done[i] {
			out[i] = s.stats[i]
			continue
		}
		// Under mu: finish marks the ring done under mu before giving
		// it away, so it is still this session's.
		out[i] = r.snapshot()
	}
	return out
}

// Close releases a session that was never run. After Run it does nothing:
// Run closes what it opened.
func (s *Session) Close() error {
	s.mu.Lock()
	run := s.started
	s.closed = true
	s.mu.Unlock()
	if !run {
		s.closeAll()
	}
	return nil
}

// closeAll closes the netns handle, the monitor, and rings no reader owns
// (readers close their own in finish).
func (s *Session) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		for _, r := range s.rings {
			r.close()
		}
	}
	for _, t := range s.targets {
		if t.mon != nil {
			t.mon.close()
			t.mon = nil
		}
		if t.ns != nil {
			t.ns.Close()
			t.ns = nil
		}
	}
}
