package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/packetflix/packetflix/pcapng"
	"github.com/packetflix/packetflix/server"
	"go.uber.org/zap/zaptest"
)

// The page (server/web) in a real browser: Debian's chromium, headless,
// driven through the DevTools protocol by chromedp. Every wait is on a
// condition in the page or on disk, with waitLimit as the bound.

const chromiumPath = "/usr/bin/chromium"

// requireChromium returns the browser's path; without it the test skips,
// or fails under CI=true, where make test has installed it (TEST_DEPS).
func requireChromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err == nil {
		return chromiumPath
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s is missing: make test installs it (Debian package chromium, TEST_DEPS)", chromiumPath)
	}
	t.Skipf("%s is missing (apt-get install chromium, or run make test)", chromiumPath)
	return ""
}

// pageBrowser is one headless chromium for a test; each tab is a
// chromedp context of it.
type pageBrowser struct {
	ctx     context.Context
	profile string
}

// startBrowser starts chromium with a fresh profile and the flags that
// keep it from calling out (background networking, component updates,
// sync, QUIC): this machine refuses such connections. The browser is
// closed at cleanup, and no process of its profile may be left.
func startBrowser(t *testing.T) *pageBrowser {
	t.Helper()
	path := requireChromium(t)
	profile := t.TempDir() // removed after the browser's cleanup below, which runs first
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints,AutofillServerCommunication"),
		chromedp.Flag("no-proxy-server", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1280, 1100),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	b := &pageBrowser{ctx: ctx, profile: profile}
	t.Cleanup(func() {
		watchdog(t, "closing chromium", 30*time.Second, func() {
			_ = chromedp.Cancel(ctx)
			cancel()
			cancelAlloc()
		})
		b.noneLeft(t)
	})
	start := time.Now()
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	if c := chromedp.FromContext(ctx); c != nil && c.Browser != nil && c.Browser.Process() != nil {
		t.Logf("chromium %d up in %v", c.Browser.Process().Pid, time.Since(start).Round(time.Millisecond))
	}
	return b
}

// noneLeft checks that no process of this browser's profile outlived it:
// any found is an error, and is killed by its PID.
func (b *pageBrowser) noneLeft(t *testing.T) {
	t.Helper()
	var left []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		left = left[:0]
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
			if bytes.Contains(cmd, []byte(b.profile)) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range left {
		t.Errorf("chromium process %d of this test outlived it; killing it", pid)
		if p, err := os.FindProcess(pid); err == nil {
			_ = p.Kill()
		}
	}
}

// watchdog runs fn and fails the test if it takes longer than limit.
func watchdog(t *testing.T, what string, limit time.Duration, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(limit):
		t.Errorf("%s: not done after %v", what, limit)
	}
}

// pageTab is one tab with its console and downloads watched.
type pageTab struct {
	t        *testing.T
	ctx      context.Context
	download string // directory downloads land in

	mu       sync.Mutex
	problems []string
	allow    func(e *cdplog.Entry) bool // expected browser log errors
}

// newTab opens a tab. Console errors, uncaught exceptions and browser log
// errors (failed loads, CSP violations) are collected; the test fails on
// any that allow does not expect.
func (b *pageBrowser) newTab(t *testing.T) *pageTab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	tab := &pageTab{t: t, ctx: ctx, download: t.TempDir()}
	t.Cleanup(func() {
		watchdog(t, "closing the tab", 20*time.Second, cancel)
		tab.mu.Lock()
		defer tab.mu.Unlock()
		for _, p := range tab.problems {
			t.Errorf("browser: %s", p)
		}
	})
	err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert &&
				ev.Type != runtime.ConsoleAPICalledTypeWarning {
				return
			}
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			p = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
		case *runtime.EventExceptionThrown:
			d := ev.ExceptionDetails
			desc := d.Text
			if d.Exception != nil {
				desc += " " + d.Exception.Description
			}
			p = fmt.Sprintf("uncaught exception at %s:%d: %s", d.URL, d.LineNumber+1, desc)
		case *cdplog.EventEntryAdded:
			e := ev.Entry
			if e.Level != cdplog.EntryLevelError && e.Level != cdplog.EntryLevelWarning {
				return
			}
			tab.mu.Lock()
			ok := tab.allow != nil && tab.allow(e)
			tab.mu.Unlock()
			if ok {
				t.Logf("browser log (expected): %s %s", e.Text, e.URL)
				return
			}
			p = fmt.Sprintf("log %s %s: %s %s", e.Source, e.Level, e.Text, e.URL)
		default:
			return
		}
		tab.mu.Lock()
		tab.problems = append(tab.problems, p)
		tab.mu.Unlock()
	})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	_, err = chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: tab.download,
	})
	if err != nil {
		t.Fatalf("download behavior: %v", err)
	}
	return tab
}

// expect makes browser log entries that match allow expected, not errors.
func (tab *pageTab) expect(allow func(e *cdplog.Entry) bool) {
	tab.mu.Lock()
	tab.allow = allow
	tab.mu.Unlock()
}

// do runs actions in the tab within waitLimit.
func (tab *pageTab) do(actions ...chromedp.Action[chromedp.Void]) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, waitLimit)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tab.t.Fatalf("browser: %v", err)
	}
}

// eval evaluates a JavaScript expression (awaiting a promise) into T.
func eval[T any](tab *pageTab, expr string) T {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, waitLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tab.t.Fatalf("evaluate %.80q: %v", expr, err)
	}
	return v
}

