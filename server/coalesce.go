package server

import (
	"net"
	"sync"
)

// wsBufSize is the write buffer coder/websocket gets (gatedWriter.Hijack):
// net/http's size for a hijacked connection.
const wsBufSize = 4096

// coalescer turns the two write(2) calls in which coder/websocket sends a
// large message into one writev(2). The library puts the frame header in
// its 4 KiB bufio.Writer, fills the rest of that buffer from the payload
// and flushes it, then writes the rest of the payload directly: on
// loopback that is two TCP segments and two wake-ups of the client per
// message (docs/capture-engine.md). While a data message is being written
// (begin...end), a full-buffer flush is held and sent together with the
// next write; any other write, or end, sends what is held first, so bytes
// never change order, whichever goroutine writes (the library answers
// pings from its read goroutine).
type coalescer struct {
	net.Conn

	mu      sync.Mutex
	message bool
	held    []byte
}

func newCoalescer(c net.Conn) *coalescer {
	return &coalescer{Conn: c, held: make([]byte, 0, wsBufSize)}
}

// begin and end bracket the writing of one data message.
func (c *coalescer) begin() {
	c.mu.Lock()
	c.message = true
	c.mu.Unlock()
}

func (c *coalescer) end() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.message = false
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.held) == 0 {
		if c.message && len(p) == wsBufSize {
			c.held = append(c.held, p...)
			return len(p), nil
		}
		return c.Conn.Write(p)
	}
	held := int64(len(c.held))
	bufs := net.Buffers{c.held, p}
	n, err := bufs.WriteTo(c.Conn)
	c.held = c.held[:0]
	if err != nil {
		return int(max(n-held, 0)), err
	}
	return len(p), nil
}
