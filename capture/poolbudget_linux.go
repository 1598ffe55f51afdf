package capture

import (
	"slices"
	"time"
)

// reclaim closes idle rings, oldest first, until at least need bytes of
// ring memory are released or none is left, and returns the bytes
// released: the Budget asks for it before it refuses a capture, because
// an idle ring is only a start-up shortcut, while a refused capture gets
// nothing. Rings still being readied by give are not idle yet and stay.
func (p *Pool) reclaim(need int64) (freed int64) {
	if p == nil || need <= 0 {
		return 0
	}
	type idleRing struct {
		k     poolKey
		r     *ring
		since time.Time
	}
	var all []idleRing
	p.mu.Lock()
	for k, rs := range p.idle {
		for _, x := range rs {
			all = append(all, idleRing{k, x.r, x.since})
		}
	}
	slices.SortFunc(all, func(a, b idleRing) int { return a.since.Compare(b.since) })
	var gone []*ring
	for _, x := range all {
		if freed >= need {
			break
		}
		rs := p.idle[x.k]
		i := slices.IndexFunc(rs, func(y pooled) bool { return y.r == x.r })
		if len(rs) == 1 {
			delete(p.idle, x.k)
		} else {
			p.idle[x.k] = slices.Delete(rs, i, i+1)
		}
		p.count--
		gone = append(gone, x.r)
		freed += x.r.charged
	}
	if len(gone) > 0 && p.count == 0 {
		p.wakeLocked() // so that the watcher ends, as take does
	}
	p.mu.Unlock()
	for _, r := range gone {
		r.close()
	}
	return freed
}