// until waits for a JavaScript condition in the page.
func (tab *pageTab) until(what, expr string) {
	tab.t.Helper()
	ctx, cancel := context.WithTimeout(tab.ctx, waitLimit+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(waitLimit)))
	if err != nil {
		state, _ := chromedp.Run(tab.ctx, chromedp.Evaluate[string](
			`[...document.querySelectorAll('[role=status]')].map(e => '#' + e.id + ': ' + e.textContent).join(' | ')`))
		tab.t.Fatalf("waiting for %s: %v; the page says: %s", what, err, state)
	}
}

// waitFile waits for a finished download whose name ends in suffix.
func (tab *pageTab) waitFile(suffix string) string {
	tab.t.Helper()
	var found string
	waitUntil(tab.t, "download of *"+suffix, func() bool {
		ents, _ := os.ReadDir(tab.download)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), suffix) {
				found = filepath.Join(tab.download, e.Name())
				return true
			}
		}
		return false
	})
	return found
}

// startPageServer starts the service with a token. Until openPaths
// (conn.go) lists the page's paths, a browser cannot load the page without
// the token; then, and only then, the test server adds it to requests for
// the page's own files (never to API requests), so the page's token
// handling is still what the test exercises.
func startPageServer(t *testing.T, token string) *httptest.Server {
	t.Helper()
	srv := server.New(server.Config{Log: zaptest.NewLogger(t), Version: "1.2.3-test", NodeName: "testnode", OS: "Linux", AuthToken: token})
	ts := httptest.NewUnstartedServer(nil)
	srv.Configure(ts.Config)
	h := ts.Config.Handler
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code == http.StatusUnauthorized {
		t.Log("NOTE: with a token, GET / answers 401: openPaths (conn.go) lacks the page's paths; " +
			"this test server lets the page's files through meanwhile")
		ts.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/" || strings.HasPrefix(r.URL.Path, "/web/") {
				r = r.Clone(r.Context())
				r.Header.Set("Authorization", "Bearer "+token)
			}
			h.ServeHTTP(w, r)
		})
	}
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		ts.Close()
	})
	return ts
}

// pageRows returns the packet rows the page shows: No., time, interface,
// direction, source, destination, protocol, length, info.
func pageRows(tab *pageTab) [][]string {
	tab.t.Helper()
	return eval[[][]string](tab, `[...document.querySelectorAll('#pkt-rows .grid-row:not([hidden])')]
		.map(r => [...r.children].map(c => c.textContent))`)
}

