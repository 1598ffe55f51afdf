package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/server"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// getJSON fetches url (with method) and decodes the JSON answer.
func getJSON(t *testing.T, method, url string, hdr http.Header) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s %s: %d, not JSON: %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

// TestIntegrationManagementAPI lists a live capture, reads its counters,
// deletes it and sees its client get the ISBs and "stopped by operator".
func TestIntegrationManagementAPI(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t, func(c *server.Config) { c.AuthToken = "tok" })
	auth := http.Header{"Authorization": {"Bearer tok"}}
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0", "filter", "udp", "chaste", "", "snaplen", "1500"), auth)
	cl.waitLive()
	send(t, h.a.UDP("198.18.1.1:4000"), "198.18.1.2:4000", 'M', 20)
	cl.waitPackets(20)

	code, body := getJSON(t, "GET", ts.URL+"/api/v1/captures", auth)
	caps, _ := body["captures"].([]any)
	if code != 200 || body["status"] != true || len(caps) != 1 {
		t.Fatalf("list: %d %v", code, body)
	}
	c := caps[0].(map[string]any)
	id := c["id"].(string)
	target := c["target"].(map[string]any)
	if target["netns"] != float64(h.a.Inode) || c["filter"] != "udp" || c["snaplen"] != float64(1500) ||
		c["promiscuous"] != false || c["transport"] != "websocket" || !strings.HasPrefix(c["client"].(string), "127.0.0.1:") {
		t.Fatalf("capture %v", c)
	}
	// Counters are live (kernel ones are read once a second).
	waitUntil(t, "live counters", func() bool {
		_, b := getJSON(t, "GET", ts.URL+"/api/v1/captures/"+id, auth)
		ifs := b["capture"].(map[string]any)["interfaces"].([]any)
		eth0 := ifs[0].(map[string]any)
		return eth0["name"] == "eth0" && eth0["packets"] == float64(20) && eth0["kernel_received"] == float64(20) && eth0["bytes"].(float64) > 0
	})

	code, body = getJSON(t, "DELETE", ts.URL+"/api/v1/captures/"+id, auth)
	if code != 200 || body["status"] != true {
		t.Fatalf("delete: %d %v", code, body)
	}
	cc, why := cl.closeStatus()
	if cc != websocket.StatusNormalClosure || why != "stopped by operator" {
		t.Fatalf("client got %d %q", cc, why)
	}
	if s := parse(t, cl.bytes()); len(s.isbs) != 1 || s.isbs[0].Stats.Delivered != 20 {
		t.Fatalf("ISBs %d", len(s.isbs))
	}
	for _, tc := range []struct {
		method, path string
		hdr          http.Header
		code         int
		err          string
	}{
		{"GET", "/api/v1/captures/" + id, auth, 404, fmt.Sprintf("no capture with id %q", id)},
		{"DELETE", "/api/v1/captures/" + id, auth, 404, fmt.Sprintf("no capture with id %q", id)},
		{"GET", "/api/v1/nothing", auth, 404, "no API endpoint GET /api/v1/nothing"},
		{"GET", "/api/v1/captures", nil, 401, "unauthorized"},
	} {
		code, body := getJSON(t, tc.method, ts.URL+tc.path, tc.hdr)
		if code != tc.code || body["status"] != false || !strings.HasPrefix(body["error"].(string), tc.err) {
			t.Errorf("%s %s: %d %v", tc.method, tc.path, code, body)
		}
	}

	code, body = getJSON(t, "GET", ts.URL+"/api/v1/info", auth)
	info := body["info"].(map[string]any)
	if code != 200 || info["name"] != "packetflix" || info["version"] != "1.2.3-test" || !strings.HasPrefix(info["go_version"].(string), "go") ||
		info["uptime_seconds"].(float64) <= 0 || info["captures"] != float64(0) {
		t.Fatalf("info %d %v", code, body)
	}
	resp, err := http.DefaultClient.Do(func() *http.Request {
		r, _ := http.NewRequest("GET", ts.URL+"/api/v1/config", nil)
		r.Header.Set("Authorization", "Bearer tok")
		return r
	}())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.Contains(string(raw), "tok\"") || !strings.Contains(string(raw), `"auth_required":true`) || !strings.Contains(string(raw), `"max_sessions":64`) {
		t.Fatalf("config %d %s", resp.StatusCode, raw)
	}
}

func TestIntegrationHealth(t *testing.T) {
	_, ts := startServer(t, func(c *server.Config) { c.AuthToken = "tok" }) // probes need no token
	code, body := getJSON(t, "GET", ts.URL+"/healthz", nil)
	if code != 200 || body["status"] != "ok" {
		t.Fatalf("healthz %d %v", code, body)
	}
	code, body = getJSON(t, "GET", ts.URL+"/readyz", nil)
	checks := body["checks"].(map[string]any)
	if code != 200 || body["status"] != "ok" || len(checks) != 6 || checks["auth"].(map[string]any)["detail"] != "on" || checks["cap_sys_admin"].(map[string]any)["ok"] != true || checks["discovery"].(map[string]any)["ok"] != true {
		t.Fatalf("readyz %d %v", code, body)
	}
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	_, ts2 := startServer(t, func(c *server.Config) { c.Discovery = &discovery.GhostWire{URL: gone.URL} })
	code, body = getJSON(t, "GET", ts2.URL+"/readyz", nil)
	d := body["checks"].(map[string]any)["discovery"].(map[string]any)
	if code != 503 || body["status"] != "failing" || d["ok"] != false || !strings.Contains(d["detail"].(string), "discovery service unavailable") {
		t.Fatalf("readyz with GhostWire down: %d %v", code, body)
	}
}

