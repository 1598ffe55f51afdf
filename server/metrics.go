package server

import (
	"errors"
	"sync/atomic"

	"github.com/packetflix/packetflix/capture"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Session outcomes, the only label of packetflix_sessions_total: a fixed
// set, so the series count never grows with sessions.
const (
	outcomeRefused  = "refused"  // never started: bad request, unknown target, limits
	outcomeClient   = "client"   // the client closed or went away
	outcomeEnded    = "ended"    // the capture ended on its own, or a limit was reached
	outcomeShutdown = "shutdown" // the service stopped
	outcomeOperator = "operator" // stopped through the management API
	outcomeError    = "error"    // a failure on our side
)

// metrics are the service's Prometheus metrics. Packet counters are totals
// over finished sessions plus the live counters of running ones, read at
// scrape time: no per-packet metric work, and no per-session labels.
type metrics struct {
	reg      *prometheus.Registry
	sessions *prometheus.CounterVec
	setup    prometheus.Histogram
	// targetsGone counts capture targets whose netns was gone while a
	// session captured them (their interfaces ended).
	targetsGone prometheus.Counter

	// Totals of finished sessions.
	delivered, bytes, dropped, kdropped, skipped, received atomic.Uint64
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.sessions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "packetflix_sessions_total",
		Help: "Capture sessions by how they ended.",
	}, []string{"outcome"})
	for _, o := range []string{outcomeRefused, outcomeClient, outcomeEnded, outcomeShutdown, outcomeOperator, outcomeError} {
		m.sessions.WithLabelValues(o)
	}
	m.setup = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "packetflix_capture_setup_seconds",
		Help:    "Time from a capture request to the capture running (netns lookup, rings open).",
		Buckets: []float64{.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5},
	})
	m.targetsGone = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "packetflix_capture_targets_gone_total",
		Help: "Capture targets whose network namespace was gone mid-capture (nothing but the capture held it); their interfaces ended.",
	})
	m.reg.MustRegister(m.sessions, m.setup, m.targetsGone, &liveCollector{s: s, m: m}, flowCollector{s},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// retire moves a session's final counters into the totals. Under the
// registry lock, and the session no longer counts as live, so a scrape sees
// it exactly once: live or in the totals.
func (s *Server) retire(ss *liveSession, t capture.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.metrics
	m.delivered.Add(t.Delivered)
	m.bytes.Add(t.Bytes)
	m.dropped.Add(t.Dropped)
	m.kdropped.Add(t.KernelDropped)
	m.skipped.Add(t.Skipped)
	m.received.Add(t.Received)
	ss.cs, ss.st = nil, nil
}

// outcome counts how a session ended.
func (m *metrics) outcome(err error, started, clientGone bool) {
	o := outcomeEnded
	switch {
	case !started:
		o = outcomeRefused
		if errors.Is(err, errShutdown) {
			o = outcomeShutdown
		}
	case clientGone:
		o = outcomeClient
	case errors.Is(err, errShutdown):
		o = outcomeShutdown
	case errors.Is(err, errOperator):
		o = outcomeOperator
	case err != nil:
		if code, _ := closeFor(err); code == 1011 {
			o = outcomeError
		}
	}
	m.sessions.WithLabelValues(o).Inc()
}

var (
	descActive    = prometheus.NewDesc("packetflix_sessions_active", "Capture sessions running now.", nil, nil)
	descDelivered = prometheus.NewDesc("packetflix_packets_delivered_total", "Packets handed to clients' streams.", nil, nil)
	descBytes     = prometheus.NewDesc("packetflix_bytes_delivered_total", "Captured bytes handed to clients' streams.", nil, nil)
	descKDropped  = prometheus.NewDesc("packetflix_kernel_drops_total", "Packets the kernel dropped because a capture ring was full (client slower than the traffic).", nil, nil)
	descReceived  = prometheus.NewDesc("packetflix_kernel_received_total", "Packets the kernel accepted into capture rings (filter passed), drops included; = delivered + dropped + pending.", nil, nil)
	descDropped   = prometheus.NewDesc("packetflix_packets_dropped_total", "Received packets never delivered: kernel drops plus skipped.", nil, nil)
	descSkipped   = prometheus.NewDesc("packetflix_packets_skipped_total", "Packets that reached a capture ring but were not delivered (older than a reused ring's capture, refused by an ending stream, left in the ring at the end).", nil, nil)
	descPending   = prometheus.NewDesc("packetflix_packets_pending", "Packets in capture rings not yet read, running sessions.", nil, nil)
	descQueued    = prometheus.NewDesc("packetflix_send_queue_bytes", "Bytes being written to WebSocket and HTTP clients (stuck there while a client does not read), all sessions.", nil, nil)
	descRingMem   = prometheus.NewDesc("packetflix_ring_memory_bytes", "Kernel ring memory locked now: running captures' rings and idle rings kept for reuse.", nil, nil)
	descRingMax   = prometheus.NewDesc("packetflix_ring_memory_max_bytes", "The ring memory budget (--max-ring-memory); 0 means no cap.", nil, nil)
)

// liveCollector reports the counters that include running sessions.
type liveCollector struct {
	s *Server
	m *metrics
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descDelivered, descBytes, descKDropped, descReceived, descDropped, descSkipped, descPending, descQueued, descRingMem, descRingMax} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	var live capture.Stats
	var queued int64
	// Under the registry lock, against retire: every session is counted
	// once, live or in the totals, so counters never go backwards.
	c.s.mu.Lock()
	active := len(c.s.sessions)
	for _, ss := range c.s.sessions {
		if ss.cs == nil {
			continue
		}
		for _, x := range ss.cs.Stats() {
			live.Delivered += x.Delivered
			live.Bytes += x.Bytes
			live.Dropped += x.Dropped
			live.KernelDropped += x.KernelDropped
			live.Skipped += x.Skipped
			live.Pending += x.Pending
			live.Received += x.Received
		}
		queued += ss.st.Queued()
	}
	m := c.m
	delivered, bytes, dropped, received := m.delivered.Load()+live.Delivered, m.bytes.Load()+live.Bytes, m.dropped.Load()+live.Dropped, m.received.Load()+live.Received
	kdropped, skipped := m.kdropped.Load()+live.KernelDropped, m.skipped.Load()+live.Skipped
	c.s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(descDelivered, prometheus.CounterValue, float64(delivered))
	ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(bytes))
	ch <- prometheus.MustNewConstMetric(descKDropped, prometheus.CounterValue, float64(kdropped))
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(received))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(dropped))
	ch <- prometheus.MustNewConstMetric(descSkipped, prometheus.CounterValue, float64(skipped))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(live.Pending))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(queued))
	ch <- prometheus.MustNewConstMetric(descRingMem, prometheus.GaugeValue, float64(c.s.budget.InUse()))
	ch <- prometheus.MustNewConstMetric(descRingMax, prometheus.GaugeValue, float64(c.s.budget.Max()))
}

