package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
)

// fakeGhostWire stands in for a GhostWire service: it serves /mobyshark
// from what the test sets, or misbehaves as told, and echoes WebSocket
// messages on /echo.
type fakeGhostWire struct {
	*httptest.Server
	mu       sync.Mutex
	targets  []discovery.Target
	mode     string // "", "slow", "garbage", "503"
	monolith string // Enable-Monolith header of the last request
}

func newFakeGhostWire(t *testing.T) *fakeGhostWire {
	g := &fakeGhostWire{}
	mux := http.NewServeMux()
	mux.HandleFunc("/mobyshark", func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		mode, ts := g.mode, g.targets
		g.monolith = r.Header.Get("Enable-Monolith")
		g.mu.Unlock()
		switch mode {
		case "slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		case "garbage":
			io.WriteString(w, "<html>not json</html>")
			return
		case "503":
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"containers": ts, "other": 1})
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, b, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, b); err != nil {
				return
			}
		}
	})
	g.Server = httptest.NewServer(mux)
	t.Cleanup(g.Close)
	return g
}

func (g *fakeGhostWire) set(mode string, ts ...discovery.Target) {
	g.mu.Lock()
	g.mode, g.targets = mode, ts
	g.mu.Unlock()
}

// tenant starts `sleep` inside ns and returns its pid and start time.
func tenant(t *testing.T, ns *testns.NS) (*exec.Cmd, int, uint64) {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	waitUntil(t, "tenant in netns", func() bool {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		return l == fmt.Sprintf("net:[%d]", ns.Inode)
	})
	st, err := (&netns.Finder{}).StartTime(pid)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, pid, st
}

func withGhostWire(g *fakeGhostWire, timeout time.Duration) func(*server.Config) {
	return func(c *server.Config) {
		c.Discovery = &discovery.GhostWire{URL: g.URL, Timeout: timeout}
		c.DiscoveryURL = g.URL
	}
}

