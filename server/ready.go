package server

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Defaults for how long /readyz trusts a discovery result. A kubelet probes
// every few seconds on every node; a full discovery walks /proc, enters
// every namespace and asks every container engine, so a probe reuses a
// recent answer: a good one for DefaultReadyCacheAge, a failure for
// readyFailAge, so that a recovered engine is seen soon.
const (
	DefaultReadyCacheAge = 30 * time.Second
	readyFailAge         = 5 * time.Second
)

// readyCache holds the last discovery result that /readyz reports. Listings
// that clients ask for (/discover/mobyshark) refresh it too. Safe for
// concurrent use; one probe at a time runs a discovery, others wait for
// its result.
type readyCache struct {
	run sync.Mutex // held by the probe that runs a discovery

	mu    sync.Mutex
	at    time.Time // zero: nothing yet
	check Check
}

// note records a listing's outcome.
func (c *readyCache) note(name string, n int, took time.Duration, err error) {
	ck := Check{OK: true, Detail: fmt.Sprintf("%s: %d targets in %v", name, n, took.Round(time.Millisecond))}
	if err != nil {
		ck = Check{OK: false, Detail: err.Error()}
	}
	c.mu.Lock()
	c.at, c.check = time.Now(), ck
	c.mu.Unlock()
}

// fresh returns the cached check when it is younger than maxAge (or
// readyFailAge for a failure).
func (c *readyCache) fresh(maxAge time.Duration) (Check, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return Check{}, false
	}
	age := time.Since(c.at)
	if !c.check.OK {
		maxAge = min(maxAge, readyFailAge)
	}
	if age >= maxAge {
		return Check{}, false
	}
	ck := c.check
	ck.Detail += fmt.Sprintf(" (%v ago)", age.Round(time.Second))
	return ck, true
}

// discoveryCheck answers /readyz's discovery check from a recent result,
// or runs one listing when there is none.
func (s *Server) discoveryCheck(ctx context.Context) Check {
	if ck, ok := s.ready.fresh(s.cfg.ReadyCacheAge); ok {
		return ck
	}
	s.ready.run.Lock()
	defer s.ready.run.Unlock()
	// Another probe may have run it while this one waited.
	if ck, ok := s.ready.fresh(s.cfg.ReadyCacheAge); ok {
		return ck
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	ts, err := s.cfg.Discovery.List(ctx)
	s.ready.note(discoveryName(s.cfg), len(ts), time.Since(start), err)
	ck, _ := s.ready.fresh(s.cfg.ReadyCacheAge + time.Second)
	if err != nil {
		// A failure is reported even when readyFailAge is 0.
		ck = Check{OK: false, Detail: err.Error()}
	}
	return ck
}
