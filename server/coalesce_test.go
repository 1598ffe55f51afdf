package server

import (
	"bytes"
	"net"
	"testing"
)

// recConn records what reaches the connection, write by write.
type recConn struct {
	net.Conn
	writes [][]byte
}

func (r *recConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func (r *recConn) all() []byte { return bytes.Join(r.writes, nil) }

// Test_coalescer: during a message a full-buffer flush is held and goes
// out with the next write, in order; a write from elsewhere (a pong) or the
// end of the message sends what is held first; outside a message nothing
// is held.
func Test_coalescer(t *testing.T) {
	fill := func(b byte, n int) []byte { return bytes.Repeat([]byte{b}, n) }
	first, rest, pong := fill('a', wsBufSize), fill('b', 10000), fill('p', 6)

	rc := &recConn{}
	co := newCoalescer(rc)
	co.begin()
	if n, err := co.Write(first); n != len(first) || err != nil || len(rc.writes) != 0 {
		t.Fatalf("first buffer: %d, %v, %d writes; want it held", n, err, len(rc.writes))
	}
	if n, err := co.Write(rest); n != len(rest) || err != nil {
		t.Fatalf("rest: %d, %v", n, err)
	}
	if err := co.end(); err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte(nil), first...), rest...); !bytes.Equal(rc.all(), want) {
		t.Fatalf("message bytes out of order or lost: %d bytes", len(rc.all()))
	}

	// A message of exactly one buffer: held until end.
	rc = &recConn{}
	co = newCoalescer(rc)
	co.begin()
	_, _ = co.Write(first)
	if len(rc.writes) != 0 {
		t.Fatal("one-buffer message not held")
	}
	// A pong written by another goroutine meanwhile goes after it.
	_, _ = co.Write(pong)
	_ = co.end()
	if want := append(append([]byte(nil), first...), pong...); !bytes.Equal(rc.all(), want) {
		t.Fatal("held bytes overtaken by a later write")
	}

	// Outside a message a full buffer is written at once.
	rc = &recConn{}
	co = newCoalescer(rc)
	_, _ = co.Write(first)
	if len(rc.writes) != 1 {
		t.Fatalf("%d writes outside a message, want 1", len(rc.writes))
	}
}
