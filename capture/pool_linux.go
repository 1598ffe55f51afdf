package capture

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"github.com/packetflix/packetflix/netns"
	"golang.org/x/sys/unix"
)

// Pool keeps the rings of ended captures for a short while, so that the
// next capture of the same interface starts at once. Setting up a ring
// (PACKET_RX_RING) and tearing one down each wait for an RCU grace period
// in the kernel (synchronize_net: ~16 ms and ~32 ms here); binding an idle
// ring that is already set up does not. Clients that reconnect to the same
// container (Wireshark restarting a capture) start in well under a
// millisecond instead.
//
// A returned ring is unbound (it receives nothing), its promiscuous
// membership dropped, every packet left in it discarded and its kernel
// counters cleared before it can be taken again, and the next capture
// attaches its own filter before binding: nothing of one capture reaches
// another. Safe for concurrent use; Close releases everything.
//
// An idle ring's socket keeps its network namespace alive, and with it the
// namespace's interfaces (a veth peer elsewhere, names that a lab tool
// wants to reuse). So the pool closes an idle ring as soon as its
// namespace has no holder left but us: see watch (poolwatch_linux.go).
type Pool struct {
	ttl     time.Duration
	maxIdle int

	mu     sync.Mutex
	idle   map[poolKey][]pooled
	count  int
	closed bool
	// The watcher runs while rings are idle (watching); wakeFD is its
	// eventfd, -1 when it has none. Both change under mu only.
	watching bool
	wakeFD   int

	wg sync.WaitGroup // give's background work and the watcher
}

// poolKey says which rings are interchangeable: same netns, same interface
// (index and name, so a reused index is not mistaken), same socket and ring.
type poolKey struct {
	netns    netns.ID
	ifindex  int
	name     string
	hatype   uint16
	sockType int
	ring     RingOptions
}

type pooled struct {
	r     *ring
	since time.Time
}

// NewPool returns a pool that keeps at most maxIdle rings, each for at most
// ttl, and no longer than their network namespace lives. Each idle ring
// holds its kernel memory (RingOptions: 8 MiB by default). An empty pool
// runs no goroutine.
func NewPool(maxIdle int, ttl time.Duration) *Pool {
	return &Pool{ttl: ttl, maxIdle: maxIdle, idle: map[poolKey][]pooled{}, wakeFD: -1}
}

// take returns an idle ring for k, or nil.
func (p *Pool) take(k poolKey) *ring {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := p.idle[k]
	if len(rs) == 0 {
		return nil
	}
	r := rs[len(rs)-1].r
	p.idle[k] = rs[:len(rs)-1]
	p.count--
	if p.count == 0 {
		p.wakeLocked() // so that the watcher ends
	}
	return r
}

// give takes a ring whose reader has ended and readies it for reuse in the
// background; if it cannot be reused, it is closed. The caller must not
// touch r afterwards.
func (p *Pool) give(k poolKey, r *ring, promisc bool) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		r.close()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		if err := r.idle(k.ifindex, promisc); err != nil {
			r.close()
			return
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed || p.count >= p.maxIdle {
			r.close()
			return
		}
		p.idle[k] = append(p.idle[k], pooled{r: r, since: time.Now()})
		p.count++
		p.watchLocked()
	}()
}

// expire closes rings idle longer than the TTL and returns when the next
// one will be.
func (p *Pool) expire(now time.Time) (next time.Time) {
	var old []*ring
	p.mu.Lock()
	for k, rs := range p.idle {
		keep := rs[:0]
		for _, x := range rs {
			if now.Sub(x.since) >= p.ttl {
				old = append(old, x.r)
				p.count--
			} else {
				keep = append(keep, x)
				if at := x.since.Add(p.ttl); next.IsZero() || at.Before(next) {
					next = at
				}
			}
		}
		if len(keep) == 0 {
			delete(p.idle, k)
		} else {
			p.idle[k] = keep
		}
	}
	p.mu.Unlock()
	for _, r := range old {
		r.close()
	}
	return next
}

// Idle returns how many rings wait for reuse.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

// Close closes every idle ring and waits for rings being readied.
func (p *Pool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.wakeLocked()
	idle := p.idle
	p.idle, p.count = nil, 0
	p.mu.Unlock()
	p.wg.Wait()
	for _, rs := range idle {
		for _, x := range rs {
			x.r.close()
		}
	}
}

// dropAll is a filter that accepts nothing.
var dropAll = []unix.SockFilter{{Code: 0x06 /* BPF_RET|BPF_K */, K: 0}}

// idle stops the ring receiving and empties it. It cannot be unbound:
// bind(2) with protocol 0 keeps the socket's protocol (packet_bind), so a
// filter that accepts nothing is attached instead; the kernel runs it per
// packet, which costs next to nothing. The kernel's retire timer then hands
// over the partly filled block within two block timeouts, and every block
// is returned unread. (reuse also skips any packet older than itself.)
func (r *ring) idle(ifindex int, promisc bool) error {
	if err := r.setFilter(dropAll); err != nil {
		return fmt.Errorf("drop-all: %w", err)
	}
	if promisc {
		mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(r.fd, unix.SOL_PACKET, unix.PACKET_DROP_MEMBERSHIP, &mreq); err != nil {
			return fmt.Errorf("drop promiscuous membership: %w", err)
		}
	}
	time.Sleep(3*r.tov + time.Millisecond)
	for i := 0; i < r.nb && r.ready(r.cur); i++ {
		r.release()
	}
	if r.ready(r.cur) {
		return fmt.Errorf("ring still filling with a drop-all filter")
	}
	if _, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err != nil {
		return err
	}
	_, _ = unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	return nil
}

// reuse readies an idle ring for a new capture: its filter replaces the
// drop-all one in one step, so nothing unfiltered gets in, and the bind
// (to the same interface) keeps the socket hooked. The socket keeps the
// netns it was made in, so no setns is needed.
func (r *ring) reuse(ifindex int, prog []unix.SockFilter, promisc bool) error {
	r.notBefore = time.Now().UnixNano()
	if err := r.setFilter(prog); err != nil {
		return err
	}
	if err := unix.Bind(r.fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	if promisc {
		mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(r.fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return fmt.Errorf("%s: %w", OpPromisc, err)
		}
	}
	if e, _ := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 && syscall.Errno(e) != unix.ENETDOWN {
		return fmt.Errorf("bind: %w", syscall.Errno(e))
	}
	// The kernel's counters were cleared by idle, with a filter that
	// accepts nothing attached since: from the filter attached above on,
	// what the kernel counts belongs to the new capture.
	r.statsMu.Lock()
	r.delivered.Store(0)
	r.bytes.Store(0)
	r.skipped.Store(0)
	r.kernPackets.Store(0)
	r.kernDrops.Store(0)
	r.statsMu.Unlock()
	return nil
}

// Evict closes the idle rings of namespaces for which live reports false:
// an idle ring keeps its namespace alive, which must not outlast the
// container it belonged to. The pool's own watcher calls it when a
// namespace may have lost its last holder.
func (p *Pool) Evict(live func(ino uint64) bool) {
	var gone []*ring
	p.mu.Lock()
	for k, rs := range p.idle {
		if !live(k.netns.Ino) {
			for _, x := range rs {
				gone = append(gone, x.r)
			}
			p.count -= len(rs)
			delete(p.idle, k)
		}
	}
	if len(gone) > 0 && p.count == 0 {
		p.wakeLocked()
	}
	p.mu.Unlock()
	for _, r := range gone {
		r.close()
	}
}
