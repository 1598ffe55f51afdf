package capture

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// These tests start real compiler children: TestMain (main_test.go) makes
// the test binary one.

// portsFilter is n "port N" terms joined by "or": 250 of them are 3.2 KB,
// and libpcap's optimizer would need minutes for them.
func portsFilter(n int) string {
	t := make([]string, n)
	for i := range t {
		t[i] = fmt.Sprintf("port %d", 1000+i)
	}
	return strings.Join(t, " or ")
}

const pathological = 250

func Test_filterWire(t *testing.T) {
	k := filterKey{expr: "udp port 53", linkType: LinkTypeRaw, snaplen: 96}
	req := encodeRequest(k, 2*time.Second, 1<<20)
	gk, cpu, mem, err := decodeRequest(req)
	if err != nil || gk != k || cpu != 2*time.Second || mem != 1<<20 {
		t.Fatalf("request round trip: %+v %v %d %v", gk, cpu, mem, err)
	}
	if _, _, _, err := decodeRequest(req[:len(req)-1]); err == nil {
		t.Error("short request accepted")
	}
	prog := []unix.SockFilter{{Code: 0x28, K: 12}, {Code: 0x15, Jt: 0, Jf: 1, K: 0x800}, {Code: 0x06, K: 96}, {Code: 0x06}}
	for _, tc := range []struct {
		name    string
		status  byte
		msg     string
		wantErr error
	}{
		{"ok", statusOK, "", nil},
		{"bad", statusBadFilter, "syntax error", ErrBadFilter},
		{"too complex", statusTooComplex, "compiling it needs more than 256 MiB of memory", ErrFilterTooComplex},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := decodeResponse(encodeResponse(tc.status, prog, tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if !res.cache || !errors.Is(res.err, tc.wantErr) || (tc.wantErr == nil && !slices.Equal(res.prog, prog)) {
				t.Errorf("got %+v", res)
			}
			if tc.wantErr != nil && !strings.HasSuffix(res.err.Error(), ": "+tc.msg) {
				t.Errorf("message %q", res.err)
			}
		})
	}
	bad := encodeResponse(statusOK, prog, "")
	bad[3] = wireVersion + 1
	if _, err := decodeResponse(bad); err == nil {
		t.Error("other version accepted")
	}
}

func TestFilterCompiles(t *testing.T) {
	c := newFilterCompiler(4, 8)
	prog, err := c.compile(t.Context(), filterKey{expr: "udp", linkType: LinkTypeEthernet, snaplen: 96})
	if err != nil {
		t.Fatal(err)
	}
	want, err := compileInProcess(LinkTypeEthernet, 96, "udp")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(prog, want) {
		t.Errorf("child compiled\n%v\nin process\n%v", prog, want)
	}
	if _, err := c.compile(t.Context(), filterKey{expr: "udp port", linkType: LinkTypeEthernet, snaplen: 96}); !errors.Is(err, ErrBadFilter) {
		t.Errorf("syntax error: %v, want ErrBadFilter", err)
	}
}

// TestFilterTooComplex: the filter is refused, within its budget rather
// than the minutes libpcap would take. The limit is generous (a loaded
// 2-core machine): the budget is 1 s of CPU, or FilterCompileTimeout (5 s)
// of wall clock when the child gets too little CPU.
func TestFilterTooComplex(t *testing.T) {
	c := newFilterCompiler(4, 8)
	start := time.Now()
	_, err := c.compile(t.Context(), filterKey{expr: portsFilter(pathological), linkType: LinkTypeEthernet, snaplen: DefaultSnaplen})
	took := time.Since(start)
	t.Logf("%d-term filter (%d bytes): %v after %v", pathological, len(portsFilter(pathological)), err, took)
	if !errors.Is(err, ErrFilterTooComplex) {
		t.Fatalf("got %v, want ErrFilterTooComplex", err)
	}
	if took > 10*time.Second {
		t.Errorf("refused after %v, want within the budget (< 10 s)", took)
	}
	// Refused again from the cache, without another child.
	n := c.started.Load()
	if _, err := c.compile(t.Context(), filterKey{expr: portsFilter(pathological), linkType: LinkTypeEthernet, snaplen: DefaultSnaplen}); !errors.Is(err, ErrFilterTooComplex) || c.started.Load() != n {
		t.Errorf("second compile: %v, %d children (want cached)", err, c.started.Load()-n)
	}
}

// TestFilterNotDelayedByPathological: while one session's filter burns
// CPU, another's compiles: it finishes before the pathological one. The
// pathological compile gets a budget of 30 s here, so that the ordering
// holds even where starting a (race-instrumented) child takes seconds;
// it is cancelled once the simple one is done.
func TestFilterNotDelayedByPathological(t *testing.T) {
	c := newFilterCompiler(2, 8)
	c.cpu, c.wall = 30*time.Second, time.Minute
	pids := make(chan int, 4)
	c.onStart = func(pid int) { pids <- pid }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, err := c.compile(ctx, filterKey{expr: portsFilter(pathological), linkType: LinkTypeEthernet, snaplen: DefaultSnaplen})
		slow <- err
	}()
	<-pids // the pathological child runs
	start := time.Now()
	_, err := c.compile(t.Context(), filterKey{expr: "udp", linkType: LinkTypeEthernet, snaplen: DefaultSnaplen})
	took := time.Since(start)
	if err != nil {
		t.Error(err)
	}
	select {
	case err := <-slow:
		t.Errorf("pathological compile ended (%v) before the simple one", err)
		return
	default:
		t.Logf("simple filter compiled in %v while the pathological one ran", took)
	}
	cancel()
	if err := <-slow; !errors.Is(err, context.Canceled) {
		t.Errorf("pathological: %v, want context.Canceled", err)
	}
}

