package main

import (
	"encoding/binary"
	"fmt"

	"github.com/packetflix/packetflix/pcapng"
)

// maxBlock bounds a block the splitter buffers, as pcapng.Reader does: a
// real block is at most a 256 KiB snap length plus options.
const maxBlock = 16 << 20

// byteOrderMagic is the SHB's byte-order magic.
const byteOrderMagic uint32 = 0x1A2B3C4D

// splitter cuts a pcapng stream, fed in pieces of any size, into whole
// blocks, framed as pcapng.Reader frames them but kept as raw bytes: the
// ring writes them again exactly as they came. It is not safe for
// concurrent use.
type splitter struct {
	pending []byte           // the start of a block not yet whole
	order   binary.ByteOrder // of the current section; nil before the first SHB
	off     int64            // stream offset of pending[0]
}

// feed hands every block that p completes to fn, in order. The block is
// only valid during the call. An error from fn is returned as is; a
// malformed stream gives an error wrapping pcapng.ErrFormat.
func (s *splitter) feed(p []byte, fn func(typ uint32, block []byte) error) error {
	buf := p
	if len(s.pending) > 0 {
		s.pending = append(s.pending, p...)
		buf = s.pending
	}
	for {
		typ, n, err := s.frame(buf)
		if err != nil {
			return err
		}
		if n == 0 {
			break
		}
		if err := fn(typ, buf[:n]); err != nil {
			return err
		}
		buf = buf[n:]
		s.off += int64(n)
	}
	// buf may be the tail of pending: append copies with memmove.
	s.pending = append(s.pending[:0], buf...)
	return nil
}

// frame returns the type and length of the block at the start of b, or
// n == 0 when b does not hold all of it yet.
func (s *splitter) frame(b []byte) (typ uint32, n int, err error) {
	if len(b) < 8 {
		return 0, 0, nil
	}
	// The SHB's type is a palindrome; its byte order, that of its own
	// length field too, is the magic's that follows the length.
	isSHB := binary.LittleEndian.Uint32(b) == pcapng.BlockTypeSHB
	if isSHB {
		if len(b) < 12 {
			return 0, 0, nil
		}
		switch byteOrderMagic {
		case binary.LittleEndian.Uint32(b[8:]):
			s.order = binary.LittleEndian
		case binary.BigEndian.Uint32(b[8:]):
			s.order = binary.BigEndian
		default:
			return 0, 0, s.formatErr("bad byte-order magic % x", b[8:12])
		}
	} else if s.order == nil {
		return 0, 0, s.formatErr("stream does not start with a section header block")
	}
	typ = s.order.Uint32(b)
	l := s.order.Uint32(b[4:])
	switch {
	case l < 12 || isSHB && l < 28:
		return 0, 0, s.formatErr("block length %d is too short", l)
	case l%4 != 0:
		return 0, 0, s.formatErr("block length %d is not a multiple of 4", l)
	case l > maxBlock:
		return 0, 0, s.formatErr("block length %d exceeds %d", l, maxBlock)
	}
	if len(b) < int(l) {
		return 0, 0, nil
	}
	if t := s.order.Uint32(b[l-4:]); t != l {
		return 0, 0, s.formatErr("trailing length %d does not match leading length %d", t, l)
	}
	return typ, int(l), nil
}

func (s *splitter) formatErr(format string, args ...any) error {
	return fmt.Errorf("%w: at offset %d: %s", pcapng.ErrFormat, s.off, fmt.Sprintf(format, args...))
}
