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
	TypePodman     = "podman"
	TypePod        = "pod"
	TypeBindMount  = "bindmount"
	TypeProc       = "proc"
)

// Target is one capture target, in the JSON shape of GhostWire's /mobyshark
// list (see docs/discovery.md). A namespace may be several targets (one per
// tenant), and a namespace without processes is one bindmount target.
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
	// PID is the target's tenant: a container's init process (the engine's
	// task PID), a pod's sandbox, or the top-level process of a proc
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
	DefaultPodmanHost       = "unix:///run/podman/podman.sock"
	DefaultContainerdSocket = "/run/containerd/containerd.sock"
	DefaultCRISocket        = "/var/run/crio/crio.sock"
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
	// PodmanHost is the address of rootful Podman's Docker-compatible API
	// (podman.socket, or `podman system service`), in DOCKER_HOST syntax;
	// "" means DefaultPodmanHost. Its containers are of type podman. An
	// absent socket is skipped like Docker's. Where podman-docker makes
	// DockerHost the same socket, each container is reported by both
	// engines under one PID, and the merge keeps Docker's view.
	PodmanHost string
	// ContainerdSocket is the path of containerd's unix socket; "" means
	// DefaultContainerdSocket. A socket that does not exist is skipped with
	// a debug log.
	ContainerdSocket string
	// CRISockets are the unix sockets of CRI runtimes (CRI-O, or any other
	// that serves runtime.v1.RuntimeService), asked through the CRI API for
	// their ready pods and running containers; nil means DefaultCRISocket
	// only, and an empty non-nil slice asks none. A "unix://" prefix, as
	// kubelet's --container-runtime-endpoint spells it, is accepted, and
	// absent sockets are skipped like Docker's.
	//
	// containerd's CRI plugin answers on containerd's own socket, which
	// ContainerdSocket already lists, its pods included (through the
	// labels kubelet sets), so it is not a default here. Listing it here
	// too costs one status call per pod and container; a pod then is
	// reported by both engines under the same PIDs, and when it lacks
	// kubelet's labels (a pod made with crictl), containerd alone names it
	// "k8s.io/ID", so the CRI name "namespace/name" is the better one.
	CRISockets []string
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
	if c.PodmanHost == "" {
		c.PodmanHost = DefaultPodmanHost
	}
	if c.ContainerdSocket == "" {
		c.ContainerdSocket = DefaultContainerdSocket
	}
	if c.CRISockets == nil {
		c.CRISockets = []string{DefaultCRISocket}
	}
	if c.EngineTimeout <= 0 {
		c.EngineTimeout = DefaultEngineTimeout
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	return c
}

// Discoverer lists the network namespaces of the host as capture targets,
// by GhostWire's rules (its /mobyshark list; docs/discovery.md). It keeps
// no state between calls, holds no connection, and may be used from
// several goroutines at once.
//
// # What is listed
//
// A namespace's tenants are its top-level processes - those whose parent
// lives in another namespace, that have no parent (PID 1), or whose parent
// could not be read (it exited meanwhile) - and the init process of every
// container in it, as the engines that answered in time report them.
// kthreadd (PID 2) is never a tenant.
//
//   - A namespace with no process at all, but an nsfs bind mount (in our
//     mount namespace or PID 1's, such as /run/netns/NAME), is one target
//     of type bindmount, named after the mount point's base name, with PID
//     and StartTime 0. Of several mounts of one namespace, one under
//     /run/netns (or /var/run/netns) wins, then the lexically first path.
//   - A namespace with processes gives one target per tenant and no
//     bindmount target, even when it is also bind-mounted:
//     a container's init gives the container (type docker, podman or
//     containerd, named as its engine names it: Docker without the leading
//     "/", containerd "namespace/containerID"); the containers of one
//     Kubernetes pod give one target of type pod named "namespace/pod"
//     (found through the CRI labels io.kubernetes.pod.namespace and
//     io.kubernetes.pod.name), whose PID is the sandbox's; any other tenant
//     gives a target of type proc named "comm(PID)". Every such target
//     carries its tenant's PID and StartTime.
//
// A container reported by several engines (Docker's containers in
// containerd's "moby" namespace, a pod's containers seen through CRI and
// containerd) is the same init process and is listed once: as a pod, else
// as Docker, Podman, then containerd name it. Namespaces held only by a
// thread or an open fd are not listed. The bind mount names of a namespace
// with tenants are not listed, but Lookup still finds the namespace by them.
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
	cands = slices.DeleteFunc(cands, func(c candidate) bool { return c.alias })
	keep := d.fillInterfaces(cands)
	out := make([]Target, 0, len(cands))
	for i, c := range cands {
		if keep[i] {
			out = append(out, c.Target)
		}
	}
	return out, nil
}

