package pcapng

import (
	"fmt"
	"io"
	"testing"
)

// BenchmarkAppendEPB appends into one reused buffer that is reset past
// 64 KiB, the way packets are batched into WebSocket messages.
func BenchmarkAppendEPB(b *testing.B) {
	for _, size := range []int{64, 512, 1500} {
		for _, vlan := range []bool{false, true} {
			name := fmt.Sprint(size)
			if vlan {
				name += "/vlan"
			}
			b.Run(name, func(b *testing.B) {
				const batch = 64 << 10
				data := ethFrame(size)
				p := Packet{OrigLen: uint32(size), Direction: DirectionInbound, Reception: ReceptionUnicast, VLANValid: vlan, VLANTCI: 100}
				buf := make([]byte, 0, batch+EPBSize(&p, size))
				b.SetBytes(int64(size))
				b.ReportAllocs()
				n := 0
				for b.Loop() {
					if len(buf) > batch {
						buf = buf[:0]
					}
					buf = AppendEPB(buf, &p, data)
					n++
				}
				b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
			})
		}
	}
}

func BenchmarkWriterWritePacket(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			w, err := NewWriter(io.Discard, SectionInfo{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := w.AddInterface(Interface{LinkType: LinkTypeEthernet}); err != nil {
				b.Fatal(err)
			}
			data := ethFrame(size)
			p := Packet{OrigLen: uint32(size), Direction: DirectionInbound}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				if err := w.WritePacket(&p, data); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}
