package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/pcapng"
	"golang.org/x/sys/unix"
)

// Stream buffering per session, the whole of what a session holds in user
// space: messageBuffers buffers of messageSize bytes (one being filled, the
// rest queued for or in the WebSocket write). Behind them only the kernel
// rings (capture.RingOptions) hold packets; when both are full the kernel
// drops and counts.
const (
	messageSize    = 64 << 10
	messageBuffers = 4
)

// stream is the capture.Sink of one session: it encodes packets as pcapng
// EPBs into message buffers and hands full ones to the sender. Safe for
// concurrent use by the capture readers; the session's handler owns it and
// its sender goroutine.
type stream struct {
	ctx context.Context

	mu  sync.Mutex
	buf []byte
	pkt pcapng.Packet // scratch, guarded by mu

	queue chan []byte // filled buffers, to the sender
	free  chan []byte // sent buffers, back from the sender

	queued atomic.Int64 // bytes waiting in queue (for stats)

	limit   int64 // packets to write at most; 0: no limit
	written int64 // guarded by mu

	ifDesc string // if_description of the IDBs of interfaces that join
}

// newStream returns a stream that ends (errLimit) after limit packets, if
// limit > 0. ifDesc describes interfaces that join the capture, as the
// session's first IDBs describe theirs.
func newStream(ctx context.Context, limit int64, ifDesc string) *stream {
	s := &stream{
		ctx:    ctx,
		limit:  limit,
		ifDesc: ifDesc,
		buf:    make([]byte, 0, messageSize),
		queue:  make(chan []byte, messageBuffers),
		free:   make(chan []byte, messageBuffers),
	}
	for i := 1; i < messageBuffers; i++ {
		s.free <- make([]byte, 0, messageSize)
	}
	return s
}

// WritePacket appends one EPB, sending the buffer first if the EPB would
// not fit. It blocks while all buffers are in flight. It returns nil
// exactly when the packet is in the stream (counted as delivered): a full
// buffer is sent by the next WritePacket, Idle or finish, so a send that
// fails never un-writes a packet already appended.
func (s *stream) WritePacket(p *capture.Packet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 && s.written >= s.limit {
		return errLimit
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
	if len(s.buf) > 0 && len(s.buf)+pcapng.EPBSize(&s.pkt, len(p.Data)) > messageSize {
		if err := s.sendLocked(); err != nil {
			return err
		}
	}
	s.written++
	s.buf = pcapng.AppendEPB(s.buf, &s.pkt, p.Data)
	return nil
}

// AddInterface writes the IDB of an interface that joined the capture;
// pcapng allows IDBs anywhere in a section, before that interface's first
// packet.
func (s *stream) AddInterface(id int, ifc capture.Interface) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = pcapng.AppendIDB(s.buf, idb(ifc, s.ifDesc))
	if len(s.buf) >= messageSize {
		return s.sendLocked()
	}
	return nil
}

// idb describes a captured interface in pcapng; desc is the session's
// ifDescription.
func idb(f capture.Interface, desc string) pcapng.Interface {
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

// Idle sends what is buffered: a reader has drained its ring, so nothing
// is gained by waiting, and an interactive capture sees packets at once.
// The kernel's block timeout (capture.RingOptions) bounds how long a packet
// waits before a reader sees it.
func (s *stream) Idle() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.buf) == 0 {
		return nil
	}
	return s.sendLocked()
}

// sendLocked queues the current buffer and takes a free one.
func (s *stream) sendLocked() error {
	n := int64(len(s.buf))
	select {
	case s.queue <- s.buf:
		s.queued.Add(n)
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
	select {
	case b := <-s.free:
		s.buf = b[:0]
		return nil
	case <-s.ctx.Done():
		s.buf = nil
		return s.ctx.Err()
	}
}

// finish queues what is left plus tail (the ISBs) and closes the queue, so
// the sender ends after writing them. The readers must have stopped; ctx
// bounds the wait for a client that does not read.
func (s *stream) finish(ctx context.Context, tail []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf = append(s.buf, tail...)
	if len(s.buf) > 0 {
		select {
		case s.queue <- s.buf:
			s.queued.Add(int64(len(s.buf)))
		case <-ctx.Done():
		}
	}
	s.buf = nil
	close(s.queue)
}

// sender is how the stream reaches its client.
type sender struct {
	write func([]byte) error
	// ping checks an idle client; it runs after idle without a message.
	ping func() error
	idle time.Duration
	// fail is told the first write or ping error, to end the session.
	fail func(error)
}

// send writes queued buffers until the queue is closed. After an error it
// keeps draining (and discarding) so that finish and sendLocked never
// block on a dead client.
func (s *stream) send(to sender) error {
	var err error
	fail := func(e error) {
		if err == nil {
			err = e
			to.fail(e)
		}
	}
	t := time.NewTimer(to.idle)
	defer t.Stop()
	for {
		select {
		case b, ok := <-s.queue:
			if !ok {
				return err
			}
			s.queued.Add(-int64(len(b)))
			if err == nil {
				if e := to.write(b); e != nil {
					fail(e)
				}
			}
			select {
			case s.free <- b[:0]:
			default:
			}
			t.Reset(to.idle)
		case <-t.C:
			if err == nil {
				if e := to.ping(); e != nil {
					fail(e)
				}
			}
			t.Reset(to.idle)
		}
	}
}