// TestIntegrationResolveByName covers the reference forms
// (docs/openapi.yaml, container) that need a name, against a GhostWire
// stand-in.
func TestIntegrationResolveByName(t *testing.T) {
	old := testns.New(t) // where the stale reference points
	node, peer := testns.New(t), testns.New(t)
	testns.Veth(t, node, "eth1", "198.18.20.1/24", peer, "eth1", "198.18.20.2/24")
	testns.Veth(t, node, "eth2", "198.18.21.1/24", peer, "eth2", "198.18.21.2/24")
	oldCmd, oldPID, oldStart := tenant(t, old)
	_, pid, start := tenant(t, node)
	g := newFakeGhostWire(t)
	nodeTarget := discovery.Target{Name: "clab-lab-node1", Type: "docker", NetNS: node.Inode, PID: pid, StartTime: start, Interfaces: []string{"lo", "eth1", "eth2"}}
	g.set("", nodeTarget)
	_, ts := startServer(t, withGhostWire(g, time.Second))
	u1 := node.UDP("198.18.20.1:4000")
	u2 := node.UDP("198.18.21.1:4000")

	// capture sends 5 test packets out of eth1 and 5 out of eth2 and
	// returns the stream once want of them arrived.
	capture := func(t *testing.T, want int, qv url.Values, hdr http.Header) *stream {
		t.Helper()
		cl := dial(t, ts, qv, hdr)
		cl.waitLive()
		send(t, u1, "198.18.20.2:4000", '1', 5)
		send(t, u2, "198.18.21.2:4000", '2', 5)
		cl.waitPackets(want)
		cl.stop()
		return parse(t, cl.bytes())
	}
	names := func(s *stream) string {
		var n []string
		for _, f := range s.ifaces {
			n = append(n, f.Name)
		}
		return strings.Join(n, ",")
	}

	t.Run("stale pid with name resolves", func(t *testing.T) {
		oldCmd.Process.Kill()
		oldCmd.Wait()
		ref := fmt.Sprintf(`{"netns":%d,"pid":%d,"starttime":%d,"name":"clab-lab-node1","prefix":"","type":"docker"}`, old.Inode, oldPID, oldStart)
		s := capture(t, 10, q("container", ref), nil)
		if names(s) != "lo,eth1,eth2" || len(s.ours(t)) != 10 {
			t.Fatalf("interfaces %s, %d test packets; want node's lo,eth1,eth2 and 10", names(s), len(s.ours(t)))
		}
		if !strings.Contains(s.section.Comment, "\ncontainer-name: clab-lab-node1\ncontainer-type: docker\n") {
			t.Fatalf("SHB comment:\n%s", s.section.Comment)
		}
	})
	t.Run("containerlab name only with nif", func(t *testing.T) {
		ref := `{"network-interfaces":["eth1"],"name":"clab-lab-node1","type":"docker"}`
		s := capture(t, 5, q("container", ref, "nif", "eth1"), http.Header{"Clustershark-Container": {ref}, "Clustershark-Nif": {"eth1"}})
		if names(s) != "eth1" || len(s.ours(t)) != 5 {
			t.Fatalf("interfaces %s, %d packets", names(s), len(s.ours(t)))
		}
	})
	t.Run("placeholder netns and name keeps the reference's interfaces", func(t *testing.T) {
		ref := fmt.Sprintf(`{"netns":%d,"network-interfaces":["eth2","eth1"],"name":"clab-lab-node1","prefix":""}`, old.Inode)
		s := capture(t, 10, q("container", ref), nil)
		if names(s) != "eth2,eth1" || len(s.ours(t)) != 10 {
			t.Fatalf("interfaces %s, %d packets", names(s), len(s.ours(t)))
		}
	})
	t.Run("explicit nif beats the reference", func(t *testing.T) {
		ref := `{"network-interfaces":["eth2"],"name":"clab-lab-node1"}`
		s := capture(t, 5, q("container", ref, "nif", "eth1"), nil)
		if names(s) != "eth1" {
			t.Fatalf("interfaces %s", names(s))
		}
	})

	for _, tc := range []struct {
		name, mode string
		targets    []discovery.Target
		code       websocket.StatusCode
		reason     string
	}{
		{"not found", "", []discovery.Target{nodeTarget}, 1008, `no container named "web" found by discovery`},
		{"ambiguous", "", []discovery.Target{{Name: "web", NetNS: node.Inode}, {Name: "web", NetNS: old.Inode}}, 1008, `container name "web" is ambiguous: ambiguous target name: 2 targets named "web"`},
		{"slow", "slow", nil, 1011, `cannot look up "web": discovery service unavailable: ` + g.URL + `: no answer within 1s`},
		{"malformed", "garbage", nil, 1011, `cannot look up "web": discovery service sent a malformed answer`},
		{"unavailable", "503", nil, 1011, `cannot look up "web": discovery service unavailable: ` + g.URL + ` answered 503`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.set(tc.mode, tc.targets...)
			cl := dial(t, ts, q("container", `{"name":"web"}`), nil)
			code, why := cl.closeStatus()
			if code != tc.code || !strings.HasPrefix(why, tc.reason) || len(why) > 123 {
				t.Fatalf("close %d %q\nwant %d %q...", code, why, tc.code, tc.reason)
			}
		})
	}
	t.Run("down", func(t *testing.T) {
		gone := httptest.NewServer(http.NotFoundHandler())
		gone.Close()
		_, ts := startServer(t, func(c *server.Config) { c.Discovery = &discovery.GhostWire{URL: gone.URL, Timeout: time.Second} })
		cl := dial(t, ts, q("container", `{"name":"web"}`), nil)
		code, why := cl.closeStatus()
		if code != 1011 || !strings.HasPrefix(why, `cannot look up "web": discovery service unavailable: `+gone.URL) {
			t.Fatalf("close %d %q", code, why)
		}
	})
}

// TestIntegrationDiscoveryProxy: /discover/... reaches GhostWire, HTTP and
// WebSocket, with Enable-Monolith; a dead upstream gives 502.
func TestIntegrationDiscoveryProxy(t *testing.T) {
	g := newFakeGhostWire(t)
	g.set("", discovery.Target{Name: "x", Type: "proc", NetNS: 4026531840})
	_, ts := startServer(t, withGhostWire(g, time.Second), func(c *server.Config) { c.ProxyDiscovery = true })

	resp, err := http.Get(ts.URL + "/discover/mobyshark")
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Containers []discovery.Target }
	json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	g.mu.Lock()
	monolith := g.monolith
	g.mu.Unlock()
	if resp.StatusCode != 200 || len(got.Containers) != 1 || got.Containers[0].Name != "x" || monolith != "true" {
		t.Fatalf("status %d, %+v, Enable-Monolith %q", resp.StatusCode, got, monolith)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/discover/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("ping through the proxy")); err != nil {
		t.Fatal(err)
	}
	if _, b, err := c.Read(ctx); err != nil || string(b) != "ping through the proxy" {
		t.Fatalf("echo %q, %v", b, err)
	}
	c.Close(websocket.StatusNormalClosure, "")

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	_, ts2 := startServer(t, func(c *server.Config) {
		c.Discovery = &discovery.GhostWire{URL: gone.URL}
		c.DiscoveryURL, c.ProxyDiscovery = gone.URL, true
	})
	start := time.Now()
	resp, err = http.Get(ts2.URL + "/discover/mobyshark")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), "discovery service") || time.Since(start) > 5*time.Second {
		t.Fatalf("status %d after %v: %s", resp.StatusCode, time.Since(start), body)
	}
}

