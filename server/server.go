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
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/session"
	"github.com/prometheus/client_golang/prometheus/promhttp"
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

	// Discovery resolves container references by name and answers
	// /discover/mobyshark; nil means the built-in discovery of this host.
	Discovery Discovery
	// DiscoveryURL is the external discovery service (GhostWire) that
	// ProxyDiscovery forwards /discover/... to.
	DiscoveryURL   string
	ProxyDiscovery bool

	Finder *netns.Finder       // nil: the real /proc
	Ring   capture.RingOptions // per-interface kernel ring

	// MaxSessions caps concurrent capture sessions; 0 means
	// DefaultMaxSessions. Each holds a kernel ring per interface.
	MaxSessions int
	// ClientTimeout bounds how long a client that has vanished without a
	// close (network silent, host gone) keeps its session: TCP keepalive
	// and TCP_USER_TIMEOUT on the connection, and a WebSocket ping on
	// idle sessions. 0 means DefaultClientTimeout.
	ClientTimeout time.Duration
	// MaxSessionsPerClient caps the sessions of one client address (an
	// IPv4 address or an IPv6 /64), so that one client cannot take every
	// MaxSessions slot; 0 means DefaultMaxSessionsPerClient, negative means
	// no cap. Clients behind one proxy or NAT share it.
	MaxSessionsPerClient int
	// AuthToken, when set, is required as "Authorization: Bearer <token>"
	// (scheme in any case) on every endpoint except openPaths.
	AuthToken string
	// AllowOrigins are the web origins, besides the service's own host,
	// whose pages may use the API: patterns as coder/websocket's
	// AcceptOptions.OriginPatterns ("*.example.com", "https://ui.example").
	// A request without Origin (csharg, curl) is not affected.
	AllowOrigins []string
	// AllowHosts, when set, are the host names (patterns as AllowOrigins,
	// with an optional port) a request's Host may name; address literals
	// and localhost are always answered. Against DNS rebinding.
	AllowHosts []string
	// DenyHostNetNS refuses captures from the service's own network
	// namespace (the host's, when it runs with host networking).
	DenyHostNetNS bool
	// NetNSCheckInterval is how often sessions check that their network
	// namespace still has a process or bind mount; 0 means 2 s.
	NetNSCheckInterval time.Duration
	// IdleRings is how many rings of ended captures are kept for reuse
	// (DefaultIdleRings when 0, none when negative); a capture of the same
	// interface then starts without the kernel's ring setup. Each idle ring
	// holds its kernel memory for at most IdleRingTTL, and its netns only
	// while something else does too: the pool closes it as soon as the
	// netns loses its last bind mount or process (capture.Pool).
	IdleRings   int
	IdleRingTTL time.Duration
	// MaxRingMemory is the service-wide budget of locked ring memory
	// (capture.Budget): rings of running captures and idle rings count, and
	// a capture that does not fit, even after idle rings are closed, is
	// refused (1008, HTTP 503). 0 means DefaultMaxRingMemory, negative no
	// cap.
	MaxRingMemory int64
	// MaxSessionRingMemory caps one session's ring memory (1008, HTTP
	// 400); 0 means half of MaxRingMemory (no cap when that has none),
	// negative no cap. It is never more than MaxRingMemory.
	MaxSessionRingMemory int64
	// MaxInterfacesPerSession caps the interfaces of one session (1008,
	// HTTP 400); 0 means DefaultMaxInterfacesPerSession, negative no cap.
	MaxInterfacesPerSession int
	// ReadyCacheAge is how long /readyz reuses a discovery result instead
	// of listing again; 0 means DefaultReadyCacheAge.
	ReadyCacheAge time.Duration

	// Flow captures (POST /api/capture, flows.go): MaxFlows caps each
	// captured target's flow table (0: flows.DefaultMaxFlows);
	// MaxFlowTargets caps the targets flow-captured at once, over all
	// flow captures, which do not count toward MaxSessions (0:
	// DefaultMaxFlowTargets, negative: no cap); FlowInterval is how often
	// /ws/subscriber/flow pushes the flows updated since (0:
	// DefaultFlowInterval).
	MaxFlows       int
	MaxFlowTargets int
	FlowInterval   time.Duration
}

