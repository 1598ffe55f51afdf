package session

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/pcapng"
	"golang.org/x/sys/unix"
)

// MessageSize is a session's whole user-space buffer: one message being
// filled. The capture's reader fills it and writes it to the client itself
// (no hand-off to another goroutine: each one cost futex wake-ups that
// measured more than the packet work; docs/capture-engine.md). While the
// client is slower than the traffic, the write blocks, packets wait in the
// kernel rings (capture.RingOptions), and once those are full the kernel
// drops and counts them.
const MessageSize = 256 << 10

// Stream is the capture.Sink of one session: it encodes packets as pcapng
// EPBs into the message buffer and writes full ones to the client through
// its Sender. The capture calls it from one goroutine; the caller of
// Session.Run owns it and calls Finish once Run has returned.
type Stream struct {
	out Sender
	buf []byte
	pkt pcapng.Packet // scratch

	// queued is the size of the message being written (Queued).
	queued atomic.Int64

	limit   int64 // packets to write at most; 0: no limit
	written int64

	describe  func(capture.Interface) pcapng.Interface // the IDB of an interface that joins
	lastWrite time.Time
	err       error // the first write error; every write after fails
}

// Sender is how a Stream reaches its client: a transport (WebSocket
// messages, HTTP chunks) fills it in.
type Sender struct {
	// Write sends one message; it may block while the client does not
	// read (that is the backpressure).
	Write func([]byte) error
	// Ping checks an idle client; it runs after Idle without a message.
	Ping func() error
	Idle time.Duration
	// Fail is told the first write or ping error, to end the session.
	Fail func(error)
	// Limit, if set, is told once the stream has taken its count of
	// packets, to end the session then rather than at the next packet.
	Limit func()
}

// New returns a Stream that ends (ErrLimit) after limit packets, if
// limit > 0. describe gives the IDB of an interface that joins the
// capture, as the session's first IDBs were made.
func New(out Sender, limit int64, describe func(capture.Interface) pcapng.Interface) *Stream {
	return &Stream{
		out:       out,
		limit:     limit,
		describe:  describe,
		buf:       make([]byte, 0, MessageSize),
		lastWrite: time.Now(),
	}
}

// WritePacket appends one EPB, writing the buffer first if the EPB would
// not fit; that write blocks while the client does not read. It returns
// nil exactly when the packet is in the stream (counted as delivered): a
// full buffer is written by the next WritePacket, Idle or finish, so a
// write that fails never un-writes a packet already appended.
func (s *Stream) WritePacket(p *capture.Packet) error {
	if s.err != nil {
		return s.err // the client is gone: not delivered
	}
	if s.limit > 0 && s.written >= s.limit {
		return ErrLimit
	}
	s.pkt = pcapng.Packet{
		InterfaceID: uint32(p.Interface),
		Timestamp:   p.Timestamp,
		OrigLen:     uint32(p.Length),
		VLANValid:   p.VLANValid,
		VLANTPID:    p.VLANTPID,
		VLANTCI:     p.VLANTCI,
	}
	s.pkt.Direction, s.pkt.Reception = direction(p.PktType)
	if len(s.buf) > 0 && len(s.buf)+pcapng.EPBSize(&s.pkt, len(p.Data)) > MessageSize {
		if err := s.flush(); err != nil {
			return err
		}
	}
	s.written++
	s.buf = pcapng.AppendEPB(s.buf, &s.pkt, p.Data)
	if s.written == s.limit && s.out.Limit != nil {
		s.out.Limit()
	}
	return nil
}

// AddInterface writes the IDB of an interface that joined the capture;
// pcapng allows IDBs anywhere in a section, before that interface's first
// packet.
func (s *Stream) AddInterface(id int, ifc capture.Interface) error {
	s.buf = pcapng.AppendIDB(s.buf, s.describe(ifc))
	if len(s.buf) >= MessageSize {
		return s.flush()
	}
	return nil
}

