package server

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/session"
	"go.uber.org/zap"
)

// finishTimeout bounds how long a session spends sending its last buffers,
// ISBs and close frame to a client that has stopped reading.
const finishTimeout = 5 * time.Second

// upgradeRequired answers a plain HTTP request to a WebSocket path with
// 426 and a text a person who opened it in a browser can act on; what says
// what the path does ("/capture streams packets").
func upgradeRequired(w http.ResponseWriter, what string) {
	w.Header().Set("Upgrade", "websocket")
	w.Header().Set("Connection", "Upgrade")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUpgradeRequired)
	_, _ = w.Write([]byte("Hello! This is the packetflix capture service. " + what + " over " +
		"the WebSocket protocol only; please connect with a WebSocket client (ws://), " +
		"for example csharg or its Wireshark plugin.\n"))
}

// accept upgrades r to a WebSocket on a gated connection (gate.go),
// without the connection's HTTP deadlines; false when the upgrade failed
// (Accept has answered with an HTTP error then).
func (s *Server) accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, *gatedWriter, bool) {
	gw := &gatedWriter{ResponseWriter: w}
	c, err := websocket.Accept(gw, r, &websocket.AcceptOptions{
		// guard has checked Origin by the same rule already; Accept's own
		// check stays on as the second lock on the door browsers abuse.
		OriginPatterns:  s.cfg.AllowOrigins,
		CompressionMode: websocket.CompressionDisabled,
		// Chosen when a page offers it with its token (protocolToken);
		// clients that offer none get none.
		Subprotocols: []string{wsProtocol},
	})
	if err != nil {
		s.log.Info("websocket upgrade failed", zap.String("remote", r.RemoteAddr), zap.Error(err))
		return nil, nil, false
	}
	hijacked(r)
	return c, gw, true
}

// isUpgrade reports whether r asks for a WebSocket upgrade (RFC 6455 4.2.1).
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, key, token string) bool {
	for _, v := range h.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// handleCapture serves one capture session over WebSocket. Errors in the
// request or in setting up the capture are reported after the upgrade, as
// a close frame with code 1008 and a reason, which every WebSocket client
// can show (a browser cannot read the body of a refused upgrade).
func (s *Server) handleCapture(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		upgradeRequired(w, "/capture streams packets")
		return
	}
	req, perr := parseCaptureRequest(r)
	c, gw, ok := s.accept(w, r)
	if !ok {
		return
	}
	// connCtx ends when the client closes or the connection dies.
	connCtx := c.CloseRead(context.Background())
	s.session(connCtx, &wsTransport{c: c, ctx: s.untilHardStop(connCtx), gate: gw.gate, co: gw.co, timeout: s.cfg.ClientTimeout}, req, perr, r.RemoteAddr)
}

// transport carries one session's stream to its client.
type transport interface {
	name() string
	// write sends one message (WebSocket) or chunk (HTTP).
	write(b []byte) error
	// ping checks an idle client.
	ping() error
	// refuse reports an error before any stream byte was sent.
	refuse(err error)
	// closing is closed when the client asks to end the session (a
	// WebSocket close frame); nil if the transport has no such thing.
	closing() <-chan struct{}
	// end finishes a stream that the service ended (err is why, nil for a
	// normal end); clientGone says the client left first.
	end(err error, clientGone bool)
	// abort makes a write blocked on a client that does not read fail, and
	// every write after it; from any goroutine.
	abort()
}

type wsTransport struct {
	c       *websocket.Conn
	ctx     context.Context
	gate    *closeGate
	co      *coalescer
	timeout time.Duration
}

func (t *wsTransport) name() string { return "websocket" }

func (t *wsTransport) write(b []byte) error {
	t.co.begin()
	err := t.c.Write(t.ctx, websocket.MessageBinary, b)
	if e := t.co.end(); err == nil {
		err = e
	}
	return err
}

// ping waits for the pong on the reader's goroutine. A client that closes
// meanwhile is no failure: the gate holds everything after its close frame,
// the pong too, until the session has sent its ISBs, which it can only do
// once the ping has returned.
func (t *wsTransport) ping() error {
	ctx, cancel := context.WithTimeout(t.ctx, t.timeout/2)
	defer cancel()
	stop := closeOn(t.gate.closing, cancel)
	defer stop()
	err := t.c.Ping(ctx)
	if err != nil && t.gate.isClosing() {
		return nil
	}
	return err
}

// closeOn calls f when ch is closed, until stop is called.
func closeOn(ch <-chan struct{}, f func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			f()
		case <-done:
		}
	}()
	return func() { close(done) }
}

func (t *wsTransport) closing() <-chan struct{} { return t.gate.closing }

// abort closes the connection under the library: coder/websocket's own
// Close would wait for the blocked write.
func (t *wsTransport) abort() { _ = t.gate.Close() }

