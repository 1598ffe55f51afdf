package server

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/netns"
	"go.uber.org/zap"
)

// maxTargetsWithPeers bounds the targets of one session once peer=1 has
// added the netns of every veth peer: a lab node's links lead to at most
// a few other nodes each. The interface and ring memory caps of the
// session count every peer interface too.
const maxTargetsWithPeers = 4 * maxTargets

// hostTarget names the service's own netns when a peer lives there (the
// host end of a container's veth, often a bridge port).
const hostTarget = "host"

// withPeers adds, for peer=1, the other end of every selected veth
// interface of the request's targets: to the target whose netns it lives
// in (unless that target captures all interfaces anyway), else as a new
// target, which is also added to req so that the stream can name it. A
// veth whose peer cannot be found is a request error naming it.
func (s *Server) withPeers(ctx context.Context, req *captureRequest, tgs []capture.Target) ([]capture.Target, error) {
	var added []int // indexes of the targets that peers brought
	for i, n := 0, len(tgs); i < n; i++ {
		peers, err := s.cfg.Finder.VethPeers(tgs[i].NetNS, tgs[i].Interfaces)
		if err != nil {
			if errors.Is(err, netns.ErrNoPeer) {
				// The close reason has room for 123 bytes: no prefixes.
				why := err.Error()
				if k := strings.Index(why, netns.ErrNoPeer.Error()+": "); k >= 0 {
					why = why[k+len(netns.ErrNoPeer.Error())+2:]
				}
				return tgs, badRequest("peer=1: %s: %s", tgs[i].Name, why)
			}
			return tgs, err
		}
		for pi, p := range peers {
			j := slices.IndexFunc(tgs, func(t capture.Target) bool { return t.NetNS.ID() == p.NetNS.ID() })
			switch {
			case j < 0:
				if len(tgs) == maxTargetsWithPeers {
					for _, q := range peers[pi:] {
						q.NetNS.Close()
					}
					return tgs, badRequest("peer=1: the veth peers lead to more than %d targets in one session", maxTargetsWithPeers)
				}
				tgs = append(tgs, capture.Target{NetNS: p.NetNS, Interfaces: []string{p.Name}})
				added = append(added, len(tgs)-1)
				continue
			case tgs[j].Interfaces != nil && !slices.Contains(tgs[j].Interfaces, p.Name):
				// Cloned: the slice may be the request's own.
				tgs[j].Interfaces = append(slices.Clip(tgs[j].Interfaces), p.Name)
			}
			p.NetNS.Close()
		}
	}
	if len(added) == 0 {
		return tgs, nil
	}
	names := s.netnsNames(ctx)
	for _, i := range added {
		t := &tgs[i]
		ino := t.NetNS.Inode()
		ref := targetRef{NetNS: ino, Interfaces: t.Interfaces, NifGiven: true}
		if d, ok := names[ino]; ok {
			ref.Container = &Container{Name: d.Name, Type: d.Type, NetNS: ino}
		}
		t.Name = ref.name(ino)
		req.Targets = append(req.Targets, ref)
	}
	return tgs, nil
}

// netnsNames maps netns inodes to the target discovery lists for each, for
// naming the netns a peer brings into a session: the service's own is
// "host"; a container or pod beats a process or a bind mount. Discovery
// that fails or is slow only costs the names (netns:INODE instead).
func (s *Server) netnsNames(ctx context.Context) map[uint64]discovery.Target {
	names := map[uint64]discovery.Target{}
	list, err := s.listTargets(ctx)
	if err != nil {
		s.log.Info("peer=1: peers in other netns are named by inode", zap.Error(err))
	}
	rank := func(typ string) int {
		switch typ {
		case discovery.TypeProc:
			return 2
		case discovery.TypeBindMount:
			return 1
		}
		return 0
	}
	for _, d := range list {
		if old, ok := names[d.NetNS]; !ok || rank(d.Type) < rank(old.Type) {
			names[d.NetNS] = d
		}
	}
	if self, err := s.cfg.Finder.Self(); err == nil {
		names[self.Inode()] = discovery.Target{Name: hostTarget, Type: "host", NetNS: self.Inode()}
		self.Close()
	}
	return names
}
