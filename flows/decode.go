package flows

import "encoding/binary"

// Link types the decoder reads (pcap-linktype(7)); every other link type,
// radiotap included, is counted as undecoded.
const (
	LinkTypeEthernet  uint16 = 1
	LinkTypeRaw       uint16 = 101
	LinkTypeLinuxSLL  uint16 = 113
	LinkTypeIPv4      uint16 = 228
	LinkTypeIPv6      uint16 = 229
	LinkTypeLinuxSLL2 uint16 = 276
)

// EtherTypes and IP protocol numbers the decoder knows.
const (
	etherIPv4  = 0x0800
	etherARP   = 0x0806
	etherIPv6  = 0x86dd
	etherDot1Q = 0x8100
	etherQinQ  = 0x88a8
	etherQinQ1 = 0x9100 // pre-802.1ad QinQ, still seen on some switches

	protoICMPv4 = 1
	protoIGMP   = 2
	protoTCP    = 6
	protoUDP    = 17
	protoGRE    = 47
	protoESP    = 50
	protoAH     = 51
	protoICMPv6 = 58
	protoSCTP   = 132

	// IPv6 extension headers (RFC 8200 4.1).
	ext6HopByHop = 0
	ext6Routing  = 43
	ext6Fragment = 44
	ext6DestOpts = 60

	tcpSYN = 0x02
	tcpACK = 0x10
)

// layer is one element of a LayersPath; its name is gopacket's name of the
// layer type, which is what Skydive puts in LayersPath.
type layer uint8

const (
	layerNone layer = iota
	layerEthernet
	layerDot1Q
	layerARP
	layerIPv4
	layerIPv6
	layerIPv6HopByHop
	layerIPv6Routing
	layerIPv6Fragment
	layerIPv6Destination
	layerIPSecAH
	layerIPSecESP
	layerGRE
	layerIGMP
	layerFragment
	layerTCP
	layerUDP
	layerSCTP
	layerICMPv4
	layerICMPv6
	layerICMPv6Echo
	layerICMPv6RouterSolicitation
	layerICMPv6RouterAdvertisement
	layerICMPv6NeighborSolicitation
	layerICMPv6NeighborAdvertisement
	layerICMPv6Redirect
)

var layerNames = [...]string{
	layerNone:                        "",
	layerEthernet:                    "Ethernet",
	layerDot1Q:                       "Dot1Q",
	layerARP:                         "ARP",
	layerIPv4:                        "IPv4",
	layerIPv6:                        "IPv6",
	layerIPv6HopByHop:                "IPv6HopByHop",
	layerIPv6Routing:                 "IPv6Routing",
	layerIPv6Fragment:                "IPv6Fragment",
	layerIPv6Destination:             "IPv6Destination",
	layerIPSecAH:                     "IPSecAH",
	layerIPSecESP:                    "IPSecESP",
	layerGRE:                         "GRE",
	layerIGMP:                        "IGMP",
	layerFragment:                    "Fragment",
	layerTCP:                         "TCP",
	layerUDP:                         "UDP",
	layerSCTP:                        "SCTP",
	layerICMPv4:                      "ICMPv4",
	layerICMPv6:                      "ICMPv6",
	layerICMPv6Echo:                  "ICMPv6Echo",
	layerICMPv6RouterSolicitation:    "ICMPv6RouterSolicitation",
	layerICMPv6RouterAdvertisement:   "ICMPv6RouterAdvertisement",
	layerICMPv6NeighborSolicitation:  "ICMPv6NeighborSolicitation",
	layerICMPv6NeighborAdvertisement: "ICMPv6NeighborAdvertisement",
	layerICMPv6Redirect:              "ICMPv6Redirect",
}

func (l layer) String() string {
	if int(l) < len(layerNames) {
		return layerNames[l]
	}
	return ""
}

// maxPath bounds a LayersPath: the link layer, its VLAN tags, IP, every
// extension header the decoder walks, the transport and ICMP's message
// layer all fit, so no layer it decoded is left out of the path.
const maxPath = 1 + maxVLANTags + 1 + maxExt6 + 2

// Decoding limits: more tags or extension headers than this and the
// decoder stops at what it has (no ports), rather than loop on a crafted
// packet.
const (
	maxVLANTags = 2 // as many as the key holds (vlans)
	maxExt6     = 8
)

// l4 kinds in a key.
const (
	l4None  = 0
	l4Ports = 1
	l4ICMP  = 2
)

// l3 kinds in a key.
const (
	l3None = 0 // an Ethernet frame without IP: keyed by MACs and EtherType
	l3IPv4 = 4
	l3IPv6 = 6
)

