package server

import (
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/flows"
	"go.uber.org/zap"
)

// Skydive's flow API, over the flows package (issue 16):
//
//   - POST /api/capture {"GremlinQuery": "G.V().Has('Name', 'web-1')"}
//     starts a flow capture on every target the query selects: one
//     capture.Session per target (all its interfaces, flows.Snaplen bytes
//     of each packet, small rings: flowRing) feeding one flows.Table.
//     GET /api/capture lists them, DELETE /api/capture/{id} stops one.
//   - POST /api/topology answers G.V() (the targets as Skydive nodes) and
//     G.Flows() (the flows of every running flow capture), with Has,
//     Limit and Count.
//   - /ws/subscriber/flow pushes, every FlowInterval, the flows that
//     counted packets since the previous push, as Skydive's structured
//     message {"Namespace":"flow","Type":"store","Obj":[...]}.
//
// Answers are Skydive's shapes (a bare capture object, a bare array or
// number); errors are the /api/ envelope {"status":false,"error":"..."},
// where Skydive sends plain text, so that every /api/ error reads alike.
//
// Nodes. Every discovered target is one node. ID and Metadata.TID are the
// same stable UUID-shaped ID, a SHA-1 of "netns:<inode>:<name>"
// (targetTID): the same target keeps it across listings and restarts of
// the service. Host is Config.NodeName. Metadata.Name is the discovery's
// name; Metadata.Type the discovery's type, except that a bind-mounted
// namespace without processes (discovery's "bindmount", what `ip netns
// add` makes) is "netns", as Skydive calls it, so G.V().Has('Type',
// 'netns') selects the plain namespaces. Metadata.Path is
// /proc/<pid>/ns/net, or netns:<inode> for a namespace without a process
// (the discovery does not report the bind mount's path).
//
// Limits. Flow captures do not count toward MaxSessions (their slots are
// for clients' streams); they have their own cap, MaxFlowTargets, on the
// targets flow-captured at once over all captures, and their rings draw
// on the same ring memory budget as every capture (MaxRingMemory; one
// target's rings also on MaxSessionRingMemory and MaxInterfacesPerSession).
// A target is flow-captured by one capture at a time: a capture skips the
// targets another one holds, and is refused (409) when that leaves none.
// Each target's table holds at most MaxFlows flows (flows.SlotSize bytes
// each, allocated at once).
//
// A capture captures the targets its query selected when it was created;
// a target that goes away (its netns vanished) leaves it and Count drops.
// The capture stays listed until DELETE, as in Skydive; unlike Skydive it
// does not take in targets that appear later.
//
// Goroutines. Each target's capture runs on a goroutine of its own
// (flowRegistry.run), and one goroutine per Server (flowRegistry.loop)
// pushes to subscribers; it runs while there is a subscriber. The namespace watcher of every capture (watchNetNS) ends a
// target whose namespace is gone. Every one of them, and every
// subscriber's handler, is counted in Server.wg and ends with Server.base,
// so Shutdown ends and waits for them like for the pcapng sessions.

// Defaults of the flow settings of Config.
const (
	// DefaultFlowInterval is Skydive's flow update interval (1 s).
	DefaultFlowInterval = time.Second
	// DefaultMaxFlowTargets bounds the memory of flow tables (16 x
	// DefaultMaxFlows x flows.SlotSize: about 13 MiB) and of their rings
	// (16 x 1 MiB per interface, within MaxRingMemory).
	DefaultMaxFlowTargets = 16
)

// flowRing sizes each interface's ring of a flow capture: 1 MiB holds
// about 3000 packets of flows.Snaplen bytes (more of smaller ones), and
// the reader only counts them, so it drains far faster than a pcapng
// stream is written. A partly filled block is handed over after 10 ms
// rather than 2: a flow is reported once a second at most, and quiet
// captures wake up less.
var flowRing = capture.RingOptions{BlockSize: 128 << 10, NumBlocks: 8, BlockTimeout: 10 * time.Millisecond}

const (
	// maxQueryBody bounds the JSON body of POST /api/capture and
	// /api/topology.
	maxQueryBody = 64 << 10
	// flowsPerMessage bounds one subscriber message (about 700 bytes of
	// JSON per flow): a push of more flows is split.
	flowsPerMessage = 512
	// flowSubQueue is how many pushes wait for one subscriber (each one
	// or more messages: a push of 4,096 flows is 8); a push that finds its
	// queue full is dropped for it, its messages counted.
	flowSubQueue = 8
	// maxFlowSubscribers bounds the subscriber connections.
	maxFlowSubscribers = 64
)