// TestIntegrationBuiltinDiscovery: without GhostWire, /discover/mobyshark
// lists what the test created, and a name from it captures.
func TestIntegrationBuiltinDiscovery(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.22.1/24", b, "eth0", "198.18.22.2/24")
	held := testns.New(t)
	_, pid, start := tenant(t, held)
	held.Delete() // only the sleep holds it now: a proc target
	_, ts := startServer(t)

	list := func() map[string]discovery.Target {
		resp, err := http.Get(ts.URL + "/discover/mobyshark")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var got struct{ Containers []discovery.Target }
		if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
			t.Fatal(err)
		}
		m := map[string]discovery.Target{}
		for _, x := range got.Containers {
			m[x.Name] = x
		}
		return m
	}
	m := list()
	ta, ok := m[a.Name]
	if !ok || ta.Type != "bindmount" || ta.NetNS != a.Inode || strings.Join(ta.Interfaces, ",") != "lo,eth0" || ta.PID != 0 {
		t.Fatalf("%s: %+v (present %v)", a.Name, ta, ok)
	}
	procName := fmt.Sprintf("sleep(%d)", pid)
	tp, ok := m[procName]
	if !ok || tp.Type != "proc" || tp.NetNS != held.Inode || tp.PID != pid || tp.StartTime != start {
		t.Fatalf("%s: %+v (present %v)", procName, tp, ok)
	}

	cl := dial(t, ts, q("container", fmt.Sprintf(`{"name":%q,"type":"bindmount"}`, a.Name)), nil)
	cl.waitLive()
	send(t, a.UDP("198.18.22.1:4000"), "198.18.22.2:4000", 'B', 5)
	cl.waitPackets(5)
	cl.stop()
}

// TestIntegrationDockerNameOnly: a real Docker container, found by the
// name Docker gives it, captures the traffic sent inside it.
func TestIntegrationDockerNameOnly(t *testing.T) {
	testns.RequireRoot(t)
	d := testns.StartDocker(t)
	name := fmt.Sprintf("pfweb-%d", os.Getpid())
	ctr := d.Run(name)
	peer := testns.New(t)
	testns.Cmd(t, "ip", "link", "add", "pfh0", "netns", peer.Name, "type", "veth", "peer", "name", "eth1", "netns", fmt.Sprint(ctr.PID))
	cns, err := netns.OpenPath(fmt.Sprintf("/proc/%d/ns/net", ctr.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer cns.Close()
	var u *net.UDPConn
	if err := netns.Do(cns, func() error {
		for _, args := range [][]string{{"addr", "add", "198.18.23.2/24", "dev", "eth1"}, {"link", "set", "eth1", "up"}} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		return nil
	}); err != nil {
		// exec from a locked thread: the child inherits the netns.
		t.Fatal(err)
	}
	peer.IP("addr", "add", "198.18.23.1/24", "dev", "pfh0")
	peer.IP("link", "set", "pfh0", "up")
	if err := netns.Do(cns, func() (err error) {
		u, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(198, 18, 23, 2), Port: 4000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	_, ts := startServer(t, func(c *server.Config) {
		c.Discovery = discovery.NewDiscoverer(discovery.DiscoverConfig{DockerHost: d.Host, Log: testLogger(t)})
	})
	ref := fmt.Sprintf(`{"network-interfaces":["eth1"],"name":%q,"type":"docker"}`, name)
	cl := dial(t, ts, q("container", ref, "nif", "eth1"), nil)
	cl.waitLive()
	send(t, u, "198.18.23.1:4000", 'D', 5)
	s := cl.waitPackets(5)
	cl.stop()
	if len(s.ifaces) != 1 || s.ifaces[0].Name != "eth1" {
		t.Fatalf("interfaces %+v", s.ifaces)
	}
	if !strings.Contains(s.section.Comment, "\ncontainer-name: "+name+"\ncontainer-type: docker\n") {
		t.Fatalf("SHB comment:\n%s", s.section.Comment)
	}
	if d := s.ifaces[0].Description; !strings.HasPrefix(d, "netns ") || !strings.HasSuffix(d, ", target "+name) {
		t.Fatalf("if_description %q, want netns N, target %s", d, name)
	}
}
