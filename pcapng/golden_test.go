package pcapng

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "regenerate testdata/golden/stream.pcapng")

// goldenPath is shared with the rest of the repo's golden files, which
// live in the module's top-level testdata.
var goldenPath = filepath.Join("..", "testdata", "golden", "stream.pcapng")

// fixture is everything the golden stream holds, in order, so tests can
// both write it and check what comes back.
type fixture struct {
	section SectionInfo
	ifaces  []Interface
	packets []fixturePacket
	stats   []fixtureStats
}

type fixturePacket struct {
	p    Packet
	data []byte
	want []byte // data as it must appear in the EPB
}

type fixtureStats struct {
	id uint32
	ts int64
	s  Stats
}

const fixtureBaseTime = int64(1700000000_123456789)

func newFixture() *fixture {
	fx := &fixture{
		section: SectionInfo{
			Hardware: "x86_64",
			OS:       "Linux 6.1.0",
			UserAppl: "packetflix golden test",
			Comment:  "packetflix golden stream\nsecond line of the comment",
		},
		ifaces: []Interface{
			{LinkType: LinkTypeEthernet, SnapLen: 262144, Name: "eth0", Description: "veth in netns 4026532999", OS: "Linux 6.1.0"},
			{LinkType: LinkTypeRaw, Name: "tun0"},
			{LinkType: LinkTypeEthernet, Name: "eth1", Filter: "tcp port 80"},
		},
	}

	// Every direction with every reception type, spread over the
	// interfaces, with lengths that exercise all four paddings.
	i := 0
	for d := DirectionUnknown; d <= DirectionOutbound; d++ {
		for r := ReceptionUnspecified; r <= ReceptionPromiscuous; r++ {
			id := uint32(i % len(fx.ifaces))
			var data []byte
			if fx.ifaces[id].LinkType == LinkTypeRaw {
				data = ipv4Packet(20 + i)
			} else {
				data = ethFrame(60 + i)
			}
			orig := uint32(len(data))
			if i%4 == 3 {
				orig += 100 // truncated by the snap length
			}
			fx.packets = append(fx.packets, fixturePacket{
				p: Packet{
					InterfaceID: id,
					Timestamp:   fixtureBaseTime + int64(i)*1000,
					OrigLen:     orig,
					Direction:   d,
					Reception:   r,
				},
				data: data,
				want: data,
			})
			i++
		}
	}

	// Stripped VLAN tags: default and explicit 802.1Q TPID, 802.1ad, and
	// a frame too short to hold one.
	vlans := []struct {
		tpid, tci, wantTPID uint16
		n                   int
	}{
		{0, 100, 0x8100, 64},
		{0x8100, 0x2005, 0x8100, 65},
		{0x88a8, 0xe123, 0x88a8, 66},
		{0x88a8, 7, 0, 11},
	}
	for _, v := range vlans {
		data := ethFrame(v.n)
		want := data
		if v.wantTPID != 0 {
			want = bytes.Clone(data[:12])
			want = append(want, byte(v.wantTPID>>8), byte(v.wantTPID), byte(v.tci>>8), byte(v.tci))
			want = append(want, data[12:]...)
		}
		fx.packets = append(fx.packets, fixturePacket{
			p: Packet{
				InterfaceID: 0,
				Timestamp:   fixtureBaseTime + int64(i)*1000,
				OrigLen:     uint32(len(data)),
				Direction:   DirectionInbound,
				VLANValid:   true,
				VLANTPID:    v.tpid,
				VLANTCI:     v.tci,
			},
			data: data,
			want: want,
		})
		i++
	}

	end := fixtureBaseTime + int64(i)*1000
	fx.stats = []fixtureStats{
		{0, end, Stats{StartTime: fixtureBaseTime, EndTime: end, Received: 9, Dropped: 1, Delivered: 8, HasReceived: true, HasDropped: true, HasDelivered: true}},
		{1, end, Stats{Dropped: 0, HasDropped: true}},
		{2, end, Stats{StartTime: fixtureBaseTime, Received: 5, OSDrop: 2, FilterAccept: 4, HasReceived: true, HasOSDrop: true, HasFilterAccept: true}},
		{2, end + 1, Stats{}},
	}
	return fx
}

// ethFrame returns an n-byte Ethernet frame with the local experimental
// EtherType, so dissectors leave the payload alone.
func ethFrame(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	if n >= 14 {
		copy(b, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	}
	return b
}

// ipv4Packet returns an n-byte buffer starting like an IPv4 header.
func ipv4Packet(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(255 - i)
	}
	b[0] = 0x45
	return b
}

// appendAll writes the fixture with the Append functions.
func (fx *fixture) appendAll(b []byte) []byte {
	b = AppendSHB(b, fx.section)
	for _, ifc := range fx.ifaces {
		b = AppendIDB(b, ifc)
	}
	for i := range fx.packets {
		b = AppendEPB(b, &fx.packets[i].p, fx.packets[i].data)
	}
	for _, s := range fx.stats {
		b = AppendISB(b, s.id, s.ts, s.s)
	}
	return b
}

