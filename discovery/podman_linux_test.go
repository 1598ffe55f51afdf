package discovery_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/internal/testns"
)

// TestIntegrationPodman lists a container of a real Podman (Debian's
// podman, its API service started by the test) through Podman's
// Docker-compatible API.
func TestIntegrationPodman(t *testing.T) {
	pm := testns.StartPodman(t)
	suffix := fmt.Sprintf("%d-%04x", time.Now().UnixNano()%1e6, rand.Uint32()&0xffff)
	c := pm.Run("pftest-pm-" + suffix)

	// A veth from a throwaway netns of ours, one end up in the container.
	peer := testns.New(t)
	testns.Cmd(t, "ip", "link", "add", "pfh0", "netns", peer.Name, "type", "veth", "peer", "name", "pfc0", "netns", fmt.Sprint(c.PID))
	testns.Cmd(t, "nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", c.PID), "ip", "link", "set", "pfc0", "up")

	ino := netnsOf(t, c.PID)
	if ino == netnsOf(t, os.Getpid()) {
		t.Fatalf("podman container %s in the host's netns", c.Name)
	}
	ifs := upInterfaces(t, c.PID)
	if !contains(ifs, "pfc0") {
		t.Fatalf("ip shows %q up in the container; want pfc0", ifs)
	}
	want := discovery.Target{
		Name: c.Name, Type: discovery.TypePodman, NetNS: ino, Interfaces: ifs,
		PID: c.PID, StartTime: startTime(t, c.PID),
	}
	absent := filepath.Join(t.TempDir(), "absent.sock")
	config := func(log *zap.Logger) discovery.DiscoverConfig {
		return discovery.DiscoverConfig{
			DockerHost: "unix://" + absent, PodmanHost: pm.Host,
			ContainerdSocket: absent, CRISockets: []string{}, Log: log,
		}
	}

	// only returns the targets in the container's netns, failing if a
	// target names our container elsewhere.
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

	t.Run("podman", func(t *testing.T) {
		core, logs := observer.New(zap.DebugLevel)
		d := discovery.NewDiscoverer(config(zap.New(core)))
		base := runtime.NumGoroutine()
		start := time.Now()
		ts, err := d.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("List with Podman: %d targets in %v", len(ts), time.Since(start))
		if got := only(t, ts); len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Errorf("container's netns listed as\n%+v\nwant\n%+v", got, want)
		}
		if w := logs.FilterLevelExact(zap.WarnLevel); w.Len() > 0 {
			t.Errorf("warnings: %v", w.All())
		}
		listed := logs.FilterMessage("container engine listed").FilterField(zap.String("engine", "podman"))
		if listed.Len() != 1 || listed.All()[0].ContextMap()["containers"] != int64(1) {
			t.Errorf("podman not listed with 1 container: %v", logs.All())
		}
		x, err := d.Lookup(context.Background(), c.Name, "")
		if err != nil || !reflect.DeepEqual(x, want) {
			t.Errorf("Lookup(%q) = %+v, %v; want %+v", c.Name, x, err, want)
		}
		checkGoroutines(t, base)
	})

	t.Run("podman as docker", func(t *testing.T) {
		// podman-docker points DOCKER_HOST's socket at Podman's: both
		// engines then report the container under the same name and PID,
		// and it is listed once, as Docker's view.
		cfg := config(zaptest.NewLogger(t))
		cfg.DockerHost = pm.Host
		ts, err := discovery.NewDiscoverer(cfg).List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w := want
		w.Type = discovery.TypeDocker
		if got := only(t, ts); len(got) != 1 || !reflect.DeepEqual(got[0], w) {
			t.Errorf("container's netns listed as\n%+v\nwant\n%+v", got, w)
		}
	})

	t.Run("absent", func(t *testing.T) {
		// No Podman: skipped quietly, and the container is what /proc
		// shows of it.
		core, logs := observer.New(zap.DebugLevel)
		cfg := config(zap.New(core))
		cfg.PodmanHost = "unix://" + absent
		ts, err := discovery.NewDiscoverer(cfg).List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range only(t, ts) {
			if x.Type == discovery.TypePodman || x.Name == c.Name {
				t.Errorf("listed without Podman: %+v", x)
			}
		}
		if w := logs.FilterLevelExact(zap.WarnLevel); w.Len() > 0 {
			t.Errorf("warnings: %v", w.All())
		}
		if logs.FilterMessage("container engine absent, skipped").FilterField(zap.String("engine", "podman")).Len() != 1 {
			t.Errorf("no debug log of the absent Podman: %v", logs.All())
		}
	})
}
