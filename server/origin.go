package server

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"

	"go.uber.org/zap"
)

// Browsers are the clients to distrust: a page from any site can open a
// WebSocket to this service (the same-origin policy does not cover
// WebSockets) or send it a DELETE, and a site whose name it re-points to
// the node's address (DNS rebinding) is even same-origin. So every request
// passes guard first:
//   - Origin, when a browser sent one, must be the service's own host (the
//     request's Host) or match an AllowOrigins pattern; csharg, pfcat and
//     curl send none and are not affected;
//   - Host, when AllowHosts is set, must be a name the service answers
//     for; an address literal or localhost always is, because a rebinding
//     page is served under a name the attacker controls.
//
// The Origin rule is coder/websocket's (AcceptOptions.OriginPatterns), so
// that /capture, which Accept checks again, and every other path agree;
// Test_checkOrigin holds the two side by side.

// CheckPattern reports whether p is a well-formed AllowOrigins or
// AllowHosts pattern (path.Match syntax).
func CheckPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty pattern")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("pattern %q: %w", p, err)
	}
	return nil
}

// guard refuses requests from foreign web origins and, with AllowHosts,
// for host names the service does not answer for.
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host, s.cfg.AllowHosts) {
			s.log.Info("request for a foreign host refused", zap.String("host", r.Host), zap.String("remote", r.RemoteAddr))
			refuseRequest(w, r, http.StatusMisdirectedRequest,
				fmt.Sprintf("this service does not answer for host %q (see --allow-host)", r.Host))
			return
		}
		if err := checkOrigin(r, s.cfg.AllowOrigins); err != nil {
			s.log.Info("request from a foreign origin refused", zap.String("origin", r.Header.Get("Origin")),
				zap.String("host", r.Host), zap.String("remote", r.RemoteAddr))
			refuseRequest(w, r, http.StatusForbidden,
				fmt.Sprintf("forbidden: %v; pages of other origins need --allow-origin", err))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseRequest answers with code and msg: the JSON envelope under /api/,
// plain text elsewhere.
func refuseRequest(w http.ResponseWriter, r *http.Request, code int, msg string) {
	if isAPI(r.URL.Path) {
		apiError(w, code, "%s", msg)
		return
	}
	http.Error(w, fmt.Sprintf("%d %s", code, msg), code)
}

// checkOrigin is coder/websocket's origin rule (accept.go,
// authenticateOrigin): no Origin, an Origin whose host is the request's
// Host, or one matching a pattern (path.Match, case-insensitive; against
// "scheme://host" when the pattern has a scheme, else against the host)
// passes.
func checkOrigin(r *http.Request, patterns []string) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil {
		return fmt.Errorf("origin %q is not a URL", origin)
	}
	if strings.EqualFold(r.Host, u.Host) {
		return nil
	}
	for _, p := range patterns {
		target := u.Host
		if strings.Contains(p, "://") {
			target = u.Scheme + "://" + u.Host
		}
		if ok, _ := path.Match(strings.ToLower(p), strings.ToLower(target)); ok {
			return nil
		}
	}
	return fmt.Errorf("origin %q is not allowed for host %q", origin, r.Host)
}

// hostAllowed reports whether host (a request's Host: name or address,
// with or without port) is one the service answers for: any when patterns
// is empty; an address literal or localhost; else a name matching a
// pattern (path.Match, case-insensitive; a pattern with a port is matched
// against host:port, one without against the name).
func hostAllowed(host string, patterns []string) bool {
	if len(patterns) == 0 {
		return true
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if name == "" {
		return false
	}
	if _, err := netip.ParseAddr(name); err == nil || name == "localhost" {
		return true
	}
	for _, p := range patterns {
		target := name
		if _, _, err := net.SplitHostPort(p); err == nil {
			target = strings.ToLower(host)
		}
		if ok, _ := path.Match(strings.ToLower(p), target); ok {
			return true
		}
	}
	return false
}

// clientKey is what the per-client session cap counts by: the client's
// IPv4 address, or its IPv6 /64 (one host usually holds a whole /64).
func clientKey(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.WithZone("").Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