// Defaults for Config.
const (
	DefaultMaxSessions   = 64
	DefaultClientTimeout = 30 * time.Second
	DefaultIdleRings     = 8
	DefaultIdleRingTTL   = 10 * time.Second
	// DefaultMaxSessionsPerClient leaves most of DefaultMaxSessions to
	// other clients; a person capturing a few targets at once stays under
	// it.
	DefaultMaxSessionsPerClient = 8
	// DefaultMaxRingMemory is sized for a small node (2 GiB of RAM): at
	// most an eighth of it locked in rings, which no cgroup accounts for.
	// That is 32 rings of the default 8 MiB: one session of 16 interfaces
	// (half, the default per-session cap; more with smaller rings) and
	// room for others.
	DefaultMaxRingMemory = 256 << 20
	// DefaultMaxInterfacesPerSession bounds a session's sockets and reader
	// goroutines whatever the ring size; lab routers stay well under it.
	DefaultMaxInterfacesPerSession = 64
)

// Server serves the Packetflix API. Handler may be used by any number of
// goroutines; Shutdown ends every capture session.
type Server struct {
	cfg Config
	log *zap.Logger
	mux *http.ServeMux

	base     context.Context // cancelled by Shutdown
	shutdown context.CancelFunc
	hard     context.Context // cancelled by Shutdown near its deadline
	hardStop context.CancelFunc

	mu       sync.Mutex
	sessions map[string]*liveSession
	wg       sync.WaitGroup

	watcherDone chan struct{}
	metrics     *metrics
	started     time.Time
	pool        *capture.Pool // nil: no ring reuse
	budget      *capture.Budget
	ready       readyCache
	own         *ownConns // where clients reach us: captures leave it out
	flows       *flowRegistry
}

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Finder == nil {
		cfg.Finder = &netns.Finder{}
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0-dev"
	}
	if cfg.ReadyCacheAge <= 0 {
		cfg.ReadyCacheAge = DefaultReadyCacheAge
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.MaxSessionsPerClient == 0 {
		cfg.MaxSessionsPerClient = DefaultMaxSessionsPerClient
	}
	if cfg.ClientTimeout <= 0 {
		cfg.ClientTimeout = DefaultClientTimeout
	}
	if cfg.NetNSCheckInterval <= 0 {
		cfg.NetNSCheckInterval = 2 * time.Second
	}
	if cfg.IdleRings == 0 {
		cfg.IdleRings = DefaultIdleRings
	}
	if cfg.IdleRingTTL <= 0 {
		cfg.IdleRingTTL = DefaultIdleRingTTL
	}
	// Filled in, so that /api/v1/config shows the geometry in use.
	cfg.Ring = cfg.Ring.WithDefaults()
	if cfg.MaxRingMemory == 0 {
		cfg.MaxRingMemory = DefaultMaxRingMemory
	}
	if cfg.MaxSessionRingMemory == 0 {
		cfg.MaxSessionRingMemory = cfg.MaxRingMemory / 2
	}
	if cfg.MaxRingMemory > 0 && (cfg.MaxSessionRingMemory <= 0 || cfg.MaxSessionRingMemory > cfg.MaxRingMemory) {
		cfg.MaxSessionRingMemory = cfg.MaxRingMemory
	}
	if cfg.MaxInterfacesPerSession == 0 {
		cfg.MaxInterfacesPerSession = DefaultMaxInterfacesPerSession
	}
	if cfg.Discovery == nil {
		cfg.Discovery = discovery.NewDiscoverer(discovery.DiscoverConfig{Finder: cfg.Finder, Log: cfg.Log.Named("discovery")})
	}
	s := &Server{cfg: cfg, log: cfg.Log, mux: http.NewServeMux(), sessions: map[string]*liveSession{}, own: newOwnConns()}
	s.base, s.shutdown = context.WithCancel(context.Background())
	s.hard, s.hardStop = context.WithCancel(context.Background())
	s.started = time.Now()
	s.flows = newFlowRegistry(s)
	s.metrics = newMetrics(s)
	if cfg.IdleRings > 0 {
		s.pool = capture.NewPool(cfg.IdleRings, cfg.IdleRingTTL)
	}
	s.budget = capture.NewBudget(cfg.MaxRingMemory)
	s.watcherDone = make(chan struct{})
	go s.watchNetNS(cfg.NetNSCheckInterval)
	s.mux.HandleFunc("GET /version", s.handleVersion)
	s.mux.HandleFunc("/capture", s.handleCapture)
	if cfg.ProxyDiscovery && cfg.DiscoveryURL != "" {
		u, err := url.Parse(cfg.DiscoveryURL)
		if err != nil || u.Host == "" {
			panic(fmt.Sprintf("server: bad DiscoveryURL %q", cfg.DiscoveryURL)) // cmd validates it
		}
		s.mux.Handle("/discover/", s.discoveryProxy(u))
	} else {
		s.mux.HandleFunc("GET /discover/mobyshark", s.handleList)
	}
	s.mux.HandleFunc("GET /mobyshark", s.handleList)
	s.mux.HandleFunc("GET /capture.pcapng", s.handlePlain)
	s.mux.HandleFunc("GET /api/v1/captures", s.handleCaptures)
	s.mux.HandleFunc("GET /api/v1/captures/{id}", s.handleCaptureGet)
	s.mux.HandleFunc("DELETE /api/v1/captures/{id}", s.handleCaptureDelete)
	s.mux.HandleFunc("GET /api/v1/info", s.handleInfo)
	s.mux.HandleFunc("GET /api/v1/config", s.handleConfig)
	s.mux.HandleFunc("/api/", s.apiNotFound)
	// Skydive's flow API (flows.go).
	s.mux.HandleFunc("POST /api/capture", s.handleFlowCaptureCreate)
	s.mux.HandleFunc("GET /api/capture", s.handleFlowCaptures)
	s.mux.HandleFunc("DELETE /api/capture/{id}", s.handleFlowCaptureDelete)
	s.mux.HandleFunc("POST /api/topology", s.handleTopology)
	s.mux.HandleFunc("GET /ws/subscriber/flow", s.handleFlowSubscriber)
	s.mux.HandleFunc("GET /healthz", s.handleHealthz)
	s.mux.HandleFunc("GET /readyz", s.handleReadyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
	registerWeb(s.mux) // the page: "/" and /web/... (web.go)
	return s
}

// Handler returns the HTTP handler of the API. Prefer Configure, which
// also sets the connection limits and timeouts the handler relies on.
func (s *Server) Handler() http.Handler {
	var h http.Handler = s.mux
	if s.cfg.AuthToken != "" {
		h = s.authenticate(h)
	}
	// Origin and Host first: a browser that is refused learns nothing,
	// token or not.
	h = s.guard(h)
	if !s.cfg.LogRequests {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fields := []zap.Field{zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.String("remote", r.RemoteAddr)}
		if s.cfg.LogHeaders {
			fields = append(fields, zap.Any("headers", redactHeaders(r.Header)))
		}
		s.log.Info("request", fields...)
		h.ServeHTTP(w, r)
	})
}