// apiCaptures returns the IDs the service lists as running.
func apiCaptures(t *testing.T, ts *httptest.Server, token string) []string {
	t.Helper()
	r, _ := http.NewRequest("GET", ts.URL+"/api/v1/captures", nil)
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Captures []struct {
			ID string `json:"id"`
		} `json:"captures"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range body.Captures {
		ids = append(ids, c.ID)
	}
	return ids
}

// tsharkUDP returns "src dst" of every UDP packet tshark reads in file,
// and checks capinfos counts count packets (when count >= 0).
func tsharkUDP(t *testing.T, file string, count int) []string {
	t.Helper()
	cmd := exec.Command("tshark", "-r", file, "-Y", "udp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.length")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr // tshark warns about running as root there
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", file, err, stderr.Bytes())
	}
	var pkts []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			pkts = append(pkts, strings.Join(strings.Fields(l), " "))
		}
	}
	ci, err := exec.Command("capinfos", "-c", "-M", file).CombinedOutput()
	if err != nil {
		t.Fatalf("capinfos %s: %v\n%s", file, err, ci)
	}
	if count >= 0 && !strings.Contains(string(ci), fmt.Sprintf("Number of packets:   %d\n", count)) {
		t.Errorf("capinfos %s: want %d packets:\n%s", file, count, ci)
	}
	return pkts
}

// artefact writes a test artefact under out/test-artifacts (out/ is
// ignored by git), which outlives the test's temp dirs.
func artefact(t *testing.T, name string, data []byte) {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "out", "test-artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artefact: %s (%d bytes)", p, len(data))
}

// TestIntegrationPage drives the page in chromium: it lists a test netns,
// captures the known datagrams sent during the test through clicks, saves
// them as a file tshark reads, stops; then the same with a token, and the
// page's decoders against known frames.
func TestIntegrationPage(t *testing.T) {
	requireChromium(t)
	h := newHosts(t, false) // root, or skip
	b := startBrowser(t)
	t.Run("capture", func(t *testing.T) { pageCapture(t, b, h) })
	t.Run("token", func(t *testing.T) { pageToken(t, b, h) })
	t.Run("load", func(t *testing.T) { pageLoad(t, b, h) })
	t.Run("decode", func(t *testing.T) { pageDecode(t, b) })
}

func pageCapture(t *testing.T, b *pageBrowser, h hosts) {
	_, ts := startServer(t)
	tab := b.newTab(t)
	ua, ub := h.a.UDP("198.18.1.1:4000"), h.b.UDP("198.18.1.2:4000")
	_ = ua // bound, so no port unreachable comes back

	start := time.Now()
	tab.do(chromedp.Navigate(ts.URL + "/"))
	target := fmt.Sprintf(`#target-list button[data-name=%q]`, h.a.Name)
	tab.do(chromedp.WaitVisible(chromedp.CSS(target)))
	// Search narrows the list to the test netns.
	tab.do(chromedp.SendKeys(chromedp.CSS("#target-search"), h.a.Name))
	tab.until("search to leave one target", `document.querySelectorAll('#target-list tr:not([hidden])').length === 1`)
	tab.do(chromedp.Click(chromedp.CSS(target)))
	tab.until("the target chosen", fmt.Sprintf(`document.querySelector('#target').value === %q`, h.a.Name))
	eth0 := `#nif-list input[value="eth0"]`
	tab.do(
		chromedp.WaitVisible(chromedp.CSS(eth0)),
		chromedp.Click(chromedp.CSS(eth0)),
		chromedp.SendKeys(chromedp.CSS("#filter"), "udp"),
		chromedp.Click(chromedp.CSS("#start")),
	)
	tab.until("the capture to be live", `document.querySelector('#capture-state').dataset.state === 'live'`)
	t.Logf("page live %v after navigation", time.Since(start).Round(time.Millisecond))

	const n = 20
	send(t, ub, "198.18.1.1:4000", 'P', n)
	tab.until("20 packets listed", fmt.Sprintf(`document.querySelectorAll('#pkt-rows .grid-row:not([hidden])').length >= %d`, n))
	rows := pageRows(tab)
	if len(rows) != n {
		t.Fatalf("%d rows, want %d: %q", len(rows), n, rows)
	}
	for i, r := range rows {
		want := []string{strconv.Itoa(i + 1), r[1], "eth0", "in", "198.18.1.2", "198.18.1.1", "UDP", "82", "4000 → 4000 Len=40"}
		if !slices.Equal(r, want) {
			t.Errorf("row %d: %q, want %q", i, r, want)
		}
	}
	// The live captures table shows the session with its counters.
	tab.until("the capture's counters", fmt.Sprintf(
		`!!document.querySelector('#capture-list li[data-name="eth0"][data-delivered="%d"][data-received="%d"][data-dropped="0"]')`, n, n))

	// "Open in Wireshark": GhostWire's packetflix: form.
	href := eval[string](tab, `document.querySelector('#wireshark').href`)
	checkWiresharkLink(t, href, ts, h.a.Name, h.a.Inode, []string{"eth0"})

	// Keyboard: Home selects the first packet and shows its detail.
	tab.do(chromedp.SendKeys(chromedp.CSS("#pkt-grid"), kb.Home))
	tab.until("packet 1 selected", `document.querySelector('#pkt-grid').getAttribute('aria-activedescendant') === 'pkt-1' &&
		!document.querySelector('#pkt-detail').hidden`)
	layers := eval[string](tab, `document.querySelector('#pkt-layers').textContent`)
	if !strings.Contains(layers, "IPv4 198.18.1.2 → 198.18.1.1") || !strings.Contains(layers, "UDP 4000 → 4000 Len=40") {
		t.Errorf("packet detail: %q", layers)
	}

	checkAccessibility(t, tab)

	// Save: the stream as received, which tshark reads.
	tab.do(chromedp.Click(chromedp.CSS("#save")))
	file := tab.waitFile(".pcapng")
	pkts := tsharkUDP(t, file, n)
	if len(pkts) != n {
		t.Errorf("tshark reads %d UDP packets in the saved file, want %d: %q", len(pkts), n, pkts)
	}
	for _, p := range pkts {
		if p != "198.18.1.2 198.18.1.1 48" {
			t.Errorf("saved packet %q, want 198.18.1.2 → 198.18.1.1, UDP length 48", p)
		}
	}

	shot, err := chromedp.Run(tab.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	artefact(t, "page.png", shot)

	// A narrow window: everything stacks, nothing sticks out sideways.
	tab.do(chromedp.EmulateViewport(390, 1100))
	tab.until("narrow layout", `document.documentElement.scrollWidth <= window.innerWidth + 1`)
	if shot, err = chromedp.Run(tab.ctx, chromedp.FullScreenshot(100)); err == nil {
		artefact(t, "page-narrow.png", shot)
	}
	tab.do(chromedp.EmulateViewport(1280, 1100))

	// Stop: the page closes its WebSocket, the session ends.
	tab.do(chromedp.Click(chromedp.CSS("#stop")))
	tab.until("the capture to end", `document.querySelector('#capture-state').dataset.state === 'ended'`)
	waitUntil(t, "the capture to leave /api/v1/captures", func() bool { return len(apiCaptures(t, ts, "")) == 0 })
	tab.until("the page's captures table to empty", `!document.querySelector('#capture-list tr[data-id]')`)

	// Again, after a refresh of the targets (which keeps eth0 ticked): a
	// new list, numbered from 1, of new packets.
	tab.do(chromedp.Click(chromedp.CSS("#targets-refresh")))
	tab.until("the targets refreshed", `document.querySelector('#target-count').textContent.includes('targets')`)
	if !eval[bool](tab, `document.querySelector('#nif-list input[value="eth0"]').checked`) {
		t.Errorf("eth0 is no longer ticked after a refresh")
	}
	tab.do(chromedp.Click(chromedp.CSS("#start")))
	tab.until("the second capture to be live", `document.querySelector('#capture-state').dataset.state === 'live'`)
	send(t, h.b.UDP("198.18.1.2:4005"), "198.18.1.1:4000", 'Q', 3)
	tab.until("3 new packets listed", `document.querySelector('#capture-stats').dataset.packets === '3'`)
	tab.until("3 rows", `document.querySelectorAll('#pkt-rows .grid-row:not([hidden])').length === 3`)
	for i, r := range pageRows(tab) {
		if r[0] != strconv.Itoa(i+1) || r[8] != "4005 → 4000 Len=40" {
			t.Errorf("second capture, row %d: %q", i, r)
		}
	}
	tab.do(chromedp.Click(chromedp.CSS("#stop")))
	tab.until("the second capture to end", `document.querySelector('#capture-state').dataset.state === 'ended'`)
	t.Logf("capture flow took %v", time.Since(start).Round(time.Millisecond))
}

// checkAccessibility checks the page as it stands: every control has an
// accessible name (Chrome's accessibility tree), and all visible text
// meets WCAG AA contrast on its background, in the light and the dark
// colour scheme.
func checkAccessibility(t *testing.T, tab *pageTab) {
	t.Helper()
	tree, err := chromedp.Call(tab.ctx, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		t.Fatalf("accessibility tree: %v", err)
	}
	needName := map[string]bool{"button": true, "link": true, "textbox": true, "searchbox": true, "checkbox": true,
		"combobox": true, "spinbutton": true, "grid": true, "region": true, "table": false}
	str := func(v *accessibility.Value) string {
		var s string
		if v != nil {
			_ = json.Unmarshal(v.Value, &s)
		}
		return s
	}
	controls := 0
	for _, n := range tree.Nodes {
		role := str(n.Role)
		if n.Ignored || !needName[role] {
			continue
		}
		controls++
		if strings.TrimSpace(str(n.Name)) == "" {
			t.Errorf("a %s without an accessible name (DOM node %d)", role, n.BackendDOMNodeID)
		}
	}
	if controls < 15 {
		t.Errorf("only %d named controls in the accessibility tree", controls)
	}
	for _, scheme := range []string{"light", "dark"} {
		_, err := chromedp.Call(tab.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}})
		if err != nil {
			t.Fatal(err)
		}
		low := eval[[]string](tab, contrastJS)
		for _, l := range low {
			t.Errorf("%s scheme: contrast below WCAG AA: %s", scheme, l)
		}
	}
	if _, err := chromedp.Call(tab.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
		t.Fatal(err)
	}
}