// TestIntegrationMetrics: /metrics parses as Prometheus text and its
// counters match the packets sent.
func TestIntegrationMetrics(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	scrape := func() map[string]*dto.MetricFamily {
		resp, err := http.Get(ts.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		p := expfmt.NewTextParser(model.UTF8Validation)
		mf, err := p.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("/metrics does not parse: %v", err)
		}
		return mf
	}
	val := func(mf map[string]*dto.MetricFamily, name, label, value string) float64 {
		f := mf[name]
		if f == nil {
			t.Fatalf("no metric %s", name)
		}
		for _, m := range f.Metric {
			if label != "" {
				ok := false
				for _, lp := range m.Label {
					ok = ok || (lp.GetName() == label && lp.GetValue() == value)
				}
				if !ok {
					continue
				}
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			case m.Histogram != nil:
				return float64(m.Histogram.GetSampleCount())
			}
		}
		t.Fatalf("no %s{%s=%q}", name, label, value)
		return 0
	}
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0", "filter", "udp"), nil)
	cl.waitLive()
	send(t, h.a.UDP("198.18.1.1:4000"), "198.18.1.2:4000", 'P', 50)
	cl.waitPackets(50)
	if mf := scrape(); val(mf, "packetflix_sessions_active", "", "") != 1 || val(mf, "packetflix_packets_delivered_total", "", "") != 50 {
		t.Fatalf("live: active %v delivered %v", val(mf, "packetflix_sessions_active", "", ""), val(mf, "packetflix_packets_delivered_total", "", ""))
	}
	cl.stop()
	bad := dial(t, ts, q("netns", "abc"), nil)
	bad.closeStatus()
	waitUntil(t, "sessions counted and gone", func() bool {
		mf := scrape()
		return val(mf, "packetflix_sessions_total", "outcome", "client") == 1 &&
			val(mf, "packetflix_sessions_total", "outcome", "refused") == 1 &&
			val(mf, "packetflix_sessions_active", "", "") == 0
	})
	mf := scrape()
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"packetflix_sessions_active", "", "", 0},
		{"packetflix_packets_delivered_total", "", "", 50},
		{"packetflix_kernel_received_total", "", "", 50},
		{"packetflix_kernel_drops_total", "", "", 0},
		{"packetflix_sessions_total", "outcome", "client", 1},
		{"packetflix_sessions_total", "outcome", "refused", 1},
		{"packetflix_sessions_total", "outcome", "error", 0},
		{"packetflix_capture_setup_seconds", "", "", 1},
		{"packetflix_send_queue_bytes", "", "", 0},
	} {
		if got := val(mf, c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}
	if b := val(mf, "packetflix_bytes_delivered_total", "", ""); b != 50*(14+20+8+40) {
		t.Errorf("bytes delivered %v", b)
	}
}

// TestIntegrationPlainHTTPCapture: curl gets a pcapng stream over plain
// HTTP that ends after count= (or duration=) with ISBs, and tshark reads it.
func TestIntegrationPlainHTTPCapture(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("curl is not installed")
		}
		t.Skip("curl not installed")
	}
	file := filepath.Join(t.TempDir(), "c.pcapng")
	url := fmt.Sprintf("%s/capture.pcapng?netns=%d&nif=eth0&filter=udp&count=10", ts.URL, h.a.Inode)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, curl, "-sSN", "--fail", "-o", file, "-D", "-", url)
	var headers strings.Builder
	cmd.Stdout = &headers
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ua := h.a.UDP("198.18.1.1:4000")
	waitUntil(t, "stream started", func() bool { st, err := os.Stat(file); return err == nil && st.Size() > 0 })
	send(t, ua, "198.18.1.2:4000", 'H', 20)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl: %v\n%s", err, headers.String())
	}
	data, _ := os.ReadFile(file)
	s := parse(t, data)
	if len(s.pkts) != 10 || len(s.isbs) != 1 || s.isbs[0].Stats.Delivered != 10 {
		t.Fatalf("%d packets, %d ISBs (%+v)", len(s.pkts), len(s.isbs), s.isbs)
	}
	if !strings.Contains(headers.String(), "application/x-pcapng") {
		t.Fatalf("headers:\n%s", headers.String())
	}
	checkWireshark(t, data, []string{"eth0"}, 10)

	// duration= ends a quiet capture, still with its ISB.
	resp, err := http.Get(fmt.Sprintf("%s/capture.pcapng?netns=%d&nif=eth0&duration=300ms", ts.URL, h.a.Inode))
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if s := parse(t, data); resp.StatusCode != 200 || len(s.isbs) != 1 || resp.Trailer.Get("Packetflix-End-Reason") != "capture ended" {
		t.Fatalf("duration: %d, %d ISBs, trailer %q", resp.StatusCode, len(s.isbs), resp.Trailer.Get("Packetflix-End-Reason"))
	}

	for _, tc := range []struct {
		query string
		code  int
		text  string
	}{
		{"netns=abc", 400, "netns must be a network namespace inode number"},
		{"netns=4294967295", 404, "no network namespace with inode 4294967295"},
		{fmt.Sprintf("netns=%d&nif=nope0", h.a.Inode), 404, `no network interface "nope0"`},
		{fmt.Sprintf("netns=%d&filter=udp+prot", h.a.Inode), 400, "invalid capture filter"},
		{fmt.Sprintf("netns=%d&count=0", h.a.Inode), 400, "count must be a positive number"},
	} {
		resp, err := http.Get(ts.URL + "/capture.pcapng?" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.Contains(string(b), tc.text) {
			t.Errorf("%s: %d %q", tc.query, resp.StatusCode, b)
		}
	}
}