func TestGolden(t *testing.T) {
	got := newFixture().appendAll(nil)
	if *update {
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", goldenPath, len(got))
	}
	want, err := os.ReadFile(goldenPath)
	if err != nil {
		t.Fatalf("%v (run go test ./pcapng -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("stream differs from %s at offset %d (got %d bytes, want %d); if the change is intended, run go test ./pcapng -update", goldenPath, i, len(got), len(want))
	}
}

// requireTool returns the path of a Wireshark tool, skipping when it is
// missing except in CI, where a silent skip would hide a broken image.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found and CI=true: %v", name, err)
		}
		t.Skipf("%s not found: %v", name, err)
	}
	return p
}

func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, requireTool(t, name), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// streamFiles are the streams Wireshark judges: the checked-in golden
// file, and the fixture as the writer writes it now - the golden file alone
// would let a broken writer pass until someone regenerates it.
func streamFiles(t *testing.T) map[string]string {
	t.Helper()
	fresh := filepath.Join(t.TempDir(), "fresh.pcapng")
	if err := os.WriteFile(fresh, newFixture().appendAll(nil), 0o644); err != nil {
		t.Fatal(err)
	}
	return map[string]string{"golden file": goldenPath, "fresh stream": fresh}
}

// TestGoldenTshark has Wireshark judge the golden stream: our own Reader
// could share a misreading of the spec with our writer.
func TestGoldenTshark(t *testing.T) {
	for name, path := range streamFiles(t) {
		t.Run(name, func(t *testing.T) { checkTshark(t, path) })
	}
}

func checkTshark(t *testing.T, path string) {
	fx := newFixture()
	out := runTool(t, "tshark", "-r", path, "-T", "fields", "-E", "separator=|",
		"-e", "frame.interface_name", "-e", "frame.len", "-e", "frame.cap_len",
		"-e", "frame.packet_flags_direction", "-e", "frame.packet_flags_reception_type",
		"-e", "frame.time_epoch")

	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != len(fx.packets) {
		t.Fatalf("tshark saw %d packets, want %d:\n%s", len(lines), len(fx.packets), out)
	}
	for i, fp := range fx.packets {
		f := strings.Split(lines[i], "|")
		if len(f) != 6 {
			t.Fatalf("packet %d: tshark line %q has %d fields, want 6", i, lines[i], len(f))
		}
		want := []string{
			fx.ifaces[fp.p.InterfaceID].Name,
			strconv.Itoa(int(fp.p.OrigLen) + len(fp.want) - len(fp.data)),
			strconv.Itoa(len(fp.want)),
			"", "",
			fmt.Sprintf("%d.%09d", fp.p.Timestamp/1e9, fp.p.Timestamp%1e9),
		}
		if fp.p.Direction != 0 || fp.p.Reception != 0 {
			want[3] = strconv.Itoa(int(fp.p.Direction))
			want[4] = strconv.Itoa(int(fp.p.Reception))
		}
		for j := range want {
			if got := parseTsharkNumber(f[j]); got != want[j] {
				t.Errorf("packet %d field %d: tshark says %q, want %q (line %q)", i, j, f[j], want[j], lines[i])
			}
		}
	}
}

// parseTsharkNumber normalises tshark's hex output for flag fields.
func parseTsharkNumber(s string) string {
	if v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64); err == nil && strings.HasPrefix(s, "0x") {
		return strconv.FormatUint(v, 10)
	}
	return s
}

func TestGoldenCapinfos(t *testing.T) {
	for name, path := range streamFiles(t) {
		t.Run(name, func(t *testing.T) { checkCapinfos(t, path) })
	}
}

func checkCapinfos(t *testing.T, path string) {
	fx := newFixture()
	out := runTool(t, "capinfos", "-M", path)
	field := func(label string) string {
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, label+":"); ok {
				return strings.TrimSpace(v)
			}
		}
		t.Errorf("capinfos output lacks %q:\n%s", label, out)
		return ""
	}
	want := map[string]string{
		"Number of packets":            strconv.Itoa(len(fx.packets)),
		"Capture application":          fx.section.UserAppl,
		"Capture hardware":             fx.section.Hardware,
		"Capture oper-sys":             fx.section.OS,
		"Number of interfaces in file": strconv.Itoa(len(fx.ifaces)),
		"File timestamp precision":     "nanoseconds (9)",
	}
	for label, w := range want {
		if got := field(label); got != w {
			t.Errorf("capinfos %s = %q, want %q", label, got, w)
		}
	}
	// capinfos prints the line break of a multi-line comment as a space.
	if got, w := field("Capture comment"), strings.ReplaceAll(fx.section.Comment, "\n", " "); got != w {
		t.Errorf("capinfos Capture comment = %q, want %q", got, w)
	}
}
