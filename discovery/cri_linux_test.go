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

// TestIntegrationCRI lists the pods of a real CRI runtime (Debian's
// containerd 1.6 with its CRI plugin, started by the test) through the CRI
// API, alone and together with containerd's own API on the same socket.
func TestIntegrationCRI(t *testing.T) {
	rt := testns.StartCRI(t)
	suffix := fmt.Sprintf("%d-%04x", time.Now().UnixNano()%1e6, rand.Uint32()&0xffff)
	// A pod as kubelet makes it, and one without kubelet's labels, as
	// crictl makes it: containerd's own API names only the first a pod.
	web := rt.RunPod("pftest", "web-"+suffix, true)
	bare := rt.RunPod("pftest", "bare-"+suffix, false)

	host := netnsOf(t, os.Getpid())
	want := map[string]discovery.Target{}
	inos := map[uint64]testns.Pod{}
	for _, p := range []testns.Pod{web, bare} {
		ino := netnsOf(t, p.SandboxPID)
		if ino == host || netnsOf(t, p.ContainerPID) != ino {
			t.Fatalf("pod %s/%s: sandbox in netns %d, container in %d, host %d; want both in the pod's own",
				p.Namespace, p.Name, ino, netnsOf(t, p.ContainerPID), host)
		}
		name := p.Namespace + "/" + p.Name
		want[name] = discovery.Target{
			Name: name, Type: discovery.TypePod, NetNS: ino, Interfaces: upInterfaces(t, p.SandboxPID),
			PID: p.SandboxPID, StartTime: startTime(t, p.SandboxPID),
		}
		inos[ino] = p
	}
	absent := filepath.Join(t.TempDir(), "absent.sock")
	config := func(log *zap.Logger, containerd string, crisocks ...string) discovery.DiscoverConfig {
		return discovery.DiscoverConfig{
			DockerHost: "unix://" + absent, PodmanHost: "unix://" + absent,
			ContainerdSocket: containerd, CRISockets: crisocks, Log: log,
		}
	}
	// pods returns the targets in the pods' namespaces, by netns.
	pods := func(t *testing.T, ts []discovery.Target) map[uint64][]discovery.Target {
		t.Helper()
		checkListing(t, ts)
		out := map[uint64][]discovery.Target{}
		for _, x := range ts {
			if _, ok := inos[x.NetNS]; ok && x.Type != discovery.TypeBindMount {
				out[x.NetNS] = append(out[x.NetNS], x)
			}
		}
		return out
	}
	// asPods checks that each pod is listed once, as want says.
	asPods := func(t *testing.T, ts []discovery.Target) {
		t.Helper()
		got := pods(t, ts)
		for _, w := range want {
			if g := got[w.NetNS]; len(g) != 1 || !reflect.DeepEqual(g[0], w) {
				t.Errorf("pod %s listed as\n%+v\nwant\n%+v", w.Name, g, w)
			}
		}
	}
	engines := func(logs *observer.ObservedLogs) map[string]int64 {
		n := map[string]int64{}
		for _, e := range logs.FilterMessage("container engine listed").All() {
			n[e.ContextMap()["engine"].(string)] += e.ContextMap()["containers"].(int64)
		}
		return n
	}

	t.Run("cri", func(t *testing.T) {
		core, logs := observer.New(zap.DebugLevel)
		d := discovery.NewDiscoverer(config(zap.New(core), absent, "unix://"+rt.Socket))
		base := runtime.NumGoroutine()
		start := time.Now()
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("List with CRI: %d targets in %v", len(ts), time.Since(start))
		asPods(t, ts)
		if w := logs.FilterLevelExact(zap.WarnLevel); w.Len() > 0 {
			t.Errorf("warnings: %v", w.All())
		}
		// Two sandboxes and two containers.
		if n := engines(logs); n["cri"] != 4 {
			t.Errorf("engines listed %v containers, want 4 from cri: %v", n, logs.All())
		}
		for _, w := range want {
			x, err := d.Lookup(context.Background(), w.Name, "")
			if err != nil || !reflect.DeepEqual(x, w) {
				t.Errorf("Lookup(%q) = %+v, %v; want %+v", w.Name, x, err, w)
			}
		}
		checkGoroutines(t, base)
	})

	t.Run("cri and containerd", func(t *testing.T) {
		// The same pods through both APIs of one containerd: each listed
		// once, by its CRI name, also the pod without kubelet's labels.
		core, logs := observer.New(zap.DebugLevel)
		d := discovery.NewDiscoverer(config(zap.New(core), rt.Socket, rt.Socket))
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		asPods(t, ts)
		if n := engines(logs); n["cri"] != 4 || n["containerd"] != 4 {
			t.Errorf("engines listed %v containers, want 4 each: %v", n, logs.All())
		}
	})

	t.Run("containerd alone", func(t *testing.T) {
		// containerd's own API names a pod through kubelet's labels; the
		// pod without them is two containerd containers, named by ID.
		d := discovery.NewDiscoverer(config(zaptest.NewLogger(t), rt.Socket))
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got := pods(t, ts)
		w := want[web.Namespace+"/"+web.Name]
		if g := got[w.NetNS]; len(g) != 1 || !reflect.DeepEqual(g[0], w) {
			t.Errorf("pod %s listed as\n%+v\nwant\n%+v", w.Name, g, w)
		}
		var names []string
		for _, x := range got[want[bare.Namespace+"/"+bare.Name].NetNS] {
			if x.Type == discovery.TypeContainerd {
				names = append(names, x.Name)
			}
		}
		slices.Sort(names)
		ids := []string{"k8s.io/" + bare.SandboxID, "k8s.io/" + bare.ContainerID}
		slices.Sort(ids)
		if !slices.Equal(names, ids) {
			t.Errorf("pod without labels listed by containerd as %q, want %q", names, ids)
		}
		t.Logf("containerd alone names the unlabelled pod %s/%s %s", bare.Namespace, bare.Name, strings.Join(names, ", "))
	})
}
