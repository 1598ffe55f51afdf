package server

import (
	"context"
	"testing"

	"github.com/packetflix/packetflix/capture"
	"golang.org/x/sys/unix"
)

// drain runs a sender that discards every message, as a fast client would.
func drain(s *stream) chan error {
	done := make(chan error, 1)
	go func() {
		done <- s.send(sender{write: func([]byte) error { return nil }, ping: func() error { return nil }, idle: 1 << 62, fail: func(error) {}})
	}()
	return done
}

// Test_streamAllocs: the per-packet path (encode into the message buffer,
// hand full buffers to the sender) allocates nothing.
func Test_streamAllocs(t *testing.T) {
	s := newStream(context.Background(), 0, "")
	done := drain(s)
	data := make([]byte, 64)
	p := &capture.Packet{Timestamp: 1, Length: 64, Data: data, PktType: unix.PACKET_OUTGOING}
	if n := testing.AllocsPerRun(10000, func() {
		if err := s.WritePacket(p); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
	s.finish(context.Background(), nil)
	<-done
}

// BenchmarkStreamWritePacket: 64-byte packets through the session sink into
// a sender that discards (no network), one reader.
func BenchmarkStreamWritePacket(b *testing.B) {
	s := newStream(context.Background(), 0, "")
	done := drain(s)
	p := &capture.Packet{Timestamp: 1, Length: 64, Data: make([]byte, 64), PktType: unix.PACKET_HOST}
	b.ReportAllocs()
	b.SetBytes(64)
	b.ResetTimer()
	for b.Loop() {
		if err := s.WritePacket(p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
	s.finish(context.Background(), nil)
	<-done
}