// Lookup returns the target List would name name with prefix prefix, or,
// for the name of a bind mount of a namespace that List shows by its
// tenants, that namespace as a bindmount target. A name that several
// targets share before they are made unique (see Discoverer) gives
// ErrAmbiguous; no such target gives netns.ErrNotFound.
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
	// The engines run on goroutines owned by this call; all honour their
	// ctx, whose deadline bounds the Wait below.
	var (
		wg                      sync.WaitGroup
		dockerC, podmanC, ctrdC []engineContainer
		criC                    = make([][]engineContainer, len(d.cfg.CRISockets))
	)
	wg.Go(func() { dockerC = d.runEngine(ctx, engineDocker, d.cfg.DockerHost, listDocker) })
	wg.Go(func() { podmanC = d.runEngine(ctx, enginePodman, d.cfg.PodmanHost, listPodman) })
	wg.Go(func() { ctrdC = d.runEngine(ctx, engineContainerd, d.cfg.ContainerdSocket, listContainerd) })
	for i, sock := range d.cfg.CRISockets {
		wg.Go(func() { criC[i] = d.runEngine(ctx, engineCRI, sock, listCRI) })
	}
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
	for _, c := range slices.Concat(append([][]engineContainer{dockerC, podmanC, ctrdC}, criC...)...) {
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
	return mergeTargets(containers, scan.mounts, scan.procs), nil
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
	mounts []mountInfo
	procs  []procInfo
}

// scanHost reads the netns, parent, comm and start time of every process and the
// nsfs bind mounts of our mount namespace and PID 1's. Processes that exit
// meanwhile, or whose files we may not read, are left out.
func scanHost(proc string) (hostScan, error) {
	var s hostScan
	pids, err := netns.ListPIDs(proc)
	if err != nil {
		return s, fmt.Errorf("list processes: %w", err)
	}
	buf := make([]byte, 0, 512)
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
		comm, ppid, st, err := parseStat(buf)
		if err != nil {
			continue
		}
		s.procs = append(s.procs, procInfo{PID: pid, PPID: ppid, Comm: comm, NetNS: ino, StartTime: st,
			Path: filepath.Join(dir, "ns", "net")})
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

// parseStat returns comm (field 2), the parent's PID (field 4) and the
// start time (field 22) of a /proc/PID/stat line. comm is between the first
// '(' and the last ')': it may itself hold parentheses and spaces.
func parseStat(stat []byte) (comm string, ppid int, starttime uint64, err error) {
	i := bytes.IndexByte(stat, '(')
	j := bytes.LastIndexByte(stat, ')')
	if i < 0 || j < i {
		return "", 0, 0, fmt.Errorf("malformed stat: no (comm)")
	}
	st, err := netns.ParseStartTime(stat)
	if err != nil {
		return "", 0, 0, err
	}
	// After comm: " STATE PPID ...".
	rest := bytes.Fields(stat[j+1:])
	if len(rest) < 2 {
		return "", 0, 0, fmt.Errorf("malformed stat: no ppid")
	}
	ppid, err = strconv.Atoi(string(rest[1]))
	if err != nil || ppid < 0 {
		return "", 0, 0, fmt.Errorf("malformed stat: ppid %q", rest[1])
	}
	return string(stat[i+1 : j]), ppid, st, nil
}

// maxInterfaceWorkers bounds how many namespaces are entered at once when
// listing interfaces: each one holds a locked OS thread.
const maxInterfaceWorkers = 4

// fillInterfaces sets each candidate's Interfaces and reports which
// candidates still exist. Each namespace is entered once, through the
// first of its candidates' paths that still leads to it; a candidate whose
// path vanished since the scan (its process exited, its mount was removed)
// is dropped, the others of its namespace are kept.
func (d *Discoverer) fillInterfaces(cands []candidate) []bool {
	keep := make([]bool, len(cands))
	var groups [][]int
	at := map[uint64]int{}
	for i, c := range cands {
		g, ok := at[c.NetNS]
		if !ok {
			g = len(groups)
			at[c.NetNS] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	fill := func(group []int) {
		var ifs []string
		for k, i := range group {
			var err error
			ifs, err = upInterfaces(cands[i].path, cands[i].NetNS)
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, netns.ErrStale) {
				d.log.Debug("target vanished", zap.String("name", cands[i].Name),
					zap.Uint64("netns", cands[i].NetNS), zap.Error(err))
				continue
			}
			if err != nil {
				// Listed all the same: capturing may still work, and a
				// target that exists should not disappear from the list.
				d.log.Debug("interfaces of target not listed", zap.String("name", cands[i].Name),
					zap.Uint64("netns", cands[i].NetNS), zap.Error(err))
			}
			for _, j := range group[k:] {
				keep[j] = true
				cands[j].Interfaces = slices.Clone(ifs)
				if cands[j].Interfaces == nil {
					cands[j].Interfaces = []string{}
				}
			}
			return
		}
	}
	var next atomic.Int64
	work := func() {
		for {
			g := int(next.Add(1)) - 1
			if g >= len(groups) {
				return
			}
			fill(groups[g])
		}
	}
	// The workers are owned by this call and joined before it returns.
	var wg sync.WaitGroup
	for range min(maxInterfaceWorkers, len(groups)) {
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
