// Package server is the HTTP and WebSocket face of packetflix: /version,
// /capture (a pcapng stream per WebSocket), parsing of query parameters and
// Clustershark-* headers, mapping of errors to close codes, and the registry
// of live sessions that Shutdown ends. It knows nothing about sockets.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/netnsutil"
	"go.uber.org/zap"
)

// Name is the service name reported by /version and in the pcapng SHB.
const Name = "packetflix"

// Config configures a Server. Zero values take defaults.
type Config struct {
	Log     *zap.Logger // nil: no logging
	Version string      // semantic version, from the build
	// NodeName goes into the SHB comment (node-name); usually the host name.
	NodeName string
	OS       string // shb_os, e.g. "Linux 6.18"

	LogRequests bool // log every HTTP request
	LogHeaders  bool // log request headers too

	// Discovery settings; accepted now, used by container name lookups.
	DiscoveryService string
	GWPort           int
	ProxyDiscovery   bool

	Finder *netnsutil.Finder   // nil: the real /proc
	Ring   capture.RingOptions // per-interface kernel ring
}

// Server serves the Packetflix API. Handler may be used by any number of
// goroutines; Shutdown ends every capture session.
type Server struct {
	cfg Config
	log *zap.Logger
	mux *http.ServeMux

	base     context.Context // cancelled by Shutdown
	shutdown context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*session
	wg       sync.WaitGroup
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Finder == nil {
		cfg.Finder = &netnsutil.Finder{}
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0-dev"
	}
	s := &Server{cfg: cfg, log: cfg.Log, mux: http.NewServeMux(), sessions: map[string]*session{}}
	s.base, s.shutdown = context.WithCancel(context.Background())
	s.mux.HandleFunc("GET /version", s.handleVersion)
	s.mux.HandleFunc("/capture", s.handleCapture)
	return s
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	if !s.cfg.LogRequests {
		return s.mux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fields := []zap.Field{zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.String("remote", r.RemoteAddr)}
		if s.cfg.LogHeaders {
			fields = append(fields, zap.Any("headers", r.Header))
		}
		s.log.Info("request", fields...)
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}{Name, s.cfg.Version})
}

// session is a live capture, as the registry knows it.
type session struct {
	id    string
	start time.Time
}

func (s *Server) register(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return false
	}
	s.sessions[ss.id] = ss
	s.wg.Add(1)
	return true
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.id)
	s.mu.Unlock()
	s.wg.Done()
}

// Sessions returns the number of live capture sessions.
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Shutdown ends every capture session (each client gets its ISBs and the
// close reason "service shutting down") and waits for them until ctx ends.
// Call it after http.Server.Shutdown, which does not wait for hijacked
// WebSocket connections.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// newID returns a short random session ID for logs.
func newID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