func (s *Server) handleVersion(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	}{Name, s.cfg.Version})
}

// liveSession is a live capture, as the registry knows it.
type liveSession struct {
	id        string
	start     time.Time
	client    string
	clientKey string // what MaxSessionsPerClient counts by
	transport string
	// Set once the capture runs (cs nil again once retired), under
	// Server.mu.
	req    *captureRequest
	cs     *capture.Session
	st     *session.Stream
	cancel context.CancelCauseFunc
	misses []int // per target; owned by watchNetNS
}

// running records what a session captures, for the netns watcher and the
// management API.
func (s *Server) running(ss *liveSession, req *captureRequest, cs *capture.Session, st *session.Stream, cancel context.CancelCauseFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.req, ss.cs, ss.st, ss.cancel = req, cs, st, cancel
}

// register adds a session, or says why it cannot be added.
func (s *Server) register(ss *liveSession) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return errShutdown
	}
	// The client's own cap first: it is the one the client can act on.
	if limit := s.cfg.MaxSessionsPerClient; limit > 0 {
		n := 0
		for _, o := range s.sessions {
			if o.clientKey == ss.clientKey {
				n++
			}
		}
		if n >= limit {
			return fmt.Errorf("%w (--max-sessions-per-client %d)", errTooManyClient, limit)
		}
	}
	if len(s.sessions) >= s.cfg.MaxSessions {
		return errTooMany
	}
	s.sessions[ss.id] = ss
	s.wg.Add(1)
	return nil
}

func (s *Server) unregister(ss *liveSession) {
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

// newID returns a short random session ID for logs.
func newID() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