// contrastJS lists visible text whose contrast with its background is
// under 4.5:1 (3:1 for large text); disabled controls are exempt, as WCAG
// says.
const contrastJS = `(() => {
	const rgb = s => {
		const m = s.match(/rgba?\(([^)]+)\)/);
		if (!m) return null;
		const p = m[1].split(/[\s,\/]+/).filter(Boolean).map(Number);
		return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1};
	};
	const lum = c => {
		const f = x => { x /= 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); };
		return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
	};
	const background = el => {
		for (let e = el; e; e = e.parentElement) {
			const c = rgb(getComputedStyle(e).backgroundColor);
			if (c && c.a > 0) return c;
		}
		return {r: 255, g: 255, b: 255, a: 1}; // the canvas
	};
	const low = [], seen = new Set();
	const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
	for (let n = w.nextNode(); n; n = w.nextNode()) {
		const el = n.parentElement;
		if (!n.textContent.trim() || seen.has(el)) continue;
		seen.add(el);
		if (el.closest('select, :disabled, [aria-disabled="true"]') || !el.checkVisibility({visibilityProperty: true})) continue;
		const cs = getComputedStyle(el), fg = rgb(cs.color), bg = background(el);
		if (!fg) continue;
		const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x);
		const ratio = (a + 0.05) / (b + 0.05);
		const size = parseFloat(cs.fontSize), bold = Number(cs.fontWeight) >= 700;
		if (ratio < (size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5)) {
			low.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + ' "' + n.textContent.trim().slice(0, 30) + '": ' +
				ratio.toFixed(2) + ' (' + cs.color + ' on ' + JSON.stringify(bg) + ')');
		}
	}
	return low;
})()`

// checkWiresharkLink checks an "Open in Wireshark" link: packetflix:,
// then this service's /capture over ws:, the target as JSON and nif.
func checkWiresharkLink(t *testing.T, href string, ts *httptest.Server, name string, inode uint64, nifs []string) {
	t.Helper()
	rest, ok := strings.CutPrefix(href, "packetflix:")
	u, err := url.Parse(rest)
	if !ok || err != nil || u.Scheme != "ws" || u.Host != strings.TrimPrefix(ts.URL, "http://") || u.Path != "/capture" {
		t.Fatalf("Wireshark link %q: not packetflix:ws://%s/capture?...", href, strings.TrimPrefix(ts.URL, "http://"))
	}
	var ref struct {
		NetNS  uint64   `json:"netns"`
		Nifs   []string `json:"network-interfaces"`
		Name   string   `json:"name"`
		Type   string   `json:"type"`
		Prefix *string  `json:"prefix"`
	}
	if err := json.Unmarshal([]byte(u.Query().Get("container")), &ref); err != nil {
		t.Fatalf("Wireshark link %q: container: %v", href, err)
	}
	if ref.NetNS != inode || ref.Name != name || ref.Type != "bindmount" || ref.Prefix == nil || !slices.Equal(ref.Nifs, nifs) ||
		u.Query().Get("nif") != strings.Join(nifs, "/") {
		t.Errorf("Wireshark link %q: container %+v, nif %q", href, ref, u.Query().Get("nif"))
	}
}

