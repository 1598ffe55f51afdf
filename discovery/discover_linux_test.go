package discovery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

// noEngines points every engine at sockets that do not exist, so a test
// sees only what /proc and mountinfo say, even on a host running Docker,
// Podman or a CRI runtime.
func noEngines(t *testing.T) discovery.DiscoverConfig {
	dir := t.TempDir()
	return discovery.DiscoverConfig{
		DockerHost:       "unix://" + filepath.Join(dir, "docker.sock"),
		ContainerdSocket: filepath.Join(dir, "containerd.sock"),
		PodmanHost:       "unix://" + filepath.Join(dir, "podman.sock"),
		CRISockets:       []string{},
		Log:              zaptest.NewLogger(t),
	}
}

// startTime reads field 22 of /proc/PID/stat, independently of discovery.
func startTime(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	st, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// netnsOf returns the netns inode of a process.
func netnsOf(t *testing.T, pid int) uint64 {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "net:["), "]"), 10, 64)
	if err != nil {
		t.Fatalf("netns link %q: %v", l, err)
	}
	return ino
}

// checkListing checks what must hold for any listing: unique names, lists
// never nil, and pid/starttime set exactly for targets that are not bind
// mounts.
func checkListing(t *testing.T, ts []discovery.Target) {
	t.Helper()
	names := map[string]bool{}
	for _, x := range ts {
		if names[x.Name] {
			t.Errorf("name %q listed twice", x.Name)
		}
		names[x.Name] = true
		if x.Interfaces == nil {
			t.Errorf("%q: interfaces nil", x.Name)
		}
		if (x.Type == discovery.TypeBindMount) != (x.PID == 0) || (x.PID == 0) != (x.StartTime == 0) {
			t.Errorf("%q: type %s with pid %d, starttime %d", x.Name, x.Type, x.PID, x.StartTime)
		}
		if x.Name == "kthreadd(2)" {
			t.Errorf("kthreadd listed: %+v", x)
		}
	}
}

// procTarget is the target GhostWire lists for a tenant process.
func procTarget(t *testing.T, pid int, ino uint64, ifs ...string) discovery.Target {
	t.Helper()
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	if ifs == nil {
		ifs = []string{}
	}
	return discovery.Target{Name: fmt.Sprintf("%s(%d)", strings.TrimSpace(string(comm)), pid), Type: discovery.TypeProc,
		NetNS: ino, Interfaces: ifs, PID: pid, StartTime: startTime(t, pid)}
}

