package main

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// Synthetic harness lines, as cmd/wsbench writes them (fields trimmed).
const (
	// 1000 lost before pfa0 (the peer's tx drops), 700 in the ring, 300
	// after it; Σ recv − probes = if_rx.
	lineRingDrops = `{"kind":"run","target":"packetflix@5099","scenario":"64B@200000pps","rep":1,"sent":1000000,"achieved_pps":199000,"if_rx":999000,"if_rx_dropped":0,"peer_tx_dropped":1000,"delivered":998000,"probe_delivered":300,"isb":["if0 recv=999300 drop=700 osdrop=-1"],"lat_p99_ms":7.5,"svc_cpu_s_per_mpkt":0.6,"svc_rss_mb":33}`
	// The connection died: no ISB.
	lineNoISB = `{"kind":"run","target":"packetflix@5099","scenario":"64B@200000pps","rep":2,"error":"connection ended","sent":1000000,"achieved_pps":199500,"if_rx":1000000,"delivered":500000,"probe_delivered":300,"lat_p99_ms":9,"svc_cpu_s_per_mpkt":0.7,"svc_rss_mb":35}`
	// Two interfaces; ring drops exceed if_rx − delivered (probe-phase
	// drops): after is clamped.
	lineTwoIfs = `{"kind":"run","target":"packetflix@5099","scenario":"1400B@max","rep":1,"sent":500,"achieved_pps":210000,"if_rx":500,"delivered":498,"probe_delivered":100,"isb":["if1 recv=0 drop=3 osdrop=-1","if0 recv=600 drop=2 osdrop=-1"],"svc_rss_mb":34}`
	// An ISB without isb_ifdrop; achieved_pps and the CPU figures missing.
	lineNoDrop = `{"kind":"run","target":"packetflix@5099","scenario":"1400B@max","rep":2,"sent":10,"if_rx":10,"delivered":10,"isb":["if0 recv=10 drop=-1 osdrop=-1"]}`
	// The only run of its scenario, without ISB.
	lineMaxNoISB = `{"kind":"run","target":"packetflix@5099","scenario":"64B@max","rep":1,"error":"connection ended before the first packet","sent":0,"if_rx":0,"delivered":0}`

	lineTcpdump1 = `{"kind":"ref","target":"tcpdump","scenario":"64B@200000pps","rep":1,"sent":1000000,"achieved_pps":199000,"if_rx":1000000,"delivered":998300,"tool_captured":998300,"lat_p99_ms":-1,"svc_cpu_s_per_mpkt":0.1,"svc_rss_mb":8}`
	lineTcpdump2 = `{"kind":"ref","target":"tcpdump","scenario":"64B@200000pps","rep":2,"sent":1000000,"achieved_pps":199000,"if_rx":1000000,"delivered":999960,"tool_captured":999960,"lat_p99_ms":-1,"svc_cpu_s_per_mpkt":0.1,"svc_rss_mb":8}`
	lineDumpcap  = `{"kind":"ref","target":"dumpcap","scenario":"64B@200000pps","rep":1,"sent":1000000,"delivered":1,"svc_rss_mb":99}`
	lineSetup    = `{"kind":"setup","target":"packetflix@5099","scenario":"setup","rep":1,"delivered":2,"isb":["if0 recv=2 drop=0 osdrop=-1"]}`
	lineProbe    = `{"kind":"probe","target":"packetflix@5099","scenario":"netns=0","http_status":400}`
)

func parseLine(t *testing.T, line string) *result {
	t.Helper()
	rs, skipped, err := load(strings.NewReader(line))
	if err != nil || skipped != 0 || len(rs) != 1 {
		t.Fatalf("load(%s): %d results, %d skipped, %v", line, len(rs), skipped, err)
	}
	return &rs[0]
}

func Test_lossOf(t *testing.T) {
	tests := []struct {
		name      string
		line      string
		want      loss     // without notes
		wantNotes []string // one substring per note, in order
	}{
		{
			name:      "ring drops",
			line:      lineRingDrops,
			want:      loss{sent: 1000000, before: 1000, delivered: 998000, ring: 700, after: 300, hasISB: true},
			wantNotes: []string{"peer_tx_dropped 1000"},
		},
		{
			name: "no ISB",
			line: lineNoISB,
			want: loss{sent: 1000000, before: 0, delivered: 500000, noISB: "unknown (no ISB)"},
		},
		{
			name:      "two interfaces, after clamped",
			line:      lineTwoIfs,
			want:      loss{sent: 500, before: 0, delivered: 498, ring: 5, after: 0, hasISB: true},
			wantNotes: []string{"after -3 clamped to 0"},
		},
		{
			name: "ISB without drop",
			line: lineNoDrop,
			want: loss{sent: 10, delivered: 10, noISB: "unknown (ISB without drop)"},
		},
		{
			name:      "cross-check fails",
			line:      `{"kind":"run","target":"x@1","scenario":"64B@max","sent":100,"if_rx":100,"delivered":90,"probe_delivered":5,"isb":["if0 recv=100 drop=0 osdrop=-1"]}`,
			want:      loss{sent: 100, delivered: 90, ring: 0, after: 10, hasISB: true},
			wantNotes: []string{"ISB recv − probes = 95 ≠ if_rx 100"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lossOf(parseLine(t, tt.line))
			notes := got.notes
			got.notes = nil
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("lossOf:\n got %+v\nwant %+v", got, tt.want)
			}
			if len(notes) != len(tt.wantNotes) {
				t.Fatalf("notes %q, want %d like %q", notes, len(tt.wantNotes), tt.wantNotes)
			}
			for i, n := range tt.wantNotes {
				if !strings.Contains(notes[i], n) {
					t.Errorf("note %q does not contain %q", notes[i], n)
				}
			}
		})
	}
}

