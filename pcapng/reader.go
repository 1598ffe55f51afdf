package pcapng

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
)

// ErrFormat is wrapped by every error Reader returns for a stream that is
// not valid pcapng, as opposed to one that is cut short or fails to read.
var ErrFormat = errors.New("pcapng: malformed stream")

// Block is one block read by Reader. Type says which of the fields below
// are set; the rest are zero. All slices and strings are copies and stay
// valid after the next call to Next.
type Block struct {
	Type uint32

	Section   *SectionInfo // BlockTypeSHB
	Interface *Interface   // BlockTypeIDB
	Packet    *Packet      // BlockTypeEPB; the VLAN fields are never set
	Stats     *Stats       // BlockTypeISB

	// InterfaceID and Timestamp (Unix ns) are set for EPB and ISB.
	InterfaceID uint32
	Timestamp   int64

	Data     []byte // EPB: the captured bytes
	Flags    uint32 // EPB: raw epb_flags
	HasFlags bool   // EPB: epb_flags was present

	// Comments holds every opt_comment of the block, in order.
	Comments []string

	// Raw is the body of any other block type: everything between the
	// length field and the trailer.
	Raw []byte
}

// Reader parses a pcapng stream in either byte order, possibly with
// several sections. It is not safe for concurrent use.
//
// Errors are sticky: after Next returns one, it returns it again.
type Reader struct {
	r      *bufio.Reader
	order  binary.ByteOrder // of the current section; nil before the first SHB
	ifaces []Interface      // IDBs of the current section
	buf    []byte           // the current block, reused
	off    int64            // stream offset of the current block
	err    error
}

// NewReader returns a Reader that reads from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReader(r)}
}

// Interfaces returns the interfaces described so far in the current
// section, indexed by interface ID.
func (r *Reader) Interfaces() []Interface {
	return slices.Clone(r.ifaces)
}

// Next returns the next block. It returns io.EOF when the stream ends
// between blocks, io.ErrUnexpectedEOF when it ends inside one, and an
// error wrapping ErrFormat when the stream is malformed.
func (r *Reader) Next() (*Block, error) {
	if r.err != nil {
		return nil, r.err
	}
	b, err := r.next()
	if err != nil {
		r.err = err
		return nil, err
	}
	return b, nil
}

// formatError matches ErrFormat, and also ErrUnknownInterface when a
// block names an interface the section lacks, without repeating either
// message.
type formatError struct {
	off     int64
	msg     string
	unknown bool
}

func (e *formatError) Error() string {
	return fmt.Sprintf("pcapng: malformed stream at offset %d: %s", e.off, e.msg)
}

func (e *formatError) Is(target error) bool {
	return target == ErrFormat || e.unknown && target == ErrUnknownInterface
}

func (r *Reader) formatErr(format string, args ...any) error {
	return &formatError{off: r.off, msg: fmt.Sprintf(format, args...)}
}

func (r *Reader) unknownIfaceErr(what string, id uint32) error {
	return &formatError{
		off:     r.off,
		msg:     fmt.Sprintf("%s for unknown interface %d, section has %d", what, id, len(r.ifaces)),
		unknown: true,
	}
}

func (r *Reader) next() (*Block, error) {
	r.buf = slices.Grow(r.buf[:0], 12)[:8]
	if _, err := io.ReadFull(r.r, r.buf); err != nil {
		return nil, err // io.EOF only if nothing was read
	}
	order := r.order
	isSHB := le.Uint32(r.buf) == BlockTypeSHB // the magic is a palindrome
	if isSHB {
		// The byte order of a section, its own length field included,
		// is only known from the magic that follows the length.
		r.buf = r.buf[:12]
		if _, err := io.ReadFull(r.r, r.buf[8:]); err != nil {
			return nil, unexpected(err)
		}
		switch byteOrderMagic {
		case le.Uint32(r.buf[8:]):
			order = binary.LittleEndian
		case binary.BigEndian.Uint32(r.buf[8:]):
			order = binary.BigEndian
		default:
			return nil, r.formatErr("bad byte-order magic % x", r.buf[8:12])
		}
	} else if order == nil {
		return nil, r.formatErr("stream does not start with a section header block")
	}

	typ := order.Uint32(r.buf)
	n := order.Uint32(r.buf[4:])
	switch {
	case n < 12:
		return nil, r.formatErr("block length %d is less than 12", n)
	case n%4 != 0:
		return nil, r.formatErr("block length %d is not a multiple of 4", n)
	case n > maxBlockLen:
		return nil, r.formatErr("block length %d exceeds %d", n, maxBlockLen)
	case isSHB && n < 28:
		return nil, r.formatErr("section header block length %d is less than 28", n)
	}
	if err := r.fill(int(n)); err != nil {
		return nil, err
	}
	if t := order.Uint32(r.buf[n-4:]); t != n {
		return nil, r.formatErr("trailing length %d does not match leading length %d", t, n)
	}
	body := r.buf[8 : n-4]

	var b *Block
	var err error
	switch typ {
	case BlockTypeSHB:
		b, err = r.parseSHB(order, body)
	case BlockTypeIDB:
		b, err = r.parseIDB(order, body)
	case BlockTypeEPB:
		b, err = r.parseEPB(order, body)
	case BlockTypeISB:
		b, err = r.parseISB(order, body)
	default:
		b = &Block{Type: typ, Raw: slices.Clone(body)}
	}
	if err != nil {
		return nil, err
	}
	r.off += int64(n)
	return b, nil
}

