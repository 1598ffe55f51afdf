package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/netns"
	"go.uber.org/zap"
)

// Discovery finds capture targets: built in (discovery.Discoverer) or an
// external GhostWire service (discovery.GhostWire).
type Discovery interface {
	List(ctx context.Context) ([]discovery.Target, error)
	Lookup(ctx context.Context, name, prefix string) (discovery.Target, error)
}

// discoveryTimeout bounds a name lookup during capture setup; the
// Discovery implementations bound each engine or request themselves.
const discoveryTimeout = 5 * time.Second

// lookupError is a failed lookup of a container reference by name.
type lookupError struct {
	Name string
	Err  error
}

func (e *lookupError) Error() string { return fmt.Sprintf("lookup %q: %v", e.Name, e.Err) }
func (e *lookupError) Unwrap() error { return e.Err }

// listTargets asks the discovery for every target, within
// discoveryTimeout; /readyz learns how that went, the log why it failed.
func (s *Server) listTargets(ctx context.Context) ([]discovery.Target, error) {
	ctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	start := time.Now()
	ts, err := s.cfg.Discovery.List(ctx)
	s.ready.note(discoveryName(s.cfg), len(ts), time.Since(start), err)
	if err != nil {
		s.log.Warn("discovery failed", zap.Error(err))
	}
	return ts, err
}

// handleList answers /discover/mobyshark and /mobyshark from the
// configured discovery, in GhostWire's shape, so csharg's `list` works
// against this service alone.
func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	ts, err := s.listTargets(r.Context())
	if err != nil {
		http.Error(w, "discovery failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	if ts == nil {
		ts = []discovery.Target{}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Containers []discovery.Target `json:"containers"`
	}{ts})
}

// discoveryProxy forwards /discover/... (HTTP and WebSocket) to the
// external discovery service with the prefix removed, so that clients
// configured with this service's address alone reach GhostWire too. The
// Enable-Monolith header tells GhostWire's UI that capture is available
// next to it.
func (s *Server) discoveryProxy(upstream *url.URL) http.Handler {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second}).DialContext,
		ResponseHeaderTimeout: 15 * time.Second,
		IdleConnTimeout:       time.Minute,
	}
	return &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(upstream)
			p := strings.TrimPrefix(pr.In.URL.Path, "/discover")
			if p == "" {
				p = "/"
			}
			pr.Out.URL.Path = strings.TrimSuffix(upstream.Path, "/") + p
			pr.Out.URL.RawPath = ""
			pr.SetXForwarded()
			pr.Out.Header.Set("Enable-Monolith", "true")
			// The token is this service's, not the upstream's: a client's
			// credentials stay here (HTTP and WebSocket alike pass through
			// Rewrite).
			pr.Out.Header.Del("Authorization")
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.log.Warn("discovery proxy failed", zap.String("upstream", upstream.String()), zap.Error(err))
			http.Error(w, fmt.Sprintf("502 bad gateway: the discovery service at %s cannot be reached: %v", upstream.Host, err), http.StatusBadGateway)
		},
	}
}

// openTarget opens the netns of a target the discovery listed. The fd
// pins what was opened; the process check confirms it is still the
// namespace of the process the discovery named.
func (s *Server) openTarget(t discovery.Target) (*netns.NetNS, error) {
	ns, err := s.cfg.Finder.OpenInode(t.NetNS)
	if err == nil && t.PID > 0 {
		if err = s.cfg.Finder.CheckProcess(ns, t.PID, t.StartTime); err != nil {
			ns.Close()
			return nil, err
		}
	}
	return ns, err
}

// denyHost refuses, under --deny-host-netns, a capture of the service's
// own netns among tgs.
func (s *Server) denyHost(tgs []capture.Target) error {
	if !s.cfg.DenyHostNetNS {
		return nil
	}
	self, err := s.cfg.Finder.Self()
	if err != nil {
		return err
	}
	defer self.Close()
	if slices.ContainsFunc(tgs, func(t capture.Target) bool { return t.NetNS.ID() == self.ID() }) {
		return errHostNetNS
	}
	return nil
}

// resolve turns a request into an open netns and the interfaces to
// capture, following the reference forms of the container parameter
// (docs/openapi.yaml):
//   - netns only: that netns ("feeling lucky");
//   - netns+pid+starttime without name: checked; stale fails;
//   - name (+prefix) without pid/starttime: always by name, whatever netns
//     says (clients send placeholder netns);
//   - netns+pid+starttime+name: checked; if stale, by name.
//
// Interfaces: nif= wins; else the reference's own list; else, after a
// lookup, the target's; else all.
func (s *Server) resolve(ctx context.Context, req targetRef) (*netns.NetNS, []string, error) {
	f := s.cfg.Finder
	c := req.Container
	if c == nil {
		ns, err := f.OpenInode(req.NetNS)
		return ns, req.Interfaces, err
	}
	checked := c.PID > 0 && c.StartTime > 0
	if c.NetNS != 0 && (checked || c.Name == "") {
		ns, err := f.OpenInode(c.NetNS)
		if err == nil && c.PID > 0 {
			if err = f.CheckProcess(ns, c.PID, c.StartTime); err != nil {
				ns.Close()
			}
		}
		if err == nil || c.Name == "" || !(errors.Is(err, netns.ErrStale) || errors.Is(err, netns.ErrNotFound)) {
			return ns, req.Interfaces, err
		}
		s.log.Debug("stale reference, resolving by name", zap.String("name", c.Name), zap.Error(err))
	}

	lctx, cancel := context.WithTimeout(ctx, discoveryTimeout)
	defer cancel()
	prefix := ""
	if c.Prefix != nil {
		prefix = *c.Prefix
	}
	t, err := s.cfg.Discovery.Lookup(lctx, c.Name, prefix)
	if err != nil {
		return nil, nil, &lookupError{Name: c.Name, Err: err}
	}
	ns, err := s.openTarget(t)
	if err != nil {
		return nil, nil, &lookupError{Name: c.Name, Err: fmt.Errorf("found in netns %d, which is gone: %w", t.NetNS, err)}
	}
	ifaces := req.Interfaces
	if !req.NifGiven && len(c.Interfaces) == 0 {
		ifaces = t.Interfaces
	}
	return ns, ifaces, nil
}
