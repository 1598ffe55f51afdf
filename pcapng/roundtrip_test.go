package pcapng

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
)

// TestRoundTrip writes the fixture with Writer, checks it matches the
// Append functions byte for byte, and reads every field back.
func TestRoundTrip(t *testing.T) {
	fx := newFixture()

	var out bytes.Buffer
	w, err := NewWriter(&out, fx.section)
	if err != nil {
		t.Fatal(err)
	}
	for i, ifc := range fx.ifaces {
		id, err := w.AddInterface(ifc)
		if err != nil {
			t.Fatal(err)
		}
		if id != uint32(i) {
			t.Fatalf("AddInterface #%d returned id %d", i, id)
		}
	}
	for i := range fx.packets {
		if err := w.WritePacket(&fx.packets[i].p, fx.packets[i].data); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range fx.stats {
		if err := w.WriteStats(s.id, s.ts, s.s); err != nil {
			t.Fatal(err)
		}
	}
	if want := fx.appendAll(nil); !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("Writer and Append functions disagree:\nwriter %x\nappend %x", out.Bytes(), want)
	}

	r := NewReader(&out)
	next := func(typ uint32) *Block {
		t.Helper()
		b, err := r.Next()
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if b.Type != typ {
			t.Fatalf("block type %#x, want %#x", b.Type, typ)
		}
		return b
	}

	b := next(BlockTypeSHB)
	if *b.Section != fx.section {
		t.Errorf("section = %+v, want %+v", *b.Section, fx.section)
	}
	if want := []string{fx.section.Comment}; !reflect.DeepEqual(b.Comments, want) {
		t.Errorf("section comments = %q, want %q", b.Comments, want)
	}

	for i, want := range fx.ifaces {
		b := next(BlockTypeIDB)
		want.TSResol = tsResolNano
		if *b.Interface != want {
			t.Errorf("interface %d = %+v, want %+v", i, *b.Interface, want)
		}
	}
	if got := r.Interfaces(); len(got) != len(fx.ifaces) {
		t.Errorf("Interfaces() has %d entries, want %d", len(got), len(fx.ifaces))
	}

	for i, fp := range fx.packets {
		b := next(BlockTypeEPB)
		want := Packet{
			InterfaceID: fp.p.InterfaceID,
			Timestamp:   fp.p.Timestamp,
			OrigLen:     fp.p.OrigLen + uint32(len(fp.want)-len(fp.data)),
			Direction:   fp.p.Direction,
			Reception:   fp.p.Reception,
		}
		if *b.Packet != want {
			t.Errorf("packet %d = %+v, want %+v", i, *b.Packet, want)
		}
		if b.InterfaceID != want.InterfaceID || b.Timestamp != want.Timestamp {
			t.Errorf("packet %d: block id/ts = %d/%d, want %d/%d", i, b.InterfaceID, b.Timestamp, want.InterfaceID, want.Timestamp)
		}
		if !bytes.Equal(b.Data, fp.want) {
			t.Errorf("packet %d data:\ngot  %x\nwant %x", i, b.Data, fp.want)
		}
		wantFlags := uint32(fp.p.Direction) | uint32(fp.p.Reception)<<2
		if b.HasFlags != (wantFlags != 0) || b.Flags != wantFlags {
			t.Errorf("packet %d flags = %#x (present %v), want %#x", i, b.Flags, b.HasFlags, wantFlags)
		}
	}

	for i, s := range fx.stats {
		b := next(BlockTypeISB)
		if b.InterfaceID != s.id || b.Timestamp != s.ts {
			t.Errorf("stats %d: id/ts = %d/%d, want %d/%d", i, b.InterfaceID, b.Timestamp, s.id, s.ts)
		}
		if *b.Stats != s.s {
			t.Errorf("stats %d = %+v, want %+v", i, *b.Stats, s.s)
		}
	}

	if b, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after last block: %v, %+v; want io.EOF", err, b)
	}
}

