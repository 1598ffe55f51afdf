package discovery

import (
	"github.com/packetflix/packetflix/netns"

	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// This file turns what the engines, mountinfo and /proc said into named
// targets. It does no I/O, so the rules documented on Discoverer are table
// tested without a kernel.

// engineContainer is a running container as its engine reports it.
type engineContainer struct {
	Type      string // TypeDocker, TypePodman, TypeContainerd or TypePod (also for CRI)
	Name      string // target name
	ID        string // the engine's container ID
	Namespace string // containerd namespace; "" for Docker
	PID       int    // the task's (root) process, in the host's PID namespace
	Sandbox   bool   // a pod's sandbox (pause) container, which owns the pod's netns
}

// containerInfo is an engine container with its process looked up.
type containerInfo struct {
	engineContainer
	NetNS     uint64
	StartTime uint64
	Path      string // nsfs file to open: /proc/PID/ns/net
}

// mountInfo is an nsfs bind mount of a network namespace.
type mountInfo struct {
	NetNS uint64
	Point string // mount point as its mount namespace sees it; names the target
	Path  string // where we open it: Point, or Point under /proc/1/root
}

// procInfo is one process.
type procInfo struct {
	PID       int
	PPID      int // field 4 of /proc/PID/stat; 0 for PID 1 and kthreadd
	Comm      string
	NetNS     uint64
	StartTime uint64
	Path      string // /proc/PID/ns/net
}

// candidate is a target before its interfaces are known.
type candidate struct {
	Target
	base string // Name before it was made unique
	path string // nsfs file through which the namespace is opened
	// alias marks the name of a bind mount of a namespace that has tenants:
	// not listed (GhostWire lists such a namespace by its tenants only), but
	// a valid name to look the namespace up by.
	alias bool
}

// containerRank orders the views of one container (one init process) that
// several engines report: the pod it belongs to, then Docker's and
// Podman's names, then containerd's "namespace/ID".
func containerRank(c engineContainer) int {
	switch c.Type {
	case TypePod:
		if c.Sandbox {
			return 0
		}
		return 1
	case TypeDocker:
		return 2
	case TypePodman:
		return 3
	case TypeContainerd:
		return 4
	}
	return 5
}

// mountRank prefers the names ip-netns(8) gives.
func mountRank(point string) int {
	if strings.HasPrefix(point, "/run/netns/") || strings.HasPrefix(point, "/var/run/netns/") {
		return 0
	}
	return 1
}

// viaInit is 1 for a mount opened through PID 1's root, else 0.
func viaInit(m mountInfo) int {
	if m.Path != m.Point {
		return 1
	}
	return 0
}

// isKthreadd tells the kernel's thread spawner, which GhostWire never lists:
// it lives in the initial netns and has no parent, so it would otherwise
// be a tenant of the host's namespace next to PID 1.
func isKthreadd(p procInfo) bool { return p.PID == 2 && p.PPID == 0 }

// mergeTargets applies the rules documented on Discoverer: a namespace with
// tenants (top-level processes and container init processes) gives one
// target per tenant, named after its container, its pod or itself; one
// without gives a bindmount target per namespace. The result is sorted by
// name, with names unique among the listed candidates; aliases (bind mount
// names of namespaces with tenants) follow the listed ones. The inputs are
// not modified.
func mergeTargets(cs []containerInfo, ms []mountInfo, ps []procInfo) []candidate {
	// One container per init process: the best-ranked view of it.
	byPID := map[int]containerInfo{}
	for _, c := range cs {
		if c.NetNS == 0 || c.PID <= 0 {
			continue
		}
		if o, ok := byPID[c.PID]; ok && cmp.Or(
			cmp.Compare(containerRank(o.engineContainer), containerRank(c.engineContainer)),
			strings.Compare(o.Name, c.Name)) <= 0 {
			continue
		}
		byPID[c.PID] = c
	}

	// Tenants: processes whose parent is in another namespace (or which
	// have none, or whose parent could not be read), and container inits.
	procs := make(map[int]procInfo, len(ps))
	for _, p := range ps {
		procs[p.PID] = p
	}
	type tenant struct {
		pid       int
		netns     uint64
		starttime uint64
		comm      string
		path      string
	}
	var tenants []tenant
	for _, p := range ps {
		if p.NetNS == 0 || isKthreadd(p) {
			continue
		}
		parent, ok := procs[p.PPID]
		_, isContainer := byPID[p.PID]
		if ok && p.PPID != 0 && parent.NetNS == p.NetNS && !isContainer {
			continue
		}
		tenants = append(tenants, tenant{pid: p.PID, netns: p.NetNS, starttime: p.StartTime, comm: p.Comm, path: p.Path})
	}
	for pid, c := range byPID {
		if _, ok := procs[pid]; !ok {
			// A container whose process the scan missed (started since).
			tenants = append(tenants, tenant{pid: pid, netns: c.NetNS, starttime: c.StartTime, path: c.Path})
		}
	}
	// Pods are listed once; the sandbox (the pause process that holds the
	// pod's namespace) stands for the pod, else its first-started container.
	slices.SortFunc(tenants, func(a, b tenant) int {
		ra, rb := 9, 9
		if c, ok := byPID[a.pid]; ok {
			ra = containerRank(c.engineContainer)
		}
		if c, ok := byPID[b.pid]; ok {
			rb = containerRank(c.engineContainer)
		}
		return cmp.Or(cmp.Compare(ra, rb), cmp.Compare(a.starttime, b.starttime), cmp.Compare(a.pid, b.pid))
	})

	var out []candidate
	hasTenant := map[uint64]bool{}
	pods := map[string]bool{}
	for _, t := range tenants {
		hasTenant[t.netns] = true
		tg := Target{NetNS: t.netns, PID: t.pid, StartTime: t.starttime}
		if c, ok := byPID[t.pid]; ok {
			tg.Name, tg.Type = c.Name, c.Type
			if c.Type == TypePod {
				key := c.Name + "\x00" + strconv.FormatUint(t.netns, 10)
				if pods[key] {
					continue
				}
				pods[key] = true
			}
		} else {
			tg.Name, tg.Type = t.comm+"("+strconv.Itoa(t.pid)+")", TypeProc
		}
		out = append(out, candidate{Target: tg, base: tg.Name, path: t.path})
	}

	ms = slices.Clone(ms)
	slices.SortFunc(ms, func(a, b mountInfo) int {
		return cmp.Or(
			cmp.Compare(mountRank(a.Point), mountRank(b.Point)),
			strings.Compare(a.Point, b.Point),
			// A mount point seen in both our mount namespace and PID 1's
			// is opened through ours, which needs no /proc/1/root.
			cmp.Compare(viaInit(a), viaInit(b)),
			strings.Compare(a.Path, b.Path),
		)
	})
	listed := map[uint64]bool{}
	var aliases []candidate
	seenAlias := map[string]bool{}
	for _, m := range ms {
		if m.NetNS == 0 {
			continue
		}
		name := m.Point[strings.LastIndexByte(m.Point, '/')+1:]
		c := candidate{
			Target: Target{Name: name, Type: TypeBindMount, NetNS: m.NetNS},
			base:   name, path: m.Path,
		}
		key := name + "\x00" + strconv.FormatUint(m.NetNS, 10)
		if !hasTenant[m.NetNS] && !listed[m.NetNS] {
			listed[m.NetNS] = true
			seenAlias[key] = true
			out = append(out, c)
			continue
		}
		// Every other mount name of a namespace still finds it.
		if !seenAlias[key] {
			seenAlias[key] = true
			c.alias = true
			aliases = append(aliases, c)
		}
	}

	uniqueNames(out)
	slices.SortFunc(out, func(a, b candidate) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.NetNS, b.NetNS))
	})
	slices.SortFunc(aliases, func(a, b candidate) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.NetNS, b.NetNS))
	})
	return append(out, aliases...)
}