var errFlowSubscribers = fmt.Errorf("too many flow subscribers (%d), try again later", maxFlowSubscribers)

// statusError is an /api/ error with its status.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

func apiFail(code int, format string, args ...any) error {
	return &statusError{code: code, msg: fmt.Sprintf(format, args...)}
}

// targetError is a failure to open one target of a flow capture.
type targetError struct {
	name string
	err  error
}

func (e *targetError) Error() string { return "target " + e.name + ": " + e.err.Error() }
func (e *targetError) Unwrap() error { return e.err }

// writeAPIError answers err in the /api/ envelope: a *statusError with its
// status, a target's capture or lookup error as GET /capture.pcapng would
// (status and reason), naming the target.
func writeAPIError(w http.ResponseWriter, err error) {
	var se *statusError
	if errors.As(err, &se) {
		apiError(w, se.code, "%s", se.msg)
		return
	}
	var te *targetError
	if errors.As(err, &te) {
		apiError(w, httpStatus(te.err), "target %s: %s", te.name, reasonOf(te.err))
		return
	}
	apiError(w, httpStatus(err), "%s", reasonOf(err))
}

// flowRegistry holds the flow captures and the subscribers of a Server.
type flowRegistry struct {
	s          *Server
	maxFlows   int
	maxTargets int // 0: no cap
	interval   time.Duration

	mu       sync.Mutex
	captures map[string]*flowCapture
	// claimed maps a target's TID to the capture that captures it, or is
	// opening it: what MaxFlowTargets counts.
	claimed map[string]string
	// live holds the targets whose capture runs, listed or being
	// stopped, until run retires them.
	live    map[*flowNode]*flowCapture
	subs    map[*flowSub]struct{}
	looping bool // loop runs
	// Totals of targets whose capture ended, so counters never go back.
	ended   flows.Stats
	kdrops  uint64
	dropped uint64 // subscriber messages dropped
}

// flowCapture is one POST /api/capture.
type flowCapture struct {
	uuid    string
	query   string
	filter  string
	created time.Time
	cancel  context.CancelCauseFunc
	nodes   []*flowNode // fixed once registered
}

// flowNode is one captured target of a flow capture.
type flowNode struct {
	node  flows.Node
	ino   uint64
	table *flows.Table
	cs    *capture.Session
	done  chan struct{} // closed when run has retired it
	// running is under flowRegistry.mu: false once retired.
	running bool
	misses  []int // owned by watchNetNS
}

// flowSub is one subscriber connection.
type flowSub struct {
	ch      chan [][]byte // pushes, each its messages
	dropped uint64        // under flowRegistry.mu
}

func newFlowRegistry(s *Server) *flowRegistry {
	r := &flowRegistry{
		s:          s,
		maxFlows:   s.cfg.MaxFlows,
		maxTargets: s.cfg.MaxFlowTargets,
		interval:   s.cfg.FlowInterval,
		captures:   map[string]*flowCapture{},
		claimed:    map[string]string{},
		live:       map[*flowNode]*flowCapture{},
		subs:       map[*flowSub]struct{}{},
	}
	if r.maxFlows == 0 {
		r.maxFlows = flows.DefaultMaxFlows
	}
	switch {
	case r.maxTargets == 0:
		r.maxTargets = DefaultMaxFlowTargets
	case r.maxTargets < 0:
		r.maxTargets = 0
	}
	if r.interval <= 0 {
		r.interval = DefaultFlowInterval
	}
	return r
}

// track counts n goroutines about to start in s.wg, unless the server is
// shutting down: Shutdown waits for them.
func (s *Server) track(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.base.Err() != nil {
		return false
	}
	s.wg.Add(n)
	return true
}

// targetTID is a target's node ID: a SHA-1 of its netns and name in UUID
// form (8-4-4-4-12), stable across listings and restarts.
func targetTID(t discovery.Target) string {
	sum := sha1.Sum(fmt.Appendf(nil, "netns:%d:%s", t.NetNS, t.Name))
	return uuidForm(sum[:16])
}