// TestReaderSections checks that a second section, here big-endian with
// the default microsecond resolution, resets the interface list and is
// decoded in its own byte order.
func TestReaderSections(t *testing.T) {
	stream := AppendSHB(nil, SectionInfo{OS: "first"})
	stream = AppendIDB(stream, Interface{LinkType: LinkTypeEthernet, Name: "a"})
	stream = AppendIDB(stream, Interface{LinkType: LinkTypeEthernet, Name: "b"})
	stream = append(stream, bigEndianSection()...)

	r := NewReader(bytes.NewReader(stream))
	var blocks []*Block
	for {
		b, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, b)
	}
	if len(blocks) != 6 {
		t.Fatalf("got %d blocks, want 6", len(blocks))
	}
	if got := blocks[3].Section; got.OS != "big" || got.Comment != "one" || !reflect.DeepEqual(blocks[3].Comments, []string{"one", "two"}) {
		t.Errorf("second section = %+v, comments %q", got, blocks[3].Comments)
	}
	if got := blocks[4].Interface; got.Name != "be0" || got.LinkType != LinkTypeRaw || got.SnapLen != 1500 || got.TSResol != 6 {
		t.Errorf("big-endian interface = %+v", got)
	}
	p := blocks[5].Packet
	if p.InterfaceID != 0 || p.Timestamp != 1_700_000_000_000_001_000 || p.OrigLen != 6 || p.Direction != DirectionOutbound {
		t.Errorf("big-endian packet = %+v", p)
	}
	if !bytes.Equal(blocks[5].Data, []byte{1, 2, 3, 4, 5}) {
		t.Errorf("big-endian data = %x", blocks[5].Data)
	}
	if n := len(r.Interfaces()); n != 1 {
		t.Errorf("Interfaces() after second section has %d entries, want 1", n)
	}
}

// bigEndianSection hand-builds a section the writer cannot produce: SHB
// with two comments, an IDB without if_tsresol, and one EPB.
func bigEndianSection() []byte {
	var b []byte
	u16 := func(v uint16) { b = append(b, byte(v>>8), byte(v)) }
	u32 := func(v uint32) { b = append(b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v)) }
	opt := func(code uint16, v string) {
		u16(code)
		u16(uint16(len(v)))
		b = append(b, v...)
		b = append(b, make([]byte, pad4(len(v))-len(v))...)
	}
	block := func(typ uint32, body func()) {
		start := len(b)
		u32(typ)
		u32(0)
		body()
		n := uint32(len(b) - start + 4)
		u32(n)
		b[start+4], b[start+5], b[start+6], b[start+7] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
	}
	block(BlockTypeSHB, func() {
		u32(byteOrderMagic)
		u16(1)
		u16(0)
		u32(0xffffffff)
		u32(0xffffffff)
		opt(optComment, "one")
		opt(optSHBOS, "big")
		opt(optComment, "two")
		u32(0)
	})
	block(BlockTypeIDB, func() {
		u16(LinkTypeRaw)
		u16(0)
		u32(1500)
		opt(optIfName, "be0")
		u32(0)
	})
	block(BlockTypeEPB, func() {
		const us = 1_700_000_000_000_001 // microseconds
		u32(0)
		u32(us >> 32)
		u32(us & 0xffffffff)
		u32(5)
		u32(6)
		b = append(b, 1, 2, 3, 4, 5, 0, 0, 0)
		u16(optEPBFlags)
		u16(4)
		u32(uint32(DirectionOutbound))
		u32(0)
	})
	return b
}

func Test_toNanos(t *testing.T) {
	tests := []struct {
		name string
		ts   uint64
		res  uint8
		want uint64
	}{
		{"nanoseconds", 1234567890123, 9, 1234567890123},
		{"microseconds", 1234567, 6, 1234567000},
		{"seconds", 3, 0, 3e9},
		{"picoseconds", 1234567, 12, 1234},
		{"resolution beyond uint64", 1 << 63, 40, 0},
		{"largest power of ten", ^uint64(0), 28, 1},
		{"2^0 s", 2, 0x80, 2e9},
		{"2^-10 s", 1024, 0x80 | 10, 1e9},
		{"2^-30 s", 3 << 30, 0x80 | 30, 3e9},
		{"2^-64 s", 1 << 63, 0x80 | 64, 5e8},
		{"2^-127 s", ^uint64(0), 0xff, 0},
		{"wraps on overflow", ^uint64(0), 0, ^uint64(0) - 1e9 + 1}, // -1 s
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := toNanos(tt.ts, tt.res); got != tt.want {
				t.Errorf("toNanos(%d, %#x) = %d, want %d", tt.ts, tt.res, got, tt.want)
			}
		})
	}
}