func pageToken(t *testing.T, b *pageBrowser, h hosts) {
	const token = "s3cret-token"
	ts := startPageServer(t, token)
	tab := b.newTab(t)
	ub := h.b.UDP("198.18.1.2:4001")
	h.a.UDP("198.18.1.1:4001")

	tab.do(chromedp.Navigate(ts.URL + "/"))
	tab.until("the page to ask for the token", `document.querySelector('#token-state').dataset.state === 'error'`)
	// A wrong token: the service answers 401 (which the browser logs),
	// the page says so.
	tab.expect(func(e *cdplog.Entry) bool {
		return e.Source == "network" && strings.Contains(e.Text, "401") && strings.HasSuffix(e.URL, "/api/v1/info")
	})
	tab.do(chromedp.SendKeys(chromedp.CSS("#token"), "wrong\n"))
	tab.until("the wrong token refused", `document.querySelector('#token-state').textContent.includes('refused')`)
	tab.do(chromedp.SendKeys(chromedp.CSS("#token"), token+"\n"))
	target := fmt.Sprintf(`#target-list button[data-name=%q]`, h.a.Name)
	tab.do(
		chromedp.WaitVisible(chromedp.CSS(target)),
		chromedp.Click(chromedp.CSS(target)),
		chromedp.WaitVisible(chromedp.CSS(`#nif-list input[value="eth0"]`)),
		chromedp.Click(chromedp.CSS(`#nif-list input[value="eth0"]`)),
		chromedp.SendKeys(chromedp.CSS("#filter"), "udp port 4001"),
		chromedp.SetValue(chromedp.CSS("#dl-seconds"), "2"),
	)
	if got := eval[string](tab, `document.querySelector('#token').value`); got != "" {
		t.Errorf("the token field still holds %q after use", got)
	}

	// "Download 2 seconds": /capture.pcapng with the Authorization header,
	// while datagrams flow.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 1), Port: 4001}
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = ub.WriteToUDP(payload('D', i), dst)
			}
		}
	})
	tab.do(chromedp.Click(chromedp.CSS("#download")))
	file := tab.waitFile("-2s.pcapng")
	close(stop)
	wg.Wait()
	pkts := tsharkUDP(t, file, -1)
	if len(pkts) == 0 {
		t.Errorf("the 2-second download holds no UDP packet")
	}
	for _, p := range pkts {
		if p != "198.18.1.2 198.18.1.1 48" {
			t.Errorf("downloaded packet %q, want 198.18.1.2 → 198.18.1.1", p)
		}
	}
	t.Logf("2-second download: %d UDP packets", len(pkts))

	// A live capture over the WebSocket (token as subprotocol), stopped
	// from the captures table (DELETE with the token): the page gets the
	// ISBs and the operator's reason.
	tab.do(chromedp.Click(chromedp.CSS("#start")))
	tab.until("the capture to be live", `document.querySelector('#capture-state').dataset.state === 'live'`)
	tab.do(chromedp.WaitVisible(chromedp.CSS("#capture-list button.stop-capture")))
	if ids := apiCaptures(t, ts, token); len(ids) != 1 {
		t.Fatalf("captures %v, want one", ids)
	}
	tab.do(chromedp.Click(chromedp.CSS("#capture-list button.stop-capture")))
	tab.until("the operator's stop", `document.querySelector('#capture-state').dataset.state === 'ended' &&
		document.querySelector('#capture-state').textContent.includes('stopped by operator') &&
		document.querySelector('#capture-state').textContent.includes('eth0: ')`)
	waitUntil(t, "the capture to leave /api/v1/captures", func() bool { return len(apiCaptures(t, ts, token)) == 0 })
}

