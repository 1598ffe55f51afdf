package main

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"time"
)

// Why a closeConn: when pfcat ends a capture it sends a close frame and
// must go on reading, because the service first sends what it captured
// up to then and the interface statistics, and only then answers the
// close (docs/close-handshake.md). coder/websocket's Close discards every
// data message that arrives after its close frame, and the library has no
// other way to send one. So pfcat writes its close frame itself, below
// the library, and the library's reader runs on until the service's close
// frame arrives. The library then answers that close with one of its own,
// which closeConn swallows: an endpoint sends one close frame (RFC 6455
// section 5.5.1), and ours went out first.

// closeWriteTimeout bounds writing our close frame to a service that has
// stopped reading.
const closeWriteTimeout = 5 * time.Second

// closeConn is the connection under a capture's WebSocket. Write and
// sendClose may be called concurrently.
//
// Writes are whole frames: coder/websocket (v1.8.15 write.go) buffers a
// frame in a 4 KiB bufio.Writer and flushes it with one Write, and the
// only frames a capture client sends are pongs of at most 125 bytes. So
// the mutex keeps our close frame from landing inside one of them.
type closeConn struct {
	net.Conn

	mu   sync.Mutex
	sent bool // our close frame is out: later writes are swallowed
}

func (c *closeConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent {
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// sendClose writes a close frame with code and reason (at most 123
// bytes), once; later calls do nothing.
func (c *closeConn) sendClose(code uint16, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sent {
		return nil
	}
	c.sent = true
	_ = c.Conn.SetWriteDeadline(time.Now().Add(closeWriteTimeout))
	defer c.Conn.SetWriteDeadline(time.Time{})
	_, err := c.Conn.Write(closeFrame(code, reason))
	return err
}

// closeFrame is a masked close frame (RFC 6455 section 5.5.1): a client's
// frames are always masked (section 5.3).
func closeFrame(code uint16, reason string) []byte {
	payload := binary.BigEndian.AppendUint16(nil, code)
	payload = append(payload, reason[:min(len(reason), 123)]...)
	var key [4]byte
	_, _ = rand.Read(key[:])
	f := []byte{0x80 | 0x8, 0x80 | byte(len(payload))} // FIN, opcode close; MASK, length
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}
