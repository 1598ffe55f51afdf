package server

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
)

// Why a gate: when a client ends a capture it sends a close frame and
// waits for ours, and it wants the capture's ISBs (the kernel's drop
// counts) first (docs/close-handshake.md: what is captured and the ISBs
// go out, then the answer to the close). coder/websocket answers a close
// frame the moment it reads one, with no hook to send anything before. So the connection is
// wrapped below the library: the gate passes the client's bytes through
// until a close frame begins, tells the session, and holds that frame back
// until the session has queued its ISBs and releases it; the library then
// reads it and answers as usual.

// gateHold bounds how long a close frame is held, whatever the session
// does.
const gateHold = 10 * time.Second

// closeGate is a net.Conn that holds back the client's first close frame.
type closeGate struct {
	net.Conn

	closing  chan struct{} // closed when the client's close frame arrived
	released chan struct{} // closed by release: pass everything on
	done     chan struct{} // closed by Close
	once     struct{ closing, released, done sync.Once }

	// Frame tracking; only Read (one reader: the library's) touches it.
	hdr  []byte // the frame header read so far
	left uint64 // payload bytes of the current frame still to pass
	held []byte // bytes from the close frame on, not yet passed
}

func newCloseGate(c net.Conn) *closeGate {
	return &closeGate{Conn: c, closing: make(chan struct{}), released: make(chan struct{}), done: make(chan struct{})}
}

// release lets the held close frame through; safe to call more than once.
func (g *closeGate) release() { g.once.released.Do(func() { close(g.released) }) }

func (g *closeGate) Close() error {
	g.once.done.Do(func() { close(g.done) })
	return g.Conn.Close()
}

func (g *closeGate) Read(p []byte) (int, error) {
	if len(g.held) > 0 || g.isClosing() {
		if !g.isReleased() {
			t := time.NewTimer(gateHold)
			select {
			case <-g.released:
			case <-g.done:
			case <-t.C:
				g.release()
			}
			t.Stop()
		}
		if len(g.held) > 0 {
			n := copy(p, g.held)
			g.held = g.held[n:]
			return n, nil
		}
		return g.Conn.Read(p)
	}
	n, err := g.Conn.Read(p)
	if k, ok := g.scan(p[:n]); ok {
		// A close frame starts at k: pass what comes before it, hold it.
		g.held = append(g.held, p[k:n]...)
		g.once.closing.Do(func() { close(g.closing) })
		return k, err
	}
	return n, err
}

func (g *closeGate) isClosing() bool {
	select {
	case <-g.closing:
		return true
	default:
		return false
	}
}

func (g *closeGate) isReleased() bool {
	select {
	case <-g.released:
		return true
	default:
		return false
	}
}

// scan follows frame boundaries through b (RFC 6455 5.2) and returns where
// a close frame (opcode 8) begins, if one does.
func (g *closeGate) scan(b []byte) (int, bool) {
	for i := 0; i < len(b); {
		if g.left > 0 {
			skip := min(uint64(len(b)-i), g.left)
			g.left -= skip
			i += int(skip)
			continue
		}
		if len(g.hdr) == 0 && b[i]&0x0f == 0x8 {
			return i, true
		}
		g.hdr = append(g.hdr, b[i])
		i++
		if need := headerLen(g.hdr); need > 0 && len(g.hdr) == need {
			g.left = payloadLen(g.hdr)
			g.hdr = g.hdr[:0]
		}
	}
	return 0, false
}

// headerLen is the length of a frame header given its first bytes, or 0
// while unknown.
func headerLen(h []byte) int {
	if len(h) < 2 {
		return 0
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 { // masked, as every client frame is
		n += 4
	}
	return n
}

func payloadLen(h []byte) uint64 {
	switch l := h[1] & 0x7f; l {
	case 126:
		return uint64(h[2])<<8 | uint64(h[3])
	case 127:
		var v uint64
		for _, c := range h[2:10] {
			v = v<<8 | uint64(c)
		}
		return v
	default:
		return uint64(l)
	}
}

// gatedWriter hands coder/websocket a gated connection when it hijacks,
// and a write buffer over a coalescer.
type gatedWriter struct {
	http.ResponseWriter
	gate *closeGate
	co   *coalescer
}

func (w *gatedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.gate = newCloseGate(c)
	// net/http has flushed the response (the 101) before Hijack returns:
	// its write buffer is empty and may be replaced.
	w.co = newCoalescer(c)
	brw.Writer = bufio.NewWriterSize(w.co, wsBufSize)
	return w.gate, brw, nil
}
