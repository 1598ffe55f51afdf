package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/pcapng"
)

// ringStream is a stream whose second interface appears midway, as one
// does in an all-interfaces capture: SHB, IDB eth0, 30 packets on eth0,
// IDB eth1, 30 packets on both, an ISB per interface. Packets differ in
// size, so that files do not fill evenly.
func ringStream() (data []byte, payloads []string) {
	b := pcapng.AppendSHB(nil, pcapng.SectionInfo{UserAppl: "fake packetflix"})
	b = pcapng.AppendIDB(b, pcapng.Interface{LinkType: pcapng.LinkTypeEthernet, Name: "eth0"})
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	for i := range 60 {
		if i == 30 {
			b = pcapng.AppendIDB(b, pcapng.Interface{LinkType: pcapng.LinkTypeEthernet, Name: "eth1"})
		}
		id := uint32(0)
		if i >= 30 && i%2 == 1 {
			id = 1
		}
		f := udpFrame(i, 20+(i*37)%300)
		b = pcapng.AppendEPB(b, &pcapng.Packet{InterfaceID: id, Timestamp: ts + int64(i)*1000, OrigLen: uint32(len(f))}, f)
		payloads = append(payloads, fmt.Sprintf("pfcat packet %d", i))
	}
	for id := range uint32(2) {
		b = pcapng.AppendISB(b, id, ts+60000, pcapng.Stats{Received: 30, HasReceived: true})
	}
	return b, payloads
}

// feedChunks writes data to w in pieces of awkward sizes, so that blocks
// span writes.
func feedChunks(t *testing.T, w interface{ Write([]byte) (int, error) }, data []byte) {
	t.Helper()
	sizes := []int{1, 3, 7, 64, 500, 4096, 13}
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		if _, err := w.Write(data[:n]); err != nil {
			t.Fatalf("write: %v", err)
		}
		data = data[n:]
	}
}

// ringFile is one file of a ring, as read back.
type ringFile struct {
	name   string
	size   int64
	blocks []*pcapng.Block
	// beforeLast is the file's size up to its last packet, that packet
	// left out.
	beforeLast int64
}

func readRingFile(t *testing.T, name string) ringFile {
	t.Helper()
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	f := ringFile{name: name, size: int64(len(data)), blocks: blocks(t, data)}
	var off int64
	for len(data) > 0 {
		n := int64(binary.LittleEndian.Uint32(data[4:]))
		if binary.LittleEndian.Uint32(data) == pcapng.BlockTypeEPB {
			f.beforeLast = off
		}
		off += n
		data = data[n:]
	}
	return f
}

func (f ringFile) payloads() []string {
	var ps []string
	for _, b := range f.blocks {
		if b.Type == pcapng.BlockTypeEPB {
			ps = append(ps, string(bytes.TrimRight(b.Data[42:], "\x00")))
		}
	}
	return ps
}

