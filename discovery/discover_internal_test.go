package discovery

import (
	"github.com/packetflix/packetflix/netns"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// Inodes used by the fixtures below.
const (
	inoHost = 4026531840 + iota
	inoA
	inoB
	inoC
	inoD
)

func cont(typ, name string, pid int, st, ino uint64) containerInfo {
	return containerInfo{
		engineContainer: engineContainer{Type: typ, Name: name, ID: name, PID: pid},
		NetNS:           ino, StartTime: st, Path: fmt.Sprintf("/proc/%d/ns/net", pid),
	}
}

func mnt(point string, ino uint64) mountInfo { return mountInfo{NetNS: ino, Point: point, Path: point} }

func prc(pid int, comm string, st, ino uint64) procInfo {
	return procInfo{PID: pid, Comm: comm, NetNS: ino, StartTime: st, Path: fmt.Sprintf("/proc/%d/ns/net", pid)}
}

// want builds an expected candidate; path is /proc/PID/ns/net for targets
// with a PID, else the mount point, unless given.
func want(typ, name string, ino uint64, pid int, st uint64, path ...string) candidate {
	c := candidate{Target: Target{Name: name, Type: typ, NetNS: ino, PID: pid, StartTime: st}, base: name}
	if pid != 0 {
		c.path = fmt.Sprintf("/proc/%d/ns/net", pid)
	}
	if len(path) > 0 {
		c.path = path[0]
	}
	return c
}

// renamed returns c with Name set, keeping its base name.
func renamed(c candidate, name string) candidate {
	c.Name = name
	return c
}

// hostProcs is a host with init, kthreadd and a daemon in the host netns.
var hostProcs = []procInfo{
	prc(1, "systemd", 5, inoHost),
	prc(2, "kthreadd", 5, inoHost),
	prc(300, "sshd", 900, inoHost),
}

var hostTarget = want(TypeProc, "systemd(1)", inoHost, 1, 5)

func Test_mergeTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		host uint64
		cs   []containerInfo
		ms   []mountInfo
		ps   []procInfo
		want []candidate
	}{
		{
			name: "host only",
			host: inoHost, ps: hostProcs,
			want: []candidate{hostTarget},
		},
		{
			name: "host named after PID 1 even when another process started first",
			// PID 1 of a PID namespace may start after processes that were
			// moved into the host netns... or have a later clock tick.
			host: inoHost, ps: []procInfo{prc(7, "early", 1, inoHost), prc(1, "init", 2, inoHost)},
			want: []candidate{want(TypeProc, "init(1)", inoHost, 1, 2)},
		},
		{
			name: "host without a readable PID 1: first started",
			host: inoHost, ps: []procInfo{prc(300, "sshd", 900, inoHost), prc(2, "kthreadd", 24, inoHost), prc(3, "pool", 24, inoHost)},
			want: []candidate{want(TypeProc, "kthreadd(2)", inoHost, 2, 24)},
		},
		{
			name: "unknown host: no namespace is special",
			host: 0, ps: []procInfo{prc(1, "init", 5, inoHost)},
			cs:   []containerInfo{cont(TypeDocker, "hostnet", 50, 3, inoHost)},
			want: []candidate{want(TypeDocker, "hostnet", inoHost, 50, 3)},
		},
		{
			name: "bind mount without process",
			host: inoHost, ps: hostProcs, ms: []mountInfo{mnt("/run/netns/blue", inoA)},
			want: []candidate{want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"), hostTarget},
		},
		{
			name: "bind mount with processes is listed once, as bind mount",
			host: inoHost,
			ps:   append(slices.Clone(hostProcs), prc(400, "sleep", 1000, inoA)),
			ms:   []mountInfo{mnt("/run/netns/blue", inoA)},
			want: []candidate{want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"), hostTarget},
		},
		{
			name: "process-only netns named after the first started, lower PID on a tie",
			host: inoHost,
			ps: append(slices.Clone(hostProcs),
				prc(410, "child", 1001, inoA), prc(400, "sh", 1000, inoA),
				// The PID counter wrapped: the lower PID started later.
				prc(90, "late", 2000, inoB), prc(800, "first", 1500, inoB),
				prc(601, "b", 3000, inoC), prc(600, "a", 3000, inoC)),
			want: []candidate{
				want(TypeProc, "a(600)", inoC, 600, 3000),
				want(TypeProc, "first(800)", inoB, 800, 1500),
				want(TypeProc, "sh(400)", inoA, 400, 1000),
				hostTarget,
			},
		},
		{
			name: "container wins over its bind mount and processes",
			host: inoHost,
			cs:   []containerInfo{cont(TypeDocker, "web", 500, 1200, inoA)},
			ms:   []mountInfo{mnt("/var/run/docker/netns/1a2b3c", inoA)},
			ps:   append(slices.Clone(hostProcs), prc(500, "nginx", 1200, inoA), prc(501, "nginx", 1201, inoA)),
			want: []candidate{hostTarget, want(TypeDocker, "web", inoA, 500, 1200)},
		},
		{
			name: "shared netns: the container started first owns it",
			host: inoHost, ps: hostProcs,
			cs: []containerInfo{
				cont(TypeDocker, "joiner", 600, 1300, inoA), // --network container:owner
				cont(TypeDocker, "owner", 500, 1200, inoA),
			},
			want: []candidate{want(TypeDocker, "owner", inoA, 500, 1200), hostTarget},
		},
		{
			name: "docker and containerd views of one container: docker",
			host: inoHost, ps: hostProcs,
			cs: []containerInfo{
				cont(TypeContainerd, "moby/0123abcd", 500, 1200, inoA),
				cont(TypeDocker, "web", 500, 1200, inoA),
			},
			want: []candidate{hostTarget, want(TypeDocker, "web", inoA, 500, 1200)},
		},
		{
			name: "pod: one target, the sandbox's task",
			host: inoHost, ps: hostProcs,
			cs: func() []containerInfo {
				app := cont(TypePod, "default/web", 710, 1400, inoA)
				sb := cont(TypePod, "default/web", 700, 1400, inoA)
				sb.Sandbox = true
				other := cont(TypeContainerd, "default/0a1b", 720, 1399, inoB)
				return []containerInfo{app, other, sb}
			}(),
			want: []candidate{
				want(TypeContainerd, "default/0a1b", inoB, 720, 1399),
				want(TypePod, "default/web", inoA, 700, 1400),
				hostTarget,
			},
		},
		{
			name: "host networking and a bind mount of the host netns leave the host a proc target",
			host: inoHost, ps: hostProcs,
			cs:   []containerInfo{cont(TypeDocker, "hostnet", 500, 1200, inoHost)},
			ms:   []mountInfo{mnt("/run/netns/host", inoHost)},
			want: []candidate{hostTarget},
		},
		{
			name: "several mounts of one netns: /run/netns first, then lexically",
			host: inoHost, ps: hostProcs,
			ms: []mountInfo{
				mnt("/srv/a", inoA), mnt("/run/netns/zed", inoA),
				mnt("/srv/y", inoB), mnt("/srv/x", inoB),
				mnt("/var/run/netns/old", inoC), mnt("/run/netns/new", inoC),
			},
			want: []candidate{
				want(TypeBindMount, "new", inoC, 0, 0, "/run/netns/new"),
				hostTarget,
				want(TypeBindMount, "x", inoB, 0, 0, "/srv/x"),
				want(TypeBindMount, "zed", inoA, 0, 0, "/run/netns/zed"),
			},
		},
		{
			name: "same mount in our and PID 1's mountinfo: ours is opened",
			host: inoHost, ps: hostProcs,
			ms: []mountInfo{
				mnt("/run/netns/blue", inoA),
				{NetNS: inoA, Point: "/run/netns/blue", Path: "/proc/1/root/run/netns/blue"},
				{NetNS: inoB, Point: "/run/netns/only-init", Path: "/proc/1/root/run/netns/only-init"},
			},
			want: []candidate{
				want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"),
				want(TypeBindMount, "only-init", inoB, 0, 0, "/proc/1/root/run/netns/only-init"),
				hostTarget,
			},
		},
		{
			name: "shared names all get the netns",
			host: inoHost, ps: hostProcs,
			cs: []containerInfo{cont(TypeDocker, "blue", 500, 1200, inoB)},
			ms: []mountInfo{mnt("/run/netns/blue", inoA), mnt("/run/docker/netns/blue", inoC)},
			want: []candidate{
				renamed(want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"), fmt.Sprintf("blue (netns %d)", inoA)),
				renamed(want(TypeDocker, "blue", inoB, 500, 1200), fmt.Sprintf("blue (netns %d)", inoB)),
				renamed(want(TypeBindMount, "blue", inoC, 0, 0, "/run/docker/netns/blue"), fmt.Sprintf("blue (netns %d)", inoC)),
				hostTarget,
			},
		},
		{
			name: "a made-unique name that is taken gets a number",
			host: inoHost, ps: hostProcs,
			cs: []containerInfo{
				cont(TypeDocker, "x", 500, 1200, inoA),
				cont(TypeDocker, fmt.Sprintf("x (netns %d)", inoB), 501, 1200, inoC),
			},
			ms: []mountInfo{mnt("/run/netns/x", inoB)},
			want: []candidate{
				hostTarget,
				renamed(want(TypeDocker, "x", inoA, 500, 1200), fmt.Sprintf("x (netns %d)", inoA)),
				want(TypeDocker, fmt.Sprintf("x (netns %d)", inoB), inoC, 501, 1200),
				renamed(want(TypeBindMount, "x", inoB, 0, 0, "/run/netns/x"), fmt.Sprintf("x (netns %d) #2", inoB)),
			},
		},
		{
			name: "entries without a netns are ignored",
			host: inoHost, ps: append(slices.Clone(hostProcs), prc(9, "ghost", 1, 0)),
			cs:   []containerInfo{cont(TypeDocker, "gone", 500, 1, 0)},
			ms:   []mountInfo{mnt("/run/netns/none", 0)},
			want: []candidate{hostTarget},
		},
		{
			name: "nothing at all",
			want: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cs, ms, ps := slices.Clone(tt.cs), slices.Clone(tt.ms), slices.Clone(tt.ps)
			got := mergeTargets(tt.host, tt.cs, tt.ms, tt.ps)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("mergeTargets:\n got %s\nwant %s", dump(got), dump(tt.want))
			}
			if !reflect.DeepEqual(cs, tt.cs) || !reflect.DeepEqual(ms, tt.ms) || !reflect.DeepEqual(ps, tt.ps) {
				t.Error("mergeTargets modified its input")
			}
			// The same input in another order gives the same result.
			slices.Reverse(cs)
			slices.Reverse(ms)
			slices.Reverse(ps)
			if again := mergeTargets(tt.host, cs, ms, ps); !reflect.DeepEqual(again, got) {
				t.Errorf("mergeTargets depends on input order:\n got %s\nthen %s", dump(got), dump(again))
			}
			names := map[string]bool{}
			for _, c := range got {
				if names[c.Name] {
					t.Errorf("name %q twice", c.Name)
				}
				names[c.Name] = true
			}
		})
	}
}

