package server

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"go.uber.org/zap/zaptest"
	"gopkg.in/yaml.v3"
)

// upgradeRequest is a valid WebSocket upgrade of /capture.
func upgradeRequest(host, origin string) *http.Request {
	r := httptest.NewRequest("GET", "http://"+host+"/capture", nil)
	r.Header.Set("Connection", "Upgrade")
	r.Header.Set("Upgrade", "websocket")
	r.Header.Set("Sec-WebSocket-Version", "13")
	r.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	return r
}

// Test_checkOrigin: guard's rule, and coder/websocket's Accept with the
// same OriginPatterns, agree on every case (Accept answers 403 exactly
// when checkOrigin refuses; otherwise it fails later, at the hijack a
// recorder cannot do).
func Test_checkOrigin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host, origin string
		patterns           []string
		ok                 bool
	}{
		{"no origin (csharg, curl)", "node:5001", "", nil, true},
		{"same host", "node:5001", "http://node:5001", nil, true},
		{"same host, other case", "NODE:5001", "http://node:5001", nil, true},
		{"same host, https", "node:5001", "https://node:5001", nil, true},
		{"foreign", "node:5001", "http://evil.example", nil, false},
		{"same name, other port", "node:5001", "http://node:8080", nil, false},
		{"null (sandboxed page, file://)", "node:5001", "null", nil, false},
		{"not a URL", "node:5001", "http://[::1", nil, false},
		{"allowed by host pattern", "node:5001", "https://ui.example.com", []string{"*.example.com"}, true},
		{"pattern with port", "node:5001", "http://ui.example.com:8080", []string{"*.example.com:8080"}, true},
		{"pattern needs the port", "node:5001", "http://ui.example.com:8080", []string{"*.example.com"}, false},
		{"pattern with scheme", "node:5001", "https://ui.example", []string{"https://ui.example"}, true},
		{"pattern with scheme, other scheme", "node:5001", "http://ui.example", []string{"https://ui.example"}, false},
		{"pattern case", "node:5001", "https://UI.Example", []string{"ui.example"}, true},
		{"suffix is not a subdomain", "node:5001", "https://evilexample.com", []string{"*.example.com"}, false},
		{"second pattern", "node:5001", "https://b.example", []string{"a.example", "b.example"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := checkOrigin(upgradeRequest(tt.host, tt.origin), tt.patterns)
			if (err == nil) != tt.ok {
				t.Fatalf("checkOrigin: %v, want ok %v", err, tt.ok)
			}
			rec := httptest.NewRecorder()
			_, aerr := websocket.Accept(rec, upgradeRequest(tt.host, tt.origin), &websocket.AcceptOptions{OriginPatterns: tt.patterns})
			if aerr == nil {
				t.Fatal("Accept succeeded on a recorder")
			}
			if libOK := rec.Code != http.StatusForbidden; libOK != tt.ok {
				t.Fatalf("coder/websocket says ok=%v (%d %v), checkOrigin ok=%v", libOK, rec.Code, aerr, tt.ok)
			}
		})
	}
}

func Test_hostAllowed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, host string
		patterns   []string
		ok         bool
	}{
		{"no --allow-host: any", "evil.example", nil, true},
		{"listed", "node.example:5001", []string{"node.example"}, true},
		{"listed, no port", "node.example", []string{"node.example"}, true},
		{"case", "NODE.example:5001", []string{"node.example"}, true},
		{"trailing dot", "node.example.:5001", []string{"node.example"}, true},
		{"glob", "n1.nodes.example:5001", []string{"*.nodes.example"}, true},
		{"rebinding name", "evil.example:5001", []string{"node.example"}, false},
		{"pattern with port", "node.example:5001", []string{"node.example:5001"}, true},
		{"pattern with port, other port", "node.example:6000", []string{"node.example:5001"}, false},
		{"IPv4 literal (probes, curl)", "10.0.0.5:5001", []string{"node.example"}, true},
		{"IPv6 literal", "[fd00::5]:5001", []string{"node.example"}, true},
		{"localhost", "localhost:5001", []string{"node.example"}, true},
		{"empty Host", "", []string{"node.example"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := hostAllowed(tt.host, tt.patterns); got != tt.ok {
				t.Fatalf("hostAllowed(%q, %q) = %v, want %v", tt.host, tt.patterns, got, tt.ok)
			}
		})
	}
}

