package pcapng

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEPBSize(t *testing.T) {
	packets := []struct {
		name string
		p    Packet
	}{
		{"plain", Packet{}},
		{"direction", Packet{Direction: DirectionOutbound}},
		{"reception only", Packet{Reception: ReceptionBroadcast}},
		{"vlan", Packet{VLANValid: true, VLANTCI: 5}},
		{"vlan and flags", Packet{VLANValid: true, VLANTPID: 0x88a8, Direction: DirectionInbound, Reception: ReceptionPromiscuous}},
	}
	for _, pk := range packets {
		for _, n := range []int{0, 1, 2, 3, 4, 5, 11, 12, 13, 60, 1500} {
			data := bytes.Repeat([]byte{0xab}, n)
			// Non-empty prefix: the size must not depend on where the
			// block starts.
			got := AppendEPB([]byte{1, 2, 3, 4}, &pk.p, data)[4:]
			if size := EPBSize(&pk.p, n); len(got) != size {
				t.Errorf("%s, %d bytes: EPBSize = %d, appended %d", pk.name, n, size, len(got))
			}
			if len(got)%4 != 0 {
				t.Errorf("%s, %d bytes: block length %d not a multiple of 4", pk.name, n, len(got))
			}
			if lead, trail := le.Uint32(got[4:]), le.Uint32(got[len(got)-4:]); lead != uint32(len(got)) || trail != lead {
				t.Errorf("%s, %d bytes: length fields %d/%d, block is %d", pk.name, n, lead, trail, len(got))
			}
		}
	}
}

func TestAppendEPBVLAN(t *testing.T) {
	frame := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(0x10 + i)
		}
		return b
	}
	tests := []struct {
		name      string
		tpid, tci uint16
		n         int
		want      []byte // captured bytes
	}{
		{"default TPID", 0, 0x0064, 14, append(append(frame(12), 0x81, 0x00, 0x00, 0x64), 0x1c, 0x1d)},
		{"802.1Q", 0x8100, 0xf00d, 14, append(append(frame(12), 0x81, 0x00, 0xf0, 0x0d), 0x1c, 0x1d)},
		{"802.1ad", 0x88a8, 0x2005, 13, append(append(frame(12), 0x88, 0xa8, 0x20, 0x05), 0x1c)},
		{"exactly 12 bytes", 0, 1, 12, append(frame(12), 0x81, 0x00, 0x00, 0x01)},
		{"too short for a tag", 0, 1, 11, frame(11)},
		{"empty", 0, 1, 0, []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Packet{OrigLen: 1000, VLANValid: true, VLANTPID: tt.tpid, VLANTCI: tt.tci}
			b := AppendEPB(nil, &p, frame(tt.n))
			capLen, origLen := le.Uint32(b[20:]), le.Uint32(b[24:])
			if int(capLen) != len(tt.want) {
				t.Errorf("captured length %d, want %d", capLen, len(tt.want))
			}
			wantOrig := uint32(1000)
			if tt.n >= 12 {
				wantOrig += 4
			}
			if origLen != wantOrig {
				t.Errorf("original length %d, want %d", origLen, wantOrig)
			}
			if got := b[28 : 28+capLen]; !bytes.Equal(got, tt.want) {
				t.Errorf("data\ngot  %x\nwant %x", got, tt.want)
			}
		})
	}
}