// fill reads the rest of an n-byte block into r.buf. It grows the buffer
// only as data arrives, so a huge length in a short stream costs no more
// memory than the stream itself.
func (r *Reader) fill(n int) error {
	const chunk = 64 << 10
	for len(r.buf) < n {
		m := min(n-len(r.buf), chunk)
		have := len(r.buf)
		r.buf = slices.Grow(r.buf, m)[:have+m]
		if _, err := io.ReadFull(r.r, r.buf[have:]); err != nil {
			return unexpected(err)
		}
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func (r *Reader) parseSHB(order binary.ByteOrder, body []byte) (*Block, error) {
	// body is at least 16 bytes: magic, version, section length.
	if major := order.Uint16(body[4:]); major != 1 {
		return nil, r.formatErr("unsupported section version %d.%d", major, order.Uint16(body[6:]))
	}
	s := &SectionInfo{}
	b := &Block{Type: BlockTypeSHB, Section: s}
	err := r.parseOptions(order, body[16:], b, func(code uint16, v []byte) error {
		switch code {
		case optSHBHardware:
			s.Hardware = string(v)
		case optSHBOS:
			s.OS = string(v)
		case optSHBUserAppl:
			s.UserAppl = string(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(b.Comments) > 0 {
		s.Comment = b.Comments[0]
	}
	// A new section starts with no interfaces.
	r.order = order
	r.ifaces = r.ifaces[:0]
	return b, nil
}

func (r *Reader) parseIDB(order binary.ByteOrder, body []byte) (*Block, error) {
	if len(body) < 8 {
		return nil, r.formatErr("interface description block body is %d bytes, need 8", len(body))
	}
	ifc := Interface{
		LinkType: order.Uint16(body),
		SnapLen:  order.Uint32(body[4:]),
		TSResol:  6, // the spec's default: microseconds
	}
	b := &Block{Type: BlockTypeIDB}
	err := r.parseOptions(order, body[8:], b, func(code uint16, v []byte) error {
		switch code {
		case optIfName:
			ifc.Name = string(v)
		case optIfDescription:
			ifc.Description = string(v)
		case optIfTSResol:
			if len(v) != 1 {
				return r.formatErr("if_tsresol length %d, want 1", len(v))
			}
			ifc.TSResol = v[0]
		case optIfFilter:
			// Other filter types (BPF bytecode) have no string form.
			if len(v) > 0 && v[0] == 0 {
				ifc.Filter = string(v[1:])
			}
		case optIfOS:
			ifc.OS = string(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(b.Comments) > 0 {
		ifc.Comment = b.Comments[0]
	}
	r.ifaces = append(r.ifaces, ifc)
	b.Interface = &ifc
	return b, nil
}

func (r *Reader) parseEPB(order binary.ByteOrder, body []byte) (*Block, error) {
	if len(body) < 20 {
		return nil, r.formatErr("enhanced packet block body is %d bytes, need 20", len(body))
	}
	id := order.Uint32(body)
	if id >= uint32(len(r.ifaces)) {
		return nil, r.unknownIfaceErr("packet", id)
	}
	capLen := order.Uint32(body[12:])
	if uint64(capLen) > uint64(len(body)-20) {
		return nil, r.formatErr("captured length %d overruns block", capLen)
	}
	p := &Packet{
		InterfaceID: id,
		Timestamp:   r.timestamp(order, body[4:], id),
		OrigLen:     order.Uint32(body[16:]),
	}
	b := &Block{
		Type:        BlockTypeEPB,
		Packet:      p,
		InterfaceID: id,
		Timestamp:   p.Timestamp,
		Data:        append([]byte{}, body[20:20+capLen]...),
	}
	err := r.parseOptions(order, body[20+pad4(int(capLen)):], b, func(code uint16, v []byte) error {
		if code == optEPBFlags {
			if len(v) != 4 {
				return r.formatErr("epb_flags length %d, want 4", len(v))
			}
			b.Flags = order.Uint32(v)
			b.HasFlags = true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	p.Direction = Direction(b.Flags & 0x3)
	p.Reception = Reception(b.Flags >> 2 & 0x7)
	return b, nil
}

func (r *Reader) parseISB(order binary.ByteOrder, body []byte) (*Block, error) {
	if len(body) < 12 {
		return nil, r.formatErr("interface statistics block body is %d bytes, need 12", len(body))
	}
	id := order.Uint32(body)
	if id >= uint32(len(r.ifaces)) {
		return nil, r.unknownIfaceErr("statistics", id)
	}
	s := &Stats{}
	b := &Block{
		Type:        BlockTypeISB,
		Stats:       s,
		InterfaceID: id,
		Timestamp:   r.timestamp(order, body[4:], id),
	}
	err := r.parseOptions(order, body[12:], b, func(code uint16, v []byte) error {
		if code < optISBStartTime || code > optISBUsrDeliv {
			return nil
		}
		if len(v) != 8 {
			return r.formatErr("statistics option %d length %d, want 8", code, len(v))
		}
		c := order.Uint64(v)
		switch code {
		case optISBStartTime:
			s.StartTime = r.timestamp(order, v, id)
		case optISBEndTime:
			s.EndTime = r.timestamp(order, v, id)
		case optISBIfRecv:
			s.Received, s.HasReceived = c, true
		case optISBIfDrop:
			s.Dropped, s.HasDropped = c, true
		case optISBFilterAccept:
			s.FilterAccept, s.HasFilterAccept = c, true
		case optISBOSDrop:
			s.OSDrop, s.HasOSDrop = c, true
		case optISBUsrDeliv:
			s.Delivered, s.HasDelivered = c, true
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b, nil
}

// parseOptions walks an option list, collecting opt_comment into
// b.Comments and handing every other option to fn. A list may end at
// opt_endofopt or at the end of the block; the spec requires the former,
// but tolerating its absence costs nothing.
func (r *Reader) parseOptions(order binary.ByteOrder, opts []byte, b *Block, fn func(code uint16, v []byte) error) error {
	for len(opts) >= 4 {
		code := order.Uint16(opts)
		n := int(order.Uint16(opts[2:]))
		if code == optEndOfOpt {
			return nil
		}
		if 4+pad4(n) > len(opts) {
			return r.formatErr("option %d of length %d overruns block", code, n)
		}
		v := opts[4 : 4+n]
		if code == optComment {
			b.Comments = append(b.Comments, string(v))
		} else if err := fn(code, v); err != nil {
			return err
		}
		opts = opts[4+pad4(n):]
	}
	return nil
}

// timestamp reads a split 64-bit timestamp and converts it from the
// interface's resolution to Unix ns, wrapping rather than failing on
// overflow: a timestamp is never a reason to reject a packet.
func (r *Reader) timestamp(order binary.ByteOrder, v []byte, id uint32) int64 {
	ts := uint64(order.Uint32(v))<<32 | uint64(order.Uint32(v[4:]))
	return int64(toNanos(ts, r.ifaces[id].TSResol))
}

// toNanos converts ts in units of if_tsresol res to nanoseconds. The high
// bit of res selects a power of two (2^-n s) instead of ten (10^-n s).
func toNanos(ts uint64, res uint8) uint64 {
	if res&0x80 != 0 {
		n := uint(res & 0x7f)
		hi, lo := bits.Mul64(ts, 1e9)
		switch {
		case n == 0:
			return lo
		case n < 64:
			return lo>>n | hi<<(64-n)
		default:
			return hi >> (n - 64)
		}
	}
	switch n := int(res); {
	case n <= 9:
		return ts * pow10(9-n)
	case n-9 <= 19: // 10^19 is the largest power of ten in a uint64
		return ts / pow10(n-9)
	default:
		return 0
	}
}

func pow10(n int) uint64 {
	p := uint64(1)
	for range n {
		p *= 10
	}
	return p
}
