package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// defaultPort is the service's default API port (cmd/packetflix --port).
const defaultPort = "5001"

// listTimeout bounds a /mobyshark request; the service bounds its own
// discovery to a few seconds.
const listTimeout = 30 * time.Second

// dialTimeout bounds the WebSocket handshake of a capture; the capture
// itself then runs as long as it runs.
const dialTimeout = 30 * time.Second

// readLimit is the largest WebSocket message pfcat accepts. The service
// sends messages of up to 256 KiB (one session buffer, README "Buffering
// per session"); the margin keeps a future larger buffer from breaking
// old clients.
const readLimit = 4 << 20

// service is the packetflix service pfcat talks to. Its methods may be
// called concurrently.
type service struct {
	base  *url.URL    // http or https, with any path prefix of a proxy in front
	token string      // "" when the service runs without one
	tls   *tls.Config // for https; nil: the system's roots
}

// serviceURL turns --addr into the service's base URL.
func serviceURL(addr string) (*url.URL, error) {
	if addr == "" {
		return nil, errors.New("empty address")
	}
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, err
		}
		switch u.Scheme {
		case "http", "https":
		case "ws":
			u.Scheme = "http"
		case "wss":
			u.Scheme = "https"
		default:
			return nil, fmt.Errorf("scheme %q: want http or https", u.Scheme)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("%q has no host", addr)
		}
		if u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%q: a service URL takes no query or fragment", addr)
		}
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = ""
		return u, nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		// A bare host or IPv6 address: the default port.
		host, port = strings.Trim(addr, "[]"), defaultPort
	}
	if host == "" {
		return nil, fmt.Errorf("%q has no host", addr)
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}

// endpoint is the URL of path on the service, with query q.
func (s *service) endpoint(path string, q url.Values) *url.URL {
	u := *s.base
	u.Path += path
	u.RawQuery = q.Encode()
	return &u
}

func (s *service) header() http.Header {
	h := http.Header{}
	if s.token != "" {
		h.Set("Authorization", "Bearer "+s.token)
	}
	return h
}

// target is one capture target as /mobyshark lists it. Raw is the
// service's own JSON of it, which capture sends back as container=, as
// csharg does: whatever fields the service gave, it gets again.
type target struct {
	Name       string   `json:"name"`
	Type       string   `json:"type"`
	NetNS      uint64   `json:"netns"`
	Interfaces []string `json:"network-interfaces"`
	PID        int      `json:"pid"`
	StartTime  uint64   `json:"starttime"`
	Prefix     string   `json:"prefix"`

	Raw json.RawMessage `json:"-"`
}

// targets lists the capture targets of the service's node.
func (s *service) targets(ctx context.Context) ([]target, error) {
	ctx, cancel := context.WithTimeout(ctx, listTimeout)
	defer cancel()
	u := s.endpoint("/mobyshark", nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	req.Header = s.header()
	tr := s.transport(nil)
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var doc struct {
		Containers []json.RawMessage `json:"containers"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("GET %s: %w", u.Path, err)
	}
	ts := make([]target, 0, len(doc.Containers))
	for i, raw := range doc.Containers {
		var t target
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, fmt.Errorf("GET %s: target %d: %w", u.Path, i, err)
		}
		t.Raw = raw
		ts = append(ts, t)
	}
	return ts, nil
}

// statusError describes a refused request by its status and the first
// line of the service's plain-text reason.
func statusError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	why, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if why == "" {
		return fmt.Errorf("service answered %s", resp.Status)
	}
	return fmt.Errorf("service answered %s: %s", resp.Status, why)
}

// transport is an HTTP/1.1 transport to the service that passes every
// connection it makes through hook (nil: none), above TLS if any.
// Proxies from the environment are not used: the service is reached
// directly, for lists and WebSockets alike.
func (s *service) transport(hook func(net.Conn) net.Conn) *http.Transport {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 15 * time.Second}
	wrap := func(c net.Conn) net.Conn {
		if hook == nil {
			return c
		}
		return hook(c)
	}
	return &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return wrap(c), nil
		},
		// Our own TLS, so that hook gets the connection above it: what a
		// closeConn writes must be encrypted like everything else.
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			cfg := s.tls.Clone()
			if cfg == nil {
				cfg = &tls.Config{}
			}
			if cfg.ServerName == "" {
				cfg.ServerName, _, _ = net.SplitHostPort(addr)
			}
			cfg.NextProtos = []string{"http/1.1"}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return wrap(tc), nil
		},
		ResponseHeaderTimeout: listTimeout,
	}
}

// captureConn is an open /capture WebSocket.
type captureConn struct {
	ws  *websocket.Conn
	raw *closeConn // the connection under ws, where our close frame goes
}

// dialCapture opens /capture with query q.
func (s *service) dialCapture(ctx context.Context, q url.Values) (*captureConn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var mu sync.Mutex
	var raw *closeConn
	tr := s.transport(func(c net.Conn) net.Conn {
		mu.Lock()
		defer mu.Unlock()
		raw = &closeConn{Conn: c}
		return raw
	})
	u := s.endpoint("/capture", q)
	u.Scheme = strings.Replace(u.Scheme, "http", "ws", 1) // https: wss
	ws, resp, err := websocket.Dial(ctx, u.String(), &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: tr},
		HTTPHeader: s.header(),
		// The stream is pcapng, which compresses poorly, and the
		// service never offers it.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, statusError(resp)
		}
		return nil, err
	}
	mu.Lock()
	defer mu.Unlock()
	if raw == nil {
		// Cannot happen: Dial connected through tr.
		ws.CloseNow()
		return nil, errors.New("no connection under the WebSocket")
	}
	ws.SetReadLimit(readLimit)
	return &captureConn{ws: ws, raw: raw}, nil
}