func Test_fmtRatio(t *testing.T) {
	tests := []struct {
		in   float64
		want string
	}{
		{1, "1.0000"},
		{0.9983, "0.9983"},
		{998300.0 / 1e6, "0.9983"},
		{0.99996, "0.9999"}, // rounding would claim a lossless run
		{0, "0.0000"},
	}
	for _, tt := range tests {
		if got := fmtRatio(tt.in); got != tt.want {
			t.Errorf("fmtRatio(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

var file = strings.Join([]string{
	lineSetup, lineRingDrops, lineTcpdump1, lineDumpcap, lineNoISB, lineTcpdump2,
	lineMaxNoISB, lineTwoIfs, lineNoDrop, lineProbe, "", `{"kind":"run","sent":`,
}, "\n")

func report(t *testing.T) string {
	t.Helper()
	rs, skipped, err := load(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 1 {
		t.Errorf("skipped %d lines, want 1 (the truncated one)", skipped)
	}
	var b bytes.Buffer
	writeHeadline(&b, rs)
	writeLosses(&b, rs)
	return b.String()
}

func TestReportRows(t *testing.T) {
	out := report(t)
	tests := []struct {
		name   string
		want   string // a whole line of the output
		absent string // or: text that must not appear anywhere
	}{
		{name: "delivered, medians over reps, truncated",
			want: "| 64 B @ 200 kpps delivered | 0.9991 [0.9983–0.9999] | 0.7490 [0.5000–0.9980] | – |"},
		{name: "max with rate, rep without rate ignored for it",
			want: "| 1400 B @ max delivered (at N kpps) | – | 0.9980 [0.9960–1.0000] at 210 kpps | – |"},
		{name: "max without sent counts as not measured",
			want: "| 64 B @ max delivered (at N kpps) | – | – | – |"},
		{name: "CPU ratio",
			want: "| CPU s per M packets 64 B @ 200 kpps | 0.10 | 0.65 [0.60–0.70] | 6.50 |"},
		{name: "latency: tcpdump has none",
			want: "| latency p99 @ 200 kpps, 64 B, ms | – | 8.25 [7.50–9.00] | – |"},
		{name: "RSS over every run, dumpcap not mixed in",
			want: "| RSS, MB (all runs) | 8 | 34 [33–35] | 4.25 |"},
		{name: "unmeasured scenario left out", absent: "1400 B @ 200 kpps"},
		{name: "unmeasured 1 kpps left out", absent: "@ 1 kpps"},
		{name: "losses: ring drops next to a run without ISB",
			want: "| 64B@200000pps | packetflix@5099 | 2 | 1000000 (1000000 / 1000000) | 500 (1000 / 0) | 700 (700 / no ISB) | 300 (300 / no ISB) | 749000 (998000 / 500000) | " +
				"#1: if_rx_dropped 0, peer_tx_dropped 1000 (inside before); #2 error: connection ended |"},
		{name: "losses: only run without ISB",
			want: "| 64B@max | packetflix@5099 | 1 | 0 | 0 | unknown (no ISB) | unknown (no ISB) | 0 | #1 error: connection ended before the first packet |"},
		{name: "losses: two interfaces summed, clamp noted, ISB without drop",
			want: "| 1400B@max | packetflix@5099 | 2 | 255 (500 / 10) | 0 (0 / 0) | 5 (5 / ISB without drop) | 0 (0 / ISB without drop) | 254 (498 / 10) | " +
				"#1: after -3 clamped to 0 (probe-phase ring drops?) |"},
		{name: "no reference rows in the loss table", absent: "| tcpdump | 1 |"},
	}
	lines := strings.Split(out, "\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.absent != "" {
				if strings.Contains(out, tt.absent) {
					t.Errorf("output contains %q:\n%s", tt.absent, out)
				}
				return
			}
			for _, l := range lines {
				if l == tt.want {
					return
				}
			}
			t.Errorf("no line\n%s\nin\n%s", tt.want, out)
		})
	}
}

func TestReportScenarioOrder(t *testing.T) {
	out := report(t)
	a, b, c := strings.Index(out, "| 64B@200000pps |"), strings.Index(out, "| 64B@max |"), strings.Index(out, "| 1400B@max |")
	if a < 0 || !(a < b && b < c) {
		t.Errorf("loss rows out of order (%d, %d, %d):\n%s", a, b, c, out)
	}
}