// refuse closes with the reason. The gate must let the client's answer to
// our close frame through, or Close would wait for it in vain.
func (t *wsTransport) refuse(err error) {
	t.gate.release()
	t.c.Close(closeFor(err))
}

func (t *wsTransport) end(err error, clientGone bool) {
	t.gate.release()
	// Close writes the close frame and waits for the client's answer on
	// timers of its own (5 s each); at a shutdown's hard stop (t.ctx ends)
	// a client that does not read must not hold it up. CloseNow does
	// nothing once Close has begun (coder/websocket v1.8.15 close.go), so
	// the connection under the library is closed instead: every read and
	// write on it fails at once.
	defer context.AfterFunc(t.ctx, func() { _ = t.gate.Close() })()
	switch {
	case errors.Is(err, errClientClosing):
		// The ISBs are queued and sent: now coder/websocket may read the
		// client's close frame, and it answers it.
		select {
		case <-t.ctx.Done():
		case <-time.After(finishTimeout):
		}
		t.c.CloseNow()
	case clientGone:
		t.c.CloseNow()
	default:
		if t.c.Close(closeFor(err)) != nil {
			t.c.CloseNow()
		}
	}
}

// session runs one capture session from registration to the end, for any
// transport. connCtx ends when the client goes away. perr is a request
// parse error, reported once the session is registered.
func (s *Server) session(connCtx context.Context, t transport, req *captureRequest, perr error, remote string) {
	ss := &liveSession{id: newID(), start: time.Now(), client: remote, clientKey: clientKey(remote), transport: t.name()}
	log := s.log.With(zap.String("session", ss.id))
	refuse := func(err error) {
		s.metrics.outcome(err, false, false)
		log.Info("capture refused", zap.String("remote", remote), zap.String("transport", t.name()), zap.String("reason", reasonOf(err)), zap.Error(err))
		t.refuse(err)
	}
	if err := s.register(ss); err != nil {
		refuse(err)
		return
	}
	defer s.unregister(ss)
	if perr != nil {
		refuse(perr)
		return
	}

	// runCtx also ends on shutdown, when the netns vanishes, when the
	// client stops answering, when an operator stops the session or a
	// limit is reached; its cause says which. Writes use connCtx, so that
	// a session ended by the service can still send its ISBs and close.
	runCtx, cancelRun := context.WithCancelCause(connCtx)
	defer cancelRun(nil)
	stopOnShutdown := context.AfterFunc(s.base, func() { cancelRun(errShutdown) })
	defer stopOnShutdown()
	if req.Duration > 0 {
		var cancelT context.CancelFunc
		runCtx, cancelT = context.WithTimeoutCause(runCtx, req.Duration, errLimit)
		defer cancelT()
	}

	cs, err := s.open(runCtx, req)
	if err != nil {
		refuse(err)
		return
	}
	ifaces := cs.Interfaces()
	describe := describer(req, cs.Targets(), cs.Excluded)
	names := make([]string, len(ifaces))
	for i, f := range ifaces {
		names[i] = describe(f).Name
	}
	log = log.With(zap.Uint64("netns", cs.NetNS()))
	s.metrics.setup.Observe(time.Since(ss.start).Seconds())
	log.Info("capture started", zap.String("remote", remote), zap.String("transport", t.name()), zap.Strings("interfaces", names),
		zap.String("filter", req.Filter), zap.Bool("promiscuous", !req.Chaste), zap.Int("snaplen", req.Snaplen),
		zap.Duration("setup", time.Since(ss.start)))

	hdr := s.header(req, cs.Targets(), ifaces, describe)
	st := session.New(session.Sender{
		Write: t.write,
		Ping:  t.ping,
		Idle:  s.cfg.ClientTimeout / 2,
		Fail:  func(err error) { cancelRun(err) },
		Limit: func() { cancelRun(errLimit) },
	}, req.Count, describe)
	// The header is the first message; the reader's first Idle writes it.
	st.AppendHeader(hdr)
	s.running(ss, req, cs, st, cancelRun)
	if ch := t.closing(); ch != nil {
		// Ends with runCtx, which the deferred cancelRun ends at the latest.
		go func() {
			select {
			case <-ch:
				cancelRun(errClientClosing)
			case <-runCtx.Done():
			}
		}()
	}

	// The reader encodes and writes to the client itself (package session). Once
	// the session is ending, a client that does not take the rest within
	// finishTimeout is cut off: the reader may be blocked in its write.
	stopAbort := afterEnd(runCtx, finishTimeout, t.abort)
	defer stopAbort()
	runErr := cs.Run(runCtx, st)

	// The reader has stopped: write what is left and the ISBs, then close.
	now := time.Now()
	final := cs.Stats()
	var total capture.Stats
	for _, x := range final {
		total.Received += x.Received
		total.Dropped += x.Dropped
		total.KernelDropped += x.KernelDropped
		total.Skipped += x.Skipped
		total.Delivered += x.Delivered
		total.Bytes += x.Bytes
	}
	sendErr := st.Finish(session.ISBs(final, ss.start, now))
	// Everything is sent: the close handshake that follows has timers of
	// its own and must not be cut off by the abort.
	stopAbort()
	s.retire(ss, total)

	// Why the session ended: what stopped the readers, else the cause of
	// runCtx (shutdown, vanished netns, silent client, operator, limit).
	if runErr == nil || errors.Is(runErr, context.Canceled) || errors.Is(runErr, errLimit) {
		runErr = context.Cause(runCtx)
		if errors.Is(runErr, context.Canceled) || errors.Is(runErr, errLimit) {
			runErr = nil
		}
	}
	clientGone := connCtx.Err() != nil || sendErr != nil || errors.Is(runErr, errClientGone)
	s.metrics.outcome(runErr, true, clientGone || errors.Is(runErr, errClientClosing))
	fields := []zap.Field{zap.Uint64("delivered", total.Delivered), zap.Uint64("kernel_received", total.Received),
		zap.Uint64("kernel_dropped", total.KernelDropped), zap.Uint64("dropped", total.Dropped), zap.Uint64("bytes", total.Bytes), zap.Duration("duration", now.Sub(ss.start))}
	if clientGone || errors.Is(runErr, errClientClosing) {
		log.Info("capture stopped by client", append(fields, zap.NamedError("send", sendErr), zap.NamedError("cause", runErr))...)
	} else {
		log.Info("capture ended", append(fields, zap.String("reason", reasonOf(runErr)), zap.NamedError("cause", runErr))...)
	}
	t.end(runErr, clientGone)
}

