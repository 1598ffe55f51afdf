package capture_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
)

// smallRing keeps the many rings of these tests cheap: 128 KiB each.
var smallRing = capture.RingOptions{BlockSize: 64 << 10, NumBlocks: 2}

// A capture over a per-capture cap is refused before any ring is opened,
// with the cap and the count in the error.
func TestIntegrationCaptureCaps(t *testing.T) {
	n := testns.New(t)
	n.VethPairs(20) // 41 interfaces with lo
	h := n.Open()
	b := capture.NewBudget(0)
	for _, tc := range []struct {
		name      string
		cfg       capture.Config
		sentinel  error
		want, max int64
	}{
		{"interfaces", capture.Config{MaxInterfaces: 16}, capture.ErrTooManyInterfaces, 41, 16},
		{"memory", capture.Config{MaxRingMemory: 10 * smallRing.Size()}, capture.ErrSessionRingMemory, 41 * smallRing.Size(), 10 * smallRing.Size()},
		{"named", capture.Config{MaxInterfaces: 2, Interfaces: []string{"va0", "vb0", "lo"}}, capture.ErrTooManyInterfaces, 3, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.NetNS, cfg.Ring, cfg.Budget = h, smallRing, b
			s, err := capture.Open(cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded over a cap")
			}
			var le *capture.LimitError
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &le) {
				t.Fatalf("Open: %v, want a LimitError wrapping %v", err, tc.sentinel)
			}
			if le.Want != tc.want || le.Max != tc.max {
				t.Errorf("LimitError want=%d max=%d, expected want=%d max=%d", le.Want, le.Max, tc.want, tc.max)
			}
			if b.InUse() != 0 {
				t.Errorf("budget in use %d after a refused capture, want 0", b.InUse())
			}
			t.Log(err)
		})
	}
	// At the cap exactly: accepted.
	s, err := capture.Open(capture.Config{NetNS: h, Ring: smallRing, Budget: b, MaxInterfaces: 41, MaxRingMemory: 41 * smallRing.Size()})
	if err != nil {
		t.Fatalf("Open at the caps: %v", err)
	}
	if got, want := b.InUse(), 41*smallRing.Size(); got != want {
		t.Errorf("budget in use %d, want %d", got, want)
	}
	s.Close()
	if b.InUse() != 0 {
		t.Errorf("budget in use %d after Close, want 0", b.InUse())
	}
}

// The service-wide budget counts idle rings of the pool, refuses a capture
// that does not fit, and has the pool give its idle rings back before it
// refuses one.
func TestIntegrationRingBudget(t *testing.T) {
	a, c := testns.New(t), testns.New(t)
	a.VethPairs(1) // lo, va0, vb0
	c.VethPairs(1)
	ha, hc := a.Open(), c.Open()
	size := smallRing.Size()
	b := capture.NewBudget(4 * size)
	pool := capture.NewPool(8, time.Minute)
	t.Cleanup(pool.Close)
	cfg := func() capture.Config {
		return capture.Config{Ring: smallRing, Budget: b, Pool: pool}
	}
	ca := cfg()
	ca.NetNS = ha
	first, err := capture.Open(ca)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.InUse(); got != 3*size {
		t.Fatalf("in use %d after a 3-interface capture, want %d", got, 3*size)
	}
	cc := cfg()
	cc.NetNS = hc
	if s, err := capture.Open(cc); !errors.Is(err, capture.ErrRingMemory) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("second capture: %v, want ErrRingMemory", err)
	} else {
		var le *capture.LimitError
		if !errors.As(err, &le) || le.Want != 3*size || le.Max != 4*size || le.InUse != 3*size {
			t.Errorf("LimitError %+v, want want=%d max=%d in use=%d", le, 3*size, 4*size, 3*size)
		}
		t.Log(err)
	}
	if got := b.InUse(); got != 3*size {
		t.Fatalf("in use %d after a refused capture, want %d", got, 3*size)
	}

	// The first ends; its rings go to the pool and stay charged.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- first.Run(ctx, &collector{}) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	waitFor(t, "3 idle rings", func() bool { return pool.Idle() == 3 })
	if got := b.InUse(); got != 3*size {
		t.Fatalf("in use %d with 3 idle rings, want %d", got, 3*size)
	}

	// Now the pool gives back, oldest first, only what is needed (two
	// rings): the second capture fits.
	second, err := capture.Open(cc)
	if err != nil {
		t.Fatalf("second capture after the first ended: %v", err)
	}
	if got, idle := b.InUse(), pool.Idle(); got != 4*size || idle != 1 {
		t.Errorf("in use %d, %d idle rings; want %d and 1 idle ring", got, idle, 4*size)
	}
	second.Close()
	pool.Close()
	if got := b.InUse(); got != 0 {
		t.Errorf("in use %d after everything closed, want 0", got)
	}
}

// Ring set-up of many interfaces runs on at most MaxSetupThreads locked
// threads at once per capture, and MaxSetupThreadsTotal in the process.
func TestIntegrationSetupThreads(t *testing.T) {
	n := testns.New(t)
	n.VethPairs(20) // 41 interfaces with lo
	h := n.Open()
	capture.ResetSetupPeak()
	start := time.Now()
	s, err := capture.Open(capture.Config{NetNS: h, Ring: smallRing})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	nif := len(s.Interfaces())
	s.Close()
	peak := capture.SetupPeak()
	t.Logf("%d interfaces: set up in %v, at most %d at once", nif, took, peak)
	if peak < 1 || peak > capture.MaxSetupThreads {
		t.Errorf("%d ring set-ups ran at once, want 1 to %d", peak, capture.MaxSetupThreads)
	}

	// Six captures at once may have 24 set-ups in flight; the process
	// bound holds them to MaxSetupThreadsTotal.
	capture.ResetSetupPeak()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			s, err := capture.Open(capture.Config{NetNS: h, Ring: smallRing})
			if err != nil {
				errs <- err
				return
			}
			s.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	peak = capture.SetupPeak()
	t.Logf("6 captures of %d interfaces at once: at most %d set-ups at once", nif, peak)
	if peak > capture.MaxSetupThreadsTotal {
		t.Errorf("%d ring set-ups ran at once, want at most %d", peak, capture.MaxSetupThreadsTotal)
	}
}

// TestIntegrationSetupTime logs how long opening a capture of 41
// interfaces takes with the default ring (docs/reliability.md).
func TestIntegrationSetupTime(t *testing.T) {
	n := testns.New(t)
	n.VethPairs(20)
	h := n.Open()
	for i := range 5 {
		start := time.Now()
		s, err := capture.Open(capture.Config{NetNS: h})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		nif := len(s.Interfaces())
		start = time.Now()
		s.Close()
		t.Logf("run %d: %d interfaces: open %v, close %v", i, nif, took, time.Since(start))
	}
}
