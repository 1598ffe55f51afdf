// Command packetflix is the capture service: it streams live packet
// captures from any network namespace of this host to WebSocket clients
// (csharg, Wireshark's extcap plugin) as pcapng, speaking the Packetflix
// service API on one port.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/flows"
	"github.com/packetflix/packetflix/server"
	flag "github.com/spf13/pflag"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// version is set by the build (make: -ldflags "-X main.version=...").
// Without it, buildVersion derives the same form from the build info.
var version string

// baseVersion is the release this tree is on; make and buildVersion add
// the commit to it as semver build metadata.
//
//go:embed VERSION
var baseVersion string

// buildVersion returns the version the binary reports: the one make set,
// else a tagged module version, else VERSION plus the commit the go command
// stamped into the build info (go build in a git checkout does this unless
// -buildvcs=false), e.g. 0.1.0+3f2a1bc or 0.1.0+3f2a1bc.dirty, as make
// spells it. Only a build without any of these is "+unknown".
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return versionFrom(baseVersion, "", "", false)
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	return versionFrom(baseVersion, bi.Main.Version, rev, dirty)
}

// versionFrom is buildVersion's rule on its inputs. A module version is
// used when it is a release (a tag: no pseudo-version's timestamp); Go
// 1.24 and later stamp pseudo-versions such as
// v0.0.0-20261202004204-e262ebc4f1a2+dirty, which say less than VERSION.
func versionFrom(base, module, rev string, dirty bool) string {
	base = strings.TrimSpace(base)
	if v, ok := strings.CutPrefix(module, "v"); ok && !strings.Contains(v, "-0.") && !strings.Contains(v, "-") {
		return v
	}
	if rev == "" {
		return base + "+unknown"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if dirty {
		rev += ".dirty"
	}
	return base + "+" + rev
}

// defaultShutdownTimeout bounds SIGTERM handling: a kubelet waits 30 s
// (terminationGracePeriodSeconds) before SIGKILL; 5 s leaves room and is
// long enough for every reading client to get its ISBs.
const defaultShutdownTimeout = 5 * time.Second

func main() {
	// First: this binary is also its own filter compiler child.
	capture.MaybeRunFilterCompiler()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "packetflix:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("packetflix", flag.ContinueOnError)
	port := fs.IntP("port", "p", 5001, "TCP port to serve the API on")
	listen := fs.String("listen", "", "address to serve the API on: an IP address or host name, with an optional :port that replaces --port (default: all addresses)")
	debugLog := fs.Bool("debug", false, "log at debug level")
	logRequests := fs.Bool("log-requests", false, "log every HTTP request")
	logHeaders := fs.Bool("log-headers", false, "log request headers (with --log-requests)")
	discoveryHost := fs.String("discovery-service", "", "host name or address of the GhostWire discovery service")
	gwPort := fs.Int("gw-port", 5000, "port of the GhostWire discovery service")
	proxyDiscovery := fs.Bool("proxy-discovery", false, "forward /discover/... to the discovery service")
	maxSessions := fs.Int("max-sessions", server.DefaultMaxSessions, "most concurrent capture sessions")
	clientTimeout := fs.Duration("client-timeout", server.DefaultClientTimeout, "end a session whose client stopped answering after this long")
	authTokenFile := fs.String("auth-token-file", "", "file holding a token that clients must send as \"Authorization: Bearer <token>\"")
	denyHostNetNS := fs.Bool("deny-host-netns", false, "refuse captures from the service's own network namespace")
	idleRings := fs.Int("idle-rings", server.DefaultIdleRings, "rings of ended captures kept for reuse by the next capture of the same interface (0: none)")
	ringSize := fs.String("ring-size", fmt.Sprintf("%dMiB", capture.DefaultRingOptions.Size()>>20), "kernel ring per captured interface: what a capture buffers while its client is slower than the traffic; a multiple of 256KiB, at least 1MiB (clients may ask for another with buffer=, in MiB)")
	maxRingMemory := fs.String("max-ring-memory", "256MiB", "kernel ring memory the whole service may lock (running captures and idle rings), e.g. 256MiB, 1GiB (0: no cap)")
	maxSessionRing := fs.String("max-session-ring-memory", "", "ring memory one session may lock (default: half of --max-ring-memory; 0: no cap)")
	maxIfaces := fs.Int("max-interfaces-per-session", server.DefaultMaxInterfacesPerSession, "most interfaces one session captures (0: no cap)")
	maxPerClient := fs.Int("max-sessions-per-client", server.DefaultMaxSessionsPerClient, "most concurrent capture sessions of one client address (IPv4 address or IPv6 /64; 0: no cap)")
	allowOrigins := fs.StringArray("allow-origin", nil, "a web origin whose pages may use the API besides the service's own host: host pattern (*.example.com) or scheme://host pattern; repeatable")
	allowHosts := fs.StringArray("allow-host", nil, "a host name (pattern, optional :port) requests may name in Host; when given, other names get 421 (addresses and localhost always work); repeatable")
	flowInterval := fs.Duration("flow-interval", server.DefaultFlowInterval, "how often /ws/subscriber/flow sends the flows updated since (at least 10ms)")
	maxFlows := fs.Int("max-flows", flows.DefaultMaxFlows, fmt.Sprintf("flows tracked per flow-captured target (POST /api/capture); at the cap a new flow evicts the idlest (%d bytes each, 1-%d)", flows.SlotSize, flows.MaxMaxFlows))
	maxFlowTargets := fs.Int("max-flow-targets", server.DefaultMaxFlowTargets, "most targets flow-captured at once, over all flow captures (0: no cap)")
	shutdownTimeout := fs.Duration("shutdown-timeout", defaultShutdownTimeout, "on SIGTERM, end sessions (ISBs, close) within this long; clients that do not read are cut off before it ends")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *showVersion {
		fmt.Println(server.Name, buildVersion())
		return nil
	}
	if *port < 1 || *port > 65535 {
		return fmt.Errorf("port %d out of range 1-65535", *port)
	}
	addr, err := listenAddress(*listen, *port, fs.Changed("port"))
	if err != nil {
		return err
	}
	ring, err := ringOptions(*ringSize)
	if err != nil {
		return fmt.Errorf("--ring-size: %w", err)
	}
	ringMem, err := parseSize(*maxRingMemory)
	if err != nil {
		return fmt.Errorf("--max-ring-memory: %w", err)
	}
	var sessionRing int64
	if *maxSessionRing != "" {
		if sessionRing, err = parseSize(*maxSessionRing); err != nil {
			return fmt.Errorf("--max-session-ring-memory: %w", err)
		}
		if sessionRing == 0 {
			sessionRing = -1
		}
	}
	if *flowInterval < 10*time.Millisecond {
		return fmt.Errorf("--flow-interval %v is under 10ms", *flowInterval)
	}
	if *maxFlows < 1 || *maxFlows > flows.MaxMaxFlows {
		return fmt.Errorf("--max-flows %d out of range 1-%d", *maxFlows, flows.MaxMaxFlows)
	}
	if *maxFlowTargets < 0 {
		return fmt.Errorf("--max-flow-targets %d is negative", *maxFlowTargets)
	}
	for _, p := range append(slices.Clone(*allowOrigins), *allowHosts...) {
		if err := server.CheckPattern(p); err != nil {
			return fmt.Errorf("--allow-origin/--allow-host: %w", err)
		}
	}

	zc := zap.NewProductionConfig()
	zc.Encoding = "console"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	if *debugLog {
		zc.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	}
	log, err := zc.Build()
	if err != nil {
		return err
	}
	defer log.Sync()

	var token string
	if *authTokenFile != "" {
		b, err := os.ReadFile(*authTokenFile)
		if err != nil {
			return fmt.Errorf("auth token: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("auth token file %s is empty", *authTokenFile)
		}
	} else {
		log.Warn("no --auth-token-file: the API is unauthenticated; anyone who reaches this port can capture. " +
			"Put an authenticating TLS proxy in front, or set a token")
	}

	// One flag chooses the discovery: without --discovery-service the
	// service discovers this host's containers itself.
	var (
		disc    server.Discovery
		discURL string
	)
	if *discoveryHost != "" {
		if *gwPort < 1 || *gwPort > 65535 {
			return fmt.Errorf("gw-port %d out of range 1-65535", *gwPort)
		}
		discURL = "http://" + net.JoinHostPort(*discoveryHost, strconv.Itoa(*gwPort))
		disc = &discovery.GhostWire{URL: discURL}
		log.Info("using external discovery", zap.String("url", discURL), zap.Bool("proxy", *proxyDiscovery))
	} else if *proxyDiscovery {
		return errors.New("--proxy-discovery needs --discovery-service (the GhostWire to forward to)")
	}

	host, _ := os.Hostname()
	srv := server.New(server.Config{
		Log:            log,
		Version:        buildVersion(),
		NodeName:       host,
		OS:             osName(),
		LogRequests:    *logRequests,
		LogHeaders:     *logHeaders,
		Discovery:      disc,
		DiscoveryURL:   discURL,
		ProxyDiscovery: *proxyDiscovery,
		MaxSessions:    *maxSessions,
		ClientTimeout:  *clientTimeout,
		AuthToken:      token,
		DenyHostNetNS:  *denyHostNetNS,
		IdleRings:      idleRingsConfig(*idleRings),
		Ring:           ring,

		MaxRingMemory:           noCapIfZero(ringMem),
		MaxSessionRingMemory:    sessionRing,
		MaxInterfacesPerSession: int(noCapIfZero(int64(*maxIfaces))),

		MaxSessionsPerClient: perClientConfig(*maxPerClient),
		AllowOrigins:         *allowOrigins,
		AllowHosts:           *allowHosts,

		FlowInterval:   *flowInterval,
		MaxFlows:       *maxFlows,
		MaxFlowTargets: int(noCapIfZero(int64(*maxFlowTargets))),
	})

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if err := srv.Listening(ln); err != nil {
		// Captures then learn each endpoint from its first client.
		log.Warn("cannot list the listener's addresses", zap.Error(err))
	}
	hs := &http.Server{ErrorLog: zap.NewStdLog(log.Named("http"))}
	srv.Configure(hs)
	log.Info("packetflix listening", zap.String("version", buildVersion()), zap.String("address", ln.Addr().String()))
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", zap.Duration("timeout", *shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), *shutdownTimeout)
	defer cancel()
	// Both at once: http.Server.Shutdown stops accepting and waits for
	// plain-HTTP captures, which end only when srv.Shutdown ends them.
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown(sctx) }()
	if err := hs.Shutdown(sctx); err != nil {
		// Idle keep-alive connections or a request still being served:
		// nothing of ours is lost by closing them now.
		_ = hs.Close()
	}
	if err := <-done; err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// listenAddress is the address to listen on, from --listen and --port.
// --listen names the host part (empty: all addresses; an IPv6 address
// with or without brackets); a port in it replaces --port, and an explicit
// --port that disagrees is an error rather than a silent choice.
func listenAddress(listen string, port int, portSet bool) (string, error) {
	host, p, err := net.SplitHostPort(listen)
	if err != nil {
		// No port: the whole value is the host.
		host = strings.TrimSuffix(strings.TrimPrefix(listen, "["), "]")
		return net.JoinHostPort(host, strconv.Itoa(port)), nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("--listen %s: port %q is not 0-65535", listen, p)
	}
	if portSet && n != port {
		return "", fmt.Errorf("--listen %s and --port %d name different ports", listen, port)
	}
	return net.JoinHostPort(host, p), nil
}

// perClientConfig maps the flag (0: no cap) to server.Config (0: default).
func perClientConfig(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// idleRingsConfig maps the flag (0: none) to server.Config (0: default).
func idleRingsConfig(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}

// noCapIfZero maps a flag (0: no cap) to server.Config (0: default,
// negative: no cap).
func noCapIfZero(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// ringOptions turns --ring-size into the ring geometry: blocks of the
// default size, as many as the size holds.
func ringOptions(size string) (capture.RingOptions, error) {
	n, err := parseSize(size)
	if err != nil {
		return capture.RingOptions{}, err
	}
	o := capture.DefaultRingOptions
	if n < 1<<20 || n%int64(o.BlockSize) != 0 {
		return capture.RingOptions{}, fmt.Errorf("%q is not a multiple of %dKiB of at least 1MiB", size, o.BlockSize>>10)
	}
	o.NumBlocks = int(n / int64(o.BlockSize))
	return o, nil
}

// parseSize reads a byte count: a whole number with an optional binary
// unit (KiB, MiB, GiB; K, M, G and a trailing B also work), e.g. 256MiB.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToLower(strings.TrimSpace(t[len(num):]))
	num = strings.TrimSpace(num)
	shift := map[string]uint{"": 0, "b": 0, "k": 10, "kb": 10, "kib": 10, "m": 20, "mb": 20, "mib": 20, "g": 30, "gb": 30, "gib": 30}
	sh, ok := shift[unit]
	n, err := strconv.ParseInt(num, 10, 64)
	if !ok || err != nil || n < 0 || n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("%q is not a size such as 256MiB", s)
	}
	return n << sh, nil
}

func osName() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "Linux"
	}
	return unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
}