// IDB describes a captured interface in pcapng; desc is the session's
// interface description.
func IDB(f capture.Interface, desc string) pcapng.Interface {
	return pcapng.Interface{LinkType: f.LinkType, SnapLen: uint32(f.Snaplen), Name: f.Name, Description: desc, Filter: f.Filter}
}

// direction maps sll_pkttype to the EPB flags (packet(7)).
func direction(t uint8) (pcapng.Direction, pcapng.Reception) {
	switch t {
	case unix.PACKET_HOST:
		return pcapng.DirectionInbound, pcapng.ReceptionUnicast
	case unix.PACKET_BROADCAST:
		return pcapng.DirectionInbound, pcapng.ReceptionBroadcast
	case unix.PACKET_MULTICAST:
		return pcapng.DirectionInbound, pcapng.ReceptionMulticast
	case unix.PACKET_OTHERHOST:
		return pcapng.DirectionInbound, pcapng.ReceptionPromiscuous
	case unix.PACKET_OUTGOING:
		return pcapng.DirectionOutbound, pcapng.ReceptionUnspecified
	}
	return pcapng.DirectionUnknown, pcapng.ReceptionUnspecified
}

// Idle writes what is buffered: the reader has drained the rings, so
// nothing is gained by waiting, and an interactive capture sees packets at
// once. The kernel's block timeout (capture.RingOptions) bounds how long a
// packet waits before the reader sees it. A client that got no message for
// Sender.Idle is pinged instead.
func (s *Stream) Idle() error {
	if len(s.buf) > 0 {
		return s.flush()
	}
	if s.err != nil {
		return s.err
	}
	if now := time.Now(); now.Sub(s.lastWrite) >= s.out.Idle {
		s.lastWrite = now
		if err := s.out.Ping(); err != nil {
			return s.failed(err)
		}
	}
	return nil
}

// flush writes the buffer as one message and empties it.
func (s *Stream) flush() error {
	if s.err != nil {
		return s.err
	}
	s.queued.Store(int64(len(s.buf)))
	err := s.out.Write(s.buf)
	s.queued.Store(0)
	s.buf = s.buf[:0]
	s.lastWrite = time.Now()
	if err != nil {
		return s.failed(err)
	}
	return nil
}

// failed records the first write or ping error and tells the session.
func (s *Stream) failed(err error) error {
	if s.err == nil {
		s.err = fmt.Errorf("%w: %w", ErrClientGone, err)
		s.out.Fail(s.err)
	}
	return s.err
}

// Finish writes what is left plus tail (the ISBs). The reader must have
// stopped. After a write error it writes nothing.
func (s *Stream) Finish(tail []byte) error {
	s.buf = append(s.buf, tail...)
	if len(s.buf) == 0 {
		return s.err
	}
	return s.flush()
}

// ISBs are the final counters of a session's interfaces, one Interface
// Statistics Block each (interface i is IDB i), for Finish: received and
// dropped as the kernel and the reader counted them, delivered as written.
func ISBs(stats []capture.Stats, start, end time.Time) []byte {
	var b []byte
	for i, x := range stats {
		b = pcapng.AppendISB(b, uint32(i), end.UnixNano(), pcapng.Stats{
			StartTime: start.UnixNano(), EndTime: end.UnixNano(),
			Received: x.Received, HasReceived: true,
			Dropped: x.Dropped, HasDropped: true,
			Delivered: x.Delivered, HasDelivered: true,
		})
	}
	return b
}

// AppendHeader puts b (the section header and first IDBs) in front of
// everything else; call it before the capture runs. The first Idle writes
// it.
func (s *Stream) AppendHeader(b []byte) { s.buf = append(s.buf, b...) }

// Queued is the size of the message being written: with a stalled client,
// what is stuck in the write. Safe from any goroutine.
func (s *Stream) Queued() int64 { return s.queued.Load() }

var (
	// ErrLimit ends a stream that reached its packet count.
	ErrLimit = errors.New("count or duration reached")
	// ErrClientGone wraps the write or ping error that ended a stream.
	ErrClientGone = errors.New("client stopped answering")
)
