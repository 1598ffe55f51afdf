package server

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// frame builds a masked client frame with opcode op and n payload bytes.
func frame(op byte, n int) []byte {
	f := []byte{0x80 | op}
	switch {
	case n < 126:
		f = append(f, 0x80|byte(n))
	case n < 1<<16:
		f = append(f, 0x80|126, byte(n>>8), byte(n))
	default:
		f = append(f, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	f = append(f, 1, 2, 3, 4)
	for i := 0; i < n; i++ {
		f = append(f, byte(op)) // a close opcode byte in a payload must not count
	}
	return f
}

func Test_closeGate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		before [][]byte // frames before the close frame
		chunk  int      // bytes per write on the wire
	}{
		{"close alone", nil, 1 << 20},
		{"after a ping", [][]byte{frame(0x9, 4)}, 1 << 20},
		{"byte by byte", [][]byte{frame(0x9, 4), frame(0xA, 0)}, 1},
		{"16-bit length, payload of 0x88 bytes", [][]byte{append(frame(0x2, 300)[:8], bytes.Repeat([]byte{0x88}, 300)...)}, 7},
		{"64-bit length", [][]byte{frame(0x2, 70000)}, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			g := newCloseGate(server)
			defer g.Close()
			var wire []byte
			for _, f := range tc.before {
				wire = append(wire, f...)
			}
			pre := len(wire)
			wire = append(wire, frame(0x8, 2)...)
			go func() {
				for i := 0; i < len(wire); i += tc.chunk {
					client.Write(wire[i:min(i+tc.chunk, len(wire))])
				}
			}()
			got := make([]byte, 0, len(wire))
			buf := make([]byte, 512)
			for len(got) < pre {
				n, err := g.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, buf[:n]...)
			}
			if !bytes.Equal(got, wire[:pre]) {
				t.Fatalf("passed %d bytes, want the %d before the close frame", len(got), pre)
			}
			// The library reads on; the close frame is noticed and held
			// until released.
			done := make(chan []byte)
			go func() {
				rest := make([]byte, len(wire)-pre)
				io.ReadFull(g, rest)
				done <- rest
			}()
			select {
			case <-g.closing:
			case <-time.After(2 * time.Second):
				t.Fatal("close frame not noticed")
			}
			select {
			case <-done:
				t.Fatal("close frame passed before release")
			case <-time.After(50 * time.Millisecond):
			}
			g.release()
			if rest := <-done; !bytes.Equal(rest, wire[pre:]) {
				t.Fatalf("after release: % x, want % x", rest, wire[pre:])
			}
		})
	}
}