func Test_ring(t *testing.T) {
	data, payloads := ringStream()
	const limit = 2000
	for _, keep := range []int{3, 0} {
		t.Run(fmt.Sprintf("files:%d", keep), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "cap.pcapng")
			base := time.Date(2026, 5, 6, 7, 8, 9, 0, time.Local)
			calls := 0
			r := newRing(path, ringOptions{fileSize: limit, files: keep}, func() time.Time {
				calls++
				return base.Add(time.Duration(calls) * time.Second)
			})
			feedChunks(t, r, data)
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}

			total := r.seq
			if total < 5 {
				t.Fatalf("only %d files for a %d-byte stream at %d bytes each", total, len(data), limit)
			}
			first := 1
			if keep > 0 {
				first = total - keep + 1
			}
			var want []string
			for seq := first; seq <= total; seq++ {
				want = append(want, ringName(path, seq, base.Add(time.Duration(seq)*time.Second)))
			}
			got, _ := filepath.Glob(filepath.Join(dir, "*"))
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("files\n%q\nwant\n%q", got, want)
			}

			var files []ringFile
			var all []string
			for i, name := range got {
				f := readRingFile(t, name)
				files = append(files, f)
				all = append(all, f.payloads()...)
				if f.blocks[0].Type != pcapng.BlockTypeSHB || f.blocks[1].Type != pcapng.BlockTypeIDB {
					t.Fatalf("%s does not start with SHB and IDB", name)
				}
				if last := i == len(got)-1; !last {
					// Full, and it took the packet that made it full.
					if f.size < limit || f.beforeLast >= limit {
						t.Fatalf("%s: %d bytes, %d before its last packet; the next file begins after the packet that reaches %d",
							name, f.size, f.beforeLast, limit)
					}
					if f.blocks[len(f.blocks)-1].Type == pcapng.BlockTypeISB {
						t.Fatalf("%s has ISBs but is not the last file", name)
					}
				} else {
					n := len(f.blocks)
					if f.blocks[n-1].Type != pcapng.BlockTypeISB || f.blocks[n-2].Type != pcapng.BlockTypeISB {
						t.Fatalf("the last file %s does not end with the ISBs", name)
					}
				}
			}
			// The kept files hold the stream's last packets, in order; with
			// every file kept, all of them.
			if wantAll := payloads[len(payloads)-len(all):]; !slices.Equal(all, wantAll) || keep == 0 && len(all) != len(payloads) {
				t.Fatalf("packets in the files:\n%q\nwant the stream's last %d", all, len(all))
			}
			// A file begun after eth1 appeared describes it, so that its
			// packets on eth1 have an interface (the Reader checks that).
			last := files[len(files)-1]
			if ifs := last.blocks[2]; ifs.Type != pcapng.BlockTypeIDB || ifs.Interface.Name != "eth1" {
				t.Fatalf("the last file's third block is %+v, want eth1's IDB", ifs)
			}

			t.Run("wireshark", func(t *testing.T) {
				requireWireshark(t)
				for _, f := range files {
					ps := tsharkPayloads(t, f.name)
					if !slices.Equal(ps, f.payloads()) {
						t.Fatalf("tshark read %s as\n%q\nwant\n%q", f.name, ps, f.payloads())
					}
					if n := capinfosPackets(t, f.name); n != len(ps) {
						t.Fatalf("capinfos counts %d packets in %s, want %d", n, f.name, len(ps))
					}
				}
			})
		})
	}
}

// TestCaptureRing: -w with -b through the command line, names as
// dumpcap's.
func TestCaptureRing(t *testing.T) {
	data, payloads := ringStream()
	var msgs [][]byte
	for len(data) > 0 {
		n := min(1500, len(data)) // messages cut blocks anywhere
		msgs = append(msgs, data[:n])
		data = data[n:]
	}
	f := newFakeService(t, targetsDoc, sendAll(msgs, websocket.StatusNormalClosure, "capture ended"))
	dir := t.TempDir()
	r, err := runPfcat(t, "--addr", f.addr(), "capture", "--netns", "1", "-w", filepath.Join(dir, "cap.pcapng"), "-b", "filesize:2,files:4")
	if err != nil {
		t.Fatalf("capture: %v; stderr %s", err, r.stderr)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	slices.Sort(names)
	if len(names) != 4 {
		t.Fatalf("%d files, want 4: %q", len(names), names)
	}
	pattern := regexp.MustCompile(`^cap_\d{5}_\d{14}\.pcapng$`)
	var all []string
	for _, n := range names {
		if !pattern.MatchString(filepath.Base(n)) {
			t.Fatalf("file name %s is not dumpcap's PREFIX_NNNNN_YYYYmmddHHMMSS.pcapng", filepath.Base(n))
		}
		if st, _ := os.Stat(n); st.Mode().Perm() != fileMode {
			t.Fatalf("%s: mode %v", n, st.Mode().Perm())
		}
		all = append(all, readRingFile(t, n).payloads()...)
	}
	if !slices.Equal(all, payloads[len(payloads)-len(all):]) {
		t.Fatalf("files hold %q", all)
	}
}

func Test_ringName(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.Local)
	for _, tc := range []struct {
		path string
		seq  int
		want string
	}{
		{"/tmp/cap.pcapng", 1, "/tmp/cap_00001_20260304050607.pcapng"},
		{"cap", 42, "cap_00042_20260304050607"},
		{"/var/lib/x.y/trace.pcap", 123456, "/var/lib/x.y/trace_123456_20260304050607.pcap"},
		{"/var/lib/x.y/trace", 2, "/var/lib/x.y/trace_00002_20260304050607"},
	} {
		if got := ringName(tc.path, tc.seq, at); got != tc.want {
			t.Errorf("ringName(%q, %d) = %q, want %q", tc.path, tc.seq, got, tc.want)
		}
	}
}

