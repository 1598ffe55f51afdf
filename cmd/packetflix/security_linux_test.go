package main_test

import (
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestIntegrationListenAndAuth runs the binary: --listen 127.0.0.1 serves
// on that address only (with --port's port); without a token it warns at
// start and /readyz says auth off; with one, no warning, auth on, and the
// scheme is accepted in any case.
func TestIntegrationListenAndAuth(t *testing.T) {
	readyAuth := func(addr string) string {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h struct {
			Checks map[string]struct {
				OK     bool
				Detail string
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
			t.Fatal(err)
		}
		a := h.Checks["auth"]
		if !a.OK {
			t.Errorf("auth check not ok: %+v", a)
		}
		return a.Detail
	}
	const warning = "no --auth-token-file: the API is unauthenticated"

	open := startService(t, "--listen", "127.0.0.1")
	if c, err := net.DialTimeout("tcp", strings.Replace(open.addr, "127.0.0.1", "127.0.0.2", 1), time.Second); err == nil {
		c.Close()
		t.Errorf("--listen 127.0.0.1 also serves 127.0.0.2")
	}
	if d := readyAuth(open.addr); d != "off" {
		t.Errorf("/readyz auth %q without a token, want off", d)
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	locked := startService(t, "--auth-token-file", tokenFile)
	if d := readyAuth(locked.addr); d != "on" {
		t.Errorf("/readyz auth %q with a token, want on", d)
	}
	for auth, want := range map[string]int{"": 401, "Bearer s3cret": 200, "bearer s3cret": 200, "BEARER s3cret": 200, "Bearer s3cre": 401} {
		req, _ := http.NewRequest("GET", "http://"+locked.addr+"/api/v1/info", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Authorization %q: %d, want %d", auth, resp.StatusCode, want)
		}
	}

	// The logs are read once the processes are gone.
	for _, s := range []*service{open, locked} {
		_ = s.cmd.Process.Kill() // only the PIDs this test started
		<-s.exited
	}
	if !strings.Contains(open.logs.String(), warning) {
		t.Errorf("no warning at start without a token:\n%s", open.logs.String())
	}
	if strings.Contains(locked.logs.String(), warning) {
		t.Errorf("warning at start with a token:\n%s", locked.logs.String())
	}
}
