package pcapng

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// setU32 returns a copy of b with a little-endian v at off.
func setU32(b []byte, off int, v uint32) []byte {
	b = bytes.Clone(b)
	le.PutUint32(b[off:], v)
	return b
}

// rawBlock frames body as a little-endian block of type typ.
func rawBlock(typ uint32, body ...byte) []byte {
	n := uint32(12 + len(body))
	b := le.AppendUint32(nil, typ)
	b = le.AppendUint32(b, n)
	b = append(b, body...)
	return le.AppendUint32(b, n)
}

func TestReaderErrors(t *testing.T) {
	shb := AppendSHB(nil, SectionInfo{})
	idb := AppendIDB(nil, Interface{LinkType: LinkTypeEthernet})
	epb := AppendEPB(nil, &Packet{}, []byte{1, 2, 3, 4, 5})
	isb := AppendISB(nil, 0, 0, Stats{})
	badVersion := bytes.Clone(shb)
	badVersion[12] = 2

	tests := []struct {
		name   string
		in     []byte
		blocks int   // blocks returned before the error
		err    error // checked with errors.Is
	}{
		{"empty", nil, 0, io.EOF},
		{"complete stream", cat(shb, idb, epb, isb), 4, io.EOF},
		{"unknown block type", cat(shb, rawBlock(0x0bad, 1, 2, 3, 4)), 2, io.EOF},
		{"cut in header", shb[:6], 0, io.ErrUnexpectedEOF},
		{"cut before byte-order magic", shb[:10], 0, io.ErrUnexpectedEOF},
		{"cut in body", cat(shb, idb[:len(idb)-1]), 1, io.ErrUnexpectedEOF},
		{"cut in packet data", cat(shb, idb, epb[:30]), 2, io.ErrUnexpectedEOF},
		{"cut after header", cat(shb, idb[:8]), 1, io.ErrUnexpectedEOF},
		{"bad byte-order magic", setU32(shb, 8, 0xdeadbeef), 0, ErrFormat},
		{"no section header", cat(idb, shb), 0, ErrFormat},
		{"unsupported version", badVersion, 0, ErrFormat},
		{"short section header", rawBlock(BlockTypeSHB, 0x4d, 0x3c, 0x2b, 0x1a), 0, ErrFormat},
		{"length below 12", cat(shb, setU32(idb, 4, 8)), 1, ErrFormat},
		{"length not a multiple of 4", cat(shb, setU32(idb, 4, uint32(len(idb)+2))), 1, ErrFormat},
		{"block too large", cat(shb, setU32(idb, 4, 32<<20)), 1, ErrFormat},
		{"trailer mismatch", cat(shb, setU32(idb, len(idb)-4, uint32(len(idb)+4))), 1, ErrFormat},
		{"packet before any interface", cat(shb, epb), 1, ErrUnknownInterface},
		{"packet for undefined interface", cat(shb, idb, setU32(epb, 8, 1)), 2, ErrUnknownInterface},
		{"interface from previous section", cat(shb, idb, shb, epb), 3, ErrUnknownInterface},
		{"stats for undefined interface", cat(shb, isb), 1, ErrUnknownInterface},
		{"packet body too short", cat(shb, idb, rawBlock(BlockTypeEPB, make([]byte, 16)...)), 2, ErrFormat},
		{"captured length overruns block", cat(shb, idb, setU32(epb, 20, 9)), 2, ErrFormat},
		{"huge captured length", cat(shb, idb, setU32(epb, 20, 0xfffffff0)), 2, ErrFormat},
		{"interface body too short", cat(shb, rawBlock(BlockTypeIDB, 1, 0, 0, 0)), 1, ErrFormat},
		{"stats body too short", cat(shb, idb, rawBlock(BlockTypeISB, make([]byte, 8)...)), 2, ErrFormat},
		{"option overruns block", cat(shb, rawBlock(BlockTypeIDB, 1, 0, 0, 0, 0, 0, 0, 0, optIfName, 0, 100, 0, 'e', 't', 'h', '0')), 1, ErrFormat},
		{"bad if_tsresol length", cat(shb, rawBlock(BlockTypeIDB, 1, 0, 0, 0, 0, 0, 0, 0, optIfTSResol, 0, 2, 0, 9, 9, 0, 0)), 1, ErrFormat},
		{"bad epb_flags length", cat(shb, idb, rawBlock(BlockTypeEPB, append(make([]byte, 20), optEPBFlags, 0, 2, 0, 1, 0, 0, 0)...)), 2, ErrFormat},
		{"bad statistics option length", cat(shb, idb, rawBlock(BlockTypeISB, append(make([]byte, 12), optISBIfDrop, 0, 4, 0, 1, 0, 0, 0)...)), 2, ErrFormat},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(tt.in))
			var n int
			var err error
			for {
				var b *Block
				b, err = r.Next()
				if err != nil {
					if b != nil {
						t.Errorf("Next returned a block with error %v", err)
					}
					break
				}
				n++
			}
			if n != tt.blocks || !errors.Is(err, tt.err) {
				t.Errorf("got %d blocks, then %v; want %d blocks, then %v", n, err, tt.blocks, tt.err)
			}
			if tt.err == ErrUnknownInterface && !errors.Is(err, ErrFormat) {
				t.Errorf("%v does not wrap ErrFormat", err)
			}
			if _, again := r.Next(); again != err {
				t.Errorf("second Next after error = %v, want the same %v", again, err)
			}
		})
	}
}

func TestReaderIOError(t *testing.T) {
	broken := errors.New("connection reset")
	r := NewReader(io.MultiReader(bytes.NewReader(AppendSHB(nil, SectionInfo{})), iotest.ErrReader(broken)))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(); !errors.Is(err, broken) || errors.Is(err, ErrFormat) {
		t.Errorf("Next = %v, want the reader's own error", err)
	}
}

func TestReaderRawBlock(t *testing.T) {
	r := NewReader(bytes.NewReader(cat(AppendSHB(nil, SectionInfo{}), rawBlock(0x0bad, 1, 2, 3, 4))))
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	b, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if b.Type != 0x0bad || !bytes.Equal(b.Raw, []byte{1, 2, 3, 4}) {
		t.Errorf("got type %#x raw %x, want 0xbad 01020304", b.Type, b.Raw)
	}
}