var (
	descFlowsTracked  = prometheus.NewDesc("packetflix_flows_tracked", "Flows in the tables of running flow captures (POST /api/capture) now.", nil, nil)
	descFlowsCreated  = prometheus.NewDesc("packetflix_flows_created_total", "Flows started in flow captures' tables.", nil, nil)
	descFlowsEvicted  = prometheus.NewDesc("packetflix_flows_evicted_total", "Flows ended to make room in a full table (--max-flows): the table's idlest flow.", nil, nil)
	descFlowsExpired  = prometheus.NewDesc("packetflix_flows_expired_total", "Flows ended after 10 minutes without a packet.", nil, nil)
	descFlowPackets   = prometheus.NewDesc("packetflix_flow_packets_total", "Packets counted into flows by flow captures.", nil, nil)
	descFlowUndecoded = prometheus.NewDesc("packetflix_flow_packets_undecoded_total", "Packets flow captures read but could not count into a flow (unknown link type, truncated headers).", nil, nil)
	descFlowKDropped  = prometheus.NewDesc("packetflix_flow_kernel_drops_total", "Packets the kernel dropped because a flow capture's ring was full.", nil, nil)
	descFlowTargets   = prometheus.NewDesc("packetflix_flow_targets_active", "Targets flow-captured now (--max-flow-targets caps them).", nil, nil)
	descFlowSubs      = prometheus.NewDesc("packetflix_flow_subscribers", "Clients of /ws/subscriber/flow now.", nil, nil)
	descFlowMsgDrops  = prometheus.NewDesc("packetflix_flow_messages_dropped_total", "Flow update messages not sent to a /ws/subscriber/flow client that read too slowly (its queue was full).", nil, nil)
)

// flowCollector reports the flow captures' counters: totals of retired
// targets plus the live tables', read at scrape time (flowRegistry.stats).
type flowCollector struct{ s *Server }

func (c flowCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descFlowsTracked, descFlowsCreated, descFlowsEvicted, descFlowsExpired, descFlowPackets,
		descFlowUndecoded, descFlowKDropped, descFlowTargets, descFlowSubs, descFlowMsgDrops} {
		ch <- d
	}
}

func (c flowCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.flows.stats()
	ch <- prometheus.MustNewConstMetric(descFlowsTracked, prometheus.GaugeValue, float64(st.Tracked))
	ch <- prometheus.MustNewConstMetric(descFlowsCreated, prometheus.CounterValue, float64(st.Created))
	ch <- prometheus.MustNewConstMetric(descFlowsEvicted, prometheus.CounterValue, float64(st.Evicted))
	ch <- prometheus.MustNewConstMetric(descFlowsExpired, prometheus.CounterValue, float64(st.Expired))
	ch <- prometheus.MustNewConstMetric(descFlowPackets, prometheus.CounterValue, float64(st.Packets))
	ch <- prometheus.MustNewConstMetric(descFlowUndecoded, prometheus.CounterValue, float64(st.Undecoded))
	ch <- prometheus.MustNewConstMetric(descFlowKDropped, prometheus.CounterValue, float64(st.kdrops))
	ch <- prometheus.MustNewConstMetric(descFlowTargets, prometheus.GaugeValue, float64(st.targets))
	ch <- prometheus.MustNewConstMetric(descFlowSubs, prometheus.GaugeValue, float64(st.subs))
	ch <- prometheus.MustNewConstMetric(descFlowMsgDrops, prometheus.CounterValue, float64(st.dropped))
}
