package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/server"
	"gopkg.in/yaml.v3"
)

// TestIntegrationOpenAPI checks docs/openapi.yaml against the handlers:
// every route and status code the file lists is produced by a real request
// here, and the file lists no route this table does not know.
func TestIntegrationOpenAPI(t *testing.T) {
	raw, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	var ops []string
	for path, methods := range doc.Paths {
		for m, op := range methods {
			o, ok := op.(map[string]any)
			if m == "parameters" || !ok {
				continue
			}
			responses, _ := o["responses"].(map[string]any)
			for code := range responses {
				ops = append(ops, strings.ToUpper(m)+" "+path+" "+code)
			}
		}
	}
	// DELETE last: it ends the capture the GETs look at.
	sort.Slice(ops, func(i, j int) bool {
		di, dj := strings.HasPrefix(ops[i], "DELETE"), strings.HasPrefix(ops[j], "DELETE")
		if di != dj {
			return dj
		}
		return ops[i] < ops[j]
	})

	h := newHosts(t, false)
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	deadGW := func(c *server.Config) { c.Discovery = &discovery.GhostWire{URL: gone.URL, Timeout: time.Second} }
	_, open := startServer(t)
	_, locked := startServer(t, func(c *server.Config) { c.AuthToken = "tok" })
	_, dead := startServer(t, deadGW)
	_, full := startServer(t, func(c *server.Config) { c.MaxSessions = 1 })
	_, perClient := startServer(t, func(c *server.Config) { c.MaxSessionsPerClient = 1 })
	_, broken := startServer(t, func(c *server.Config) { c.Ring = capture.RingOptions{BlockSize: 1000} }) // not a page multiple: setup fails
	_, deny := startServer(t, func(c *server.Config) { c.DenyHostNetNS = true })
	_, flowFull := startServer(t, func(c *server.Config) { c.MaxFlowTargets = 1 })
	// Flow captures of a: one to delete, one that fills flowFull.
	flowsOf := func(name string) string { return fmt.Sprintf("G.V().Has('Name', '%s')", name) }
	flowID := startFlows(t, open, flowsOf(h.a.Name))
	startFlows(t, flowFull, flowsOf(h.a.Name))
	hold := dial(t, full, q("netns", ino(h.a)), nil)
	hold.waitLive()
	holdC := dial(t, perClient, q("netns", ino(h.a)), nil)
	holdC.waitLive()
	running := dial(t, open, q("netns", ino(h.a)), nil)
	running.waitLive()
	var id string
	waitUntil(t, "capture listed", func() bool {
		_, b := getJSON(t, "GET", open.URL+"/api/v1/captures", nil)
		if cs, _ := b["captures"].([]any); len(cs) == 1 {
			id = cs[0].(map[string]any)["id"].(string)
			return true
		}
		return false
	})
	self, _ := os.Readlink("/proc/self/ns/net")
	selfIno := strings.TrimSuffix(strings.TrimPrefix(self, "net:["), "]")
	pc := "/capture.pcapng?count=1&duration=200ms&netns="

	type req struct {
		srv    *httptest.Server
		method string
		path   string
	}
	cases := map[string]req{
		"GET /version 200":                 {open, "GET", "/version"},
		"GET /capture 426":                 {open, "GET", "/capture"},
		"GET /capture 401":                 {locked, "GET", "/capture"},
		"GET /capture.pcapng 200":          {open, "GET", pc + ino(h.a)},
		"GET /capture.pcapng 400":          {open, "GET", pc + "abc"},
		"GET /capture.pcapng 401":          {locked, "GET", pc + ino(h.a)},
		"GET /capture.pcapng 403":          {deny, "GET", pc + selfIno},
		"GET /capture.pcapng 404":          {open, "GET", pc + "4294967295"},
		"GET /capture.pcapng 500":          {broken, "GET", pc + ino(h.a)},
		"GET /capture.pcapng 502":          {dead, "GET", "/capture.pcapng?container=%7B%22name%22%3A%22x%22%7D"},
		"GET /capture.pcapng 503":          {full, "GET", pc + ino(h.a)},
		"GET /capture.pcapng 429":          {perClient, "GET", pc + ino(h.a)},
		"GET /discover/mobyshark 200":      {open, "GET", "/discover/mobyshark"},
		"GET /discover/mobyshark 401":      {locked, "GET", "/discover/mobyshark"},
		"GET /discover/mobyshark 502":      {dead, "GET", "/discover/mobyshark"},
		"GET /mobyshark 200":               {open, "GET", "/mobyshark"},
		"GET /mobyshark 401":               {locked, "GET", "/mobyshark"},
		"GET /mobyshark 502":               {dead, "GET", "/mobyshark"},
		"GET /api/v1/captures 200":         {open, "GET", "/api/v1/captures"},
		"GET /api/v1/captures 401":         {locked, "GET", "/api/v1/captures"},
		"GET /api/v1/captures/{id} 200":    {open, "GET", "/api/v1/captures/" + id},
		"GET /api/v1/captures/{id} 401":    {locked, "GET", "/api/v1/captures/x"},
		"GET /api/v1/captures/{id} 404":    {open, "GET", "/api/v1/captures/nope"},
		"DELETE /api/v1/captures/{id} 401": {locked, "DELETE", "/api/v1/captures/x"},
		"DELETE /api/v1/captures/{id} 404": {open, "DELETE", "/api/v1/captures/nope"},
		"DELETE /api/v1/captures/{id} 200": {open, "DELETE", "/api/v1/captures/" + id},
		"GET /api/v1/info 200":             {open, "GET", "/api/v1/info"},
		"GET /api/v1/info 401":             {locked, "GET", "/api/v1/info"},
		"GET /api/v1/config 200":           {open, "GET", "/api/v1/config"},
		"GET /api/v1/config 401":           {locked, "GET", "/api/v1/config"},
		"GET /healthz 200":                 {locked, "GET", "/healthz"},
		"GET /readyz 200":                  {locked, "GET", "/readyz"},
		"GET /readyz 503":                  {dead, "GET", "/readyz"},
		"GET /metrics 200":                 {locked, "GET", "/metrics"},
		"GET / 200":                        {locked, "GET", "/"},
		"GET /web/app.js 200":              {locked, "GET", "/web/app.js"},
		"GET /web/style.css 200":           {locked, "GET", "/web/style.css"},
		"GET /web/icon.svg 200":            {locked, "GET", "/web/icon.svg"},

		// Skydive's flow API (flows.go); the bodies are in queries.
		"POST /api/capture 200":        {open, "POST", "/api/capture"},
		"POST /api/capture 400":        {open, "POST", "/api/capture"},
		"POST /api/capture 401":        {locked, "POST", "/api/capture"},
		"POST /api/capture 409":        {open, "POST", "/api/capture"},
		"POST /api/capture 502":        {dead, "POST", "/api/capture"},
		"POST /api/capture 503":        {flowFull, "POST", "/api/capture"},
		"GET /api/capture 200":         {open, "GET", "/api/capture"},
		"GET /api/capture 401":         {locked, "GET", "/api/capture"},
		"DELETE /api/capture/{id} 200": {open, "DELETE", "/api/capture/" + flowID},
		"DELETE /api/capture/{id} 401": {locked, "DELETE", "/api/capture/x"},
		"DELETE /api/capture/{id} 404": {open, "DELETE", "/api/capture/nope"},
		"POST /api/topology 200":       {open, "POST", "/api/topology"},
		"POST /api/topology 400":       {open, "POST", "/api/topology"},
		"POST /api/topology 401":       {locked, "POST", "/api/topology"},
		"POST /api/topology 502":       {dead, "POST", "/api/topology"},
		"GET /ws/subscriber/flow 426":  {open, "GET", "/ws/subscriber/flow"},
		"GET /ws/subscriber/flow 401":  {locked, "GET", "/ws/subscriber/flow"},
	}
	// The GremlinQuery of each POST (200 runs before 409, which finds
	// a's target taken by flowID).
	queries := map[string]string{
		"POST /api/capture 200": flowsOf(h.b.Name), "POST /api/capture 400": "G.V().Out()",
		"POST /api/capture 401": "G.V()", "POST /api/capture 409": flowsOf(h.a.Name),
		"POST /api/capture 502": "G.V()", "POST /api/capture 503": flowsOf(h.b.Name),
		"POST /api/topology 200": "G.Flows().Count()", "POST /api/topology 400": "G.V().Out()",
		"POST /api/topology 401": "G.V()", "POST /api/topology 502": "G.V()",
	}
	for _, op := range ops {
		if op == "GET /ws/subscriber/flow 101" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(open.URL, "http")+"/ws/subscriber/flow", nil)
			cancel()
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("%s: %v %v", op, resp, err)
				continue
			}
			c.CloseNow()
			continue
		}
		if op == "GET /ws/subscriber/flow 403" {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(open.URL, "http")+"/ws/subscriber/flow",
				&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
			cancel()
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %v %v", op, resp, err)
			}
			continue
		}
		if op == "GET /capture 101" {
			// The WebSocket upgrade itself.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(open.URL, "http")+"/capture?netns="+ino(h.a), nil)
			cancel()
			if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
				t.Errorf("%s: %v %v", op, resp, err)
				continue
			}
			c.CloseNow()
			continue
		}
		if op == "GET /capture 403" {
			// An upgrade from a foreign web page.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(open.URL, "http")+"/capture?netns="+ino(h.a),
				&websocket.DialOptions{HTTPHeader: http.Header{"Origin": {"http://evil.example"}}})
			cancel()
			if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s: %v %v", op, resp, err)
			}
			continue
		}
		rq, ok := cases[op]
		if !ok {
			t.Errorf("openapi.yaml lists %q, which this test cannot produce: add a case or fix the file", op)
			continue
		}
		want, _ := strconv.Atoi(op[strings.LastIndexByte(op, ' ')+1:])
		var reqBody io.Reader
		if q, ok := queries[op]; ok {
			b, _ := json.Marshal(map[string]string{"GremlinQuery": q})
			reqBody = bytes.NewReader(b)
		}
		r, _ := http.NewRequest(rq.method, rq.srv.URL+rq.path, reqBody)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: got %d: %s", op, resp.StatusCode, clipBody(body))
		}
		delete(cases, op)
	}
	for op := range cases {
		t.Errorf("the handlers answer %q, which openapi.yaml does not list", op)
	}
	hold.stop()
	holdC.stop()
}

func clipBody(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return fmt.Sprintf("%q", b)
}
