package testns

import "encoding/binary"

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
