package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/internal/testns"
)

// upInterfaces lists the interfaces that are up in the netns of pid, as
// ip(8) sees them from inside, in ifindex order.
func upInterfaces(t *testing.T, pid int) []string {
	t.Helper()
	out := testns.Cmd(t, "nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", pid), "ip", "-o", "link", "show", "up")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		// "3: pfc0@if4: <BROADCAST,...> ..."
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		names = append(names, name)
	}
	return names
}

// TestIntegrationDocker lists containers of a real Docker engine (Debian's
// dockerd, started by the test) through the Docker and the containerd
// client.
func TestIntegrationDocker(t *testing.T) {
	dk := testns.StartDocker(t)
	suffix := fmt.Sprintf("%d-%04x", time.Now().UnixNano()%1e6, rand.Uint32()&0xffff)
	c := dk.Run("pftest-" + suffix)
	// A second container in the first one's netns: another tenant of it,
	// listed under its own name as GhostWire does.
	joiner := dk.Run("pftest-join-"+suffix, "--network", "container:"+c.Name)

	// Give the container a veth from a throwaway netns of ours, so nothing
	// lands in the host's: one end up, and one pair down.
	peer := testns.New(t)
	pidArg := fmt.Sprint(c.PID)
	testns.Cmd(t, "ip", "link", "add", "pfh0", "netns", peer.Name, "type", "veth", "peer", "name", "pfc0", "netns", pidArg)
	testns.Cmd(t, "ip", "link", "add", "pfh1", "netns", peer.Name, "type", "veth", "peer", "name", "pfdown0", "netns", pidArg)
	in := func(args ...string) {
		t.Helper()
		testns.Cmd(t, "nsenter", append([]string{"--net=/proc/" + pidArg + "/ns/net", "ip"}, args...)...)
	}
	in("addr", "add", "198.18.7.2/24", "dev", "pfc0")
	in("link", "set", "pfc0", "up")
	peer.IP("addr", "add", "198.18.7.1/24", "dev", "pfh0")
	peer.IP("link", "set", "pfh0", "up")

	ino := netnsOf(t, c.PID)
	if j := netnsOf(t, joiner.PID); j != ino {
		t.Fatalf("joiner in netns %d, want the first container's %d", j, ino)
	}
	ifs := upInterfaces(t, c.PID)
	if !contains(ifs, "pfc0") || contains(ifs, "pfdown0") {
		t.Fatalf("ip shows %q up in the container; want pfc0 and not pfdown0", ifs)
	}
	want := []discovery.Target{{
		Name: c.Name, Type: discovery.TypeDocker, NetNS: ino, Interfaces: ifs,
		PID: c.PID, StartTime: startTime(t, c.PID),
	}, {
		Name: joiner.Name, Type: discovery.TypeDocker, NetNS: ino, Interfaces: ifs,
		PID: joiner.PID, StartTime: startTime(t, joiner.PID),
	}}
	absent := filepath.Join(t.TempDir(), "absent.sock")

	// only returns the targets in the container's netns, failing if a
	// target names one of our containers elsewhere.
	only := func(t *testing.T, ts []discovery.Target) []discovery.Target {
		t.Helper()
		checkListing(t, ts)
		var out []discovery.Target
		for _, x := range ts {
			if x.NetNS == ino {
				out = append(out, x)
			} else if strings.Contains(x.Name, suffix) || strings.Contains(x.Name, c.ID) {
				t.Errorf("target %+v names our container outside its netns", x)
			}
		}
		return out
	}

	t.Run("docker", func(t *testing.T) {
		core, logs := observer.New(zap.DebugLevel)
		d := discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: dk.Host, ContainerdSocket: absent, Log: zap.New(core)})
		start := time.Now()
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("List with Docker: %d targets in %v", len(ts), time.Since(start))
		if got := only(t, ts); !reflect.DeepEqual(got, want) {
			t.Errorf("container's netns listed as\n%+v\nwant\n%+v", got, want)
		}
		if w := logs.FilterLevelExact(zap.WarnLevel); w.Len() > 0 {
			t.Errorf("warnings: %v", w.All())
		}
		for _, w := range want {
			x, err := d.Lookup(context.Background(), w.Name, "")
			if err != nil || !reflect.DeepEqual(x, w) {
				t.Errorf("Lookup(%q) = %+v, %v; want %+v", w.Name, x, err, w)
			}
		}
	})

	t.Run("docker and containerd", func(t *testing.T) {
		// containerd holds Docker's containers in namespace moby: they must
		// not be listed a second time.
		core, logs := observer.New(zap.DebugLevel)
		d := discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: dk.Host, ContainerdSocket: dk.ContainerdSocket, Log: zap.New(core)})
		base := runtime.NumGoroutine()
		start := time.Now()
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("List with Docker and containerd: %d targets in %v", len(ts), time.Since(start))
		if got := only(t, ts); !reflect.DeepEqual(got, want) {
			t.Errorf("container's netns listed as\n%+v\nwant\n%+v", got, want)
		}
		for _, x := range ts {
			if strings.HasPrefix(x.Name, "moby/") {
				t.Errorf("moby container listed by containerd too: %+v", x)
			}
		}
		// containerd must really have answered, with both containers.
		listed := logs.FilterMessage("container engine listed")
		n := map[string]int64{}
		for _, e := range listed.All() {
			n[e.ContextMap()["engine"].(string)] = e.ContextMap()["containers"].(int64)
		}
		if n["docker"] != 2 || n["containerd"] != 2 {
			t.Errorf("engines listed %v containers, want 2 each: %v", n, logs.All())
		}
		checkGoroutines(t, base)
	})

	t.Run("containerd alone", func(t *testing.T) {
		// Without Docker's answer, its containers appear through containerd,
		// named namespace/ID: better than as the bare processes they are.
		d := discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: "unix://" + absent, ContainerdSocket: dk.ContainerdSocket, Log: zaptest.NewLogger(t)})
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := slices.Clone(want)
		w[0].Type, w[0].Name = discovery.TypeContainerd, "moby/"+c.ID
		w[1].Type, w[1].Name = discovery.TypeContainerd, "moby/"+joiner.ID
		slices.SortFunc(w, func(a, b discovery.Target) int { return strings.Compare(a.Name, b.Name) })
		if got := only(t, ts); !reflect.DeepEqual(got, w) {
			t.Errorf("container's netns listed as\n%+v\nwant\n%+v", got, w)
		}
	})

	t.Run("no engine", func(t *testing.T) {
		// Without engines, the containers' init processes are plain
		// top-level processes of the netns (their parent, the shim, lives
		// in the host's); the bind mount Docker keeps of the netns (even
		// with --network none, named after its sandbox ID) is not listed
		// but still names it.
		sandbox := dk.CLI("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", c.Name)
		d := discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: "unix://" + absent, ContainerdSocket: absent})
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var w []discovery.Target
		for _, x := range want {
			x.Type, x.Name = discovery.TypeProc, fmt.Sprintf("%s(%d)", comm(t, x.PID), x.PID)
			w = append(w, x)
		}
		slices.SortFunc(w, func(a, b discovery.Target) int { return strings.Compare(a.Name, b.Name) })
		if got := only(t, ts); !reflect.DeepEqual(got, w) {
			t.Errorf("container's netns without engines listed as\n%+v\nwant\n%+v", got, w)
		}
		wm := discovery.Target{Name: filepath.Base(sandbox), Type: discovery.TypeBindMount, NetNS: ino, Interfaces: ifs}
		if x, err := d.Lookup(context.Background(), wm.Name, ""); err != nil || !reflect.DeepEqual(x, wm) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", wm.Name, x, err, wm)
		}
	})
}

// comm is a process's command name.
func comm(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
