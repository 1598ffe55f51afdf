package pcapng

import (
	"encoding/binary"
	"slices"
	"unicode/utf8"
)

var le = binary.LittleEndian

const (
	// epbFixedLen is an EPB without data or options: type, length,
	// interface ID, two timestamp words, two lengths and the trailer.
	epbFixedLen = 32
	// epbFlagsLen is the epb_flags option plus opt_endofopt.
	epbFlagsLen = 12
)

// AppendSHB appends a Section Header Block, version 1.0, with section
// length -1 because a live stream does not know where it ends.
func AppendSHB(b []byte, s SectionInfo) []byte {
	b, start := beginBlock(b, BlockTypeSHB)
	b = le.AppendUint32(b, byteOrderMagic)
	b = le.AppendUint16(b, 1) // major
	b = le.AppendUint16(b, 0) // minor
	b = le.AppendUint64(b, ^uint64(0))
	opts := len(b)
	b = appendStringOpt(b, optComment, s.Comment)
	b = appendStringOpt(b, optSHBHardware, s.Hardware)
	b = appendStringOpt(b, optSHBOS, s.OS)
	b = appendStringOpt(b, optSHBUserAppl, s.UserAppl)
	return endBlock(b, start, len(b) > opts)
}

// AppendIDB appends an Interface Description Block. if_tsresol is always
// 9 (nanoseconds); ifc.TSResol is ignored.
func AppendIDB(b []byte, ifc Interface) []byte {
	b, start := beginBlock(b, BlockTypeIDB)
	b = le.AppendUint16(b, ifc.LinkType)
	b = le.AppendUint16(b, 0) // reserved
	b = le.AppendUint32(b, ifc.SnapLen)
	b = appendStringOpt(b, optIfName, ifc.Name)
	b = appendStringOpt(b, optIfDescription, ifc.Description)
	b = appendOptHeader(b, optIfTSResol, 1)
	b = append(b, tsResolNano, 0, 0, 0)
	if ifc.Filter != "" {
		// The first value byte says what follows; 0 is a libpcap
		// filter string.
		f := truncate(ifc.Filter, maxOptLen-1)
		b = appendOptHeader(b, optIfFilter, 1+len(f))
		b = append(b, 0)
		b = append(b, f...)
		b = appendPad(b, 1+len(f))
	}
	b = appendStringOpt(b, optIfOS, ifc.OS)
	b = appendStringOpt(b, optComment, ifc.Comment)
	return endBlock(b, start, true)
}

// AppendISB appends an Interface Statistics Block for interface id at
// time ts (Unix ns).
func AppendISB(b []byte, id uint32, ts int64, s Stats) []byte {
	b, start := beginBlock(b, BlockTypeISB)
	b = le.AppendUint32(b, id)
	b = appendTimestamp(b, ts)
	opts := len(b)
	if s.StartTime != 0 {
		b = appendOptHeader(b, optISBStartTime, 8)
		b = appendTimestamp(b, s.StartTime)
	}
	if s.EndTime != 0 {
		b = appendOptHeader(b, optISBEndTime, 8)
		b = appendTimestamp(b, s.EndTime)
	}
	b = appendCounterOpt(b, optISBIfRecv, s.HasReceived, s.Received)
	b = appendCounterOpt(b, optISBIfDrop, s.HasDropped, s.Dropped)
	b = appendCounterOpt(b, optISBFilterAccept, s.HasFilterAccept, s.FilterAccept)
	b = appendCounterOpt(b, optISBOSDrop, s.HasOSDrop, s.OSDrop)
	b = appendCounterOpt(b, optISBUsrDeliv, s.HasDelivered, s.Delivered)
	return endBlock(b, start, len(b) > opts)
}

// EPBSize returns the exact number of bytes AppendEPB appends for p and a
// payload of n bytes.
func EPBSize(p *Packet, n int) int {
	if p.VLANValid && n >= 12 {
		n += 4
	}
	size := epbFixedLen + pad4(n)
	if epbFlags(p) != 0 {
		size += epbFlagsLen
	}
	return size
}

