package server

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"

	"github.com/packetflix/packetflix/netns"
	"golang.org/x/sys/unix"
)

// maxOwnEndpoints bounds the endpoints kept per netns: a service is
// reached on a few local addresses (loopback, the pod's, the node's), one
// endpoint each per listening port.
const maxOwnEndpoints = 64

// ownConns keeps, per netns, the local endpoints (address and port) on
// which clients have reached the service: every TCP segment to or from
// one of them belongs to a connection of ours, from the client's first SYN
// on, since the kernel hands each to our listening socket. A capture of
// that netns leaves them out (capture.Exclusions), so that it never
// captures its own stream, which would grow with every packet captured
// (docs/capture-engine.md, "Our own traffic").
//
// Endpoints are learned from accepted connections (connContext) and kept
// for the service's life: dropping one when its last connection ends would
// let the handshake of the next client slip through before it is known.
type ownConns struct {
	mu   sync.Mutex
	byNS map[uint64][]netip.AddrPort
	// changed is closed, and replaced, whenever any netns gains an
	// endpoint: that is rare (a few times in the service's life), and a
	// session that finds its own netns unchanged does nothing.
	changed chan struct{}
}

func newOwnConns() *ownConns {
	return &ownConns{byNS: map[uint64][]netip.AddrPort{}, changed: make(chan struct{})}
}

// In implements capture.Exclusions.
func (o *ownConns) In(ino uint64) ([]netip.AddrPort, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byNS[ino], o.changed
}

// add records that a client reached us at local in netns ino.
func (o *ownConns) add(ino uint64, local netip.AddrPort) {
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	o.mu.Lock()
	defer o.mu.Unlock()
	if slices.Contains(o.byNS[ino], local) {
		return
	}
	if len(o.byNS[ino]) == maxOwnEndpoints {
		return
	}
	// A new slice: In's callers hold the old one.
	o.byNS[ino] = append(slices.Clip(o.byNS[ino]), local)
	close(o.changed)
	o.changed = make(chan struct{})
}

// learn records the endpoint of an accepted connection, in the netns its
// socket lives in, which is where the service listens: its own netns, or
// any other it was given a listener in.
func (o *ownConns) learn(c *net.TCPConn) {
	ns, err := socketNetNS(c)
	if err != nil {
		return
	}
	defer ns.Close()
	o.add(ns.Inode(), c.LocalAddr().(*net.TCPAddr).AddrPort())
}

// listening records a listener's endpoints before any client connects, so
// that the very first client on each is left out from its first SYN: the
// listener's address, or, for a wildcard listener, every address its netns
// has now (IPv4 ones only for 0.0.0.0). An address added later is learned
// from the first connection made to it.
func (o *ownConns) listening(ln *net.TCPListener) error {
	addr := ln.Addr().(*net.TCPAddr)
	ns, err := socketNetNS(ln)
	if err != nil {
		return err
	}
	defer ns.Close()
	ip := addr.AddrPort().Addr().Unmap()
	if !ip.IsUnspecified() {
		o.add(ns.Inode(), netip.AddrPortFrom(ip, uint16(addr.Port)))
		return nil
	}
	v4only := ip.Is4()
	var addrs []net.Addr
	// net.InterfaceAddrs asks rtnetlink, whose socket belongs to the netns
	// of the thread that makes it.
	if err := netns.Do(ns, func() (err error) {
		addrs, err = net.InterfaceAddrs()
		return err
	}); err != nil {
		return fmt.Errorf("addresses of netns %d: %w", ns.Inode(), err)
	}
	for _, a := range addrs {
		n, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		if ip, ok := netip.AddrFromSlice(n.IP); ok && (!v4only || ip.Unmap().Is4()) {
			o.add(ns.Inode(), netip.AddrPortFrom(ip, uint16(addr.Port)))
		}
	}
	return nil
}

// socketNetNS opens the netns a socket lives in (SIOCGSKNS).
func socketNetNS(c syscall.Conn) (*netns.NetNS, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var ns *netns.NetNS
	cerr := rc.Control(func(fd uintptr) {
		var nsfd int
		if nsfd, err = unix.IoctlRetInt(int(fd), unix.SIOCGSKNS); err != nil {
			err = fmt.Errorf("SIOCGSKNS: %w", err)
			return
		}
		defer unix.Close(nsfd)
		ns, err = netns.OpenPath(fmt.Sprintf("/proc/self/fd/%d", nsfd))
	})
	return ns, cmp.Or(cerr, err)
}
