package discovery

import (
	"github.com/packetflix/packetflix/netns"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Target types, spelled as GhostWire's /mobyshark list and csharg spell
// them. csharg treats every type other than proc, bindmount and pod as a
// container.
const (
	TypeDocker     = "docker"
	TypeContainerd = "containerd"
	TypePod        = "pod"
	TypeBindMount  = "bindmount"
	TypeProc       = "proc"
)

// Target is one capture target, in the JSON shape of GhostWire's /mobyshark
// list (see shared/reference/clients.md). Every target is a distinct network
// namespace: a List names each namespace of the host once.
type Target struct {
	// Name is unique within one List (see Discoverer for how). Containers
	// are named as their engine names them; processes "comm(PID)".
	Name string `json:"name"`
	// Type is one of the Type* constants.
	Type string `json:"type"`
	// NetNS is the inode of the network namespace.
	NetNS uint64 `json:"netns"`
	// Interfaces are the names of the interfaces that are up (IFF_UP),
	// sorted by ifindex. Never null in JSON.
	Interfaces []string `json:"network-interfaces"`
	// PID is the process that holds the namespace: a container's root
	// process (the engine's task PID), the leading process of a proc
	// target; 0 for a bindmount.
	PID int `json:"pid"`
	// StartTime is field 22 of /proc/PID/stat (clock ticks since boot), so
	// that a reference to PID can be checked for staleness (CheckProcess);
	// 0 for a bindmount.
	StartTime uint64 `json:"starttime"`
	// Prefix is GhostWire's engine prefix, which tells containers of
	// engines nested in containers (Docker-in-Docker) from the host's. Only
	// the host's engines are asked, so it is always "".
	Prefix string `json:"prefix"`
}

// MarshalJSON writes Interfaces as [] when it is nil: csharg expects a list.
func (t Target) MarshalJSON() ([]byte, error) {
	type plain Target // no MarshalJSON method: no recursion
	p := plain(t)
	if p.Interfaces == nil {
		p.Interfaces = []string{}
	}
	return json.Marshal(p)
}

// Defaults of DiscoverConfig.
const (
	DefaultDockerHost       = "unix:///var/run/docker.sock"
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
	DefaultEngineTimeout    = 2 * time.Second
)

// DiscoverConfig configures a Discoverer. The zero value discovers on the
// real host with the engines at their usual sockets.
type DiscoverConfig struct {
	// Finder says where procfs is; nil means the real /proc. Engine PIDs are
	// looked up there, so they must be PIDs of its PID namespace.
	Finder *netns.Finder
	// DockerHost is the Docker engine's API address, as DOCKER_HOST spells
	// it; "" means DefaultDockerHost. When its unix socket does not exist or
	// refuses connections, Docker is skipped with a debug log.
	DockerHost string
	// ContainerdSocket is the path of containerd's unix socket; "" means
	// DefaultContainerdSocket. A socket that does not exist is skipped with
	// a debug log.
	ContainerdSocket string
	// EngineTimeout bounds each engine's part of a List; 0 means
	// DefaultEngineTimeout. An engine that does not answer in time is
	// skipped (with a warning) and its containers then appear as what
	// mountinfo and /proc show of them (bind mount or proc targets), so a
	// broken engine never holds a listing up.
	EngineTimeout time.Duration
	// Log receives engine failures (Warn) and skips (Debug); nil means
	// zap.NewNop().
	Log *zap.Logger
}

func (c DiscoverConfig) withDefaults() DiscoverConfig {
	if c.Finder == nil {
		c.Finder = &netns.Finder{}
	}
	if c.DockerHost == "" {
		c.DockerHost = DefaultDockerHost
	}
	if c.ContainerdSocket == "" {
		c.ContainerdSocket = DefaultContainerdSocket
	}
	if c.EngineTimeout <= 0 {
		c.EngineTimeout = DefaultEngineTimeout
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	return c
}

// Discoverer lists the network namespaces of the host as capture targets.
// It keeps no state between calls, holds no connection, and may be used
// from several goroutines at once.
//
// # What is listed
//
// Each network namespace appears once, as the first that applies of:
//
//   - a container of an engine that answered in time: Docker containers
//     (type docker, named as Docker names them, without the leading "/"),
//     Kubernetes pods found through the CRI labels io.kubernetes.pod.namespace
//     and io.kubernetes.pod.name (type pod, named "namespace/pod"), and other
//     containerd containers of every containerd namespace (type containerd,
//     named "namespace/containerID"). Only containers with a running (or
//     paused) task count, and PID and StartTime are those of the task's
//     process. containerd's "moby" containers that Docker listed are left
//     out, as they are Docker's; when Docker did not answer they appear as
//     "moby/ID". Docker containers with the CRI labels (cri-dockerd) are
//     pods too. Several containers sharing one namespace
//     (docker --network container:X, the containers of a pod) give one
//     target: the container whose process started first, which is the one
//     the others joined (for a pod its sandbox); on a tie a pod sandbox
//     goes before a Docker container, which goes before a containerd one.
//   - an nsfs bind mount of the namespace in our mount namespace or PID 1's
//     (type bindmount, named after the mount point's base name, PID and
//     StartTime 0). Of several mounts of one namespace, one under
//     /run/netns wins, then the lexically first path.
//   - processes in the namespace (type proc, named "comm(PID)" after the
//     process that started first, the lowest PID on a tie; a process's
//     ancestors start before it, so this is a process whose parent is in
//     another namespace).
//
// The host's namespace (PID 1's) is always a proc target, named after PID 1,
// e.g. "systemd(1)", even when containers with host networking or a bind
// mount share it. Where PID 1's namespace cannot be read (an undumpable
// init in some sandboxes), kthreadd's (PID 2) stands for the host's and the
// target is named after the first-started process that can be read there.
// Namespaces held only by a thread or an open fd are not listed.
//
// # Unique names
//
// Names that two or more targets would share get " (netns INODE)" appended,
// all of them, so no target keeps a name that means something else depending
// on listing order; Lookup of the shared name then fails with ErrAmbiguous.
// Proc names are unique by their PID.
type Discoverer struct {
	cfg DiscoverConfig
	log *zap.Logger
}

// NewDiscoverer returns a Discoverer; cfg's zero fields get their defaults.
func NewDiscoverer(cfg DiscoverConfig) *Discoverer {
	cfg = cfg.withDefaults()
	return &Discoverer{cfg: cfg, log: cfg.Log}
}

// List returns every network namespace of the host as a target, sorted by
// name, with names unique. The container engines are asked concurrently
// with the /proc scan, each bounded by EngineTimeout; an engine that fails
// is skipped. The error is for a /proc that cannot be read and for ctx
// ending.
func (d *Discoverer) List(ctx context.Context) ([]Target, error) {
	cands, err := d.candidates(ctx)
	if err != nil {
		return nil, err
	}
	keep := d.fillInterfaces(cands)
	out := make([]Target, 0, len(cands))
	for i, c := range cands {
		if keep[i] {
			out = append(out, c.Target)
		}
	}
	return out, nil
}

// Lookup returns the target List would name name with prefix prefix. A
// name that several targets share before they are made unique (see
// Discoverer) gives ErrAmbiguous; no such target gives netns.ErrNotFound.
func (d *Discoverer) Lookup(ctx context.Context, name, prefix string) (Target, error) {
	cands, err := d.candidates(ctx)
	if err != nil {
		return Target{}, err
	}
	c, err := lookupCandidate(cands, name, prefix)
	if err != nil {
		return Target{}, opErr(netns.OpLookup, 0, err)
	}
	one := []candidate{c}
	if !d.fillInterfaces(one)[0] {
		return Target{}, opErr(netns.OpLookup, c.NetNS, fmt.Errorf("%w: target %q vanished", netns.ErrNotFound, name))
	}
	return one[0].Target, nil
}

// candidates gathers containers, bind mounts and processes and merges them
// into named targets without interfaces.
func (d *Discoverer) candidates(ctx context.Context) ([]candidate, error) {
	f := d.cfg.Finder
	// The engines run on goroutines owned by this call; both honour their
	// ctx, whose deadline bounds the Wait below.
	var (
		wg             sync.WaitGroup
		dockerC, ctrdC []engineContainer
	)
	wg.Go(func() { dockerC = d.runEngine(ctx, engineDocker, d.cfg.DockerHost, listDocker) })
	wg.Go(func() { ctrdC = d.runEngine(ctx, engineContainerd, d.cfg.ContainerdSocket, listContainerd) })
	scan, err := scanHost(f.Proc())
	wg.Wait()
	if err != nil {
		return nil, opErr(OpDiscover, 0, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(OpDiscover, 0, err)
	}

	// Docker's own containers also live in containerd's "moby" namespace,
	// under Docker's container ID.
	docker := make(map[string]bool, len(dockerC))
	for _, c := range dockerC {
		docker[c.ID] = true
	}
	var containers []containerInfo
	for _, c := range slices.Concat(dockerC, ctrdC) {
		if c.Namespace == mobyNamespace && docker[c.ID] {
			continue
		}
		ci, err := resolveContainer(f, c)
		if err != nil {
			// Exited since the engine answered, or in a PID namespace
			// other than f's /proc.
			d.log.Debug("container skipped", zap.String("type", c.Type),
				zap.String("name", c.Name), zap.Int("pid", c.PID), zap.Error(err))
			continue
		}
		containers = append(containers, ci)
	}
	return mergeTargets(scan.host, containers, scan.mounts, scan.procs), nil
}

// resolveContainer finds the netns and start time of c's process.
func resolveContainer(f *netns.Finder, c engineContainer) (containerInfo, error) {
	path := filepath.Join(f.Proc(), strconv.Itoa(c.PID), "ns", "net")
	ino, err := netns.LinkInode(path)
	if err != nil {
		return containerInfo{}, err
	}
	st, err := f.StartTime(c.PID)
	if err != nil {
		return containerInfo{}, err
	}
	return containerInfo{engineContainer: c, NetNS: ino, StartTime: st, Path: path}, nil
}

// hostScan is what /proc says about the host.
type hostScan struct {
	host   uint64 // PID 1's netns; 0 if unknown
	mounts []mountInfo
	procs  []procInfo
}

// scanHost reads the netns, comm and start time of every process and the
// nsfs bind mounts of our mount namespace and PID 1's. Processes that exit
// meanwhile, or whose files we may not read, are left out.
func scanHost(proc string) (hostScan, error) {
	var s hostScan
	pids, err := netns.ListPIDs(proc)
	if err != nil {
		return s, fmt.Errorf("list processes: %w", err)
	}
	buf := make([]byte, 0, 512)
	var kthreadd uint64
	for _, p := range pids {
		pid, _ := strconv.Atoi(p)
		dir := filepath.Join(proc, p)
		ino, err := netns.LinkInode(filepath.Join(dir, "ns", "net"))
		if err != nil {
			continue
		}
		buf, err = readSmall(filepath.Join(dir, "stat"), buf)
		if err != nil {
			continue
		}
		comm, st, err := parseStat(buf)
		if err != nil {
			continue
		}
		s.procs = append(s.procs, procInfo{PID: pid, Comm: comm, NetNS: ino, StartTime: st,
			Path: filepath.Join(dir, "ns", "net")})
		switch {
		case pid == 1:
			s.host = ino
		case pid == 2 && comm == "kthreadd":
			// Kernel threads live in the initial netns. Where PID 1's netns
			// cannot be read (an init that made itself undumpable, in
			// some sandboxes), kthreadd's tells the host's.
			kthreadd = ino
		}
	}
	if s.host == 0 {
		s.host = kthreadd
	}

	for _, m := range netns.BindMounts(filepath.Join(proc, "self", "mountinfo")) {
		s.mounts = append(s.mounts, mountInfo{NetNS: m.Ino, Point: m.Point, Path: m.Point})
	}
	// PID 1's mounts, when it is in another mount namespace (we run in a
	// container with hostPID), are reachable through its root.
	self, err1 := os.Readlink(filepath.Join(proc, "self", "ns", "mnt"))
	initMnt, err2 := os.Readlink(filepath.Join(proc, "1", "ns", "mnt"))
	if err1 != nil || err2 != nil || self != initMnt {
		for _, m := range netns.BindMounts(filepath.Join(proc, "1", "mountinfo")) {
			s.mounts = append(s.mounts, mountInfo{NetNS: m.Ino, Point: m.Point,
				Path: filepath.Join(proc, "1", "root", m.Point)})
		}
	}
	return s, nil
}

// readSmall reads a small procfs file into buf[:0] with a single read;
// /proc/PID/stat is far below buf's capacity, so this saves os.ReadFile's
// fstat and growing.
func readSmall(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf[:0], err
	}
	defer f.Close()
	buf = buf[:cap(buf)]
	n := 0
	for {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
		if n == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
	}
	return buf[:n], nil
}

// parseStat returns comm (field 2) and the start time (field 22) of a
// /proc/PID/stat line. comm is between the first '(' and the last ')': it
// may itself hold parentheses.
func parseStat(stat []byte) (comm string, starttime uint64, err error) {
	i := bytes.IndexByte(stat, '(')
	j := bytes.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return "", 0, fmt.Errorf("malformed stat: no (comm)")
	}
	st, err := netns.ParseStartTime(stat)
	if err != nil {
		return "", 0, err
	}
	return string(stat[i+1 : j]), st, nil
}

// maxInterfaceWorkers bounds how many namespaces are entered at once when
// listing interfaces: each one holds a locked OS thread.
const maxInterfaceWorkers = 4

// fillInterfaces sets each candidate's Interfaces and reports which
// candidates still exist; a namespace that vanished since the scan (its
// process exited, its mount was removed) is dropped.
func (d *Discoverer) fillInterfaces(cands []candidate) []bool {
	keep := make([]bool, len(cands))
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1)) - 1
			if i >= len(cands) {
				return
			}
			ifs, err := upInterfaces(cands[i].path, cands[i].NetNS)
			switch {
			case err == nil:
				keep[i] = true
			case errors.Is(err, fs.ErrNotExist) || errors.Is(err, netns.ErrStale):
				d.log.Debug("target vanished", zap.String("name", cands[i].Name),
					zap.Uint64("netns", cands[i].NetNS), zap.Error(err))
			default:
				// Listed all the same: capturing may still work, and a
				// target that exists should not disappear from the list.
				keep[i] = true
				d.log.Debug("interfaces of target not listed", zap.String("name", cands[i].Name),
					zap.Uint64("netns", cands[i].NetNS), zap.Error(err))
			}
			if ifs == nil {
				ifs = []string{}
			}
			cands[i].Interfaces = ifs
		}
	}
	// The workers are owned by this call and joined before it returns.
	var wg sync.WaitGroup
	for range min(maxInterfaceWorkers, len(cands)) {
		wg.Go(work)
	}
	wg.Wait()
	return keep
}

// upInterfaces opens the netns at path, checks that it is still ino, and
// lists its interfaces that are up, in ifindex order.
func upInterfaces(path string, ino uint64) ([]string, error) {
	n, err := netns.OpenPathInode(path, ino)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	var names []string
	err = netns.Do(n, func() error {
		// net.Interfaces asks over a synchronous netlink socket on this
		// thread: no goroutine, so it sees the namespace netns.Do entered.
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		slices.SortFunc(ifs, func(a, b net.Interface) int { return a.Index - b.Index })
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagUp != 0 {
				names = append(names, ifc.Name)
			}
		}
		return nil
	})
	return names, err
}
