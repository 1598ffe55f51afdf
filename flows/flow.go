package flows

import (
	"crypto/sha1"
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
)

// Flow is one flow in Skydive's flow JSON (flow/flow.proto of Skydive):
// the field names are Skydive's, so its clients read it unchanged.
type Flow struct {
	// UUID is unique per flow: a SHA-1 of NodeTID, the flow's key, its
	// start and its creation number in the table.
	UUID string `json:"UUID"`
	// LayersPath names the decoded layers as gopacket (and so Skydive)
	// names them, e.g. "Ethernet/Dot1Q/IPv4/UDP", without a cooked (SLL)
	// header and without application layers. A first fragment, whose
	// ports we read, shows its transport where gopacket says "Fragment".
	LayersPath string `json:"LayersPath"`
	// Application is the last layer of LayersPath, as Skydive's.
	Application string          `json:"Application,omitempty"`
	Link        *Layer          `json:"Link,omitempty"`
	Network     *Layer          `json:"Network,omitempty"`
	Transport   *TransportLayer `json:"Transport,omitempty"`
	ICMP        *ICMPLayer      `json:"ICMP,omitempty"`
	// LastUpdateMetric counts the packets since the last Table.Updated.
	LastUpdateMetric Metric `json:"LastUpdateMetric"`
	// Metric counts the flow's packets since it started.
	Metric Metric `json:"Metric"`
	// Start and Last are the times of the flow's first and last packets
	// in Unix milliseconds, as Skydive gives them at this level (Metric
	// has them in seconds).
	Start int64 `json:"Start"`
	Last  int64 `json:"Last"`
	// TrackingID is the same for the same conversation wherever it was
	// seen: a SHA-1 of the direction-independent addresses, ports, ICMP
	// fields and protocols only (MACs for a flow without IP).
	TrackingID string `json:"TrackingID"`
	// NodeTID is the capture target's TID (Config.NodeTID).
	NodeTID string `json:"NodeTID"`
	// Interface names the interface the packets were captured on; not a
	// Skydive field (its NodeTID is an interface's), as ours is the
	// target's.
	Interface string `json:"Interface,omitempty"`
}

// Layer is a flow's link or network layer: A is the initiator's address.
// Protocol is "ETHERNET", "IPV4" or "IPV6". A link's ID is its VLAN IDs
// as Skydive computes it (the innermost VID in the high bits).
type Layer struct {
	Protocol string `json:"Protocol"`
	A        string `json:"A"`
	B        string `json:"B"`
	ID       int64  `json:"ID,omitempty"`
}

// TransportLayer is a flow's ports: Protocol "TCP", "UDP" or "SCTP".
type TransportLayer struct {
	Protocol string `json:"Protocol"`
	A        int64  `json:"A"`
	B        int64  `json:"B"`
	ID       int64  `json:"ID,omitempty"`
}

// ICMPLayer is an ICMP flow's type (Skydive's ICMPType names: "ECHO" for
// requests and replies alike, "DESTINATION_UNREACHABLE", ...), code, and
// identifier (echo, timestamp, information and address mask messages).
type ICMPLayer struct {
	Type string `json:"Type"`
	Code uint32 `json:"Code"`
	ID   uint32 `json:"ID"`
}

// Metric is a flow's counters: packets and wire bytes A→B and B→A, and
// the times of the first and last packet counted, in Unix seconds.
type Metric struct {
	ABPackets int64 `json:"ABPackets"`
	ABBytes   int64 `json:"ABBytes"`
	BAPackets int64 `json:"BAPackets"`
	BABytes   int64 `json:"BABytes"`
	Start     int64 `json:"Start"`
	Last      int64 `json:"Last"`
}

// icmpKind is Skydive's ICMPType (flow.proto): request and reply of one
// exchange map to the same kind, so they make one flow.
type icmpKind uint8

const (
	icmpUnknown icmpKind = iota
	icmpDestinationUnreachable
	icmpEcho
	icmpNeighbor
	icmpAddressMask
	icmpInfo
	icmpParameterProblem
	icmpRedirect
	icmpRouter
	icmpSourceQuench
	icmpTimeExceeded
	icmpTimestamp
	icmpPacketTooBig
)

var icmpKindNames = [...]string{
	icmpUnknown:                "UNKNOWN",
	icmpDestinationUnreachable: "DESTINATION_UNREACHABLE",
	icmpEcho:                   "ECHO",
	icmpNeighbor:               "NEIGHBOR",
	icmpAddressMask:            "ADDRESS_MASK",
	icmpInfo:                   "INFO",
	icmpParameterProblem:       "PARAMETER_PROBLEM",
	icmpRedirect:               "REDIRECT",
	icmpRouter:                 "ROUTER",
	icmpSourceQuench:           "SOURCE_QUENCH",
	icmpTimeExceeded:           "TIME_EXCEEDED",
	icmpTimestamp:              "TIMESTAMP",
	icmpPacketTooBig:           "PACKET_TOO_BIG",
}

func (k icmpKind) String() string {
	if int(k) < len(icmpKindNames) {
		return icmpKindNames[k]
	}
	return icmpKindNames[icmpUnknown]
}