// TestIntegrationDiscoverNetnsAndProcs builds each case of GhostWire's
// listing rules in real namespaces and asserts the exact targets of each.
func TestIntegrationDiscoverNetnsAndProcs(t *testing.T) {
	testns.RequireRoot(t)
	a := testns.New(t) // bind mount, no process, a veth end up and a pair down
	b := testns.New(t) // bind mount, no process, the other veth end
	testns.Veth(t, a, "pfup0", "198.18.5.1/24", b, "pfup1", "198.18.5.2/24")
	a.IP("link", "add", "pfdown0", "type", "veth", "peer", "name", "pfdown1")

	// A bind-mounted netns with a tenant: listed by its process only.
	cName, cIno := testns.AddNetNS(t)
	cSleep := testns.SleepIn(t, cName, cIno)
	// A tenant whose bind mount is gone: only the process holds the netns.
	dName, dIno := testns.AddNetNS(t)
	dSleep := testns.SleepIn(t, dName, dIno)
	testns.Cmd(t, "ip", "netns", "del", dName)
	// Two top-level processes in one netns.
	eName, eIno := testns.AddNetNS(t)
	e1, e2 := testns.SleepIn(t, eName, eIno), testns.SleepIn(t, eName, eIno)
	// A process in F whose child is in G: each is a tenant of its own netns.
	fName, fIno := testns.AddNetNS(t)
	gName, gIno := testns.AddNetNS(t)
	fSh := testns.StartIn(t, fName, fIno, "sh", "sh", "-c", "ip netns exec "+gName+" sleep 60; exit 0")
	gSleep := testns.ChildOf(t, fSh.Pid())
	testns.WaitProc(t, fSh, gSleep, "sleep", gIno)

	hostIno := netnsOf(t, os.Getpid())
	d := discovery.NewDiscoverer(noEngines(t))
	start := time.Now()
	ts, err := d.List(context.Background())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("List: %d targets in %v", len(ts), took)
	checkListing(t, ts)
	if bad := testns.ThreadsOutside(t); len(bad) > 0 {
		t.Errorf("threads left in other netns after List: %v", bad)
	}

	want := map[uint64][]discovery.Target{
		a.Inode: {{Name: a.Name, Type: discovery.TypeBindMount, NetNS: a.Inode, Interfaces: []string{"lo", "pfup0"}}},
		b.Inode: {{Name: b.Name, Type: discovery.TypeBindMount, NetNS: b.Inode, Interfaces: []string{"lo", "pfup1"}}},
		// `ip netns add` leaves lo down; only testns.New brings it up.
		cIno: {procTarget(t, cSleep.Pid(), cIno)},
		dIno: {procTarget(t, dSleep.Pid(), dIno)},
		eIno: {procTarget(t, e1.Pid(), eIno), procTarget(t, e2.Pid(), eIno)},
		fIno: {procTarget(t, fSh.Pid(), fIno)},
		gIno: {procTarget(t, gSleep, gIno)},
	}
	got := map[uint64][]discovery.Target{}
	var host *discovery.Target
	for i, x := range ts {
		if _, ok := want[x.NetNS]; ok {
			got[x.NetNS] = append(got[x.NetNS], x)
		}
		if x.NetNS == hostIno && x.PID == 1 {
			host = &ts[i]
		}
	}
	for ino, w := range want {
		// Within a netns, the listing is sorted by name, as the want lists
		// are: sleep(PID) sorts by PID digits, so sort both alike.
		g := got[ino]
		sort.Slice(w, func(i, j int) bool { return w[i].Name < w[j].Name })
		if !reflect.DeepEqual(g, w) {
			t.Errorf("netns %d:\n got %+v\nwant %+v", ino, g, w)
		}
	}

	// The host: PID 1's proc target where its netns can be read (not in
	// every sandbox); never kthreadd (checkListing).
	if _, err := os.Readlink("/proc/1/ns/net"); err == nil {
		if host == nil {
			t.Fatalf("PID 1 of host netns %d not listed: %+v", hostIno, ts)
		}
		if w := procTarget(t, 1, hostIno, host.Interfaces...); !reflect.DeepEqual(*host, w) {
			t.Errorf("host target %+v, want %+v", *host, w)
		}
		if !contains(host.Interfaces, "lo") {
			t.Errorf("host interfaces %q, want lo among them", host.Interfaces)
		}
	}

	t.Run("Lookup", func(t *testing.T) {
		for _, ws := range want {
			for _, w := range ws {
				x, err := d.Lookup(context.Background(), w.Name, "")
				if err != nil || !reflect.DeepEqual(x, w) {
					t.Errorf("Lookup(%q) = %+v, %v; want %+v", w.Name, x, err, w)
				}
			}
		}
		// The bind mount name of a netns with tenants is not listed, but
		// still names the netns.
		wantC := discovery.Target{Name: cName, Type: discovery.TypeBindMount, NetNS: cIno, Interfaces: []string{}}
		if x, err := d.Lookup(context.Background(), cName, ""); err != nil || !reflect.DeepEqual(x, wantC) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", cName, x, err, wantC)
		}
		for _, tt := range []struct{ name, prefix string }{{a.Name + "-nope", ""}, {a.Name, "other-engine"}} {
			x, err := d.Lookup(context.Background(), tt.name, tt.prefix)
			if !errors.Is(err, netns.ErrNotFound) {
				t.Errorf("Lookup(%q, %q) = %+v, %v; want ErrNotFound", tt.name, tt.prefix, x, err)
			}
		}
	})

	t.Run("gone tenant", func(t *testing.T) {
		// Once the only process leaves, the netns is gone from the list.
		dSleep.Stop()
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range ts {
			if x.NetNS == dIno {
				t.Errorf("netns %d listed after its last process ended: %+v", dIno, x)
			}
		}
		if _, err := d.Lookup(context.Background(), want[dIno][0].Name, ""); !errors.Is(err, netns.ErrNotFound) {
			t.Errorf("Lookup of the ended tenant: %v, want ErrNotFound", err)
		}
	})

	t.Run("timing", func(t *testing.T) {
		// Warm: what a client polling the list sees.
		const n = 5
		start := time.Now()
		for range n {
			if _, err := d.List(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		per := time.Since(start) / n
		procs, _ := filepath.Glob("/proc/[0-9]*")
		t.Logf("List: %v each, %d processes, %d targets", per, len(procs), len(ts))
		if per > 500*time.Millisecond {
			t.Errorf("List takes %v", per)
		}
	})
}

// checkGoroutines fails if, within 2 s, the number of goroutines does not
// fall back to base: the engine clients must be closed with their
// connections.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	n := runtime.NumGoroutine()
	for deadline := time.Now().Add(2 * time.Second); n > base && time.Now().Before(deadline); n = runtime.NumGoroutine() {
		time.Sleep(10 * time.Millisecond)
	}
	if n > base {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after List, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// hangingEngine is a unix socket server that accepts connections and never
// answers, like an engine that hangs. The test owns its goroutine: cleanup
// closes the listener and the connections and waits for it.
func hangingEngine(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hang.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return path
}

func TestIntegrationDiscoverSlowEngine(t *testing.T) {
	testns.RequireRoot(t)
	ns := testns.New(t)
	sock := hangingEngine(t)
	core, logs := observer.New(zap.DebugLevel)
	const timeout = 300 * time.Millisecond
	base := runtime.NumGoroutine()
	d := discovery.NewDiscoverer(discovery.DiscoverConfig{
		DockerHost:       "unix://" + sock,
		ContainerdSocket: sock,
		EngineTimeout:    timeout,
		Log:              zap.New(core),
	})

	start := time.Now()
	ts, err := d.List(context.Background())
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("List with two hanging engines: %v", took)
	if took < timeout || took > timeout+700*time.Millisecond {
		t.Errorf("List took %v with engines that hang and a timeout of %v", took, timeout)
	}
	checkListing(t, ts)
	found := false
	for _, x := range ts {
		found = found || (x.NetNS == ns.Inode && x.Name == ns.Name)
	}
	if !found {
		t.Errorf("netns %s not listed while the engines hang: %+v", ns.Name, ts)
	}
	skipped := map[string]bool{}
	for _, e := range logs.FilterLevelExact(zap.WarnLevel).All() {
		skipped[e.ContextMap()["engine"].(string)] = true
	}
	if !skipped["docker"] || !skipped["containerd"] {
		t.Errorf("warnings %v, want one for each hanging engine", logs.All())
	}
	checkGoroutines(t, base)

	t.Run("caller's deadline", func(t *testing.T) {
		// A caller's ctx shorter than EngineTimeout wins, and List says so.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		d := discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: "unix://" + sock, ContainerdSocket: sock,
			EngineTimeout: 10 * time.Second, Log: zaptest.NewLogger(t)})
		start := time.Now()
		_, err := d.List(ctx)
		if took := time.Since(start); took > time.Second {
			t.Errorf("List took %v with a 100 ms ctx", took)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("List = %v, want context.DeadlineExceeded", err)
		}
	})
}
