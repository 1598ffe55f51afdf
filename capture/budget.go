package capture

import (
	"sync"
	"sync/atomic"
)

// Budget is the ring memory a whole service may have locked in kernel
// rings at once, shared by every capture whose Config names it. A ring is
// charged when it is opened and released when it is closed; a ring idle in
// a Pool stays charged (it still holds its memory), and a capture that does
// not fit makes the Pool close idle rings, oldest first, before it is
// refused with ErrRingMemory. No cgroup accounts for this memory (it is
// locked with MAP_LOCKED and belongs to the kernel's socket), so this is
// the only bound on it. Safe for concurrent use.
type Budget struct {
	max   int64
	mu    sync.Mutex
	inUse atomic.Int64 // written under mu
}

// NewBudget returns a budget of max bytes; max <= 0 means no cap (the
// memory in use is still counted).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Max returns the cap in bytes, 0 for none.
func (b *Budget) Max() int64 {
	if b == nil {
		return 0
	}
	return max(b.max, 0)
}

// InUse returns the bytes charged now: rings of running captures, rings
// being readied for the Pool and idle rings in it.
func (b *Budget) InUse() int64 {
	if b == nil {
		return 0
	}
	return b.inUse.Load()
}

// tryCharge charges n bytes if they fit.
func (b *Budget) tryCharge(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.max > 0 && b.inUse.Load()+n > b.max {
		return false
	}
	b.inUse.Add(n)
	return true
}

// charge charges n bytes, first closing idle rings of p when they do not
// fit, or returns a *LimitError wrapping ErrRingMemory. A nil budget
// charges nothing.
func (b *Budget) charge(n int64, p *Pool) error {
	if b == nil || n <= 0 {
		return nil
	}
	if b.tryCharge(n) {
		return nil
	}
	// Closing idle rings releases their charge (ring.close).
	if p.reclaim(b.inUse.Load() + n - b.max); b.tryCharge(n) {
		return nil
	}
	return &LimitError{Err: ErrRingMemory, Want: n, Max: b.max, InUse: b.inUse.Load()}
}

// release gives back n charged bytes.
func (b *Budget) release(n int64) {
	if b == nil || n <= 0 {
		return
	}
	b.mu.Lock()
	b.inUse.Add(-n)
	b.mu.Unlock()
}
