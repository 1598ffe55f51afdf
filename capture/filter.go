package capture

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcap"
	"golang.org/x/sys/unix"
)

// MaxFilterInstructions is the kernel's limit for a classic BPF program
// (BPF_MAXINSNS).
const MaxFilterInstructions = 4096

// The filter compilation budget; see the package doc, "Filter
// compilation". libpcap's optimizer is super-linear: 250 "port N" terms
// joined by "or" (3.2 KB) keep a core busy for minutes, and a name makes it
// call getaddrinfo. So every compile runs in a child process that enforces
// these limits on itself.
const (
	// FilterCPUBudget is the CPU time one compile may use (RLIMIT_CPU of
	// the child; the kernel kills it with SIGKILL there). Whole seconds:
	// RLIMIT_CPU has a granularity of one second.
	FilterCPUBudget = time.Second
	// FilterMemoryBudget is the address space one compile may add to what
	// the freshly started child already maps (RLIMIT_AS of the child).
	FilterMemoryBudget = 256 << 20
	// FilterCompileTimeout is the wall-clock limit of one compile,
	// including waiting for the CPU on a loaded machine; at the deadline
	// the child is killed.
	FilterCompileTimeout = 5 * time.Second
	// MaxFilterLen is the longest expression compiled at all.
	MaxFilterLen = 64 << 10
)

// filterCacheSize bounds the cache of compiled programs: at most 4096
// instructions (32 KiB) plus the expression each.
const filterCacheSize = 64

// maxConcurrentFilterCompiles bounds the children compiling at once: each
// may use a core for FilterCPUBudget and FilterMemoryBudget of memory.
func maxConcurrentFilterCompiles() int {
	return min(max(4, runtime.NumCPU()), 16)
}

// filters is the service-wide compiler every session uses.
var filters = newFilterCompiler(maxConcurrentFilterCompiles(), filterCacheSize)

// compileFilter turns a tcpdump expression into a classic BPF program for
// linkType whose accept value is snaplen: the kernel truncates each packet
// to the filter's return value, which is how snaplen is applied on an
// AF_PACKET socket. An empty expression yields the one-instruction program
// "accept snaplen bytes". It returns ErrBadFilter or ErrFilterTooComplex
// for a filter the user must change, and ctx's error once ctx ends (the
// compile is then killed unless another session waits for it too).
//
// libpcap compiles offline here (pcap_open_dead), so "vlan" expressions test
// the in-packet TPID, which the kernel has already stripped; see
// docs/capture-engine.md, "Filters compiled offline".
func compileFilter(ctx context.Context, linkType uint16, snaplen int, expr string) ([]unix.SockFilter, error) {
	if strings.TrimSpace(expr) == "" {
		return []unix.SockFilter{{Code: 0x06 /* BPF_RET|BPF_K */, K: uint32(snaplen)}}, nil
	}
	if len(expr) > MaxFilterLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrBadFilter, MaxFilterLen)
	}
	return filters.compile(ctx, filterKey{expr: expr, linkType: linkType, snaplen: snaplen})
}

// compileFilters compiles expr for each link type at once. A filter may
// compile for one link type and not another ("ether host" on raw IP), so
// it returns the programs that compiled and the first error; but a filter
// over budget, or ctx ending, fails them all at once.
func compileFilters(ctx context.Context, snaplen int, expr string, linkTypes ...uint16) (map[uint16][]unix.SockFilter, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		lt   uint16
		prog []unix.SockFilter
		err  error
	}
	ch := make(chan result, len(linkTypes))
	var wg sync.WaitGroup
	for _, lt := range linkTypes {
		wg.Go(func() {
			p, err := compileFilter(ctx, lt, snaplen, expr)
			if err != nil && !errors.Is(err, ErrBadFilter) {
				cancel() // too complex, or ctx ended: the others need not finish
			}
			ch <- result{lt, p, err}
		})
	}
	wg.Wait()
	close(ch)
	progs := map[uint16][]unix.SockFilter{}
	var bad, fatal error
	for r := range ch {
		switch {
		case r.err == nil:
			progs[r.lt] = r.prog
		case errors.Is(r.err, ErrBadFilter):
			if bad == nil {
				bad = r.err
			}
		case fatal == nil || errors.Is(r.err, ErrFilterTooComplex):
			fatal = r.err
		}
	}
	if fatal != nil {
		return nil, fatal
	}
	return progs, bad
}

// compileInProcess runs libpcap in this process. Only the compiler child
// (and the benchmark) call it: gopacket serialises pcap_compile behind one
// global lock, and nothing here bounds its time or memory.
func compileInProcess(linkType uint16, snaplen int, expr string) ([]unix.SockFilter, error) {
	insns, err := pcap.CompileBPFFilter(dlt(linkType), snaplen, expr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadFilter, cleanPcapErr(err))
	}
	if len(insns) > MaxFilterInstructions {
		return nil, fmt.Errorf("%w: %d BPF instructions, the kernel takes at most %d",
			ErrBadFilter, len(insns), MaxFilterInstructions)
	}
	prog := make([]unix.SockFilter, len(insns))
	for i, in := range insns {
		prog[i] = unix.SockFilter{Code: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return prog, nil
}

// dlt maps a LINKTYPE_* value to the DLT_* value libpcap's pcap_open_dead
// takes; they differ for raw IP (LINKTYPE_RAW 101 is DLT_RAW 12 on Linux).
func dlt(linkType uint16) layers.LinkType {
	if linkType == LinkTypeRaw {
		return 12
	}
	return layers.LinkType(linkType)
}

// cleanPcapErr drops libpcap's generic prefix so that the message a user
// sees starts with what is wrong, and explains a host name that was not
// resolved: the compiler has no network (see the package doc), so libpcap
// says "unknown host 'NAME'" for any name not in /etc/hosts.
func cleanPcapErr(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "can't parse filter expression: ")
	if rest, ok := strings.CutPrefix(s, "unknown host '"); ok {
		name, _, _ := strings.Cut(rest, "'")
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		return fmt.Sprintf("host name %q is not looked up (no DNS); use an address", name)
	}
	return s
}