func Test_clientKey(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ remote, want string }{
		{"198.18.0.1:40000", "198.18.0.1"},
		{"198.18.0.1:40001", "198.18.0.1"},
		{"[::ffff:198.18.0.1]:40000", "198.18.0.1"},
		{"[2001:db8:1:2:3:4:5:6]:40000", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:40000", "2001:db8:1:2::/64"},
		{"[fe80::1%eth0]:40000", "fe80::/64"},
		{"not an address", "not an address"},
	} {
		if got := clientKey(tt.remote); got != tt.want {
			t.Errorf("clientKey(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
}

func Test_bearerToken(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		header, tok string
		ok          bool
	}{
		{"Bearer s3cret", "s3cret", true},
		{"bearer s3cret", "s3cret", true},
		{"BEARER s3cret", "s3cret", true},
		{"BeArEr  s3cret", "s3cret", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Basic czNjcmV0", "", false},
		{"s3cret", "", false},
		{"", "", false},
	} {
		tok, ok := bearerToken(tt.header)
		if tok != tt.tok || ok != tt.ok {
			t.Errorf("bearerToken(%q) = %q, %v, want %q, %v", tt.header, tok, ok, tt.tok, tt.ok)
		}
	}
}

// Test_clientCapErrors: the per-client cap is refused as --max-sessions
// is, with its own reason: close 1008 after an upgrade, 429 over HTTP.
func Test_clientCapErrors(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("%w (--max-sessions-per-client %d)", errTooManyClient, 8)
	code, why := closeFor(err)
	if code != websocket.StatusPolicyViolation || why != "too many capture sessions from this client address (--max-sessions-per-client 8), try again later" {
		t.Errorf("closeFor = %d %q", code, why)
	}
	if c := httpStatus(err); c != http.StatusTooManyRequests {
		t.Errorf("httpStatus = %d, want 429", c)
	}
}

// fakeDiscovery answers at once with nothing.
type fakeDiscovery struct{}

func (fakeDiscovery) List(context.Context) ([]discovery.Target, error) { return nil, nil }
func (fakeDiscovery) Lookup(context.Context, string, string) (discovery.Target, error) {
	return discovery.Target{}, discovery.ErrAmbiguous
}

func newTestServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	_, ts := startTestServer(t, cfg)
	return ts
}

// startTestServer serves cfg (with a test logger, and a discovery that
// knows nothing unless cfg has one) until the test ends; a shutdown that
// fails fails the test.
func startTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	cfg.Log = zaptest.NewLogger(t)
	if cfg.Discovery == nil {
		cfg.Discovery = fakeDiscovery{}
	}
	srv := New(cfg)
	ts := httptest.NewUnstartedServer(nil)
	srv.Configure(ts.Config)
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		ts.Close()
	})
	return srv, ts
}

// do sends one request and returns the status and body.
func do(t *testing.T, method, url string, h http.Header) (int, string) {
	t.Helper()
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		r.Header[k] = v
	}
	if host := h.Get("Host"); host != "" {
		r.Host = host
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestGuard: Origin and Host are checked on every path, before the token,
// with a message that says what to change.
func TestGuard(t *testing.T) {
	t.Parallel()
	ts := newTestServer(t, Config{AuthToken: "s3cret", AllowOrigins: []string{"*.ui.example"}, AllowHosts: []string{"node.example"}})
	tok := "Bearer s3cret"
	for _, tt := range []struct {
		name, method, path, host, origin, auth string
		want                                   int
		body                                   string
	}{
		{"csharg: no Origin, token", "GET", "/api/v1/info", "", "", tok, 200, `"status":true`},
		{"same origin", "GET", "/api/v1/info", "node.example:5001", "http://node.example:5001", tok, 200, ""},
		{"allowed origin", "GET", "/api/v1/info", "node.example:5001", "https://a.ui.example", tok, 200, ""},
		{"foreign origin, WebSocket path", "GET", "/capture", "node.example:5001", "http://evil.example", tok, 403, "--allow-origin"},
		{"foreign origin, plain capture", "GET", "/capture.pcapng?netns=1", "node.example:5001", "http://evil.example", tok, 403, `origin "http://evil.example" is not allowed`},
		{"foreign origin, DELETE", "DELETE", "/api/v1/captures/x", "node.example:5001", "http://evil.example", tok, 403, `"status":false`},
		{"foreign origin, discovery", "GET", "/discover/mobyshark", "node.example:5001", "http://evil.example", tok, 403, ""},
		{"foreign origin, open path", "GET", "/version", "node.example:5001", "http://evil.example", "", 403, ""},
		{"foreign origin, no token: still 403", "GET", "/capture", "node.example:5001", "http://evil.example", "", 403, ""},
		{"rebinding: Origin equals a foreign Host", "GET", "/api/v1/info", "evil.example:5001", "http://evil.example:5001", tok, 421, "--allow-host"},
		{"rebinding, open path", "GET", "/version", "evil.example:5001", "", "", 421, ""},
		{"address literal Host (probe)", "GET", "/healthz", "10.0.0.5:5001", "", "", 200, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range map[string]string{"Host": tt.host, "Origin": tt.origin, "Authorization": tt.auth} {
				if v != "" {
					h.Set(k, v)
				}
			}
			code, body := do(t, tt.method, ts.URL+tt.path, h)
			if code != tt.want || !strings.Contains(body, tt.body) {
				t.Fatalf("%s %s: %d %q, want %d containing %q", tt.method, tt.path, code, body, tt.want, tt.body)
			}
		})
	}

	// A real WebSocket from a foreign page: refused before the upgrade.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/capture?netns=1", &websocket.DialOptions{
		HTTPHeader: http.Header{"Origin": {"http://evil.example"}, "Authorization": {tok}},
	})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("WebSocket from a foreign origin: err %v, resp %v", err, resp)
	}
}

