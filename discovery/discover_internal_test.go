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

func prc(pid, ppid int, comm string, st, ino uint64) procInfo {
	return procInfo{PID: pid, PPID: ppid, Comm: comm, NetNS: ino, StartTime: st, Path: fmt.Sprintf("/proc/%d/ns/net", pid)}
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

// hostProcs is a host with init, kthreadd, a kernel thread and a daemon
// in the host netns.
var hostProcs = []procInfo{
	prc(1, 0, "systemd", 5, inoHost),
	prc(2, 0, "kthreadd", 5, inoHost),
	prc(3, 2, "kworker/0:0", 5, inoHost),
	prc(300, 1, "sshd", 900, inoHost),
}

var hostTarget = want(TypeProc, "systemd(1)", inoHost, 1, 5)

func withHost(ps ...procInfo) []procInfo { return append(slices.Clone(hostProcs), ps...) }

func alias(point string, ino uint64) candidate {
	name := point[strings.LastIndexByte(point, '/')+1:]
	c := want(TypeBindMount, name, ino, 0, 0, point)
	c.alias = true
	return c
}

func Test_mergeTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cs   []containerInfo
		ms   []mountInfo
		ps   []procInfo
		want []candidate
	}{
		{
			name: "host only: PID 1, not kthreadd or kernel threads",
			ps:   hostProcs,
			want: []candidate{hostTarget},
		},
		{
			name: "process-less bind mount",
			ps:   hostProcs, ms: []mountInfo{mnt("/run/netns/blue", inoA)},
			want: []candidate{want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"), hostTarget},
		},
		{
			name: "bind mount plus a process: the process, the mount only as an alias",
			ps:   withHost(prc(400, 300, "sleep", 1000, inoA)),
			ms:   []mountInfo{mnt("/run/netns/blue", inoA)},
			want: []candidate{want(TypeProc, "sleep(400)", inoA, 400, 1000), hostTarget, alias("/run/netns/blue", inoA)},
		},
		{
			name: "two top-level processes in one netns, and a child that is not",
			ps: withHost(
				prc(400, 300, "sh", 1000, inoA), prc(410, 400, "child", 1001, inoA),
				prc(500, 1, "sleep", 1100, inoA)),
			want: []candidate{want(TypeProc, "sh(400)", inoA, 400, 1000), want(TypeProc, "sleep(500)", inoA, 500, 1100), hostTarget},
		},
		{
			name: "a child in another netns is a tenant there, its parent here",
			ps: withHost(
				prc(400, 300, "unshare", 1000, inoA),
				prc(410, 400, "sleep", 1001, inoB), prc(420, 410, "sleep", 1002, inoB)),
			want: []candidate{want(TypeProc, "sleep(410)", inoB, 410, 1001), hostTarget, want(TypeProc, "unshare(400)", inoA, 400, 1000)},
		},
		{
			name: "a process whose parent is unknown (exited meanwhile) is a tenant",
			ps:   withHost(prc(400, 399, "orphan", 1000, inoA)),
			want: []candidate{want(TypeProc, "orphan(400)", inoA, 400, 1000), hostTarget},
		},
		{
			name: "container: its init named after it, its bind mount an alias, its children nothing",
			cs:   []containerInfo{cont(TypeDocker, "web", 500, 1200, inoA)},
			ms:   []mountInfo{mnt("/var/run/docker/netns/1a2b3c", inoA)},
			ps:   withHost(prc(490, 1, "containerd-shim", 1199, inoHost), prc(500, 490, "nginx", 1200, inoA), prc(501, 500, "nginx", 1201, inoA)),
			want: []candidate{hostTarget, want(TypeDocker, "web", inoA, 500, 1200), alias("/var/run/docker/netns/1a2b3c", inoA)},
		},
		{
			name: "docker exec: a further top-level process in the container is a proc tenant",
			cs:   []containerInfo{cont(TypeDocker, "web", 500, 1200, inoA)},
			ps: withHost(prc(490, 1, "containerd-shim", 1199, inoHost), prc(500, 490, "nginx", 1200, inoA),
				prc(600, 490, "sh", 1500, inoA)),
			want: []candidate{want(TypeProc, "sh(600)", inoA, 600, 1500), hostTarget, want(TypeDocker, "web", inoA, 500, 1200)},
		},
		{
			name: "shared netns (--network container:owner): each container is a tenant",
			cs: []containerInfo{
				cont(TypeDocker, "joiner", 600, 1300, inoA),
				cont(TypeDocker, "owner", 500, 1200, inoA),
			},
			ps: withHost(prc(490, 1, "shim", 1199, inoHost), prc(500, 490, "sleep", 1200, inoA),
				prc(590, 1, "shim", 1299, inoHost), prc(600, 590, "sleep", 1300, inoA)),
			want: []candidate{want(TypeDocker, "joiner", inoA, 600, 1300), want(TypeDocker, "owner", inoA, 500, 1200), hostTarget},
		},
		{
			name: "host networking: the container is a tenant of the host netns next to PID 1",
			cs:   []containerInfo{cont(TypeDocker, "hostnet", 500, 1200, inoHost)},
			ms:   []mountInfo{mnt("/run/netns/host", inoHost)},
			ps:   withHost(prc(490, 1, "shim", 1199, inoHost), prc(500, 490, "sleep", 1200, inoHost)),
			want: []candidate{want(TypeDocker, "hostnet", inoHost, 500, 1200), hostTarget, alias("/run/netns/host", inoHost)},
		},
		{
			name: "one container through several engines is listed once, by the best name",
			cs: []containerInfo{
				cont(TypeContainerd, "moby/0123abcd", 500, 1200, inoA),
				cont(TypeDocker, "web", 500, 1200, inoA),
				cont(TypeContainerd, "default/0a1b", 700, 1400, inoB),
				cont(TypePodman, "db", 700, 1400, inoB),
			},
			ps:   withHost(prc(500, 1, "nginx", 1200, inoA), prc(700, 1, "postgres", 1400, inoB)),
			want: []candidate{want(TypePodman, "db", inoB, 700, 1400), hostTarget, want(TypeDocker, "web", inoA, 500, 1200)},
		},
		{
			name: "pod: one target with the sandbox's process, also seen through containerd",
			cs: func() []containerInfo {
				app := cont(TypePod, "default/web", 710, 1401, inoA)
				sb := cont(TypePod, "default/web", 700, 1400, inoA)
				sb.Sandbox = true
				ctrdApp := cont(TypeContainerd, "k8s.io/0a1b", 710, 1401, inoA)
				other := cont(TypeContainerd, "default/0c1d", 720, 1399, inoB)
				return []containerInfo{app, ctrdApp, other, sb}
			}(),
			ps: withHost(prc(690, 1, "shim", 1300, inoHost), prc(700, 690, "pause", 1400, inoA),
				prc(710, 690, "web", 1401, inoA), prc(720, 1, "app", 1399, inoB)),
			want: []candidate{
				want(TypeContainerd, "default/0c1d", inoB, 720, 1399),
				want(TypePod, "default/web", inoA, 700, 1400),
				hostTarget,
			},
		},
		{
			name: "container whose process the scan missed is still a tenant",
			cs:   []containerInfo{cont(TypeDocker, "new", 800, 2000, inoC)},
			ps:   hostProcs,
			want: []candidate{want(TypeDocker, "new", inoC, 800, 2000), hostTarget},
		},
		{
			name: "several mounts of one netns: /run/netns first, then lexically; the others are aliases",
			ps:   hostProcs,
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
				alias("/srv/a", inoA), alias("/var/run/netns/old", inoC), alias("/srv/y", inoB),
			},
		},
		{
			name: "same mount in our and PID 1's mountinfo: ours is opened",
			ps:   hostProcs,
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
			cs:   []containerInfo{cont(TypeDocker, "blue", 500, 1200, inoB)},
			ms:   []mountInfo{mnt("/run/netns/blue", inoA), mnt("/run/docker/netns/blue", inoC)},
			ps:   withHost(prc(500, 1, "sleep", 1200, inoB)),
			want: []candidate{
				renamed(want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue"), fmt.Sprintf("blue (netns %d)", inoA)),
				renamed(want(TypeDocker, "blue", inoB, 500, 1200), fmt.Sprintf("blue (netns %d)", inoB)),
				renamed(want(TypeBindMount, "blue", inoC, 0, 0, "/run/docker/netns/blue"), fmt.Sprintf("blue (netns %d)", inoC)),
				hostTarget,
			},
		},
		{
			name: "a made-unique name that is taken gets a number",
			cs: []containerInfo{
				cont(TypeDocker, "x", 500, 1200, inoA),
				cont(TypeDocker, fmt.Sprintf("x (netns %d)", inoB), 501, 1200, inoC),
			},
			ms: []mountInfo{mnt("/run/netns/x", inoB)},
			ps: hostProcs,
			want: []candidate{
				hostTarget,
				renamed(want(TypeDocker, "x", inoA, 500, 1200), fmt.Sprintf("x (netns %d)", inoA)),
				want(TypeDocker, fmt.Sprintf("x (netns %d)", inoB), inoC, 501, 1200),
				renamed(want(TypeBindMount, "x", inoB, 0, 0, "/run/netns/x"), fmt.Sprintf("x (netns %d) #2", inoB)),
			},
		},
		{
			name: "entries without a netns are ignored",
			ps:   withHost(prc(9, 1, "ghost", 1, 0)),
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
			got := mergeTargets(tt.cs, tt.ms, tt.ps)
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
			if again := mergeTargets(cs, ms, ps); !reflect.DeepEqual(again, got) {
				t.Errorf("mergeTargets depends on input order:\n got %s\nthen %s", dump(got), dump(again))
			}
			names := map[string]bool{}
			for _, c := range got {
				if c.alias {
					continue
				}
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
		fmt.Fprintf(&b, "\n\t{%q %s netns=%d pid=%d st=%d base=%q path=%q alias=%v}", c.Name, c.Type, c.NetNS, c.PID, c.StartTime, c.base, c.path, c.alias)
	}
	return b.String()
}

func Test_lookupCandidate(t *testing.T) {
	t.Parallel()
	cs := mergeTargets(
		[]containerInfo{cont(TypeDocker, "blue", 500, 1200, inoB), cont(TypeDocker, "web", 501, 1200, inoD)},
		[]mountInfo{mnt("/run/netns/blue", inoA), mnt("/run/netns/lab", inoC), mnt("/run/netns/twin", inoC),
			mnt("/srv/twin", inoD), mnt("/run/netns/web", inoC)},
		withHost(prc(400, 1, "sleep", 1000, inoC)))
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
		{name: "bind mount of a netns with tenants", look: "lab", want: "lab"},
		{name: "a listed target wins over a bind mount name", look: "web", want: "web"},
		{name: "bind mount name of two netns", look: "twin", err: ErrAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := lookupCandidate(cs, tt.look, tt.prefix)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("lookup %q = %q, %v; want %v", tt.look, c.Name, err, tt.err)
				}
				if tt.look == "blue" && !strings.Contains(err.Error(), strconvQuote(blueA)) {
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
		ppid             int
		st               uint64
		ok               bool
	}{
		{name: "plain", stat: statLine(1, 0, "systemd", 5), comm: "systemd", st: 5, ok: true},
		{name: "parens and spaces in comm", stat: statLine(9, 4, "a) (b c", 77), comm: "a) (b c", ppid: 4, st: 77, ok: true},
		{name: "empty comm", stat: statLine(9, 1, "", 77), comm: "", ppid: 1, st: 77, ok: true},
		{name: "no comm", stat: "9 S 0", ok: false},
		{name: "short", stat: "9 (x) S 0 0", ok: false},
		{name: "bad ppid", stat: "9 (x) S -1 " + strings.Repeat("0 ", 17) + "5 0 0", ok: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			comm, ppid, st, err := parseStat([]byte(tt.stat))
			if (err == nil) != tt.ok || comm != tt.comm || ppid != tt.ppid || st != tt.st {
				t.Fatalf("parseStat(%q) = %q, %d, %d, %v; want %q, %d, %d, ok=%v", tt.stat, comm, ppid, st, err, tt.comm, tt.ppid, tt.st, tt.ok)
			}
		})
	}
}

// statLine is a /proc/PID/stat line with comm, parent and start time set.
func statLine(pid, ppid int, comm string, starttime uint64) string {
	// After "(comm)": state (field 3), ppid (4), fields 5-21, then field 22.
	return fmt.Sprintf("%d (%s) S %d %s%d 0 0\n", pid, comm, ppid, strings.Repeat("0 ", 17), starttime)
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
		mustWriteFile(t, filepath.Join(d, "stat"), statLine(pid, p.PPID, p.Comm, p.StartTime))
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
		50:  {PPID: 1, Comm: "sleep", StartTime: 500, NetNS: inoA},               // inside the bind-mounted netns
		60:  {PPID: 1, Comm: "my daemon (x)", StartTime: 600, NetNS: 4026531845}, // a netns of its own
		61:  {PPID: 60, Comm: "worker", StartTime: 601, NetNS: 4026531845},       // and its child
		70:  {PPID: 1, Comm: "gone", StartTime: 700},                             // ns link not readable
		800: {PPID: 1, Comm: "pause", StartTime: 800, NetNS: 4026531846},         // no engine to claim it
		801: {PPID: 1, Comm: "in host", StartTime: 801, NetNS: inoHost},
	}

	t.Run("same mount namespace", func(t *testing.T) {
		t.Parallel()
		proc := fakeProcTree(t, procs, mi, initMI, "mnt:[4026531832]")
		d := NewDiscoverer(DiscoverConfig{
			Finder:           &netns.Finder{ProcRoot: proc},
			DockerHost:       "unix://" + filepath.Join(proc, "no-docker.sock"),
			ContainerdSocket: filepath.Join(proc, "no-containerd.sock"),
			PodmanHost:       "unix://" + filepath.Join(proc, "no-podman.sock"),
			CRISockets:       []string{},
		})
		got, err := d.candidates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		blue := want(TypeBindMount, "blue", inoA, 0, 0, "/run/netns/blue")
		blue.alias = true
		wantC := []candidate{
			want(TypeProc, "init(1)", inoHost, 1, 10, filepath.Join(proc, "1", "ns", "net")),
			want(TypeProc, "my daemon (x)(60)", 4026531845, 60, 600, filepath.Join(proc, "60", "ns", "net")),
			want(TypeProc, "pause(800)", 4026531846, 800, 800, filepath.Join(proc, "800", "ns", "net")),
			want(TypeProc, "sleep(50)", inoA, 50, 500, filepath.Join(proc, "50", "ns", "net")),
			blue,
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
	})

	t.Run("PID 1 unreadable: its children are tenants, kthreadd and its threads are not", func(t *testing.T) {
		t.Parallel()
		p := map[int]procInfo{
			1:  {Comm: "init", StartTime: 10},
			2:  {Comm: "kthreadd", StartTime: 10, NetNS: inoHost},
			3:  {PPID: 2, Comm: "pool", StartTime: 10, NetNS: inoHost},
			40: {PPID: 1, Comm: "daemon", StartTime: 400, NetNS: inoHost},
		}
		proc := fakeProcTree(t, p, mi, mi, "mnt:[4026531832]")
		s, err := scanHost(proc)
		if err != nil {
			t.Fatal(err)
		}
		got := mergeTargets(nil, nil, s.procs)
		if len(got) != 1 || got[0].Name != "daemon(40)" {
			t.Errorf("targets %s, want daemon(40) alone", dump(got))
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
				PodmanHost: tt.docker, CRISockets: []string{tt.containerd},
				EngineTimeout: 5 * time.Second, Log: zap.New(core)})
			start := time.Now()
			if _, err := d.candidates(context.Background()); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took > time.Second {
				t.Errorf("took %v with absent engines", took)
			}
			absent := logs.FilterMessage("container engine absent, skipped")
			if absent.Len() != 4 {
				t.Errorf("%d absent-engine logs, want 4 (Docker, Podman, containerd, CRI): %v", absent.Len(), logs.All())
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
