// Command benchreport reads the results.jsonl of a run of the shared
// benchmark harness (../shared/bench, cmd/wsbench) and prints two markdown
// tables: the headline figures of this build next to tcpdump from the same
// run, and, per service scenario, where the packets were lost.
//
//	go run ./scripts/benchreport out/bench/<time>/results.jsonl
//
// scripts/bench.sh runs it after the harness's own summary. Each cell is
// "median [min–max]" over the repetitions, as in the harness's summary.md.
// Every row of one (target, scenario) counts as a repetition: the harness's
// latency phase and a RATES list containing 1000 both produce 64B@1000pps
// rows, with the same rep numbers.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// result holds the fields of the harness's Result (cmd/wsbench/main.go)
// that the report uses. A missing field stays zero (or nil for the
// pointers, where zero is a real value); -1 means "no samples".
type result struct {
	Kind     string `json:"kind"`   // run (service) | ref (tcpdump, dumpcap...) | setup | probe
	Target   string `json:"target"` // service label "name@port" or reference tool
	Scenario string `json:"scenario"`
	Error    string `json:"error"`

	AchievedPPS float64 `json:"achieved_pps"`
	Sent        uint64  `json:"sent"`
	IfRx        int64   `json:"if_rx"`
	IfRxDrop    int64   `json:"if_rx_dropped"`
	PeerTxDrop  int64   `json:"peer_tx_dropped"`

	Delivered      uint64   `json:"delivered"`
	ProbeDelivered uint64   `json:"probe_delivered"`
	ISB            []string `json:"isb"`

	LatP99Ms      *float64 `json:"lat_p99_ms"`
	SvcCPUPerMpkt *float64 `json:"svc_cpu_s_per_mpkt"`
	SvcRSSMB      *float64 `json:"svc_rss_mb"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

func run(args []string, w io.Writer) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: benchreport results.jsonl")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	rs, skipped, err := load(f)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	if skipped > 0 {
		fmt.Fprintf(os.Stderr, "benchreport: %s: %d lines were not results and are left out\n", args[0], skipped)
	}
	writeHeadline(w, rs)
	writeLosses(w, rs)
	return nil
}

// load reads one JSON object per line; lines that do not parse are counted
// and left out, not fatal: a run cut short can leave a partial last line.
func load(r io.Reader) (rs []result, skipped int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<24) // the harness writes lines of this size
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var x result
		if json.Unmarshal([]byte(line), &x) != nil || x.Kind == "" {
			skipped++
			continue
		}
		rs = append(rs, x)
	}
	return rs, skipped, sc.Err()
}

func isReference(target string) bool {
	return target == "tcpdump" || strings.HasPrefix(target, "dumpcap")
}

// services returns the service targets in the order they first appear.
func services(rs []result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Kind == "run" && !isReference(r.Target) && !seen[r.Target] {
			seen[r.Target] = true
			out = append(out, r.Target)
		}
	}
	return out
}

// rowsOf returns the measurements of target in scenario ("" = every
// scenario): a service's "run" rows, or a reference tool's "ref" rows.
func rowsOf(rs []result, target, scenario string) []*result {
	var out []*result
	for i := range rs {
		r := &rs[i]
		if r.Target != target || (scenario != "" && r.Scenario != scenario) {
			continue
		}
		if r.Kind == "run" || (r.Kind == "ref" && isReference(target)) {
			out = append(out, r)
		}
	}
	return out
}

// dist is the median and range of a metric over repetitions.
type dist struct {
	med, min, max float64
	n             int
}

func distOf(xs []float64) (dist, bool) {
	if len(xs) == 0 {
		return dist{}, false
	}
	xs = append([]float64(nil), xs...)
	sort.Float64s(xs)
	med := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		med = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	return dist{med: med, min: xs[0], max: xs[len(xs)-1], n: len(xs)}, true
}

// cell renders "median [min–max]", or the median alone when the range
// collapses at this precision.
func (d dist) cell(format func(float64) string) string {
	if format(d.min) == format(d.max) {
		return format(d.med)
	}
	return fmt.Sprintf("%s [%s–%s]", format(d.med), format(d.min), format(d.max))
}

func collect(rows []*result, get func(*result) (float64, bool)) (dist, bool) {
	var xs []float64
	for _, r := range rows {
		if v, ok := get(r); ok {
			xs = append(xs, v)
		}
	}
	return distOf(xs)
}

// Metric getters. A value is left out when it was not measured: the
// harness writes -1 for "no samples" (latency of tcpdump, which it cannot
// see), 0 for CPU per Mpkt when nothing was delivered, and 0 RSS when it had
// no PID to read.

func deliveredRatio(r *result) (float64, bool) {
	if r.Sent == 0 {
		return 0, false // the blaster never ran its measured phase (dial failed)
	}
	return float64(r.Delivered) / float64(r.Sent), true
}

func latP99(r *result) (float64, bool) {
	if r.LatP99Ms == nil || *r.LatP99Ms < 0 || r.Delivered == 0 {
		return 0, false
	}
	return *r.LatP99Ms, true
}

func cpuPerMpkt(r *result) (float64, bool) {
	if r.SvcCPUPerMpkt == nil || *r.SvcCPUPerMpkt < 0 || r.Delivered == 0 {
		return 0, false
	}
	return *r.SvcCPUPerMpkt, true
}

func rssMB(r *result) (float64, bool) {
	if r.SvcRSSMB == nil || *r.SvcRSSMB <= 0 {
		return 0, false
	}
	return *r.SvcRSSMB, true
}

func achievedKpps(r *result) (float64, bool) {
	if r.AchievedPPS <= 0 {
		return 0, false
	}
	return r.AchievedPPS / 1000, true
}

// fmtRatio truncates rather than rounds, so that a run that lost packets
// never reads 1.0000 (0.99996 prints 0.9999). The 1e-9 absorbs binary
// representation error (0.9983 is 0.99829999...).
func fmtRatio(v float64) string { return fmt.Sprintf("%.4f", math.Floor(v*1e4+1e-9)/1e4) }
func fmt2(v float64) string     { return fmt.Sprintf("%.2f", v) }
func fmt0(v float64) string     { return fmt.Sprintf("%.0f", v) }

type headlineRow struct {
	label    string
	scenario string // "" = every scenario of the target
	get      func(*result) (float64, bool)
	format   func(float64) string
	ratio    bool // print ours/tcpdump of the medians
	atRate   bool // add the achieved rate ("at N kpps")
}

var headlineRows = []headlineRow{
	{"64 B @ 200 kpps delivered", "64B@200000pps", deliveredRatio, fmtRatio, false, false},
	{"64 B @ max delivered (at N kpps)", "64B@max", deliveredRatio, fmtRatio, false, true},
	{"1400 B @ 200 kpps delivered", "1400B@200000pps", deliveredRatio, fmtRatio, false, false},
	{"1400 B @ max delivered (at N kpps)", "1400B@max", deliveredRatio, fmtRatio, false, true},
	{"CPU s per M packets 64 B @ 200 kpps", "64B@200000pps", cpuPerMpkt, fmt2, true, false},
	{"CPU s per M packets 1400 B @ 200 kpps", "1400B@200000pps", cpuPerMpkt, fmt2, true, false},
	{"latency p99 @ 1 kpps, ms", "64B@1000pps", latP99, fmt2, false, false},
	{"latency p99 @ 200 kpps, 64 B, ms", "64B@200000pps", latP99, fmt2, false, false},
	{"RSS, MB (all runs)", "", rssMB, fmt0, true, false},
}

const refTool = "tcpdump"

// headlineCell renders one target's figure for a row; ok is false when the
// target has no value for it.
func headlineCell(rows []*result, h headlineRow) (string, dist, bool) {
	d, ok := collect(rows, h.get)
	if !ok {
		return "–", d, false
	}
	s := d.cell(h.format)
	if h.atRate {
		if k, ok := collect(rows, achievedKpps); ok {
			s += fmt.Sprintf(" at %.0f kpps", k.med)
		}
	}
	return s, d, true
}

func writeHeadline(w io.Writer, rs []result) {
	svcs := services(rs)
	fmt.Fprintf(w, "\n### headline: this build next to %s (same run)\n\n", refTool)
	if len(svcs) == 0 {
		fmt.Fprintln(w, "No service runs in this file.")
		return
	}
	hdr, sep := "| | "+refTool, "|---|---"
	for _, s := range svcs {
		name := "ours (" + s + ")"
		if len(svcs) > 1 {
			name = s
		}
		hdr += " | " + name + " | " + ratioHeader(s, len(svcs)) + "/" + refTool
		sep += "|---|---"
	}
	fmt.Fprintf(w, "%s |\n%s|\n", hdr, sep)
	for _, h := range headlineRows {
		if !measured(rs, h.scenario, svcs) {
			continue
		}
		ref, refD, refOK := headlineCell(rowsOf(rs, refTool, h.scenario), h)
		line := "| " + h.label + " | " + ref
		for _, s := range svcs {
			ours, oursD, oursOK := headlineCell(rowsOf(rs, s, h.scenario), h)
			ratio := "–"
			if h.ratio && refOK && oursOK && refD.med > 0 {
				ratio = fmt.Sprintf("%.2f", oursD.med/refD.med)
			}
			line += " | " + ours + " | " + ratio
		}
		fmt.Fprintln(w, line+" |")
	}
	fmt.Fprintln(w, "\nDelivered = unique measured packets received / sent, truncated (never rounded up to 1). "+
		"CPU: the capturing process tree's user+system time over the measured phase and drain, per million delivered "+
		"packets; on a veth part of the kernel's capture work runs in the sender's softirq and is charged to the blaster. "+
		"tcpdump writes to /dev/null, so it has no latency.")
}

func ratioHeader(svc string, n int) string {
	if n == 1 {
		return "ours"
	}
	return svc
}

// measured reports whether any service or the reference ran scenario.
func measured(rs []result, scenario string, svcs []string) bool {
	if len(rowsOf(rs, refTool, scenario)) > 0 {
		return true
	}
	for _, s := range svcs {
		if len(rowsOf(rs, s, scenario)) > 0 {
			return true
		}
	}
	return false
}

// loss splits one service run's measured packets by where they were lost.
//
// What each harness figure covers (cmd/wsbench/run.go, session.go):
//
//   - sent: measured-phase datagrams the blaster got out; the 1 kHz probe
//     stream it sends until "go" is not in it (that is probe_sent).
//   - if_rx: the capture interface's (pfa0) rx_packets delta between a
//     read in the blaster's quiet gap after "go" and one after the drain:
//     the measured phase only, no probe packets. A veth counts a packet in
//     rx_packets only once its peer's xmit has handed it to the receive
//     path, where AF_PACKET sees it; a packet the peer could not hand over
//     (backlog full) is counted in peer_tx_dropped and, on some kernels,
//     also in if_rx_dropped. Both are therefore already inside sent − if_rx,
//     and adding them would count them twice (once more for the backlog
//     case); they are shown as notes.
//   - delivered: unique measured-phase sequence numbers the harness parsed
//     out of the stream (duplicates and probe packets are not counted).
//   - isb: the last ISB per interface, "ifN recv=R drop=D osdrop=O" (-1 =
//     option absent), written by the service at the end of the stream.
//     packetflix writes recv = tp_packets (its drops included) and drop =
//     kernel ring drops + skipped (packets that reached the ring but were
//     never written to the stream, e.g. still in the ring when the session
//     ended), both over the whole session: from the ring's opening, so
//     they include the probe packets the ring saw before "go". The harness
//     does not record isb_usrdeliv.
//
// So, per run:
//
//	before = sent − if_rx                        (blaster → pfa0)
//	ring   = Σ drop over the ISB's interfaces    (ring full, or skipped)
//	after  = if_rx − delivered − ring            (send queue, WebSocket,
//	                                              a connection that died)
//
// A probe packet dropped in the ring is in ring but not in if_rx, so after
// can come out negative; negatives (also of before, if the interface saw
// more than was sent) are clamped to 0 and the run gets a note. recv is a
// cross-check only: Σ recv − probe_delivered is what the ring counted of
// the measured phase (plus probe packets lost past the ring) and should
// equal if_rx.
type loss struct {
	sent, before, delivered int64
	ring, after             int64
	hasISB                  bool   // ring and after are known
	noISB                   string // why not, when !hasISB
	notes                   []string
}

func lossOf(r *result) loss {
	l := loss{sent: int64(r.Sent), delivered: int64(r.Delivered)}
	l.before = l.sent - r.IfRx
	if l.before < 0 {
		l.notes = append(l.notes, fmt.Sprintf("if_rx %d > sent: before %d clamped to 0", r.IfRx, l.before))
		l.before = 0
	}
	if r.IfRxDrop != 0 || r.PeerTxDrop != 0 {
		l.notes = append(l.notes, fmt.Sprintf("if_rx_dropped %d, peer_tx_dropped %d (inside before)", r.IfRxDrop, r.PeerTxDrop))
	}
	recv, drop, ok, why := parseISB(r.ISB)
	if !ok {
		l.noISB = why
		return l
	}
	l.hasISB, l.ring = true, drop
	l.after = r.IfRx - l.delivered - drop
	if l.after < 0 {
		l.notes = append(l.notes, fmt.Sprintf("after %d clamped to 0 (probe-phase ring drops?)", l.after))
		l.after = 0
	}
	if recv >= 0 {
		if main := recv - int64(r.ProbeDelivered); main != r.IfRx {
			l.notes = append(l.notes, fmt.Sprintf("ISB recv − probes = %d ≠ if_rx %d", main, r.IfRx))
		}
	}
	return l
}

// parseISB sums recv and drop over the ISB lines ("if0 recv=1598960
// drop=0 osdrop=-1"). recv is -1 when some interface did not report it.
func parseISB(isb []string) (recv, drop int64, ok bool, why string) {
	if len(isb) == 0 {
		return 0, 0, false, "unknown (no ISB)"
	}
	for _, s := range isb {
		rv, dv := int64(-1), int64(-1)
		for _, f := range strings.Fields(s) {
			k, v, found := strings.Cut(f, "=")
			if !found {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			switch k {
			case "recv":
				rv = n
			case "drop":
				dv = n
			}
		}
		if dv < 0 {
			return 0, 0, false, "unknown (ISB without drop)"
		}
		drop += dv
		if rv < 0 || recv < 0 {
			recv = -1
		} else {
			recv += rv
		}
	}
	return recv, drop, true, ""
}

func writeLosses(w io.Writer, rs []result) {
	svcs := services(rs)
	if len(svcs) == 0 {
		return
	}
	var scenarios []string
	seen := map[string]bool{}
	for _, r := range rs {
		if r.Kind == "run" && !isReference(r.Target) && !seen[r.Scenario] {
			seen[r.Scenario] = true
			scenarios = append(scenarios, r.Scenario)
		}
	}
	sort.SliceStable(scenarios, func(i, j int) bool { return scenarioLess(scenarios[i], scenarios[j]) })

	fmt.Fprintln(w, "\n### where packets were lost (service runs)")
	fmt.Fprintln(w, "\nEach cell: median, then each run's figure in file order (#1 / #2 ...).")
	fmt.Fprintln(w, "\n| scenario | target | runs | sent | lost before the capture interface | dropped in the kernel ring (ISB) | lost after the ring | delivered | notes |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|")
	for _, sc := range scenarios {
		for _, s := range svcs {
			rows := rowsOf(rs, s, sc)
			if len(rows) == 0 {
				continue
			}
			ls := make([]loss, len(rows))
			var notes []string
			for i, r := range rows {
				ls[i] = lossOf(r)
				for _, n := range ls[i].notes {
					notes = append(notes, fmt.Sprintf("#%d: %s", i+1, n))
				}
				if r.Error != "" {
					notes = append(notes, fmt.Sprintf("#%d error: %.80s", i+1, r.Error))
				}
			}
			fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", sc, s, len(rows),
				countCell(ls, func(l loss) (int64, bool) { return l.sent, true }),
				countCell(ls, func(l loss) (int64, bool) { return l.before, true }),
				countCell(ls, func(l loss) (int64, bool) { return l.ring, l.hasISB }),
				countCell(ls, func(l loss) (int64, bool) { return l.after, l.hasISB }),
				countCell(ls, func(l loss) (int64, bool) { return l.delivered, true }),
				mdEscape(strings.Join(notes, "; ")))
		}
	}
	fmt.Fprintln(w, "\nbefore = sent − if_rx (pfa0's rx_packets over the measured phase; the veth peer's tx drops are inside it). "+
		"ring = Σ isb_ifdrop (packetflix: ring-full drops + packets left in the ring), counted over the whole session, probe phase included. "+
		"after = if_rx − delivered − ring: the send queue and the WebSocket; negatives are clamped to 0 and noted.")
}

// countCell renders the median of the known values and, for more than one
// run, each run's value; a run without the figure shows why.
func countCell(ls []loss, get func(loss) (int64, bool)) string {
	var xs []float64
	per := make([]string, len(ls))
	for i, l := range ls {
		v, ok := get(l)
		if !ok {
			per[i] = "no ISB"
			if l.noISB != "unknown (no ISB)" {
				per[i] = strings.TrimSuffix(strings.TrimPrefix(l.noISB, "unknown ("), ")")
			}
			continue
		}
		xs = append(xs, float64(v))
		per[i] = strconv.FormatInt(v, 10)
	}
	d, ok := distOf(xs)
	med := ""
	switch {
	case !ok && len(ls) > 0:
		med = ls[0].noISB
		for _, l := range ls[1:] {
			if l.noISB != med {
				med = "unknown (no usable ISB)"
			}
		}
	case d.med == math.Trunc(d.med):
		med = fmt.Sprintf("%.0f", d.med)
	default:
		med = fmt.Sprintf("%.1f", d.med)
	}
	if len(ls) == 1 {
		return med
	}
	return med + " (" + strings.Join(per, " / ") + ")"
}

func mdEscape(s string) string {
	s = strings.ReplaceAll(s, "|", "\\|")
	return strings.ReplaceAll(s, "\n", " ")
}

// scenarioLess orders "64B@1000pps" < "64B@200000pps" < "64B@max" <
// "1400B@...", as the harness's summary does.
func scenarioLess(a, b string) bool {
	sa, ra := scenarioKey(a)
	sb, rb := scenarioKey(b)
	if sa != sb {
		return sa < sb
	}
	if ra != rb {
		return ra < rb
	}
	return a < b
}

func scenarioKey(s string) (size int, rate float64) {
	sz, r, ok := strings.Cut(s, "B@")
	if !ok {
		return 0, 0
	}
	size, _ = strconv.Atoi(sz)
	if r == "max" {
		return size, math.Inf(1)
	}
	rate, _ = strconv.ParseFloat(strings.TrimSuffix(r, "pps"), 64)
	return size, rate
}