// packetInfo is what the decoder takes out of one packet. It lives on the
// stack of Table.packet: nothing in it points into the packet.
type packetInfo struct {
	path  [maxPath]layer
	npath uint8

	hasLink        bool
	srcMAC, dstMAC [6]byte
	vlans          [2]uint16 // VIDs with vlanPresent set, outermost first
	nvlan          uint8
	etype          uint16

	l3       uint8
	src, dst [16]byte // IPv4 in the first 4 bytes
	proto    uint8

	l4           uint8
	sport, dport uint16
	tcpFlags     uint8
	icmpType     icmpKind
	icmpRaw      uint8 // the type on the wire, for the A/B rule
	icmpCode     uint8
	icmpID       uint16
}

// vlanPresent marks a VLAN slot as used (VID 0, a priority tag, is valid).
const vlanPresent = 0x8000

func (p *packetInfo) push(l layer) {
	if int(p.npath) < maxPath {
		p.path[p.npath] = l
		p.npath++
	}
}

func (p *packetInfo) addVLAN(tci uint16) {
	if int(p.nvlan) < len(p.vlans) {
		p.vlans[p.nvlan] = vlanPresent | tci&0x0fff
		p.nvlan++
	}
}

// decode fills p from a packet of the given link type. auxVLAN, if it has
// auxVLANValid set, is the TCI of a tag the kernel took out of the frame
// (PACKET_AUXDATA): it is put back as the outermost Dot1Q. decode reports
// whether the packet makes a flow: an IP packet, or an Ethernet frame of
// any other EtherType (keyed by its MACs).
func (p *packetInfo) decode(linkType uint16, data []byte, auxVLAN uint32) bool {
	var etype uint16
	switch linkType {
	case LinkTypeEthernet:
		if len(data) < 14 {
			return false
		}
		p.hasLink = true
		p.push(layerEthernet)
		copy(p.dstMAC[:], data[0:6])
		copy(p.srcMAC[:], data[6:12])
		if auxVLAN&auxVLANValid != 0 {
			p.push(layerDot1Q)
			p.addVLAN(uint16(auxVLAN))
		}
		etype = binary.BigEndian.Uint16(data[12:14])
		data = data[14:]
		for isVLAN(etype) {
			// The key holds maxVLANTags tags, the kernel's included:
			// flows that differed only in a deeper one would merge.
			if int(p.nvlan) == maxVLANTags || len(data) < 4 {
				p.etype = etype
				return true // an L2 flow: its tags say too little
			}
			p.push(layerDot1Q)
			p.addVLAN(binary.BigEndian.Uint16(data[0:2]))
			etype = binary.BigEndian.Uint16(data[2:4])
			data = data[4:]
		}
	case LinkTypeRaw, LinkTypeIPv4, LinkTypeIPv6:
		if len(data) == 0 {
			return false
		}
		switch data[0] >> 4 {
		case 4:
			etype = etherIPv4
		case 6:
			etype = etherIPv6
		default:
			return false
		}
	case LinkTypeLinuxSLL:
		// 16 bytes: packet type, ARPHRD, address length, 8 bytes of
		// address, protocol (pcap-linktype(7), LINKTYPE_LINUX_SLL).
		if len(data) < 16 {
			return false
		}
		etype = binary.BigEndian.Uint16(data[14:16])
		data = data[16:]
	case LinkTypeLinuxSLL2:
		// 20 bytes: protocol first, then ifindex, ARPHRD, packet type,
		// address length and 8 bytes of address (LINKTYPE_LINUX_SLL2).
		if len(data) < 20 {
			return false
		}
		etype = binary.BigEndian.Uint16(data[0:2])
		data = data[20:]
	default:
		return false
	}
	if etype < 0x0600 {
		etype = 0 // an 802.3 length (LLC: STP, CDP), not a type: one flow per MAC pair
	}
	p.etype = etype
	switch etype {
	case etherIPv4:
		return p.ipv4(data) || p.hasLink
	case etherIPv6:
		return p.ipv6(data) || p.hasLink
	case etherARP:
		p.push(layerARP)
	}
	// Not IP: only an Ethernet frame has the addresses to key it by.
	return p.hasLink
}

func isVLAN(etype uint16) bool {
	return etype == etherDot1Q || etype == etherQinQ || etype == etherQinQ1
}

// ipv4 decodes an IPv4 header and what follows; false means the header is
// not a valid one (the frame is then keyed as an L2 flow, if it has MACs).
func (p *packetInfo) ipv4(b []byte) bool {
	if len(b) < 20 || b[0]>>4 != 4 {
		return false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return false
	}
	p.push(layerIPv4)
	p.l3 = l3IPv4
	p.proto = b[9]
	copy(p.src[:4], b[12:16])
	copy(p.dst[:4], b[16:20])
	// Only the first fragment (offset 0) has the transport header; the
	// others are counted in a flow of their own, without ports.
	first := binary.BigEndian.Uint16(b[6:8])&0x1fff == 0
	p.transport(b[ihl:], first)
	return true
}

