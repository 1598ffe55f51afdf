package pcapng

import (
	"bytes"
	"io"
	"os"
	"testing"
)

func FuzzReader(f *testing.F) {
	golden, err := os.ReadFile(goldenPath)
	if err != nil {
		golden = newFixture().appendAll(nil)
	}
	f.Add(golden)
	for _, n := range []int{0, 7, 11, 27, 28, 100, len(golden) / 2, len(golden) - 1} {
		f.Add(golden[:min(n, len(golden))])
	}
	f.Add(bigEndianSection())
	f.Add(cat(AppendSHB(nil, SectionInfo{}), bigEndianSection()))

	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		// Every block is at least 12 bytes, so a reader that makes
		// progress must stop within this many calls.
		limit := len(data)/12 + 1
		for i := 0; ; i++ {
			if i > limit {
				t.Fatalf("Next returned more than %d blocks from %d bytes", limit, len(data))
			}
			b, err := r.Next()
			if err != nil {
				if b != nil {
					t.Fatalf("Next returned a block with error %v", err)
				}
				if _, again := r.Next(); again != err {
					t.Fatalf("error not sticky: %v, then %v", err, again)
				}
				return
			}
			if b.Type == BlockTypeEPB && (b.Packet == nil || len(b.Data) > len(data)) {
				t.Fatalf("EPB with packet %v and %d data bytes from %d input bytes", b.Packet, len(b.Data), len(data))
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, uint8(0), int64(0), uint32(0), uint8(0), uint8(0), false, uint16(0), uint16(0))
	f.Add(ethFrame(60), uint8(1), fixtureBaseTime, uint32(60), uint8(1), uint8(4), true, uint16(0), uint16(100))
	f.Add(ethFrame(13), uint8(2), int64(-1), uint32(0xffffffff), uint8(2), uint8(3), true, uint16(0x88a8), uint16(0xffff))
	f.Add(ethFrame(11), uint8(5), int64(-1<<63), uint32(3), uint8(0xff), uint8(0xff), true, uint16(1), uint16(2))

	fx := newFixture()
	prefix := AppendSHB(nil, fx.section)
	for _, ifc := range fx.ifaces {
		prefix = AppendIDB(prefix, ifc)
	}

	f.Fuzz(func(t *testing.T, data []byte, ifSel uint8, ts int64, origLen uint32, dir, rec uint8, vlan bool, tpid, tci uint16) {
		p := Packet{
			InterfaceID: uint32(ifSel) % uint32(len(fx.ifaces)),
			Timestamp:   ts,
			OrigLen:     origLen,
			Direction:   Direction(dir),
			Reception:   Reception(rec),
			VLANValid:   vlan,
			VLANTPID:    tpid,
			VLANTCI:     tci,
		}
		stream := AppendEPB(bytes.Clone(prefix), &p, data)
		if n := len(stream) - len(prefix); n != EPBSize(&p, len(data)) {
			t.Fatalf("appended %d bytes, EPBSize says %d", n, EPBSize(&p, len(data)))
		}

		wantData, wantOrig := data, origLen
		if vlan && len(data) >= 12 {
			if tpid == 0 {
				tpid = 0x8100
			}
			wantData = cat(data[:12], []byte{byte(tpid >> 8), byte(tpid), byte(tci >> 8), byte(tci)}, data[12:])
			wantOrig += 4
		}
		wantFlags := uint32(dir&3) | uint32(rec&7)<<2

		r := NewReader(bytes.NewReader(stream))
		for range 1 + len(fx.ifaces) {
			if _, err := r.Next(); err != nil {
				t.Fatal(err)
			}
		}
		b, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		want := Packet{
			InterfaceID: p.InterfaceID,
			Timestamp:   ts,
			OrigLen:     wantOrig,
			Direction:   Direction(dir & 3),
			Reception:   Reception(rec & 7),
		}
		if *b.Packet != want {
			t.Errorf("packet = %+v, want %+v", *b.Packet, want)
		}
		if !bytes.Equal(b.Data, wantData) {
			t.Errorf("data\ngot  %x\nwant %x", b.Data, wantData)
		}
		if b.Flags != wantFlags || b.HasFlags != (wantFlags != 0) {
			t.Errorf("flags = %#x (present %v), want %#x", b.Flags, b.HasFlags, wantFlags)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Errorf("after the packet: %v, want io.EOF", err)
		}
	})
}
