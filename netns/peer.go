package netns

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrNoPeer: the other end of a veth interface cannot be found.
var ErrNoPeer = errors.New("veth peer not found")

// Peer is the other end of a veth interface.
type Peer struct {
	// Of is the interface, in the namespace asked about, whose peer this is.
	Of string
	// NetNS is where the peer lives (the namespace asked about, or
	// another), open for the caller, who closes it.
	NetNS *NetNS
	// Name is the peer's interface name in NetNS.
	Name string
}

// veth is what rtnetlink says about one veth end: its peer's ifindex
// (IFLA_LINK) and, when the peer lives in another namespace, that
// namespace's id as seen from this one (IFLA_LINK_NETNSID; -1 otherwise).
type veth struct {
	name      string
	peerIndex int
	nsid      int
}

// VethPeers finds the other end of every veth interface among names in ns
// (of every veth in ns when names is nil), wherever it lives. Names that
// are no veth, or no interface at all, have no peer and are skipped: the
// capture that opens them says what is wrong with them.
//
// A peer in another namespace is found through the link's netnsid, which
// only means something inside ns: each live namespace (LiveInodes: bind
// mounts, processes, threads) is asked its id there (RTM_GETNSID) until
// every id is matched. A namespace held only by an open fd is not seen;
// its peers are ErrNoPeer.
func (f *Finder) VethPeers(ns *NetNS, names []string) (peers []Peer, err error) {
	defer func() {
		if err != nil {
			for _, p := range peers {
				p.NetNS.Close()
			}
			peers = nil
		}
	}()
	var veths []veth
	local := map[string]string{} // name -> peer name, for peers in ns itself
	err = Do(ns, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		var links []netlink.Link
		if names == nil {
			if links, err = h.LinkList(); err != nil {
				return fmt.Errorf("list interfaces: %w", err)
			}
		}
		for _, name := range names {
			l, err := h.LinkByName(name)
			if err == nil {
				links = append(links, l)
			}
		}
		for _, l := range links {
			a := l.Attrs()
			if l.Type() != "veth" {
				continue
			}
			v := veth{name: a.Name, peerIndex: a.ParentIndex, nsid: a.NetNsID}
			if v.peerIndex == 0 {
				return fmt.Errorf("%w: %s does not name its peer's index", ErrNoPeer, a.Name)
			}
			if v.nsid < 0 {
				p, err := h.LinkByIndex(v.peerIndex)
				if err != nil {
					return fmt.Errorf("%w: %s: no interface with index %d in its own netns: %v", ErrNoPeer, a.Name, v.peerIndex, err)
				}
				local[a.Name] = p.Attrs().Name
			}
			veths = append(veths, v)
		}
		return nil
	})
	if err != nil {
		return nil, opErr(OpLookup, ns.Inode(), err)
	}

	others, err := f.byNSID(ns, veths)
	if err != nil {
		return nil, opErr(OpLookup, ns.Inode(), err)
	}
	defer func() {
		for _, o := range others {
			o.Close()
		}
	}()
	for _, v := range veths {
		if name, ok := local[v.name]; ok {
			d, err := ns.Dup()
			if err != nil {
				return peers, err
			}
			peers = append(peers, Peer{Of: v.name, NetNS: d, Name: name})
			continue
		}
		o := others[v.nsid]
		var name string
		err := Do(o, func() error {
			h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
			if err != nil {
				return fmt.Errorf("netlink: %w", err)
			}
			defer h.Close()
			l, err := h.LinkByIndex(v.peerIndex)
			if err != nil {
				return fmt.Errorf("%w: %s: no interface with index %d in netns %d: %v", ErrNoPeer, v.name, v.peerIndex, o.Inode(), err)
			}
			name = l.Attrs().Name
			return nil
		})
		if err != nil {
			return peers, opErr(OpLookup, ns.Inode(), err)
		}
		d, err := o.Dup()
		if err != nil {
			return peers, err
		}
		peers = append(peers, Peer{Of: v.name, NetNS: d, Name: name})
	}
	return peers, nil
}

// byNSID opens the namespaces that the netnsids of veths name, as seen
// from ns. The caller closes them.
func (f *Finder) byNSID(ns *NetNS, veths []veth) (map[int]*NetNS, error) {
	want := map[int]string{} // nsid -> an interface whose peer is there, for errors
	for _, v := range veths {
		if v.nsid >= 0 {
			want[v.nsid] = v.name
		}
	}
	found := map[int]*NetNS{}
	if len(want) == 0 {
		return found, nil
	}
	paths, err := f.livePaths()
	if err != nil {
		return nil, err
	}
	// Open the candidates outside ns: opening files needs no namespace,
	// and the function run inside it stays short.
	var cands []*NetNS
	defer func() {
		kept := map[*NetNS]bool{}
		for _, c := range found {
			kept[c] = true
		}
		for _, c := range cands {
			if !kept[c] {
				c.Close()
			}
		}
	}()
	for _, ino := range slices.Sorted(maps.Keys(paths)) {
		if ino == ns.Inode() {
			continue
		}
		if c, err := OpenPathInode(paths[ino], ino); err == nil {
			cands = append(cands, c)
		}
	}
	err = Do(ns, func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		for _, c := range cands {
			// RTM_GETNSID only reads: a namespace without an id in ns
			// answers -1 and is not given one.
			id, err := h.GetNetNsIdByFd(int(c.h))
			if err != nil || id < 0 {
				continue
			}
			if _, ok := want[id]; ok && found[id] == nil {
				found[id] = c
				if len(found) == len(want) {
					break
				}
			}
		}
		return nil
	})
	if err == nil {
		for id, name := range want {
			if found[id] == nil {
				err = fmt.Errorf("%w: %s's veth peer is in a netns (netnsid %d here) that no process or bind mount holds", ErrNoPeer, name, id)
				break
			}
		}
	}
	if err != nil {
		clear(found) // the deferred loop closes them all
		return nil, err
	}
	return found, nil
}