// pageLoad: 10000 packets a second for 2.5 s into the page. It keeps up
// (every packet arrives and is counted), lists the last HISTORY of them
// and says how many it no longer lists or skipped while paused, answers
// the whole time, and Save still holds every packet.
func pageLoad(t *testing.T, b *pageBrowser, h hosts) {
	const rate, total = 10000, 25000
	_, ts := startServer(t)
	tab := b.newTab(t)
	h.a.UDP("198.18.1.1:4002")
	ub := h.b.UDP("198.18.1.2:4002")
	target := fmt.Sprintf(`#target-list button[data-name=%q]`, h.a.Name)
	tab.do(
		chromedp.Navigate(ts.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(target)),
		chromedp.Click(chromedp.CSS(target)),
		chromedp.WaitVisible(chromedp.CSS(`#nif-list input[value="eth0"]`)),
		chromedp.Click(chromedp.CSS(`#nif-list input[value="eth0"]`)),
		chromedp.SendKeys(chromedp.CSS("#filter"), "udp port 4002"),
		chromedp.Click(chromedp.CSS("#start")),
	)
	tab.until("the capture to be live", `document.querySelector('#capture-state').dataset.state === 'live'`)
	eval[bool](tab, `(() => {
		window.pfLongTasks = [];
		new PerformanceObserver(l => { for (const e of l.getEntries()) pfLongTasks.push(Math.round(e.duration)); })
			.observe({type: 'longtask'});
		return true;
	})()`)

	// Three paced phases: 8000 packets, then Pause; 5000 more, all of which
	// arrive while paused; Resume, and 12000 more. The page's answer time
	// is measured all along.
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 1), Port: 4002}
	var worst time.Duration
	seq := 0
	phase := func(count int) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			begin, n := time.Now(), 0
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for now := range tick.C {
				for due := min(count, int(now.Sub(begin).Seconds()*rate)); n < due; n++ {
					if _, err := ub.WriteToUDP(payload('L', seq+n), dst); err != nil {
						t.Errorf("send %d: %v", seq+n, err)
					}
				}
				if n == count {
					return
				}
			}
		}()
		for {
			t0 := time.Now()
			eval[float64](tab, `performance.now()`)
			worst = max(worst, time.Since(t0))
			select {
			case <-done:
				seq += count
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	counted := func(n int) {
		t.Helper()
		tab.until(fmt.Sprintf("%d packets in the page", n), fmt.Sprintf(`document.querySelector('#capture-stats').dataset.packets === '%d'`, n))
	}
	start := time.Now()
	phase(8000)
	tab.do(chromedp.Click(chromedp.CSS("#pause")))
	tab.until("paused", `document.querySelector('#capture-state').dataset.state === 'paused'`)
	phase(5000)
	counted(seq)
	tab.do(chromedp.Click(chromedp.CSS("#pause")))
	tab.until("resumed", `document.querySelector('#capture-state').dataset.state === 'live'`)
	phase(total - seq)
	n := seq
	counted(n)
	took := time.Since(start)
	counts := eval[map[string]string](tab, `({...document.querySelector('#capture-stats').dataset,
		rows: document.querySelector('#pkt-grid').getAttribute('aria-rowcount')})`)
	long := eval[[]int](tab, `pfLongTasks`)
	t.Logf("%d packets in %v; the page answered within %v at worst; long tasks (ms): %v; counts %v",
		n, took.Round(time.Millisecond), worst.Round(time.Millisecond), long, counts)
	atoi := func(k string) int { v, _ := strconv.Atoi(counts[k]); return v }
	if atoi("listed") != 10000 || atoi("rows") != 10001 || atoi("paused") < 5000 ||
		atoi("listed")+atoi("unlisted")+atoi("paused") != n {
		t.Errorf("counts %v: want 10000 listed (10001 rows with the header), at least 5000 not listed while paused, and listed + unlisted + paused = %d", counts, n)
	}
	stats := eval[string](tab, `document.querySelector('#capture-stats').textContent`)
	if !strings.Contains(stats, "older ones no longer listed") || !strings.Contains(stats, "not listed because the list was paused") {
		t.Errorf("the page does not say what it skipped: %q", stats)
	}
	// Generous: a busy 2-core machine runs this too. The page's own work is
	// a few milliseconds per message.
	if worst > 2*time.Second {
		t.Errorf("the page took %v to answer during the load", worst)
	}

	tab.do(chromedp.Click(chromedp.CSS("#save")))
	file := tab.waitFile(".pcapng")
	tsharkUDP(t, file, n) // capinfos: every packet, paused ones too
	tab.do(chromedp.Click(chromedp.CSS("#stop")))
	tab.until("the capture to end", `document.querySelector('#capture-state').dataset.state === 'ended'`)
}

// decodeResult is what the page's parser and decoders make of a stream.
type decodeResult struct {
	Err     *string `json:"err"`
	Offset  int     `json:"offset"`
	Packets []struct {
		Iface string `json:"iface"`
		Dir   int    `json:"dir"`
		Sec   int64  `json:"sec"`
		NS    int64  `json:"ns"`
		Src   string `json:"src"`
		Dst   string `json:"dst"`
		Proto string `json:"proto"`
		Info  string `json:"info"`
		Hint  string `json:"hint"`
	} `json:"packets"`
	Stats []string `json:"stats"`
}

// decodeInPage feeds stream to the page's PcapngParser in pieces of step
// bytes and decodes every packet.
func decodeInPage(tab *pageTab, stream []byte, step int) decodeResult {
	tab.t.Helper()
	return eval[decodeResult](tab, fmt.Sprintf(`(async () => {
		const m = await import('./web/app.js');
		const bin = Uint8Array.from(atob(%q), c => c.charCodeAt(0));
		const packets = [], stats = [];
		const p = new m.PcapngParser({
			onPacket: x => {
				const d = m.decodePacket(x.iface.link, x.data);
				const [sec, ns] = x.iface.toTime(x.ts);
				packets.push({iface: x.iface.name, dir: x.flags & 3, sec, ns, src: d.src, dst: d.dst, proto: d.proto, info: d.info, hint: d.dirHint});
			},
			onStats: s => stats.push(s.iface.name + ' ' + s.recv + ' ' + s.drop + ' ' + s.deliv),
		});
		for (let o = 0; o < bin.length; o += %d) p.push(bin.subarray(o, o + %d));
		return {err: p.error, offset: p.offset, packets, stats};
	})()`, base64.StdEncoding.EncodeToString(stream), step, step))
}

// Frames for the decoders.
func mac(s string) []byte { m, _ := net.ParseMAC(s); return m }

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func ether(typ uint16, payload []byte) []byte {
	return cat(mac("02:00:00:00:00:02"), mac("02:00:00:00:00:01"), be16(typ), payload)
}

func ip4(src, dst string, proto byte, payload []byte) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	h := []byte{0x45, 0, 0, 0, 0, 1, 0, 0, 64, proto, 0, 0}
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	return cat(h, s[:], d[:], payload)
}

func ip6(src, dst string, next byte, payload []byte) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	h := []byte{0x60, 0, 0, 0, 0, 0, next, 64}
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	return cat(h, s[:], d[:], payload)
}

func udpSeg(sport, dport uint16, payload []byte) []byte {
	return cat(be16(sport), be16(dport), be16(uint16(8+len(payload))), be16(0), payload)
}

func tcpSeg(sport, dport uint16, seq, ack uint32, flags uint16, win uint16) []byte {
	h := cat(be16(sport), be16(dport), binary.BigEndian.AppendUint32(nil, seq), binary.BigEndian.AppendUint32(nil, ack),
		be16(5<<12|flags), be16(win), be16(0), be16(0))
	return h
}

func dnsName(name string) []byte {
	var b []byte
	for _, l := range strings.Split(name, ".") {
		b = append(append(b, byte(len(l))), l...)
	}
	return append(b, 0)
}

