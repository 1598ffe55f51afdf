package flows

import (
	"bytes"
	"encoding/binary"
)

// key identifies a flow in a Table. It is direction-independent: the two
// endpoints are stored in a canonical order ("lo" is the smaller of
// (address, port)), so both directions of a conversation build the same
// key. A fixed-size array compares with one memequal and hashes without
// allocating.
//
// The first trackLen bytes are the conversation itself (addresses, ports,
// ICMP, protocol); TrackingID is a hash of them only, so the same packets
// seen on another interface, VLAN or target share it. The rest (VLANs,
// interface) keeps flows of different interfaces and VLANs apart in a
// table.
type key [keySize]byte

const (
	kLo       = 0  // 16 bytes: IPv6, IPv4 (4 bytes) or MAC (6 bytes)
	kHi       = 16 // 16 bytes
	kLoPort   = 32 // 2 bytes
	kHiPort   = 34 // 2 bytes
	kL3       = 36 // l3None, l3IPv4, l3IPv6
	kProto    = 37 // IP protocol
	kL4       = 38 // l4None, l4Ports, l4ICMP
	kICMPType = 39 // ICMPType (Skydive's, so request and reply match)
	kICMPCode = 40
	kICMPID   = 42 // 2 bytes
	kEtype    = 44 // 2 bytes, L2 flows only
	trackLen  = 46
	kVLAN0    = 46 // 2 bytes, vlanPresent|VID
	kVLAN1    = 48 // 2 bytes
	kIface    = 50 // 4 bytes
	keySize   = 54
)

// makeKey builds p's key and reports whether p's source is the key's lo
// endpoint. When source and destination are the same (address and port),
// every packet counts as lo→hi.
func (p *packetInfo) makeKey(k *key, iface int) (srcLo bool) {
	var src, dst []byte
	var sport, dport uint16
	switch p.l3 {
	case l3IPv4:
		src, dst = p.src[:4], p.dst[:4]
	case l3IPv6:
		src, dst = p.src[:], p.dst[:]
	default:
		src, dst = p.srcMAC[:], p.dstMAC[:]
		binary.BigEndian.PutUint16(k[kEtype:], p.etype)
	}
	if p.l4 == l4Ports {
		sport, dport = p.sport, p.dport
	}
	c := bytes.Compare(src, dst)
	srcLo = c < 0 || c == 0 && sport <= dport
	lo, hi, lop, hip := src, dst, sport, dport
	if !srcLo {
		lo, hi, lop, hip = dst, src, dport, sport
	}
	copy(k[kLo:kLo+16], lo)
	copy(k[kHi:kHi+16], hi)
	binary.BigEndian.PutUint16(k[kLoPort:], lop)
	binary.BigEndian.PutUint16(k[kHiPort:], hip)
	k[kL3] = p.l3
	k[kProto] = p.proto
	k[kL4] = p.l4
	if p.l4 == l4ICMP {
		k[kICMPType] = uint8(p.icmpType)
		k[kICMPCode] = p.icmpCode
		binary.BigEndian.PutUint16(k[kICMPID:], p.icmpID)
	}
	binary.BigEndian.PutUint16(k[kVLAN0:], p.vlans[0])
	binary.BigEndian.PutUint16(k[kVLAN1:], p.vlans[1])
	binary.BigEndian.PutUint32(k[kIface:], uint32(iface))
	return srcLo
}

func (k *key) l3() uint8      { return k[kL3] }
func (k *key) proto() uint8   { return k[kProto] }
func (k *key) l4() uint8      { return k[kL4] }
func (k *key) loPort() uint16 { return binary.BigEndian.Uint16(k[kLoPort:]) }
func (k *key) hiPort() uint16 { return binary.BigEndian.Uint16(k[kHiPort:]) }
func (k *key) iface() int     { return int(int32(binary.BigEndian.Uint32(k[kIface:]))) }
func (k *key) vlan(i int) uint16 {
	return binary.BigEndian.Uint16(k[kVLAN0+2*i:])
}
