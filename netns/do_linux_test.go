package netns_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

// TestIntegrationDo runs its subtests in order: the last ones check that
// nothing the earlier ones did left a thread in a foreign netns.
func TestIntegrationDo(t *testing.T) {
	testns.RequireRoot(t)
	homeNS := testns.Home(t)

	t.Run("enters target and leaves caller alone", func(t *testing.T) {
		ns := testns.New(t)
		n := ns.Open()
		want := fmt.Sprintf("net:[%d]", ns.Inode)
		if want == homeNS {
			t.Fatalf("new netns has our own inode %s", homeNS)
		}

		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		before := threadNetns(t)
		var in string
		var tid int
		err := netns.Do(n, func() error {
			tid = unix.Gettid()
			var err error
			in, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		})
		if err != nil {
			t.Fatalf("Do: %v", err)
		}
		if in != want {
			t.Errorf("fn ran in %s, want %s", in, want)
		}
		if tid == unix.Gettid() {
			t.Errorf("fn ran on the caller's locked thread %d", tid)
		}
		if after := threadNetns(t); after != before || after != homeNS {
			t.Errorf("caller's thread: before Do %s, after %s, home %s", before, after, homeNS)
		}
		checkThreadHome(t, tid)
	})

	t.Run("concurrent", func(t *testing.T) {
		const calls = 200
		var targets []*netns.NetNS
		for range 3 {
			targets = append(targets, testns.New(t).Open())
		}
		var wg sync.WaitGroup
		errs := make(chan error, calls)
		for i := range calls {
			n := targets[i%len(targets)]
			wg.Go(func() {
				want := fmt.Sprintf("net:[%d]", n.Inode())
				errs <- netns.Do(n, func() error {
					in, err := os.Readlink("/proc/thread-self/ns/net")
					if err != nil {
						return err
					}
					if in != want {
						return fmt.Errorf("call %d ran in %s, want %s", i, in, want)
					}
					return nil
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("fn error", func(t *testing.T) {
		n := testns.New(t).Open()
		errFn := errors.New("fn failed")
		var tid int
		err := netns.Do(n, func() error {
			tid = unix.Gettid()
			return fmt.Errorf("wrapped: %w", errFn)
		})
		if !errors.Is(err, errFn) {
			t.Fatalf("Do = %v, want fn's error", err)
		}
		var oe *netns.OpError
		if errors.As(err, &oe) {
			t.Errorf("Do = %v: fn's error came back as an OpError %q", err, oe.Op)
		}
		checkThreadHome(t, tid)
	})

	t.Run("not open", func(t *testing.T) {
		closed, err := netns.OpenPath("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		closed.Close()
		for _, tt := range []struct {
			name string
			n    *netns.NetNS
		}{
			{name: "nil", n: nil},
			{name: "closed", n: closed},
		} {
			t.Run(tt.name, func(t *testing.T) {
				ran := false
				err := netns.Do(tt.n, func() error { ran = true; return nil })
				if err == nil {
					t.Fatal("Do: no error")
				}
				var oe *netns.OpError
				if !errors.As(err, &oe) || oe.Op != netns.OpSetns {
					t.Errorf("Do = %#v, want an OpError with Op %q", err, netns.OpSetns)
				}
				if ran {
					t.Error("fn ran")
				}
			})
		}
	})

	t.Run("no thread left behind", func(t *testing.T) {
		if self := selfNetns(t); self != homeNS {
			t.Errorf("main thread in %s, started in %s", self, homeNS)
		}
		if bad := testns.ThreadsOutside(t); len(bad) > 0 {
			t.Errorf("threads outside %s: %v", homeNS, bad)
		}
		// Threads are reused: if any were released inside a foreign netns,
		// many of these would land on them.
		const n = 2000
		var wg sync.WaitGroup
		out := make(chan string, n)
		for range n {
			wg.Go(func() {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				l, err := os.Readlink("/proc/thread-self/ns/net")
				if err != nil {
					l = err.Error()
				}
				out <- l
			})
		}
		wg.Wait()
		close(out)
		foreign := map[string]int{}
		for l := range out {
			if l != homeNS {
				foreign[l]++
			}
		}
		if len(foreign) > 0 {
			t.Errorf("goroutines ran outside %s: %v", homeNS, foreign)
		}
	})
}

// TestIntegrationDoGoexit: a function that never returns (runtime.Goexit)
// still gets the caller an error instead of a hang.
func TestIntegrationDoGoexit(t *testing.T) {
	testns.RequireRoot(t)
	h, err := netns.OpenPath("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	done := make(chan error, 1)
	go func() { done <- netns.Do(h, func() error { runtime.Goexit(); return nil }) }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Do returned nil for a function that did not return")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Do hung")
	}
}