// TestAppendEPBClearsPadding reuses a buffer full of old data, as the
// message buffers are, and checks that no stale byte survives.
func TestAppendEPBClearsPadding(t *testing.T) {
	buf := bytes.Repeat([]byte{0xee}, 256)
	p := Packet{Direction: DirectionInbound, VLANValid: true}
	want := AppendEPB(nil, &p, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	got := AppendEPB(buf[:0], &p, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	if !bytes.Equal(got, want) {
		t.Fatalf("append into dirty buffer\ngot  %x\nwant %x", got, want)
	}
}

func TestAppendEPBAllocs(t *testing.T) {
	data := make([]byte, 1500)
	tests := []struct {
		name string
		p    Packet
	}{
		{"plain", Packet{OrigLen: 1500}},
		{"flags", Packet{OrigLen: 1500, Direction: DirectionInbound, Reception: ReceptionUnicast}},
		{"vlan", Packet{OrigLen: 1500, Direction: DirectionOutbound, VLANValid: true, VLANTCI: 42}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf := make([]byte, 0, 64<<10)
			allocs := testing.AllocsPerRun(100, func() {
				buf = AppendEPB(buf[:0], &tt.p, data)
			})
			if allocs != 0 {
				t.Errorf("AppendEPB allocated %v times per call, want 0", allocs)
			}
		})
	}
}

func TestWriterWritePacketAllocs(t *testing.T) {
	w, err := NewWriter(io.Discard, SectionInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddInterface(Interface{LinkType: LinkTypeEthernet}); err != nil {
		t.Fatal(err)
	}
	p := Packet{OrigLen: 1500, Direction: DirectionInbound, VLANValid: true}
	data := make([]byte, 1500)
	allocs := testing.AllocsPerRun(100, func() {
		if err := w.WritePacket(&p, data); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("WritePacket allocated %v times per call, want 0", allocs)
	}
}

func TestWriterUnknownInterface(t *testing.T) {
	var out bytes.Buffer
	w, err := NewWriter(&out, SectionInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(&Packet{}, nil); !errors.Is(err, ErrUnknownInterface) {
		t.Errorf("WritePacket before AddInterface: %v, want ErrUnknownInterface", err)
	}
	if _, err := w.AddInterface(Interface{}); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePacket(&Packet{InterfaceID: 1}, nil); !errors.Is(err, ErrUnknownInterface) {
		t.Errorf("WritePacket for interface 1: %v, want ErrUnknownInterface", err)
	}
	if err := w.WriteStats(1, 0, Stats{}); !errors.Is(err, ErrUnknownInterface) {
		t.Errorf("WriteStats for interface 1: %v, want ErrUnknownInterface", err)
	}
	// Rejected blocks must leave nothing behind.
	if want := AppendIDB(AppendSHB(nil, SectionInfo{}), Interface{}); !bytes.Equal(out.Bytes(), want) {
		t.Errorf("stream after rejected writes = %x, want %x", out.Bytes(), want)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("broken pipe")
	}
	f.n--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	w, err := NewWriter(&failWriter{n: 2}, SectionInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.AddInterface(Interface{}); err != nil {
		t.Fatal(err)
	}
	first := w.WritePacket(&Packet{}, []byte{1})
	if first == nil {
		t.Fatal("WritePacket to a failing writer returned nil")
	}
	if err := w.WriteStats(0, 0, Stats{}); err != first {
		t.Errorf("WriteStats after failure = %v, want the first error %v", err, first)
	}
	if _, err := w.AddInterface(Interface{}); err != first {
		t.Errorf("AddInterface after failure = %v, want the first error %v", err, first)
	}
	if _, err := NewWriter(&failWriter{}, SectionInfo{}); err == nil {
		t.Error("NewWriter to a failing writer returned nil error")
	}
}

// TestLongOption checks that a string too long for a 16-bit option length
// is cut on a UTF-8 boundary instead of producing a corrupt option.
func TestLongOption(t *testing.T) {
	// 80001 bytes; runes start at odd offsets, so 65535 bytes fit exactly
	// but the filter's 65534 (one byte goes to its type) split a rune.
	long := "x" + strings.Repeat("é", 40000)
	b := AppendSHB(nil, SectionInfo{Comment: long, OS: "after"})
	b = AppendIDB(b, Interface{Filter: long})
	r := NewReader(bytes.NewReader(b))
	shb, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	c := shb.Section.Comment
	if len(c) != 65535 || !strings.HasPrefix(long, c) {
		t.Errorf("comment cut to %d bytes, want 65535", len(c))
	}
	if shb.Section.OS != "after" {
		t.Errorf("option after the long one = %q", shb.Section.OS)
	}
	idb, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if f := idb.Interface.Filter; len(f) != 65533 || !utf8.ValidString(f) || !strings.HasPrefix(long, f) {
		t.Errorf("filter cut to %d bytes (valid UTF-8 %v), want 65533", len(f), utf8.ValidString(f))
	}
}

func TestIDBComment(t *testing.T) {
	b := AppendSHB(nil, SectionInfo{})
	b = AppendIDB(b, Interface{LinkType: LinkTypeEthernet, Name: "lo", Comment: "left out: our own TCP"})
	r := NewReader(bytes.NewReader(b))
	for {
		blk, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if blk.Interface != nil {
			if blk.Interface.Comment != "left out: our own TCP" || blk.Interface.Name != "lo" {
				t.Fatalf("read back %+v", blk.Interface)
			}
			return
		}
	}
}
