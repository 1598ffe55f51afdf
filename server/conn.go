package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// HTTP limits against slow or oversized requests. They apply until a
// /capture request is upgraded; a WebSocket then runs without deadlines
// (see hijacked) and is watched by ClientTimeout instead.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 64 << 10
)

// Listening tells the Server a listener it is served on (any number of
// them, made in any netns), so that a capture of that netns leaves out
// the connections to it from the very first client on: see ownConns.
// Without it, an endpoint is learned from the first connection accepted
// on it, whose first segments a capture already running then takes in.
func (s *Server) Listening(ln net.Listener) error {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil // not TCP: nothing a capture could take in
	}
	return s.own.listening(tl)
}

// Configure sets hs up to serve this Server: the handler, timeouts against
// slow-header and slow-body clients, a header size limit, and TCP settings
// that let the kernel notice a vanished client.
func (s *Server) Configure(hs *http.Server) {
	hs.Handler = s.Handler()
	hs.ReadHeaderTimeout = readHeaderTimeout
	hs.ReadTimeout = readTimeout
	hs.WriteTimeout = writeTimeout
	hs.IdleTimeout = idleTimeout
	hs.MaxHeaderBytes = maxHeaderBytes
	hs.ConnContext = s.connContext
}

type connKey struct{}

// connContext remembers each connection, so a capture can take it over
// after the upgrade, and sets TCP keepalive and TCP_USER_TIMEOUT: a peer
// that falls silent (host gone, network cut) is dropped by the kernel
// within ClientTimeout, whether data is in flight or not.
func (s *Server) connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*net.TCPConn); ok {
		idle := s.cfg.ClientTimeout / 3
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: idle, Interval: idle / 2, Count: 4})
		if rc, err := tc.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.ClientTimeout.Milliseconds()))
			})
		}
		s.own.learn(tc)
	}
	return context.WithValue(ctx, connKey{}, c)
}

// hijacked clears the deadlines net/http left on a connection that is now a
// WebSocket: ReadTimeout and WriteTimeout would otherwise cut a long
// capture (Hijack documents that the caller must clear them).
func hijacked(r *http.Request) {
	if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
		_ = c.SetDeadline(time.Time{})
	}
}

// openPaths need no token: /version, which clients call to identify the
// service, the probes and metrics scrapers, which carry none, and the
// page. This is the one list in code; docs/openapi.yaml marks exactly
// these operations `security: []`, and TestOpenAPISecurity holds the two
// together.
var openPaths = map[string]bool{"/version": true, "/healthz": true, "/readyz": true, "/metrics": true,
	// The page and its files (pagePaths): a browser loads the page before
	// its user can type the token into it.
	"/": true, "/web/app.js": true, "/web/style.css": true, "/web/icon.svg": true}

// authenticate requires the bearer token on every other path.
func (s *Server) authenticate(next http.Handler) http.Handler {
	// Digests have one length, so the comparison takes the same time
	// whatever the length of the token sent.
	want := sha256.Sum256([]byte(s.cfg.AuthToken))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if openPaths[r.URL.Path] {
			next.ServeHTTP(w, r)
			return
		}
		tok, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			tok, ok = protocolToken(r)
		}
		got := sha256.Sum256([]byte(tok))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="packetflix"`)
			const msg = "unauthorized: send the service's token as \"Authorization: Bearer <token>\""
			if isAPI(r.URL.Path) {
				apiError(w, http.StatusUnauthorized, msg)
				return
			}
			http.Error(w, "401 "+msg, http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the token of an "Authorization: Bearer <token>"
// header. The scheme is case-insensitive (RFC 9110 11.1, RFC 6750 2.1).
func bearerToken(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	return tok, tok != ""
}

// Subprotocols of /capture. A browser's WebSocket cannot send an
// Authorization header; a page offers the token as the subprotocol
// tokenProtocolPrefix + base64url(token), next to wsProtocol, which the
// server selects (a browser fails a connection whose answer selects none
// of the protocols it offered), so the token is never echoed. A query
// parameter would do too, but ends up in logs and browser history.
const (
	wsProtocol          = "packetflix"
	tokenProtocolPrefix = "packetflix.token."
)

// protocolToken returns the token a WebSocket upgrade offers as a
// subprotocol.
func protocolToken(r *http.Request) (string, bool) {
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			enc, ok := strings.CutPrefix(strings.TrimSpace(p), tokenProtocolPrefix)
			if !ok {
				continue
			}
			tok, err := base64.RawURLEncoding.DecodeString(enc)
			return string(tok), err == nil && len(tok) > 0
		}
	}
	return "", false
}

// redactHeaders hides credentials from request logs.
func redactHeaders(h http.Header) http.Header {
	out := h.Clone()
	for k := range out {
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Cookie") || strings.EqualFold(k, "Sec-WebSocket-Protocol") {
			out[k] = []string{"REDACTED"}
		}
	}
	return out
}
