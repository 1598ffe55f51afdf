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
	Type      string // TypeDocker, TypeContainerd or TypePod
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
}

// containerRank orders containers that share a netns and started in the
// same clock tick: a pod's sandbox owns the pod's namespace, and Docker's
// view of a container goes before containerd's view of the same one.
func containerRank(c engineContainer) int {
	switch {
	case c.Sandbox:
		return 0
	case c.Type == TypeDocker:
		return 1
	case c.Type == TypeContainerd:
		return 2
	}
	return 3
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

// mergeTargets applies the rules documented on Discoverer: one target per
// namespace, containers before bind mounts before processes, the host's
// namespace (host, PID 1's; 0 if unknown) always as PID 1's proc target.
// The result is sorted by name, with names unique. The inputs are not
// modified.
func mergeTargets(host uint64, cs []containerInfo, ms []mountInfo, ps []procInfo) []candidate {
	var out []candidate
	taken := map[uint64]bool{}
	if host != 0 {
		// Reserved for PID 1 below, whatever else shares it.
		taken[host] = true
	}

	cs = slices.Clone(cs)
	slices.SortFunc(cs, func(a, b containerInfo) int {
		return cmp.Or(
			cmp.Compare(a.StartTime, b.StartTime),
			cmp.Compare(containerRank(a.engineContainer), containerRank(b.engineContainer)),
			cmp.Compare(a.PID, b.PID),
			strings.Compare(a.Name, b.Name),
		)
	})
	for _, c := range cs {
		if c.NetNS == 0 || taken[c.NetNS] {
			continue
		}
		taken[c.NetNS] = true
		out = append(out, candidate{
			Target: Target{Name: c.Name, Type: c.Type, NetNS: c.NetNS, PID: c.PID, StartTime: c.StartTime},
			base:   c.Name, path: c.Path,
		})
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
	for _, m := range ms {
		if m.NetNS == 0 || taken[m.NetNS] {
			continue
		}
		taken[m.NetNS] = true
		name := m.Point[strings.LastIndexByte(m.Point, '/')+1:]
		out = append(out, candidate{
			Target: Target{Name: name, Type: TypeBindMount, NetNS: m.NetNS},
			base:   name, path: m.Path,
		})
	}

	// The leader of a netns is the process that started first, the lower
	// PID on a tie; in the host's netns it is PID 1.
	better := func(p, l procInfo) bool {
		if p.NetNS == host && (p.PID == 1 || l.PID == 1) {
			return p.PID == 1
		}
		return cmp.Or(cmp.Compare(p.StartTime, l.StartTime), cmp.Compare(p.PID, l.PID)) < 0
	}
	lead := map[uint64]procInfo{}
	for _, p := range ps {
		if p.NetNS == 0 || (taken[p.NetNS] && p.NetNS != host) {
			continue
		}
		if l, ok := lead[p.NetNS]; !ok || better(p, l) {
			lead[p.NetNS] = p
		}
	}
	for _, p := range lead {
		name := p.Comm + "(" + strconv.Itoa(p.PID) + ")"
		out = append(out, candidate{
			Target: Target{Name: name, Type: TypeProc, NetNS: p.NetNS, PID: p.PID, StartTime: p.StartTime},
			base:   name, path: p.Path,
		})
	}

	uniqueNames(out)
	slices.SortFunc(out, func(a, b candidate) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), cmp.Compare(a.NetNS, b.NetNS))
	})
	return out
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

// lookupCandidate finds the candidate named name with prefix prefix. A name
// that several candidates had before uniqueNames is ambiguous; the error
// lists their unique names, so the user can pick one.
func lookupCandidate(cs []candidate, name, prefix string) (candidate, error) {
	var same []candidate
	for _, c := range cs {
		if c.Prefix != prefix {
			continue
		}
		if c.Name == name {
			return c, nil
		}
		if c.base == name {
			same = append(same, c)
		}
	}
	switch len(same) {
	case 0:
		return candidate{}, fmt.Errorf("%w: no target named %q", netns.ErrNotFound, name)
	case 1:
		return same[0], nil
	}
	names := make([]string, len(same))
	for i, c := range same {
		names[i] = strconv.Quote(c.Name)
	}
	return candidate{}, fmt.Errorf("%w: %q is %s", ErrAmbiguous, name, strings.Join(names, " or "))
}