func dump(cs []candidate) string {
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "\n\t{%q %s netns=%d pid=%d st=%d base=%q path=%q}", c.Name, c.Type, c.NetNS, c.PID, c.StartTime, c.base, c.path)
	}
	return b.String()
}

func Test_lookupCandidate(t *testing.T) {
	t.Parallel()
	cs := mergeTargets(inoHost,
		[]containerInfo{cont(TypeDocker, "blue", 500, 1200, inoB), cont(TypeDocker, "web", 501, 1200, inoD)},
		[]mountInfo{mnt("/run/netns/blue", inoA)},
		append(slices.Clone(hostProcs), prc(400, "sleep", 1000, inoC)))
	blueA := fmt.Sprintf("blue (netns %d)", inoA)
	tests := []struct {
		name, look, prefix string
		want               string // name of the candidate found
		err                error
	}{
		{name: "container", look: "web", want: "web"},
		{name: "proc", look: "sleep(400)", want: "sleep(400)"},
		{name: "host", look: "systemd(1)", want: "systemd(1)"},
		{name: "made-unique name", look: blueA, want: blueA},
		{name: "shared name", look: "blue", err: ErrAmbiguous},
		{name: "unknown", look: "nope", err: netns.ErrNotFound},
		{name: "prefix differs", look: "web", prefix: "dind:", err: netns.ErrNotFound},
		{name: "case matters", look: "Web", err: netns.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := lookupCandidate(cs, tt.look, tt.prefix)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("lookup %q = %q, %v; want %v", tt.look, c.Name, err, tt.err)
				}
				if errors.Is(err, ErrAmbiguous) && !strings.Contains(err.Error(), strconvQuote(blueA)) {
					t.Errorf("ambiguity error %q does not name the candidates", err)
				}
				return
			}
			if err != nil || c.Name != tt.want {
				t.Fatalf("lookup %q = %q, %v; want %q", tt.look, c.Name, err, tt.want)
			}
		})
	}
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }

func listenUnix(path string) (*net.UnixListener, error) {
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

func TestTargetJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   Target
		want string
	}{
		{
			name: "nil interfaces are an empty list",
			in:   Target{Name: "blue", Type: TypeBindMount, NetNS: 4026532999},
			want: `{"name":"blue","type":"bindmount","netns":4026532999,"network-interfaces":[],"pid":0,"starttime":0,"prefix":""}`,
		},
		{
			name: "all fields",
			in:   Target{Name: "sleep(7)", Type: TypeProc, NetNS: 4026532999, Interfaces: []string{"lo", "eth0"}, PID: 7, StartTime: 99},
			want: `{"name":"sleep(7)","type":"proc","netns":4026532999,"network-interfaces":["lo","eth0"],"pid":7,"starttime":99,"prefix":""}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, v := range []any{tt.in, &tt.in, []Target{tt.in}} {
				b, err := json.Marshal(v)
				if err != nil {
					t.Fatal(err)
				}
				got := strings.TrimSuffix(strings.TrimPrefix(string(b), "["), "]")
				if got != tt.want {
					t.Errorf("json of %T:\n got %s\nwant %s", v, got, tt.want)
				}
			}
			var back Target
			if err := json.Unmarshal([]byte(tt.want), &back); err != nil {
				t.Fatal(err)
			}
			if back.Name != tt.in.Name || back.NetNS != tt.in.NetNS || back.PID != tt.in.PID || len(back.Interfaces) != len(tt.in.Interfaces) {
				t.Errorf("round trip: %+v, want %+v", back, tt.in)
			}
		})
	}
}

func Test_parseStat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, stat, comm string
		st               uint64
		ok               bool
	}{
		{name: "plain", stat: statLine(1, "systemd", 5), comm: "systemd", st: 5, ok: true},
		{name: "parens and spaces in comm", stat: statLine(9, "a) (b c", 77), comm: "a) (b c", st: 77, ok: true},
		{name: "empty comm", stat: statLine(9, "", 77), comm: "", st: 77, ok: true},
		{name: "no comm", stat: "9 S 0", ok: false},
		{name: "short", stat: "9 (x) S 0 0", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			comm, st, err := parseStat([]byte(tt.stat))
			if (err == nil) != tt.ok || comm != tt.comm || st != tt.st {
				t.Fatalf("parseStat(%q) = %q, %d, %v; want %q, %d, ok=%v", tt.stat, comm, st, err, tt.comm, tt.st, tt.ok)
			}
		})
	}
}

// statLine is a /proc/PID/stat line with comm and start time set.
func statLine(pid int, comm string, starttime uint64) string {
	// After "(comm)": state (field 3), fields 4-21, then field 22.
	return fmt.Sprintf("%d (%s) S %s%d 0 0\n", pid, comm, strings.Repeat("0 ", 18), starttime)
}

// fakeProcTree writes a /proc with the given processes (pid -> comm,
// starttime, netns) and mountinfo for self; self and 1 share a mount
// namespace unless initMnt differs.
func fakeProcTree(t *testing.T, procs map[int]procInfo, selfMountinfo, initMountinfo, initMnt string) string {
	t.Helper()
	dir := t.TempDir()
	for pid, p := range procs {
		d := filepath.Join(dir, fmt.Sprint(pid))
		mustMkdirAll(t, filepath.Join(d, "ns"))
		mustWriteFile(t, filepath.Join(d, "stat"), statLine(pid, p.Comm, p.StartTime))
		if p.NetNS != 0 {
			if err := os.Symlink(fmt.Sprintf("net:[%d]", p.NetNS), filepath.Join(d, "ns", "net")); err != nil {
				t.Fatal(err)
			}
		}
	}
	mustMkdirAll(t, filepath.Join(dir, "self", "ns"))
	mustWriteFile(t, filepath.Join(dir, "self", "mountinfo"), selfMountinfo)
	if err := os.Symlink("mnt:[4026531832]", filepath.Join(dir, "self", "ns", "mnt")); err != nil {
		t.Fatal(err)
	}
	if _, ok := procs[1]; ok {
		mustWriteFile(t, filepath.Join(dir, "1", "mountinfo"), initMountinfo)
		if err := os.Symlink(initMnt, filepath.Join(dir, "1", "ns", "mnt")); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustMkdirAll(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWriteFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestDiscoverFakeProc runs the discovery up to the merge (interfaces need
// real namespaces) on fake /proc trees, with both engines absent.
func TestDiscoverFakeProc(t *testing.T) {
	t.Parallel()
	const mi = "22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw\n" +
		"43 22 0:4 net:[4026531841] /run/netns/blue rw shared:2 - nsfs nsfs rw\n" +
		"44 22 0:4 uts:[4026531843] /run/utsns/blue rw shared:3 - nsfs nsfs rw\n"
	const initMI = mi + "45 22 0:4 net:[4026531844] /run/netns/init\\040only rw shared:4 - nsfs nsfs rw\n"
	procs := map[int]procInfo{
		1:   {Comm: "init", StartTime: 10, NetNS: inoHost},
		2:   {Comm: "kthreadd", StartTime: 10, NetNS: inoHost},
		50:  {Comm: "sleep", StartTime: 500, NetNS: inoA},               // inside the bind-mounted netns
		60:  {Comm: "my daemon (x)", StartTime: 600, NetNS: 4026531845}, // a netns of its own
		61:  {Comm: "worker", StartTime: 601, NetNS: 4026531845},        // and its child
		70:  {Comm: "gone", StartTime: 700},                             // ns link not readable
		800: {Comm: "pause", StartTime: 800, NetNS: 4026531846},         // no engine to claim it
		801: {Comm: "in host", StartTime: 801, NetNS: inoHost},
	}

	t.Run("same mount namespace", func(t *testing.T) {
		t.Parallel()
		proc := fakeProcTree(t, procs, mi, initMI, "mnt:[4026531832]")
		d := NewDiscoverer(DiscoverConfig{
			Finder:           &netns.Finder{ProcRoot: proc},
			DockerHost:       "unix://" + filepath.Join(proc, "no-docker.sock"),
			ContainerdSocket: filepath.Join(proc, "no-containerd.sock"),
		})
		got, err := d.candidates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		wantC := []candidate{
			want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"),
			want(TypeProc, "init(1)", inoHost, 1, 10, filepath.Join(proc, "1", "ns", "net")),
			want(TypeProc, "my daemon (x)(60)", 4026531845, 60, 600, filepath.Join(proc, "60", "ns", "net")),
			want(TypeProc, "pause(800)", 4026531846, 800, 800, filepath.Join(proc, "800", "ns", "net")),
		}
		if !reflect.DeepEqual(got, wantC) {
			t.Errorf("candidates:\n got %s\nwant %s", dump(got), dump(wantC))
		}
	})

	t.Run("PID 1 in another mount namespace", func(t *testing.T) {
		t.Parallel()
		proc := fakeProcTree(t, procs, mi, initMI, "mnt:[4026531999]")
		s, err := scanHost(proc)
		if err != nil {
			t.Fatal(err)
		}
		wantM := []mountInfo{
			{NetNS: inoA, Point: "/run/netns/blue", Path: "/run/netns/blue"},
			{NetNS: inoA, Point: "/run/netns/blue", Path: filepath.Join(proc, "1", "root", "run", "netns", "blue")},
			{NetNS: 4026531844, Point: "/run/netns/init only", Path: filepath.Join(proc, "1", "root", "run", "netns", "init only")},
		}
		if !reflect.DeepEqual(s.mounts, wantM) {
			t.Errorf("mounts = %+v\nwant %+v", s.mounts, wantM)
		}
		if s.host != inoHost {
			t.Errorf("host = %d, want %d", s.host, inoHost)
		}
	})

	t.Run("PID 1 netns unreadable: kthreadd's is the host's", func(t *testing.T) {
		t.Parallel()
		p := map[int]procInfo{
			1:  {Comm: "init", StartTime: 10},
			2:  {Comm: "kthreadd", StartTime: 10, NetNS: inoHost},
			3:  {Comm: "pool", StartTime: 10, NetNS: inoHost},
			40: {Comm: "daemon", StartTime: 400, NetNS: inoHost},
		}
		proc := fakeProcTree(t, p, mi, mi, "mnt:[4026531832]")
		s, err := scanHost(proc)
		if err != nil {
			t.Fatal(err)
		}
		if s.host != inoHost {
			t.Fatalf("host = %d, want kthreadd's %d", s.host, inoHost)
		}
		got := mergeTargets(s.host, nil, nil, s.procs)
		if len(got) != 1 || got[0].Name != "kthreadd(2)" {
			t.Errorf("targets %s, want kthreadd(2) alone", dump(got))
		}
	})

	t.Run("engine containers are looked up in the netns.Finder's proc", func(t *testing.T) {
		t.Parallel()
		proc := fakeProcTree(t, procs, mi, initMI, "mnt:[4026531832]")
		f := &netns.Finder{ProcRoot: proc}
		ci, err := resolveContainer(f, engineContainer{Type: TypeDocker, Name: "web", PID: 800})
		if err != nil {
			t.Fatal(err)
		}
		if ci.NetNS != 4026531846 || ci.StartTime != 800 || ci.Path != filepath.Join(proc, "800", "ns", "net") {
			t.Errorf("resolveContainer = %+v", ci)
		}
		for _, pid := range []int{70, 12345} {
			if ci, err := resolveContainer(f, engineContainer{Type: TypeDocker, Name: "x", PID: pid}); err == nil {
				t.Errorf("resolveContainer(pid %d) = %+v, want an error", pid, ci)
			}
		}
	})

	t.Run("no proc", func(t *testing.T) {
		t.Parallel()
		d := NewDiscoverer(DiscoverConfig{Finder: &netns.Finder{ProcRoot: filepath.Join(t.TempDir(), "nope")},
			DockerHost: "unix:///nonexistent/docker.sock", ContainerdSocket: "/nonexistent/containerd.sock"})
		_, err := d.List(context.Background())
		var oe *netns.OpError
		if !errors.As(err, &oe) || oe.Op != OpDiscover {
			t.Fatalf("List = %v, want a netns.OpError with Op %q", err, OpDiscover)
		}
	})
}

// TestDiscoverAbsentEngines checks that engines whose sockets do not exist,
// or that nobody listens on, are skipped quietly: debug logs, no warning.
func TestDiscoverAbsentEngines(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A socket file whose listener is gone refuses connections.
	stale := filepath.Join(dir, "stale.sock")
	l, err := listenUnix(stale)
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()

	for _, tt := range []struct{ name, docker, containerd string }{
		{"missing", "unix://" + filepath.Join(dir, "docker.sock"), filepath.Join(dir, "containerd.sock")},
		{"refused", "unix://" + stale, stale},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			core, logs := observer.New(zap.DebugLevel)
			d := NewDiscoverer(DiscoverConfig{DockerHost: tt.docker, ContainerdSocket: tt.containerd,
				EngineTimeout: 5 * time.Second, Log: zap.New(core)})
			start := time.Now()
			if _, err := d.candidates(context.Background()); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %v with absent engines", took)
			}
			absent := logs.FilterMessage("container engine absent, skipped")
			if absent.Len() != 2 {
				t.Errorf("%d absent-engine logs, want 2: %v", absent.Len(), logs.All())
			}
			for _, e := range absent.All() {
				if e.Level != zap.DebugLevel {
					t.Errorf("absent engine logged at %v: %v", e.Level, e.ContextMap())
				}
			}
			if w := logs.FilterLevelExact(zap.WarnLevel).Len(); w != 0 {
				t.Errorf("%d warnings: %v", w, logs.All())
			}
		})
	}
}