// TestOpenAPISecurity reads docs/openapi.yaml: every operation marked
// `security: []` answers without a token, every other one answers 401
// without one (and not 401 with the token, the scheme in any case); and
// the marked operations are exactly openPaths.
func TestOpenAPISecurity(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Paths map[string]map[string]yaml.Node `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	type op struct {
		method, path string
		open         bool
	}
	var ops []op
	openInDoc := map[string]bool{}
	for p, methods := range doc.Paths {
		for m, n := range methods {
			if m == "parameters" || strings.HasPrefix(m, "x-") {
				continue
			}
			var o struct {
				Security *[]map[string][]string `yaml:"security"`
			}
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s %s: %v", m, p, err)
			}
			// Only an explicit empty list opens an operation; an absent
			// one inherits the document's (token when configured).
			open := o.Security != nil && len(*o.Security) == 0
			if open {
				openInDoc[p] = true
			}
			ops = append(ops, op{strings.ToUpper(m), p, open})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].path+ops[i].method < ops[j].path+ops[j].method })
	var inCode []string
	for p := range openPaths {
		inCode = append(inCode, p)
	}
	var inDoc []string
	for p := range openInDoc {
		inDoc = append(inDoc, p)
	}
	slices.Sort(inCode)
	slices.Sort(inDoc)
	if !slices.Equal(inCode, inDoc) {
		t.Errorf("open without a token: openPaths %v, openapi.yaml `security: []` %v", inCode, inDoc)
	}

	ts := newTestServer(t, Config{AuthToken: "s3cret"})
	for _, o := range ops {
		path := strings.ReplaceAll(o.path, "{id}", "nosuch")
		code, body := do(t, o.method, ts.URL+path, nil)
		switch {
		case o.open && code == http.StatusUnauthorized:
			t.Errorf("%s %s is `security: []` in openapi.yaml but answers 401 without a token", o.method, o.path)
		case !o.open && code != http.StatusUnauthorized:
			t.Errorf("%s %s needs a token by openapi.yaml but answers %d without one: %.100s", o.method, o.path, code, body)
		}
		for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
			if code, _ := do(t, o.method, ts.URL+path, http.Header{"Authorization": {scheme + " s3cret"}}); code == http.StatusUnauthorized {
				t.Errorf("%s %s with %q: 401", o.method, o.path, scheme)
			}
		}
		if !o.open {
			if code, _ := do(t, o.method, ts.URL+path, http.Header{"Authorization": {"Bearer s3cret2"}}); code != http.StatusUnauthorized {
				t.Errorf("%s %s with a wrong token: %d", o.method, o.path, code)
			}
		}
	}
	if len(ops) < 10 {
		t.Fatalf("only %d operations read from openapi.yaml", len(ops))
	}
}

// TestReadyzAuth: /readyz reports the auth check, which never fails
// readiness.
func TestReadyzAuth(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		token, want string
	}{{"", `"auth":{"ok":true,"detail":"off"}`}, {"s3cret", `"auth":{"ok":true,"detail":"on"}`}} {
		ts := newTestServer(t, Config{AuthToken: tt.token})
		_, body := do(t, "GET", ts.URL+"/readyz", nil)
		if !strings.Contains(body, tt.want) {
			t.Errorf("token %q: /readyz %s lacks %s", tt.token, body, tt.want)
		}
	}
}

// TestTokenSubprotocol: a page's WebSocket, which cannot send an
// Authorization header, offers the token as a subprotocol; the server
// selects the plain "packetflix" one (never echoing the token), and a
// wrong token is refused before the upgrade.
func TestTokenSubprotocol(t *testing.T) {
	ts := newTestServer(t, Config{AuthToken: "s3cret"})
	dial := func(token string) (*websocket.Conn, *http.Response, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/capture", &websocket.DialOptions{
			Subprotocols: []string{wsProtocol, tokenProtocolPrefix + base64.RawURLEncoding.EncodeToString([]byte(token))},
		})
	}
	c, _, err := dial("s3cret")
	if err != nil {
		t.Fatalf("token as subprotocol: %v", err)
	}
	if c.Subprotocol() != wsProtocol {
		t.Errorf("selected subprotocol %q, want %q", c.Subprotocol(), wsProtocol)
	}
	// The request had no netns: refused after the upgrade, as always.
	_, _, err = c.Read(context.Background())
	if code := websocket.CloseStatus(err); code != websocket.StatusPolicyViolation {
		t.Errorf("close %v, want 1008", err)
	}
	if _, resp, err := dial("wrong"); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong token as subprotocol: err %v, resp %v", err, resp)
	}
}
