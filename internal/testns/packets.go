package testns

import (
	"encoding/binary"
	"net"
)

// Payload is a test datagram of size bytes (at least 12): "PFTEST", a tag
// byte, and the sequence number at offset 8, so every packet of a test is
// unique and recognisable in a capture.
func Payload(tag byte, seq, size int) []byte {
	b := make([]byte, size)
	copy(b, "PFTEST")
	b[6] = tag
	binary.BigEndian.PutUint32(b[8:], uint32(seq))
	return b
}

// UDPPayload returns the UDP payload of an Ethernet/IPv4/UDP frame, or nil.
func UDPPayload(frame []byte) []byte {
	if len(frame) < 14+20+8 || binary.BigEndian.Uint16(frame[12:]) != 0x0800 || frame[23] != 17 {
		return nil
	}
	ihl := int(frame[14]&0x0f) * 4
	if len(frame) < 14+ihl+8 {
		return nil
	}
	return frame[14+ihl+8:]
}

// IPv4UDP returns an IPv4/UDP packet (no link-layer header, valid IP
// checksum, UDP checksum 0) carrying payload: what a tun interface reads
// and writes.
func IPv4UDP(src, dst net.IP, sport, dport int, payload []byte) []byte {
	b := make([]byte, 28, 28+len(payload))
	b[0], b[8], b[9] = 0x45, 64, 17 // version 4, IHL 5; TTL; UDP
	binary.BigEndian.PutUint16(b[2:], uint16(28+len(payload)))
	copy(b[12:16], src.To4())
	copy(b[16:20], dst.To4())
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(b[20:], uint16(sport))
	binary.BigEndian.PutUint16(b[22:], uint16(dport))
	binary.BigEndian.PutUint16(b[24:], uint16(8+len(payload)))
	return append(b, payload...)
}