// AppendEPB appends an Enhanced Packet Block holding data. It allocates
// only when b lacks the capacity for EPBSize(p, len(data)) more bytes.
// data must not overlap the spare capacity of b.
func AppendEPB(b []byte, p *Packet, data []byte) []byte {
	capLen := len(data)
	origLen := p.OrigLen
	vlan := p.VLANValid && capLen >= 12
	if vlan {
		capLen += 4
		origLen += 4
	}
	flags := epbFlags(p)
	size := epbFixedLen + pad4(capLen)
	if flags != 0 {
		size += epbFlagsLen
	}

	// Everything is written through one resliced window instead of
	// append calls: fewer bounds checks, and nothing can escape.
	start := len(b)
	b = slices.Grow(b, size)[:start+size]
	out := b[start:]
	le.PutUint32(out[0:], BlockTypeEPB)
	le.PutUint32(out[4:], uint32(size))
	le.PutUint32(out[8:], p.InterfaceID)
	ts := uint64(p.Timestamp)
	le.PutUint32(out[12:], uint32(ts>>32))
	le.PutUint32(out[16:], uint32(ts))
	le.PutUint32(out[20:], uint32(capLen))
	le.PutUint32(out[24:], origLen)

	d := out[28:]
	if vlan {
		copy(d, data[:12])
		tpid := p.VLANTPID
		if tpid == 0 {
			tpid = 0x8100
		}
		binary.BigEndian.PutUint16(d[12:], tpid)
		binary.BigEndian.PutUint16(d[14:], p.VLANTCI)
		copy(d[16:], data[12:])
	} else {
		copy(d, data)
	}
	padded := pad4(capLen)
	// The spare capacity of a reused message buffer holds old packets;
	// padding must not leak them.
	clear(d[capLen:padded])

	o := d[padded:]
	if flags != 0 {
		le.PutUint16(o[0:], optEPBFlags)
		le.PutUint16(o[2:], 4)
		le.PutUint32(o[4:], flags)
		le.PutUint32(o[8:], optEndOfOpt)
		o = o[epbFlagsLen:]
	}
	le.PutUint32(o, uint32(size))
	return b
}

// beginBlock appends a block header with a length to be patched by
// endBlock and returns where the block starts.
func beginBlock(b []byte, typ uint32) ([]byte, int) {
	start := len(b)
	b = le.AppendUint32(b, typ)
	b = le.AppendUint32(b, 0)
	return b, start
}

// endBlock closes the option list if it has entries, appends the trailer
// and patches the length into the header.
func endBlock(b []byte, start int, hasOpts bool) []byte {
	if hasOpts {
		b = le.AppendUint32(b, optEndOfOpt)
	}
	n := uint32(len(b) - start + 4)
	b = le.AppendUint32(b, n)
	le.PutUint32(b[start+4:], n)
	return b
}

func appendOptHeader(b []byte, code uint16, n int) []byte {
	b = le.AppendUint16(b, code)
	return le.AppendUint16(b, uint16(n))
}

func appendPad(b []byte, n int) []byte {
	for range pad4(n) - n {
		b = append(b, 0)
	}
	return b
}

func appendStringOpt(b []byte, code uint16, s string) []byte {
	if s == "" {
		return b
	}
	s = truncate(s, maxOptLen)
	b = appendOptHeader(b, code, len(s))
	b = append(b, s...)
	return appendPad(b, len(s))
}

func appendCounterOpt(b []byte, code uint16, ok bool, v uint64) []byte {
	if !ok {
		return b
	}
	b = appendOptHeader(b, code, 8)
	return le.AppendUint64(b, v)
}

// appendTimestamp writes ts the way EPB and ISB do: high word first, each
// word in section byte order, so it is not a plain 64-bit integer.
func appendTimestamp(b []byte, ts int64) []byte {
	u := uint64(ts)
	b = le.AppendUint32(b, uint32(u>>32))
	return le.AppendUint32(b, uint32(u))
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence,
// since the option length field cannot say more.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