// icmpv4Kind maps an ICMPv4 type (RFC 792 and successors) as Skydive does.
func icmpv4Kind(t uint8) icmpKind {
	switch t {
	case 0, 8:
		return icmpEcho
	case 17, 18:
		return icmpAddressMask
	case 3:
		return icmpDestinationUnreachable
	case 15, 16:
		return icmpInfo
	case 12:
		return icmpParameterProblem
	case 5:
		return icmpRedirect
	case 9, 10:
		return icmpRouter
	case 4:
		return icmpSourceQuench
	case 11:
		return icmpTimeExceeded
	case 13, 14:
		return icmpTimestamp
	}
	return icmpUnknown
}

// icmpv6Kind maps an ICMPv6 type (RFC 4443, 4861) as Skydive does.
func icmpv6Kind(t uint8) icmpKind {
	switch t {
	case 128, 129:
		return icmpEcho
	case 135, 136:
		return icmpNeighbor
	case 1:
		return icmpDestinationUnreachable
	case 2:
		return icmpPacketTooBig
	case 4:
		return icmpParameterProblem
	case 137:
		return icmpRedirect
	case 133, 134:
		return icmpRouter
	case 3:
		return icmpTimeExceeded
	}
	return icmpUnknown
}

// flow fills f from a copy of a slot, outside the table's lock.
func (s *slot) flow(f *Flow, nodeTID string, tid *[sha1.Size]byte, names []string) {
	k := &s.key
	*f = Flow{
		UUID:       s.uuid(tid),
		TrackingID: s.trackingID(),
		NodeTID:    nodeTID,
		Start:      s.start / 1e6,
		Last:       s.last / 1e6,
	}
	var path strings.Builder
	for i, l := range s.path[:s.npath] {
		if i > 0 {
			path.WriteByte('/')
		}
		path.WriteString(l.String())
	}
	f.LayersPath = path.String()
	if s.npath > 0 {
		f.Application = s.path[s.npath-1].String()
	}
	if id := k.iface(); id >= 0 && id < len(names) {
		f.Interface = names[id]
	}

	ab, ba := s.ab, s.ba
	f.Metric = metric(ab, ba, s.start, s.last)
	if s.dirty {
		f.LastUpdateMetric = metric(
			counts{ab.packets - s.uab.packets, ab.bytes - s.uab.bytes},
			counts{ba.packets - s.uba.packets, ba.bytes - s.uba.bytes},
			s.ustart, s.last)
	}

	if s.hasLink {
		f.Link = &Layer{
			Protocol: "ETHERNET",
			A:        net.HardwareAddr(s.macA[:]).String(),
			B:        net.HardwareAddr(s.macB[:]).String(),
			ID:       linkID(k),
		}
	}
	lo, hi := k[kLo:kHi], k[kHi:kHi+16]
	loPort, hiPort := int64(k.loPort()), int64(k.hiPort())
	if !s.aLo {
		lo, hi, loPort, hiPort = hi, lo, hiPort, loPort
	}
	switch k.l3() {
	case l3IPv4:
		f.Network = &Layer{
			Protocol: "IPV4",
			A:        netip.AddrFrom4([4]byte(lo[:4])).String(),
			B:        netip.AddrFrom4([4]byte(hi[:4])).String(),
		}
	case l3IPv6:
		f.Network = &Layer{
			Protocol: "IPV6",
			A:        netip.AddrFrom16([16]byte(lo)).String(),
			B:        netip.AddrFrom16([16]byte(hi)).String(),
		}
	}
	switch k.l4() {
	case l4Ports:
		t := &TransportLayer{A: loPort, B: hiPort}
		switch k.proto() {
		case protoTCP:
			t.Protocol = "TCP"
		case protoUDP:
			t.Protocol = "UDP"
		case protoSCTP:
			t.Protocol = "SCTP"
		}
		f.Transport = t
	case l4ICMP:
		f.ICMP = &ICMPLayer{
			Type: icmpKind(k[kICMPType]).String(),
			Code: uint32(k[kICMPCode]),
			ID:   uint32(binary.BigEndian.Uint16(k[kICMPID:])),
		}
	}
}

func metric(ab, ba counts, start, last int64) Metric {
	return Metric{
		ABPackets: int64(ab.packets),
		ABBytes:   int64(ab.bytes),
		BAPackets: int64(ba.packets),
		BABytes:   int64(ba.bytes),
		Start:     start / 1e9,
		Last:      last / 1e9,
	}
}

// linkID is Skydive's Link.ID: the VLAN IDs, innermost first, 12 bits
// each.
func linkID(k *key) int64 {
	var id int64
	for i := 1; i >= 0; i-- {
		if v := k.vlan(i); v&vlanPresent != 0 {
			id = id<<12 | int64(v&0x0fff)
		}
	}
	return id
}

func (s *slot) trackingID() string {
	sum := sha1.Sum(s.key[:trackLen])
	return hex.EncodeToString(sum[:])
}

// uuid hashes the table's hashed NodeTID with the key, start and
// creation number.
func (s *slot) uuid(tid *[sha1.Size]byte) string {
	var b [sha1.Size + keySize + 16]byte
	n := copy(b[:], tid[:])
	n += copy(b[n:], s.key[:])
	binary.BigEndian.PutUint64(b[n:], uint64(s.start))
	binary.BigEndian.PutUint64(b[n+8:], s.seq)
	sum := sha1.Sum(b[:])
	return hex.EncodeToString(sum[:])
}
