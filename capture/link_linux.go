package capture

import (
	"fmt"
	"sort"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Link types written into the pcapng IDB (LINKTYPE_* values).
const (
	LinkTypeEthernet uint16 = 1
	LinkTypeRaw      uint16 = 101
	LinkTypeRadiotap uint16 = 127
	// LinkTypeLinuxSLL2 is the Linux cooked header v2: what libpcap writes
	// for interfaces whose hardware type it has no link type for. Each
	// packet starts with a 20-byte header built from its sockaddr_ll
	// (protocol, ifindex, ARPHRD type, packet type, link-layer address),
	// followed by the network-layer packet.
	LinkTypeLinuxSLL2 uint16 = 276
)

// link is one interface as rtnetlink reports it.
type link struct {
	index  int
	name   string
	hatype uint16 // ARPHRD_*
}

// listLinks asks rtnetlink for the interfaces of the calling thread's
// network namespace. It is called inside netns.Do: unlike
// /sys/class/net or /proc/self/net, a netlink socket belongs to the netns
// of the thread that creates it. net.Interfaces would do the same request
// but drops the hardware type, which decides the pcapng link type.
func listLinks() ([]link, error) {
	rib, err := syscall.NetlinkRIB(syscall.RTM_GETLINK, syscall.AF_UNSPEC)
	if err != nil {
		return nil, fmt.Errorf("netlink RTM_GETLINK: %w", err)
	}
	links, err := parseLinks(rib)
	if err != nil {
		return nil, err
	}
	sort.Slice(links, func(i, j int) bool { return links[i].index < links[j].index })
	return links, nil
}

// parseLinks reads the RTM_NEWLINK messages of a netlink answer or
// notification.
func parseLinks(b []byte) ([]link, error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil, fmt.Errorf("netlink parse: %w", err)
	}
	var links []link
	for _, m := range msgs {
		if m.Header.Type != syscall.RTM_NEWLINK || len(m.Data) < syscall.SizeofIfInfomsg {
			continue
		}
		ifi := (*syscall.IfInfomsg)(unsafe.Pointer(&m.Data[0]))
		attrs, err := syscall.ParseNetlinkRouteAttr(&m)
		if err != nil {
			continue
		}
		l := link{index: int(ifi.Index), hatype: ifi.Type}
		for _, a := range attrs {
			if a.Attr.Type == syscall.IFLA_IFNAME {
				l.name = cString(a.Value)
			}
		}
		if l.name != "" {
			links = append(links, l)
		}
	}
	return links, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

// linkMode says how an interface is read and labelled.
type linkMode struct {
	linkType   uint16 // LINKTYPE_* in the IDB
	sockType   int    // SOCK_RAW: the frame as on the wire; SOCK_DGRAM: from the network header
	filterType uint16 // the link type the kernel filter is compiled for
	cooked     bool   // each packet gets a LINKTYPE_LINUX_SLL2 header
}

// linkTypeFor maps an ARPHRD type to the pcapng link type and the socket
// type to read it with, following libpcap's map_arphrd_to_dlt. Types
// libpcap has no link type for are read, as libpcap does, with SOCK_DGRAM
// (the kernel delivers the network-layer packet) and written with a Linux
// cooked header (LINKTYPE_LINUX_SLL2) in front. The kernel runs the filter
// on what the socket delivers, the network-layer packet, so it is compiled
// for RAW; libpcap instead compiles for the cooked link type and rewrites
// the header loads into ancillary ones.
func linkTypeFor(hatype uint16) linkMode {
	switch hatype {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		// Linux gives lo frames a zeroed 14-byte Ethernet header.
		return linkMode{LinkTypeEthernet, unix.SOCK_RAW, LinkTypeEthernet, false}
	case unix.ARPHRD_NONE, unix.ARPHRD_TUNNEL, unix.ARPHRD_SIT, unix.ARPHRD_SLIP:
		// tun, wireguard, ipip, sit: the frame is the IP packet itself.
		return linkMode{LinkTypeRaw, unix.SOCK_RAW, LinkTypeRaw, false}
	case unix.ARPHRD_IEEE80211_RADIOTAP:
		return linkMode{LinkTypeRadiotap, unix.SOCK_RAW, LinkTypeRadiotap, false}
	default:
		return linkMode{LinkTypeLinuxSLL2, unix.SOCK_DGRAM, LinkTypeRaw, true}
	}
}
