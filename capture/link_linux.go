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

// linkTypeFor maps an ARPHRD type to the pcapng link type and the socket
// type to read it with, following libpcap's map_arphrd_to_dlt. Types
// without a link-layer header libpcap knows are read with SOCK_DGRAM, which
// delivers the network-layer packet, and written as RAW (IPv4 or IPv6).
func linkTypeFor(hatype uint16) (linkType uint16, sockType int) {
	switch hatype {
	case unix.ARPHRD_ETHER, unix.ARPHRD_LOOPBACK:
		// Linux gives lo frames a zeroed 14-byte Ethernet header.
		return LinkTypeEthernet, unix.SOCK_RAW
	case unix.ARPHRD_NONE, unix.ARPHRD_TUNNEL, unix.ARPHRD_SIT, unix.ARPHRD_SLIP:
		// tun, wireguard, ipip, sit: the frame is the IP packet itself.
		return LinkTypeRaw, unix.SOCK_RAW
	case unix.ARPHRD_IEEE80211_RADIOTAP:
		return LinkTypeRadiotap, unix.SOCK_RAW
	default:
		return LinkTypeRaw, unix.SOCK_DGRAM
	}
}