type block struct {
	typ  uint32
	data []byte
}

func splitAll(t *testing.T, data []byte, chunk int) ([]block, error) {
	t.Helper()
	var s splitter
	var out []block
	for len(data) > 0 {
		n := min(chunk, len(data))
		err := s.feed(data[:n], func(typ uint32, b []byte) error {
			out = append(out, block{typ, bytes.Clone(b)})
			return nil
		})
		if err != nil {
			return out, err
		}
		data = data[n:]
	}
	return out, nil
}

func Test_splitter(t *testing.T) {
	data, _ := ringStream()
	whole, err := splitAll(t, data, len(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(whole) != 1+2+60+2 {
		t.Fatalf("%d blocks, want 65", len(whole))
	}
	for _, chunk := range []int{1, 5, 4095} {
		got, err := splitAll(t, data, chunk)
		if err != nil || !sameBlocks(got, whole) {
			t.Fatalf("fed %d bytes at a time: %d blocks, %v", chunk, len(got), err)
		}
	}

	// Big-endian sections frame by their own byte order.
	be := binary.BigEndian
	shb := be.AppendUint32(nil, pcapng.BlockTypeSHB)
	shb = be.AppendUint32(shb, 28)
	shb = be.AppendUint32(shb, byteOrderMagic)
	shb = be.AppendUint16(be.AppendUint16(shb, 1), 0)
	shb = be.AppendUint64(shb, ^uint64(0))
	shb = be.AppendUint32(shb, 28)
	idb := be.AppendUint32(nil, pcapng.BlockTypeIDB)
	idb = be.AppendUint32(idb, 20)
	idb = be.AppendUint32(be.AppendUint32(idb, 1<<16), 0) // link type 1, reserved; snaplen
	idb = be.AppendUint32(idb, 20)
	got, err := splitAll(t, append(bytes.Clone(shb), idb...), 3)
	if err != nil || len(got) != 2 || got[0].typ != pcapng.BlockTypeSHB || got[1].typ != pcapng.BlockTypeIDB || !bytes.Equal(got[1].data, idb) {
		t.Fatalf("big-endian stream: %v, %v", got, err)
	}

	le := binary.LittleEndian
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"no SHB first", idbLE(20, 20), "does not start with a section header block"},
		{"bad magic", func() []byte { b := bytes.Clone(data[:28]); le.PutUint32(b[8:], 0x11223344); return b }(), "bad byte-order magic"},
		{"odd length", append(bytes.Clone(whole[0].data), idbLE(22, 22)...), "not a multiple of 4"},
		{"short", append(bytes.Clone(whole[0].data), idbLE(8, 8)...), "too short"},
		{"trailer", append(bytes.Clone(whole[0].data), idbLE(20, 24)...), "trailing length 24 does not match leading length 20"},
		{"huge", append(bytes.Clone(whole[0].data), idbLE(maxBlock+4, 0)...), "exceeds"},
	} {
		_, err := splitAll(t, tc.data, 7)
		if !errors.Is(err, pcapng.ErrFormat) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want pcapng.ErrFormat with %q", tc.name, err, tc.want)
		}
	}
}

// idbLE is an IDB with the given leading and trailing lengths, padded to
// the leading one.
func idbLE(n, trailer uint32) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, pcapng.BlockTypeIDB)
	b = le.AppendUint32(b, n)
	body := int(n) - 12
	if body < 0 || n > 1<<20 {
		body = 8
	}
	b = append(b, make([]byte, body)...)
	return le.AppendUint32(b, trailer)
}

func sameBlocks(a, b []block) bool {
	return slices.EqualFunc(a, b, func(x, y block) bool { return x.typ == y.typ && bytes.Equal(x.data, y.data) })
}