// afterEnd calls f d after ctx ends, unless the returned stop is called
// first.
func afterEnd(ctx context.Context, d time.Duration, f func()) (stop func()) {
	var mu sync.Mutex
	var timer *time.Timer
	stopped := false
	unhook := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			timer = time.AfterFunc(d, f)
		}
	})
	return func() {
		unhook()
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if timer != nil {
			timer.Stop()
		}
	}
}

// reasonOf is the close reason for err, for logs of any transport.
func reasonOf(err error) string {
	_, why := closeFor(err)
	return why
}

// open resolves the targets and opens the capture. Each netns fd is held
// from lookup until the rings exist, so the namespace checked is the one
// captured.
func (s *Server) open(ctx context.Context, req *captureRequest) (*capture.Session, error) {
	var tgs []capture.Target
	defer func() {
		for _, t := range tgs {
			t.NetNS.Close()
		}
	}()
	for _, ref := range req.Targets {
		ns, ifaces, err := s.resolve(ctx, ref)
		if err != nil {
			return nil, err
		}
		tgs = append(tgs, capture.Target{NetNS: ns, Interfaces: ifaces, Name: ref.name(ns.Inode())})
		if slices.ContainsFunc(tgs[:len(tgs)-1], func(t capture.Target) bool { return t.NetNS.ID() == ns.ID() }) {
			return nil, badRequest("%s is netns %d, which another target of the request names too", ref.name(ns.Inode()), ns.Inode())
		}
	}
	if req.Peer {
		var err error
		if tgs, err = s.withPeers(ctx, req, tgs); err != nil {
			return nil, err
		}
	}
	if err := s.denyHost(tgs); err != nil {
		return nil, err
	}
	var own capture.Exclusions
	if !req.OwnInclude {
		own = s.own
	}
	ring := s.cfg.Ring
	if req.Buffer > 0 {
		ring.NumBlocks = int(max(req.Buffer/int64(ring.BlockSize), 1))
	}
	return s.openCapture(ctx, capture.Config{
		Targets:     tgs,
		Filter:      req.Filter,
		Snaplen:     req.Snaplen,
		Promiscuous: !req.Chaste,
		Ring:        ring,
		// A size the client asked for is kept or refused; the default
		// shrinks to let a netns with many interfaces fit the cap.
		FitRing: req.Buffer == 0,
		Exclude: own,
	})
}

// openCapture opens cfg with what every capture of the service shares:
// the ring pool, the ring memory budget and the per-session caps.
func (s *Server) openCapture(ctx context.Context, cfg capture.Config) (*capture.Session, error) {
	cfg.Pool = s.pool
	cfg.Budget = s.budget
	cfg.MaxInterfaces = max(s.cfg.MaxInterfacesPerSession, 0)
	cfg.MaxRingMemory = max(s.cfg.MaxSessionRingMemory, 0)
	return capture.OpenContext(ctx, cfg)
}