// filterKey is what a compiled program depends on.
type filterKey struct {
	expr     string
	linkType uint16
	snaplen  int
}

// filterResult is one compile's outcome. cache says whether it is the
// filter's own (a program, a syntax error, a budget the filter exceeded)
// rather than the moment's (cancelled, a wall-clock deadline missed on a
// busy machine, a failure to start the child).
type filterResult struct {
	prog  []unix.SockFilter
	err   error
	cache bool
}

// flight is one compile in progress, shared by every caller asking for the
// same key. The compiler's run goroutine owns it and closes done.
type flight struct {
	done    chan struct{}
	res     filterResult // written before done is closed
	waiters int          // guarded by filterCompiler.mu
	cancel  context.CancelFunc
}

// filterCompiler runs compiles in child processes: at most one per key at
// a time (singleflight), at most cap(slots) at once, with an LRU cache of
// results. Its methods may be called from any goroutine.
type filterCompiler struct {
	slots chan struct{}
	// The budget of each compile: FilterCPUBudget, FilterMemoryBudget and
	// FilterCompileTimeout unless a test changes them.
	cpu  time.Duration
	mem  uint64
	wall time.Duration
	// run compiles one key; runChild in production.
	run func(ctx context.Context, k filterKey) filterResult
	// onStart, if set, is called with each child's PID once it runs
	// (tests).
	onStart func(pid int)
	started atomic.Int64 // children started

	mu      sync.Mutex
	flights map[filterKey]*flight
	lru     *list.List // of *cacheEntry, most recent first
	cached  map[filterKey]*list.Element
	size    int
}

type cacheEntry struct {
	key filterKey
	res filterResult
}

func newFilterCompiler(concurrency, cacheSize int) *filterCompiler {
	c := &filterCompiler{
		slots:   make(chan struct{}, concurrency),
		cpu:     FilterCPUBudget,
		mem:     FilterMemoryBudget,
		wall:    FilterCompileTimeout,
		flights: map[filterKey]*flight{},
		lru:     list.New(),
		cached:  map[filterKey]*list.Element{},
		size:    cacheSize,
	}
	c.run = c.runChild
	return c
}

// compile returns k's program: from the cache, from a compile another
// caller already started, or from a new one. When ctx ends, it stops
// waiting; if no caller is left, the compile is killed and compile returns
// only once the child is gone.
func (c *filterCompiler) compile(ctx context.Context, k filterKey) ([]unix.SockFilter, error) {
	c.mu.Lock()
	if e, ok := c.cached[k]; ok {
		c.lru.MoveToFront(e)
		res := e.Value.(*cacheEntry).res
		c.mu.Unlock()
		return res.prog, res.err
	}
	f := c.flights[k]
	if f == nil {
		// Detached from ctx: the compile belongs to every waiter, and ends
		// when the last one leaves (or at the child's own deadline).
		fctx, cancel := context.WithCancel(context.Background())
		f = &flight{done: make(chan struct{}), cancel: cancel}
		c.flights[k] = f
		go c.fly(fctx, k, f)
	}
	f.waiters++
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.res.prog, f.res.err
	case <-ctx.Done():
	}
	c.mu.Lock()
	f.waiters--
	last := f.waiters == 0
	if last && c.flights[k] == f {
		delete(c.flights, k) // a later caller starts afresh
	}
	c.mu.Unlock()
	if last {
		f.cancel()
		<-f.done // the child is killed and reaped: nothing outlives the request
	}
	return nil, ctx.Err()
}

// fly runs one flight: waits for a slot, compiles, caches, and wakes the
// waiters.
func (c *filterCompiler) fly(ctx context.Context, k filterKey, f *flight) {
	defer f.cancel()
	var res filterResult
	select {
	case c.slots <- struct{}{}:
		res = c.run(ctx, k)
		<-c.slots
	case <-ctx.Done():
		res = filterResult{err: ctx.Err()}
	}
	c.mu.Lock()
	if c.flights[k] == f {
		delete(c.flights, k)
	}
	if _, dup := c.cached[k]; res.cache && c.size > 0 && !dup {
		// dup: a flight whose waiters had all left finished after a newer
		// one for the same key had already cached its result.
		c.cached[k] = c.lru.PushFront(&cacheEntry{key: k, res: res})
		if c.lru.Len() > c.size {
			old := c.lru.Remove(c.lru.Back()).(*cacheEntry)
			delete(c.cached, old.key)
		}
	}
	c.mu.Unlock()
	f.res = res
	close(f.done)
}