func pageDecode(t *testing.T, b *pageBrowser) {
	_, ts := startServer(t)
	tab := b.newTab(t)
	tab.do(chromedp.Navigate(ts.URL + "/"))

	query := cat(be16(0x1234), be16(0x0100), be16(1), be16(0), be16(0), be16(0), dnsName("example.com"), be16(1), be16(1))
	answer := cat(be16(0x1234), be16(0x8180), be16(1), be16(1), be16(0), be16(0), dnsName("example.com"), be16(1), be16(1),
		be16(0xc00c), be16(1), be16(1), []byte{0, 0, 0, 60}, be16(4), []byte{198, 18, 0, 53})
	nxdomain := cat(be16(0x4321), be16(0x8183), be16(1), be16(0), be16(0), be16(0), dnsName("nx.example"), be16(28), be16(1))
	arpReq := cat(be16(1), be16(0x0800), []byte{6, 4}, be16(1), mac("02:00:00:00:00:01"), []byte{198, 18, 0, 1},
		make([]byte, 6), []byte{198, 18, 0, 2})
	arpRep := cat(be16(1), be16(0x0800), []byte{6, 4}, be16(2), mac("02:00:00:00:00:02"), []byte{198, 18, 0, 2},
		mac("02:00:00:00:00:01"), []byte{198, 18, 0, 1})
	echo := cat([]byte{8, 0, 0, 0}, be16(1), be16(7), []byte("ping"))
	echo6 := cat([]byte{128, 0, 0, 0}, be16(2), be16(1))
	ns6 := cat([]byte{135, 0, 0, 0, 0, 0, 0, 0}, netip.MustParseAddr("2001:db8::2").AsSlice())
	hopByHop := cat([]byte{17, 0, 5, 2, 0, 0, 1, 0}, udpSeg(546, 547, []byte{1, 2, 3, 4}))
	unreach := cat([]byte{3, 3, 0, 0, 0, 0, 0, 0}, ip4("198.18.0.2", "198.18.0.1", 17, udpSeg(4000, 4001, nil)))
	syn := tcpSeg(40000, 80, 1000, 0, 0x002, 64240)
	synack := tcpSeg(80, 40000, 5000, 1001, 0x012, 65535)
	sll2 := cat(be16(0x86dd), be16(0), []byte{0, 0, 0, 7}, be16(1), []byte{4, 6}, mac("02:00:00:00:00:07"), []byte{0, 0},
		ip6("2001:db8::7", "2001:db8::8", 6, synack))
	qinq := cat(mac("02:00:00:00:00:02"), mac("02:00:00:00:00:01"), be16(0x88a8), be16(10), be16(0x8100), be16(20),
		be16(0x0800), ip4("198.18.0.1", "198.18.0.2", 17, udpSeg(4000, 4000, []byte("abcd"))))
	vlanDNS := cat(mac("02:00:00:00:00:02"), mac("02:00:00:00:00:01"), be16(0x8100), be16(0x2000|100),
		be16(0x0800), ip4("198.18.0.1", "198.18.0.2", 17, udpSeg(40000, 53, query)))
	full := ether(0x0800, ip4("198.18.0.1", "198.18.0.2", 6, syn))

	type frame struct {
		iface                 uint32
		data                  []byte
		orig                  int
		src, dst, proto, info string
	}
	frames := []frame{
		{0, vlanDNS, 0, "198.18.0.1", "198.18.0.2", "DNS", "[VLAN 100] Standard query 0x1234 A example.com"},
		{0, ether(0x0800, ip4("198.18.0.2", "198.18.0.1", 17, udpSeg(53, 40000, answer))), 0, "198.18.0.2", "198.18.0.1", "DNS",
			"Standard query response 0x1234 A example.com A 198.18.0.53"},
		{0, ether(0x0800, ip4("198.18.0.2", "198.18.0.1", 17, udpSeg(53, 40000, nxdomain))), 0, "198.18.0.2", "198.18.0.1", "DNS",
			"Standard query response 0x4321 No such name AAAA nx.example"},
		{0, ether(0x0806, arpReq), 0, "02:00:00:00:00:01", "02:00:00:00:00:02", "ARP", "Who has 198.18.0.2? Tell 198.18.0.1"},
		{0, ether(0x0806, arpRep), 0, "02:00:00:00:00:01", "02:00:00:00:00:02", "ARP", "198.18.0.2 is at 02:00:00:00:00:02"},
		{0, ether(0x0800, ip4("198.18.0.1", "198.18.0.2", 1, echo)), 0, "198.18.0.1", "198.18.0.2", "ICMP", "Echo (ping) request id=0x0001, seq=7"},
		{0, ether(0x0800, ip4("198.18.0.1", "198.18.0.2", 1, unreach)), 0, "198.18.0.1", "198.18.0.2", "ICMP",
			"Destination unreachable (port unreachable) (UDP 198.18.0.2 → 198.18.0.1)"},
		{0, full, 0, "198.18.0.1", "198.18.0.2", "TCP", "40000 → 80 [SYN] Seq=1000 Win=64240 Len=0"},
		{0, full[:14+20+6], len(full), "198.18.0.1", "198.18.0.2", "TCP", "40000 → 80 [cut short]"},
		{0, ether(0x86dd, ip6("2001:db8::1", "2001:db8::2", 58, echo6)), 0, "2001:db8::1", "2001:db8::2", "ICMPv6", "Echo (ping) request id=0x0002, seq=1"},
		{0, ether(0x86dd, ip6("fe80::1", "ff02::1:ff00:2", 58, ns6)), 0, "fe80::1", "ff02::1:ff00:2", "ICMPv6", "Neighbor solicitation for 2001:db8::2"},
		{0, ether(0x86dd, ip6("fe80::1", "ff02::1:2", 0, hopByHop)), 0, "fe80::1", "ff02::1:2", "DHCPv6", "DHCPv6 546 → 547 Len=4"},
		{0, qinq, 0, "198.18.0.1", "198.18.0.2", "UDP", "[VLAN 10/20] 4000 → 4000 Len=4"},
		{1, ip4("198.18.3.1", "198.18.3.2", 17, udpSeg(5000, 6000, []byte("raw"))), 0, "198.18.3.1", "198.18.3.2", "UDP", "5000 → 6000 Len=3"},
		{2, sll2, 0, "2001:db8::7", "2001:db8::8", "TCP", "80 → 40000 [SYN, ACK] Seq=5000 Ack=1001 Win=65535 Len=0"},
	}
	stream := pcapng.AppendSHB(nil, pcapng.SectionInfo{UserAppl: "test"})
	stream = pcapng.AppendIDB(stream, pcapng.Interface{Name: "eth0", LinkType: pcapng.LinkTypeEthernet})
	stream = pcapng.AppendIDB(stream, pcapng.Interface{Name: "tun0", LinkType: pcapng.LinkTypeRaw})
	stream = pcapng.AppendIDB(stream, pcapng.Interface{Name: "any", LinkType: 276})
	const ts0, nsPerSec = 1700000000123456789, 1_000_000_000
	for i, f := range frames {
		orig := f.orig
		if orig == 0 {
			orig = len(f.data)
		}
		stream = pcapng.AppendEPB(stream, &pcapng.Packet{InterfaceID: f.iface, Timestamp: ts0 + int64(i), OrigLen: uint32(orig),
			Direction: pcapng.DirectionOutbound}, f.data)
	}
	stream = pcapng.AppendISB(stream, 0, ts0+100, pcapng.Stats{Received: 15, Dropped: 2, Delivered: 13, HasReceived: true, HasDropped: true, HasDelivered: true})

	for _, step := range []int{len(stream), 4096, 97, 7, 1} {
		got := decodeInPage(tab, stream, step)
		if got.Err != nil || got.Offset != len(stream) || len(got.Packets) != len(frames) {
			t.Fatalf("pieces of %d: error %v, offset %d of %d, %d packets of %d", step, got.Err, got.Offset, len(stream), len(got.Packets), len(frames))
		}
		for i, f := range frames {
			p := got.Packets[i]
			if p.Src != f.src || p.Dst != f.dst || p.Proto != f.proto || p.Info != f.info || p.Dir != 2 ||
				p.Sec != ts0/nsPerSec || p.NS != ts0%nsPerSec+int64(i) {
				t.Errorf("pieces of %d, frame %d: %s %s %s %q dir %d at %d.%09d\n\twant %s %s %s %q dir 2 at %d.%09d",
					step, i, p.Src, p.Dst, p.Proto, p.Info, p.Dir, p.Sec, p.NS, f.src, f.dst, f.proto, f.info, ts0/nsPerSec, ts0%nsPerSec+int64(i))
			}
		}
		if !slices.Equal(got.Stats, []string{"eth0 15 2 13"}) {
			t.Errorf("ISB: %q", got.Stats)
		}
		if step != len(stream) {
			continue
		}
		if h := got.Packets[len(frames)-1].Hint; h != "out" {
			t.Errorf("SLL2 outgoing packet: direction hint %q", h)
		}
	}

	// Big-endian: the same Ethernet frame in a stream of the other byte
	// order, with microsecond timestamps (no if_tsresol).
	be := beStream(ether(0x0800, ip4("198.18.0.1", "198.18.0.2", 17, udpSeg(1, 2, []byte("x")))))
	got := decodeInPage(tab, be, 5)
	if got.Err != nil || len(got.Packets) != 1 || got.Packets[0].Info != "1 → 2 Len=1" || got.Packets[0].Sec != 1700000000 || got.Packets[0].NS != 123456000 {
		t.Errorf("big-endian stream: %+v", got)
	}
	// Garbage is an error, not a hang or an exception.
	got = decodeInPage(tab, []byte("GET / HTTP/1.1\r\n\r\n"), 3)
	if got.Err == nil || !strings.Contains(*got.Err, "not a pcapng stream") {
		t.Errorf("garbage: %+v", got)
	}

	// The history ring keeps the last HISTORY packets and counts the rest.
	ring := eval[[]int](tab, `(async () => {
		const m = await import('./web/app.js');
		const r = new m.Ring(m.HISTORY);
		for (let i = 1; i <= m.HISTORY + 2345; i++) r.push({no: i});
		return [r.size, r.dropped, r.at(0).no, r.at(r.size - 1).no, r.indexOf(5000, x => x.no), r.indexOf(1, x => x.no)];
	})()`)
	if !slices.Equal(ring, []int{10000, 2345, 2346, 12345, 5000 - 2346, -1}) {
		t.Errorf("ring: %v", ring)
	}
}

