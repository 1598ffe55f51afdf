package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/server"
)

// fromAddr is an HTTP client whose connections come from the loopback
// address src (all of 127/8 is on lo), so a test can be several clients.
func fromAddr(src string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
}

// dialFrom is dial from the loopback address src.
func dialFrom(t *testing.T, ts *httptest.Server, src, query string) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/capture?"+query,
		&websocket.DialOptions{HTTPClient: fromAddr(src)})
	if c != nil {
		t.Cleanup(func() { c.CloseNow() })
	}
	return c, resp, err
}

// TestIntegrationSessionsPerClient: with the defaults (64 sessions, 8 per
// client) one client address gets 8 sessions; its 9th is refused as
// --max-sessions refuses (close 1008 after the upgrade, 429 over plain
// HTTP), and another address still gets one.
func TestIntegrationSessionsPerClient(t *testing.T) {
	h := newHosts(t, false)
	srv, ts := startServer(t)
	query := q("netns", ino(h.a), "nif", "eth0").Encode()
	for i := range server.DefaultMaxSessionsPerClient {
		c, _, err := dialFrom(t, ts, "127.0.0.1", query)
		if err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		// The SHB and IDB arrive once the capture runs.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err = c.Read(ctx)
		cancel()
		if err != nil {
			t.Fatalf("session %d did not start: %v", i+1, err)
		}
	}
	start := time.Now()
	c, _, err := dialFrom(t, ts, "127.0.0.1", query)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _, err = c.Read(ctx)
	refused := time.Since(start)
	want := fmt.Sprintf("too many capture sessions from this client address (--max-sessions-per-client %d), try again later", server.DefaultMaxSessionsPerClient)
	if websocket.CloseStatus(err) != websocket.StatusPolicyViolation || !strings.Contains(err.Error(), want) {
		t.Fatalf("session %d from one address: %v", server.DefaultMaxSessionsPerClient+1, err)
	}

	resp, err := fromAddr("127.0.0.1").Get(ts.URL + "/capture.pcapng?" + query)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "--max-sessions-per-client") {
		t.Fatalf("plain HTTP over the cap: %d %q", resp.StatusCode, body)
	}

	other, _, err := dialFrom(t, ts, "127.0.0.2", query)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := other.Read(ctx); err != nil {
		t.Fatalf("another address was refused: %v", err)
	}
	if n := srv.Sessions(); n != server.DefaultMaxSessionsPerClient+1 {
		t.Errorf("%d sessions, want %d", n, server.DefaultMaxSessionsPerClient+1)
	}
	t.Logf("%d sessions from 127.0.0.1, the next refused %v after dialling; 127.0.0.2 still served (of %d)",
		server.DefaultMaxSessionsPerClient, refused.Round(100*time.Microsecond), server.DefaultMaxSessions)
}

// TestIntegrationOriginRefused: a page from a foreign origin gets 403
// before the upgrade, and no capture is set up for it; the service's own
// origin, an --allow-origin pattern and csharg (no Origin) capture.
func TestIntegrationOriginRefused(t *testing.T) {
	h := newHosts(t, false)
	srv, ts := startServer(t, func(c *server.Config) { c.AllowOrigins = []string{"*.ui.example"} })
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/capture?" + q("netns", ino(h.a), "nif", "eth0").Encode()
	for _, tt := range []struct {
		origin string
		ok     bool
	}{
		{"http://evil.example", false},
		{"null", false},
		{ts.URL, true}, // the page the service would serve itself
		{"https://grafana.ui.example", true},
		{"", true}, // csharg
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		hdr := http.Header{}
		if tt.origin != "" {
			hdr.Set("Origin", tt.origin)
		}
		start := time.Now()
		c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: hdr})
		took := time.Since(start)
		if !tt.ok {
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("Origin %q: err %v, resp %v; want 403", tt.origin, err, resp)
			} else {
				body, _ := io.ReadAll(resp.Body)
				t.Logf("Origin %q: 403 in %v: %s", tt.origin, took.Round(10*time.Microsecond), strings.TrimSpace(string(body)))
			}
			if n := srv.Sessions(); n != 0 {
				t.Errorf("Origin %q: %d sessions", tt.origin, n)
			}
			cancel()
			continue
		}
		if err != nil {
			t.Errorf("Origin %q: %v", tt.origin, err)
			cancel()
			continue
		}
		if _, _, err := c.Read(ctx); err != nil {
			t.Errorf("Origin %q: no stream: %v", tt.origin, err)
		}
		c.Close(websocket.StatusNormalClosure, "")
		cancel()
	}
}

// TestIntegrationProxyKeepsToken: with --proxy-discovery and a token, the
// client's Authorization reaches neither the upstream's HTTP nor its
// WebSocket endpoints.
func TestIntegrationProxyKeepsToken(t *testing.T) {
	var (
		mu   sync.Mutex
		seen = map[string]string{} // path: Authorization the upstream got
	)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path] = r.Header.Get("Authorization") + "|"
		mu.Unlock()
		if r.URL.Path == "/echo" {
			c, err := websocket.Accept(w, r, nil)
			if err != nil {
				return
			}
			defer c.CloseNow()
			typ, b, err := c.Read(r.Context())
			if err == nil {
				_ = c.Write(r.Context(), typ, b)
			}
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"containers": []discovery.Target{}})
	}))
	defer up.Close()
	_, ts := startServer(t, func(c *server.Config) {
		c.AuthToken = "s3cret"
		c.Discovery = &discovery.GhostWire{URL: up.URL}
		c.DiscoveryURL, c.ProxyDiscovery = up.URL, true
	})
	auth := http.Header{"Authorization": {"bearer s3cret"}} // the scheme in lower case, too

	req, _ := http.NewRequest("GET", ts.URL+"/discover/mobyshark", nil)
	req.Header = auth.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("proxied list: %d", resp.StatusCode)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/discover/echo", &websocket.DialOptions{HTTPHeader: auth.Clone()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	c.Close(websocket.StatusNormalClosure, "")

	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/mobyshark", "/echo"} {
		if got, ok := seen[p]; !ok || got != "|" {
			t.Errorf("upstream %s: Authorization %q (seen %v)", p, strings.TrimSuffix(got, "|"), ok)
		}
	}
}