func uuidForm(b []byte) string {
	h := hex.EncodeToString(b[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// newUUID returns a random (version 4) UUID, a flow capture's ID.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuidForm(b[:])
}

// nodeOf is a target as a Skydive node (see the top of this file).
func nodeOf(host string, t discovery.Target) flows.Node {
	id := targetTID(t)
	typ := t.Type
	if typ == discovery.TypeBindMount {
		typ = "netns"
	}
	path := fmt.Sprintf("netns:%d", t.NetNS)
	if t.PID > 0 {
		path = fmt.Sprintf("/proc/%d/ns/net", t.PID)
	}
	return flows.Node{ID: id, Host: host, Metadata: flows.NodeMetadata{Name: t.Name, Type: typ, Path: path, TID: id}}
}

// nodes lists the targets as nodes, in the discovery's order, and the
// targets by node ID.
func (s *Server) nodes(ctx context.Context) ([]flows.Node, map[string]discovery.Target, error) {
	ts, err := s.listTargets(ctx)
	if err != nil {
		return nil, nil, apiFail(http.StatusBadGateway, "discovery failed: %v", err)
	}
	ns := make([]flows.Node, 0, len(ts))
	byID := make(map[string]discovery.Target, len(ts))
	for _, t := range ts {
		n := nodeOf(s.cfg.NodeName, t)
		ns = append(ns, n)
		byID[n.ID] = t
	}
	return ns, byID, nil
}

// readQuery reads and parses the GremlinQuery (and Skydive's BPFFilter)
// of a JSON body; other fields Skydive's clients send (Name, Description,
// ...) are ignored. A *flows.QueryError becomes a 400.
func readQuery(w http.ResponseWriter, r *http.Request) (q *flows.Query, text, filter string, err error) {
	var body struct {
		GremlinQuery string `json:"GremlinQuery"`
		BPFFilter    string `json:"BPFFilter"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxQueryBody)).Decode(&body); err != nil {
		return nil, "", "", apiFail(http.StatusBadRequest, "the body must be a JSON object with a GremlinQuery: %v", err)
	}
	if strings.TrimSpace(body.GremlinQuery) == "" {
		return nil, "", "", apiFail(http.StatusBadRequest, "no GremlinQuery in the body")
	}
	if len(body.BPFFilter) > maxFilterLen {
		return nil, "", "", apiFail(http.StatusBadRequest, "BPFFilter is longer than %d bytes", maxFilterLen)
	}
	q, err = flows.ParseQuery(body.GremlinQuery)
	if err != nil {
		return nil, "", "", apiFail(http.StatusBadRequest, "%v", err)
	}
	return q, body.GremlinQuery, body.BPFFilter, nil
}

// handleTopology answers POST /api/topology: G.V() over the targets,
// G.Flows() over the running flow captures.
func (s *Server) handleTopology(w http.ResponseWriter, r *http.Request) {
	query, _, _, err := readQuery(w, r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	var nodes []flows.Node
	if query.Source == flows.SourceNodes {
		if nodes, _, err = s.nodes(r.Context()); err != nil {
			writeAPIError(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, query.Eval(func() []flows.Node { return nodes }, s.flows.flows))
}

// FlowCaptureInfo is a flow capture as Skydive's capture API shows it.
type FlowCaptureInfo struct {
	UUID         string `json:"UUID"`
	GremlinQuery string `json:"GremlinQuery"`
	// BPFFilter is the tcpdump filter of the capture's rings, if any.
	BPFFilter string `json:"BPFFilter,omitempty"`
	// Count is the targets captured now.
	Count int `json:"Count"`
}

// handleFlowCaptureCreate answers POST /api/capture.
func (s *Server) handleFlowCaptureCreate(w http.ResponseWriter, r *http.Request) {
	query, q, filter, err := readQuery(w, r)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if query.Source != flows.SourceNodes {
		writeAPIError(w, apiFail(http.StatusBadRequest, "a capture's GremlinQuery selects targets: it starts with G.V()"))
		return
	}
	nodes, targets, err := s.nodes(r.Context())
	if err != nil {
		writeAPIError(w, err)
		return
	}
	matched, ok := query.Eval(func() []flows.Node { return nodes }, nil).([]flows.Node)
	if !ok {
		writeAPIError(w, apiFail(http.StatusBadRequest, "a capture's GremlinQuery selects targets: it cannot end in Count()"))
		return
	}
	if len(matched) == 0 {
		writeAPIError(w, apiFail(http.StatusBadRequest, "no target matches %s", clip(q, 200)))
		return
	}
	info, err := s.flows.start(r.Context(), q, filter, matched, targets)
	if err != nil {
		s.log.Info("flow capture refused", zap.String("query", q), zap.String("remote", r.RemoteAddr), zap.Error(err))
		writeAPIError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// handleFlowCaptures answers GET /api/capture: the captures by UUID.
func (s *Server) handleFlowCaptures(w http.ResponseWriter, r *http.Request) {
	out := map[string]FlowCaptureInfo{}
	for _, c := range s.flows.list() {
		out[c.UUID] = c
	}
	writeJSON(w, http.StatusOK, out)
}

// handleFlowCaptureDelete answers DELETE /api/capture/{id}: the capture
// ends, its rings are closed and its flows leave G.Flows(), before the
// answer.
func (s *Server) handleFlowCaptureDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !s.flows.stop(r.Context(), id) {
		apiError(w, http.StatusNotFound, "no flow capture with UUID %q", id)
		return
	}
	s.log.Info("flow capture stopped by operator", zap.String("flow_capture", id), zap.String("remote", r.RemoteAddr))
	apiOK(w, "", nil)
}

// start opens a flow capture of the matched nodes that no other capture
// holds, and runs it.
func (r *flowRegistry) start(ctx context.Context, query, filter string, matched []flows.Node, targets map[string]discovery.Target) (FlowCaptureInfo, error) {
	s := r.s
	fc := &flowCapture{uuid: newUUID(), query: query, filter: filter, created: time.Now()}

	// Claim the targets first, so that concurrent requests neither
	// capture one twice nor together pass the cap.
	r.mu.Lock()
	var fresh []flows.Node
	busy := ""
	for _, n := range matched {
		if u, ok := r.claimed[n.ID]; ok {
			busy = u
			continue
		}
		fresh = append(fresh, n)
	}
	switch {
	case len(fresh) == 0:
		r.mu.Unlock()
		return FlowCaptureInfo{}, apiFail(http.StatusConflict, "every target the query selects is flow-captured already (by capture %s)", busy)
	case r.maxTargets > 0 && len(fresh) > r.maxTargets:
		r.mu.Unlock()
		return FlowCaptureInfo{}, apiFail(http.StatusBadRequest, "the query selects %d targets, over --max-flow-targets %d: select fewer", len(fresh), r.maxTargets)
	case r.maxTargets > 0 && len(r.claimed)+len(fresh) > r.maxTargets:
		n := len(r.claimed)
		r.mu.Unlock()
		return FlowCaptureInfo{}, apiFail(http.StatusServiceUnavailable, "too many flow capture targets: %d of --max-flow-targets %d in use, the query selects %d more; try again later", n, r.maxTargets, len(fresh))
	}
	for _, n := range fresh {
		r.claimed[n.ID] = fc.uuid
	}
	r.mu.Unlock()

	fail := func(err error) (FlowCaptureInfo, error) {
		r.mu.Lock()
		for _, n := range fresh {
			delete(r.claimed, n.ID)
		}
		r.mu.Unlock()
		for _, n := range fc.nodes {
			n.cs.Close()
		}
		return FlowCaptureInfo{}, err
	}
	for _, n := range fresh {
		t := targets[n.ID]
		cs, err := s.openFlowTarget(ctx, t, filter)
		if err != nil {
			return fail(&targetError{name: t.Name, err: err})
		}
		fc.nodes = append(fc.nodes, &flowNode{node: n, ino: t.NetNS, cs: cs, done: make(chan struct{}), running: true})
		tb, err := flows.New(flows.Config{MaxFlows: r.maxFlows, NodeTID: n.Metadata.TID})
		if err != nil {
			return fail(err)
		}
		fc.nodes[len(fc.nodes)-1].table = tb
	}

	// The capture outlives the request: its context is the server's.
	var runCtx context.Context
	runCtx, fc.cancel = context.WithCancelCause(s.base)
	if !s.track(len(fc.nodes)) {
		fc.cancel(errShutdown)
		return fail(errShutdown)
	}
	r.mu.Lock()
	r.captures[fc.uuid] = fc
	for _, n := range fc.nodes {
		r.live[n] = fc
	}
	r.mu.Unlock()
	names := make([]string, len(fc.nodes))
	for i, n := range fc.nodes {
		names[i] = n.node.Metadata.Name
		go r.run(runCtx, fc, n)
	}
	s.log.Info("flow capture started", zap.String("flow_capture", fc.uuid), zap.String("query", query),
		zap.String("filter", filter), zap.Strings("targets", names), zap.Duration("setup", time.Since(fc.created)))
	return FlowCaptureInfo{UUID: fc.uuid, GremlinQuery: query, BPFFilter: filter, Count: len(fc.nodes)}, nil
}

// openFlowTarget opens the rings of every interface of t (and of those
// that appear later), as GET /capture.pcapng opens a netns, with the
// flows' snaplen and ring. Unordered: a flow is one interface's, so the
// reader need not hold packets back to merge the rings in timestamp order
// (which, with a quiet lo next to the busy interface, made it wake on
// timers for nothing).
func (s *Server) openFlowTarget(ctx context.Context, t discovery.Target, filter string) (*capture.Session, error) {
	ns, err := s.openTarget(t)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	tgs := []capture.Target{{NetNS: ns, Name: t.Name}}
	if err := s.denyHost(tgs); err != nil {
		return nil, err
	}
	return s.openCapture(ctx, capture.Config{
		Targets: tgs,
		Filter:  filter,
		Snaplen: flows.Snaplen,
		// Flows need no promiscuous mode: a target's own traffic is what
		// they count, and other captures of the interface are not
		// disturbed.
		Promiscuous: false,
		Ring:        flowRing,
		FitRing:     true,
		Exclude:     s.own,
		Unordered:   true,
	})
}

// run captures one target until its capture is stopped, the server shuts
// down, or its netns goes away, then retires it.
func (r *flowRegistry) run(ctx context.Context, fc *flowCapture, n *flowNode) {
	defer r.s.wg.Done()
	defer close(n.done)
	start := time.Now()
	err := n.cs.Run(ctx, flows.NewSink(n.cs.Interfaces(), n.table))
	final := n.table.Stats()
	var kdrops uint64
	for _, x := range n.cs.Stats() {
		kdrops += x.KernelDropped
	}
	r.mu.Lock()
	r.ended.Created += final.Created
	r.ended.Evicted += final.Evicted
	r.ended.Expired += final.Expired
	r.ended.Packets += final.Packets
	r.ended.Undecoded += final.Undecoded
	r.kdrops += kdrops
	n.running = false
	delete(r.live, n)
	if r.claimed[n.node.ID] == fc.uuid {
		delete(r.claimed, n.node.ID)
	}
	r.mu.Unlock()
	if err == nil || errors.Is(err, context.Canceled) {
		// What ended it: DELETE's errOperator, else the server's end.
		err = context.Cause(ctx)
		if errors.Is(err, context.Canceled) {
			err = nil
			if r.s.base.Err() != nil {
				err = errShutdown
			}
		}
	}
	r.s.log.Info("flow capture target ended", zap.String("flow_capture", fc.uuid), zap.String("target", n.node.Metadata.Name),
		zap.Uint64("netns", n.ino), zap.Uint64("packets", final.Packets), zap.Uint64("flows", final.Created),
		zap.Uint64("evicted", final.Evicted), zap.Uint64("kernel_dropped", kdrops), zap.Duration("duration", time.Since(start)),
		zap.String("reason", reasonOf(err)), zap.NamedError("cause", err))
}

// stop ends the capture id and waits for its targets to be retired (or
// for ctx); false if there is no such capture.
func (r *flowRegistry) stop(ctx context.Context, id string) bool {
	r.mu.Lock()
	fc, ok := r.captures[id]
	delete(r.captures, id)
	r.mu.Unlock()
	if !ok {
		return false
	}
	fc.cancel(errOperator)
	for _, n := range fc.nodes {
		select {
		case <-n.done:
		case <-ctx.Done():
			return true
		}
	}
	return true
}

// list returns the captures, oldest first.
func (r *flowRegistry) list() []FlowCaptureInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []FlowCaptureInfo
	for _, fc := range r.sortedLocked() {
		c := FlowCaptureInfo{UUID: fc.uuid, GremlinQuery: fc.query, BPFFilter: fc.filter}
		for _, n := range fc.nodes {
			if n.running {
				c.Count++
			}
		}
		out = append(out, c)
	}
	return out
}

func (r *flowRegistry) sortedLocked() []*flowCapture {
	fcs := make([]*flowCapture, 0, len(r.captures))
	for _, fc := range r.captures {
		fcs = append(fcs, fc)
	}
	slices.SortFunc(fcs, func(a, b *flowCapture) int {
		if c := a.created.Compare(b.created); c != 0 {
			return c
		}
		return strings.Compare(a.uuid, b.uuid)
	})
	return fcs
}

// tablesLocked returns the tables of the running targets, oldest capture
// first.
func (r *flowRegistry) tablesLocked() []*flows.Table {
	var ts []*flows.Table
	for _, fc := range r.sortedLocked() {
		for _, n := range fc.nodes {
			if n.running {
				ts = append(ts, n.table)
			}
		}
	}
	return ts
}

// flows returns the flows of every running target: G.Flows().
func (r *flowRegistry) flows() []flows.Flow {
	r.mu.Lock()
	ts := r.tablesLocked()
	r.mu.Unlock()
	parts := make([][]flows.Flow, len(ts))
	for i, t := range ts {
		parts[i] = t.Flows()
	}
	return slices.Concat(parts...) // one copy, sized once
}

// flowStats are the counters of /metrics.
type flowStats struct {
	flows.Stats
	kdrops  uint64 // kernel drops in flow captures' rings
	dropped uint64 // subscriber messages dropped
	targets int    // targets flow-captured now
	subs    int
}

// stats sums the retired targets' totals and the live ones' counters,
// under the lock that retiring takes: a target counts once, live or in
// the totals, so the counters never go backwards.
func (r *flowRegistry) stats() flowStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := flowStats{Stats: r.ended, kdrops: r.kdrops, dropped: r.dropped, subs: len(r.subs), targets: len(r.live)}
	for n := range r.live {
		x := n.table.Stats()
		st.Tracked += x.Tracked
		st.Created += x.Created
		st.Evicted += x.Evicted
		st.Expired += x.Expired
		st.Packets += x.Packets
		st.Undecoded += x.Undecoded
		if n.cs != nil { // nil only in tests that feed tables directly
			for _, c := range n.cs.Stats() {
				st.kdrops += c.KernelDropped
			}
		}
	}
	return st
}

// ensureLoopLocked starts loop unless it runs (under r.mu).
func (r *flowRegistry) ensureLoopLocked() {
	if r.looping || !r.s.track(1) {
		return
	}
	r.looping = true
	go r.loop()
}

// loop pushes updated flows to the subscribers every interval, while
// there is a subscriber (the flows' updates wait in their tables until
// one comes).
func (r *flowRegistry) loop() {
	defer r.s.wg.Done()
	push := time.NewTicker(r.interval)
	defer push.Stop()
	for {
		select {
		case <-r.s.base.Done():
			r.mu.Lock()
			r.looping = false
			r.mu.Unlock()
			return
		case <-push.C:
			r.push()
		}
		r.mu.Lock()
		if len(r.subs) == 0 {
			r.looping = false
			r.mu.Unlock()
			return
		}
		r.mu.Unlock()
	}
}

// flowMessage is Skydive's structured WebSocket message
// (ws.NewStructMessage("flow", "store", flows)).
type flowMessage struct {
	Namespace string       `json:"Namespace"`
	Type      string       `json:"Type"`
	UUID      string       `json:"UUID"`
	Status    int          `json:"Status"`
	Obj       []flows.Flow `json:"Obj"`
}

// push sends the flows updated since the previous push to every
// subscriber. Table.Updated is destructive, so this is its only caller:
// the flows are read once and the same messages go to everyone.
func (r *flowRegistry) push() {
	r.mu.Lock()
	if len(r.subs) == 0 {
		r.mu.Unlock()
		return
	}
	ts := r.tablesLocked()
	r.mu.Unlock()
	var fs []flows.Flow
	for _, t := range ts {
		fs = append(fs, t.Updated()...)
	}
	var msgs [][]byte
	for len(fs) > 0 {
		n := min(len(fs), flowsPerMessage)
		b, err := json.Marshal(flowMessage{Namespace: "flow", Type: "store", UUID: newUUID(), Status: http.StatusOK, Obj: fs[:n]})
		if err != nil {
			r.s.log.Error("flow message", zap.Error(err))
			return
		}
		msgs = append(msgs, b)
		fs = fs[n:]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for sub := range r.subs {
		select {
		case sub.ch <- msgs:
		default:
			sub.dropped += uint64(len(msgs))
			r.dropped += uint64(len(msgs))
		}
	}
}

// watched lists the running targets for watchNetNS, which ends those
// whose namespace nothing but the capture holds.
func (r *flowRegistry) watched() []watched {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := make([]watched, 0, len(r.live))
	for n := range r.live {
		ws = append(ws, watched{n.cs, n.cs.Targets(), &n.misses, "flow_capture", n.node.ID, "flow capture"})
	}
	return ws
}

// subscribe adds a subscriber, counted in Server.wg until unsubscribe.
func (r *flowRegistry) subscribe() (*flowSub, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.subs) >= maxFlowSubscribers {
		return nil, errFlowSubscribers
	}
	if !r.s.track(1) {
		return nil, errShutdown
	}
	sub := &flowSub{ch: make(chan [][]byte, flowSubQueue)}
	r.subs[sub] = struct{}{}
	r.ensureLoopLocked()
	return sub, nil
}

func (r *flowRegistry) unsubscribe(sub *flowSub) uint64 {
	r.mu.Lock()
	delete(r.subs, sub)
	d := sub.dropped
	r.mu.Unlock()
	r.s.wg.Done()
	return d
}

// handleFlowSubscriber serves /ws/subscriber/flow: a WebSocket on which
// every push of updated flows arrives as one or more text messages,
// {"Namespace":"flow","Type":"store","UUID":...,"Status":200,"Obj":[flows]},
// as Skydive's analyzer sends them. Nothing is read from the client but
// control frames. A client that reads slower than the pushes come loses
// messages (its queue holds flowSubQueue), never the service's memory; a
// write blocked for ClientTimeout ends the connection.
func (s *Server) handleFlowSubscriber(w http.ResponseWriter, r *http.Request) {
	if !isUpgrade(r) {
		upgradeRequired(w, "/ws/subscriber/flow sends flow updates")
		return
	}
	c, gw, ok := s.accept(w, r)
	if !ok {
		return
	}
	// No ISBs to send before a close: the client's close frame passes at
	// once. The gate is kept to close the connection under the library at
	// a shutdown's hard stop.
	gw.gate.release()
	connCtx := c.CloseRead(context.Background())
	log := s.log.With(zap.String("subscriber", newID()), zap.String("remote", r.RemoteAddr))
	sub, err := s.flows.subscribe()
	if err != nil {
		code := websocket.StatusPolicyViolation // errFlowSubscribers
		if errors.Is(err, errShutdown) {
			code = websocket.StatusGoingAway
		}
		c.Close(code, err.Error())
		return
	}
	log.Info("flow subscriber connected")
	var sent int
	defer func() {
		dropped := s.flows.unsubscribe(sub)
		log.Info("flow subscriber left", zap.Int("messages", sent), zap.Uint64("dropped", dropped))
	}()
	ctx := s.untilHardStop(connCtx)
	// A quiet subscriber is pinged, so that one that vanished is noticed
	// (its TCP settings do the rest, Server.connContext).
	ping := time.NewTicker(s.cfg.ClientTimeout / 2)
	defer ping.Stop()
	active := false
	for {
		select {
		case <-s.base.Done():
			stop := context.AfterFunc(s.hard, func() { _ = gw.gate.Close() })
			c.Close(websocket.StatusGoingAway, "service shutting down")
			stop()
			return
		case <-connCtx.Done():
			c.CloseNow()
			return
		case msgs := <-sub.ch:
			for _, m := range msgs {
				wctx, cancel := context.WithTimeout(ctx, s.cfg.ClientTimeout)
				gw.co.begin()
				err := c.Write(wctx, websocket.MessageText, m)
				if e := gw.co.end(); err == nil {
					err = e
				}
				cancel()
				if err != nil {
					log.Info("flow subscriber write failed", zap.Error(err))
					c.CloseNow()
					return
				}
				sent++
			}
			active = true
		case <-ping.C:
			if active {
				active = false
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, s.cfg.ClientTimeout/2)
			err := c.Ping(pctx)
			cancel()
			if err != nil && connCtx.Err() == nil {
				log.Info("flow subscriber does not answer", zap.Error(err))
				c.CloseNow()
				return
			}
		}
	}
}