// beStream is a big-endian pcapng stream (SHB, IDB without if_tsresol,
// EPB) of one Ethernet frame at 1700000000.123456 s.
func beStream(frame []byte) []byte {
	o := binary.BigEndian
	block := func(typ uint32, body []byte) []byte {
		n := uint32(12 + len(body))
		b := o.AppendUint32(o.AppendUint32(nil, typ), n)
		return o.AppendUint32(append(b, body...), n)
	}
	shb := o.AppendUint32(nil, 0x1a2b3c4d)
	shb = o.AppendUint16(o.AppendUint16(shb, 1), 0)
	shb = o.AppendUint64(shb, ^uint64(0))
	idb := o.AppendUint32(o.AppendUint16(o.AppendUint16(nil, 1), 0), 0)
	ts := uint64(1700000000123456)
	epb := o.AppendUint32(nil, 0)
	epb = o.AppendUint32(o.AppendUint32(epb, uint32(ts>>32)), uint32(ts))
	epb = o.AppendUint32(o.AppendUint32(epb, uint32(len(frame))), uint32(len(frame)))
	epb = append(epb, frame...)
	for len(epb)%4 != 0 {
		epb = append(epb, 0)
	}
	return cat(block(0x0a0d0d0a, shb), block(1, idb), block(6, epb))
}