// TestFilterHostName: a name is never looked up over the network: the
// child has an empty network namespace, so libpcap's getaddrinfo fails at
// once, and the user is told to use an address.
func TestFilterHostName(t *testing.T) {
	c := newFilterCompiler(4, 8)
	start := time.Now()
	_, err := c.compile(t.Context(), filterKey{expr: "host example.invalid", linkType: LinkTypeEthernet, snaplen: DefaultSnaplen})
	took := time.Since(start)
	t.Logf("%v after %v (isolation %d)", err, took, isolation.Load())
	if isolation.Load() == isolationNone {
		t.Skip("no network namespace for the compiler here (needs CAP_SYS_ADMIN or user namespaces)")
	}
	if !errors.Is(err, ErrBadFilter) || !strings.Contains(err.Error(), `host name "example.invalid" is not looked up`) || !strings.Contains(err.Error(), "use an address") {
		t.Errorf("got %v, want ErrBadFilter naming the host", err)
	}
	// A silent resolver takes glibc 5 s per try; an empty netns fails at
	// once (a few ms), so a second is generous.
	if took > 2*time.Second {
		t.Errorf("took %v: a lookup was attempted", took)
	}
}

// TestFilterCancelKillsChild: when the only client goes, its compile is
// killed and reaped before compile returns. Also checks the child's
// isolation while it runs.
func TestFilterCancelKillsChild(t *testing.T) {
	c := newFilterCompiler(4, 8)
	pids := make(chan int, 1)
	c.onStart = func(pid int) { pids <- pid }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.compile(ctx, filterKey{expr: portsFilter(pathological), linkType: LinkTypeEthernet, snaplen: DefaultSnaplen})
		done <- err
	}()
	pid := <-pids
	if isolation.Load() != isolationNone {
		self, err1 := os.Readlink("/proc/self/ns/net")
		child, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err1 != nil || err2 != nil || self == child {
			t.Errorf("child netns %s (%v), ours %s (%v): want a different one", child, err2, self, err1)
		}
	}
	if os.Geteuid() == 0 && isolation.Load() != isolationUserNetNS {
		// No privilege at all: nobody, no capabilities, and none to gain.
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{"Uid": fmt.Sprint(childUID), "CapEff": "0000000000000000", "CapPrm": "0000000000000000", "NoNewPrivs": "1"}
		for _, line := range strings.Split(string(st), "\n") {
			k, v, _ := strings.Cut(line, ":")
			if w, ok := want[k]; ok {
				if f := strings.Fields(v); len(f) == 0 || f[0] != w {
					t.Errorf("child %s: %q, want %s", k, strings.TrimSpace(v), w)
				}
				delete(want, k)
			}
		}
		if len(want) != 0 {
			t.Errorf("child status lacks %v", want)
		}
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("compile did not return after cancel")
	}
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("child %d still exists after cancel: kill 0 says %v", pid, err)
	}
	c.mu.Lock()
	n := len(c.flights)
	c.mu.Unlock()
	if n != 0 {
		t.Errorf("%d flights left", n)
	}
}

// TestFilterSingleflight: identical concurrent compiles share one child;
// the cache is off, so only the sharing can explain it.
func TestFilterSingleflight(t *testing.T) {
	const callers = 8
	c := newFilterCompiler(4, 0)
	k := filterKey{expr: portsFilter(20), linkType: LinkTypeEthernet, snaplen: DefaultSnaplen}
	// Hold the child's result back until every caller has joined.
	c.onStart = func(int) {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			c.mu.Lock()
			n := 0
			if f := c.flights[k]; f != nil {
				n = f.waiters
			}
			c.mu.Unlock()
			if n == callers {
				return
			}
			time.Sleep(time.Millisecond) // polling the condition, not a guess
		}
		t.Error("callers did not join")
	}
	var wg sync.WaitGroup
	progs := make([][]unix.SockFilter, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { progs[i], errs[i] = c.compile(t.Context(), k) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil || !slices.Equal(progs[i], progs[0]) {
			t.Errorf("caller %d: %v", i, errs[i])
		}
	}
	if n := c.started.Load(); n != 1 {
		t.Errorf("%d children for %d identical concurrent compiles, want 1", n, callers)
	}
}

// BenchmarkFilterCompile: one simple filter through a child (cache off)
// against libpcap in this process.
func BenchmarkFilterCompile(b *testing.B) {
	const expr = "tcp port 80 or udp port 53"
	b.Run("child", func(b *testing.B) {
		c := newFilterCompiler(4, 0)
		for b.Loop() {
			if _, err := c.compile(b.Context(), filterKey{expr: expr, linkType: LinkTypeEthernet, snaplen: DefaultSnaplen}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(isolation.Load()), "isolation")
	})
	b.Run("child-no-netns", func(b *testing.B) {
		c := newFilterCompiler(4, 0)
		if _, err := c.compile(b.Context(), filterKey{expr: "udp", linkType: LinkTypeEthernet, snaplen: 96}); err != nil {
			b.Fatal(err) // settles the isolation mode before it is overridden
		}
		saved := isolation.Swap(isolationNone)
		defer isolation.Store(saved)
		for b.Loop() {
			if _, err := c.compile(b.Context(), filterKey{expr: expr, linkType: LinkTypeEthernet, snaplen: DefaultSnaplen}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("in-process", func(b *testing.B) {
		for b.Loop() {
			if _, err := compileInProcess(LinkTypeEthernet, DefaultSnaplen, expr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := newFilterCompiler(4, 8)
		for b.Loop() {
			if _, err := c.compile(b.Context(), filterKey{expr: expr, linkType: LinkTypeEthernet, snaplen: DefaultSnaplen}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