// uniqueNames gives every candidate whose base name another one shares the
// name "BASE (netns INODE)". Each netns appears once, so that is unique
// unless a target was already called that; such a pathological clash gets
// a further " #N", counted in netns order so the result does not depend on
// the input order.
func uniqueNames(cs []candidate) {
	slices.SortFunc(cs, func(a, b candidate) int {
		return cmp.Or(strings.Compare(a.base, b.base), cmp.Compare(a.NetNS, b.NetNS))
	})
	count := map[string]int{}
	for _, c := range cs {
		count[c.base]++
	}
	used := map[string]bool{}
	for i := range cs {
		if count[cs[i].base] == 1 {
			cs[i].Name = cs[i].base
			used[cs[i].Name] = true
		}
	}
	for i := range cs {
		if count[cs[i].base] == 1 {
			continue
		}
		name := fmt.Sprintf("%s (netns %d)", cs[i].base, cs[i].NetNS)
		for k := 2; used[name]; k++ {
			name = fmt.Sprintf("%s (netns %d) #%d", cs[i].base, cs[i].NetNS, k)
		}
		cs[i].Name = name
		used[name] = true
	}
}

// lookupCandidate finds the candidate named name with prefix prefix: a
// listed target by its (unique) name, else by the name it had before it
// was made unique, else a namespace by one of its bind mount names. A name
// that several targets, or the mounts of several namespaces, share is
// ambiguous; the error lists the choices, so the user can pick one.
func lookupCandidate(cs []candidate, name, prefix string) (candidate, error) {
	var same, mounts []candidate
	for _, c := range cs {
		if c.Prefix != prefix {
			continue
		}
		if c.Name == name && !c.alias {
			return c, nil
		}
		switch {
		case c.alias && c.Name == name:
			mounts = append(mounts, c)
		case !c.alias && c.base == name:
			same = append(same, c)
		}
	}
	if len(same) == 0 {
		same = mounts
	}
	switch len(same) {
	case 0:
		return candidate{}, fmt.Errorf("%w: no target named %q", netns.ErrNotFound, name)
	case 1:
		return same[0], nil
	}
	names := make([]string, len(same))
	for i, c := range same {
		if c.alias {
			names[i] = fmt.Sprintf("the bind mount %q of netns %d", c.Name, c.NetNS)
		} else {
			names[i] = strconv.Quote(c.Name)
		}
	}
	return candidate{}, fmt.Errorf("%w: %q is %s", ErrAmbiguous, name, strings.Join(names, " or "))
}