// ipv6 decodes an IPv6 header, skips the common extension headers, and
// decodes what follows.
func (p *packetInfo) ipv6(b []byte) bool {
	if len(b) < 40 || b[0]>>4 != 6 {
		return false
	}
	p.push(layerIPv6)
	p.l3 = l3IPv6
	copy(p.src[:], b[8:24])
	copy(p.dst[:], b[24:40])
	nh := b[6]
	b = b[40:]
	first := true
ext:
	for range maxExt6 {
		var n int
		switch nh {
		case ext6HopByHop, ext6Routing, ext6DestOpts:
			if len(b) < 2 {
				break ext
			}
			n = (int(b[1]) + 1) * 8
			switch nh {
			case ext6HopByHop:
				p.push(layerIPv6HopByHop)
			case ext6Routing:
				p.push(layerIPv6Routing)
			default:
				p.push(layerIPv6Destination)
			}
		case ext6Fragment:
			if len(b) < 8 {
				break ext
			}
			n = 8
			p.push(layerIPv6Fragment)
			first = binary.BigEndian.Uint16(b[2:4])>>3 == 0
		case protoAH:
			if len(b) < 2 {
				break ext
			}
			n = (int(b[1]) + 2) * 4
			p.push(layerIPSecAH)
		default:
			break ext
		}
		if len(b) < n {
			nh = b[0]
			b = nil
			break
		}
		nh = b[0]
		b = b[n:]
		if !first {
			break
		}
	}
	p.proto = nh
	p.transport(b, first)
	return true
}

// transport decodes the header after IP: ports of TCP, UDP and SCTP, type,
// code and identifier of ICMP. b may be short (snaplen); a header that is
// not all there adds neither ports nor a layer.
func (p *packetInfo) transport(b []byte, first bool) {
	if !first {
		p.push(layerFragment)
		return
	}
	if p.proto == protoAH && p.l3 == l3IPv4 {
		if len(b) < 2 || len(b) < (int(b[1])+2)*4 {
			return
		}
		p.push(layerIPSecAH)
		p.proto = b[0]
		b = b[(int(b[1])+2)*4:]
	}
	switch p.proto {
	case protoTCP:
		if len(b) < 20 {
			return
		}
		p.push(layerTCP)
		p.ports(b)
		p.tcpFlags = b[13]
	case protoUDP:
		if len(b) < 8 {
			return
		}
		p.push(layerUDP)
		p.ports(b)
	case protoSCTP:
		if len(b) < 12 {
			return
		}
		p.push(layerSCTP)
		p.ports(b)
	case protoICMPv4:
		if len(b) < 8 {
			return
		}
		p.push(layerICMPv4)
		p.l4 = l4ICMP
		p.icmpRaw, p.icmpCode = b[0], b[1]
		p.icmpType = icmpv4Kind(b[0])
		switch b[0] {
		case 0, 8, 13, 14, 15, 16, 17, 18: // echo, timestamp, info, mask
			p.icmpID = binary.BigEndian.Uint16(b[4:6])
		}
	case protoICMPv6:
		if len(b) < 4 {
			return
		}
		p.push(layerICMPv6)
		p.l4 = l4ICMP
		p.icmpRaw, p.icmpCode = b[0], b[1]
		p.icmpType = icmpv6Kind(b[0])
		switch b[0] {
		case 128, 129:
			if len(b) >= 8 {
				p.push(layerICMPv6Echo)
				p.icmpID = binary.BigEndian.Uint16(b[4:6])
			}
		case 133:
			p.push(layerICMPv6RouterSolicitation)
		case 134:
			p.push(layerICMPv6RouterAdvertisement)
		case 135:
			p.push(layerICMPv6NeighborSolicitation)
		case 136:
			p.push(layerICMPv6NeighborAdvertisement)
		case 137:
			p.push(layerICMPv6Redirect)
		}
	case protoGRE:
		p.push(layerGRE)
	case protoIGMP:
		p.push(layerIGMP)
	case protoESP:
		p.push(layerIPSecESP)
	}
}

func (p *packetInfo) ports(b []byte) {
	p.l4 = l4Ports
	p.sport = binary.BigEndian.Uint16(b[0:2])
	p.dport = binary.BigEndian.Uint16(b[2:4])
}

// answers reports whether the packet is the second of an exchange (a TCP
// SYN-ACK, an ICMP echo reply): when a flow starts with one, its
// destination is A, the side that began.
func (p *packetInfo) answers() bool {
	switch {
	case p.l4 == l4Ports && p.proto == protoTCP:
		return p.tcpFlags&(tcpSYN|tcpACK) == tcpSYN|tcpACK
	case p.l4 == l4ICMP && p.proto == protoICMPv4:
		return p.icmpRaw == 0
	case p.l4 == l4ICMP && p.proto == protoICMPv6:
		return p.icmpRaw == 129
	}
	return false
}
