package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/packetflix/packetflix/session"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// The management API (/api/v1/...): JSON, with one envelope for every
// answer: {"status":true, ...} on success, {"status":false,"error":"..."}
// with a fitting HTTP status otherwise (the Packetriot convention).

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func apiError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, map[string]any{"status": false, "error": fmt.Sprintf(format, args...)})
}

func apiOK(w http.ResponseWriter, key string, v any) {
	body := map[string]any{"status": true}
	if key != "" {
		body[key] = v
	}
	writeJSON(w, http.StatusOK, body)
}

// CaptureInfo describes a live capture session.
type CaptureInfo struct {
	ID     string     `json:"id"`
	Target TargetInfo `json:"target"` // the first target
	// Targets lists every target; an interface's target is its Target.
	Targets     []TargetInfo    `json:"targets"`
	Interfaces  []InterfaceInfo `json:"interfaces"`
	Filter      string          `json:"filter"`
	Snaplen     int             `json:"snaplen"`
	Promiscuous bool            `json:"promiscuous"`
	Client      string          `json:"client"`
	Transport   string          `json:"transport"`
	StartTime   time.Time       `json:"start_time"`
	BytesQueued int64           `json:"bytes_queued"`
	// Memory is what the session holds: its kernel rings (ring_bytes per
	// interface) and its one message buffer.
	RingBytes   int64 `json:"ring_bytes"`
	BufferBytes int64 `json:"buffer_bytes"`
}

// TargetInfo is what a session captures.
type TargetInfo struct {
	NetNS uint64 `json:"netns"`
	Name  string `json:"name,omitempty"`
	Type  string `json:"type,omitempty"`
}

// InterfaceInfo holds one captured interface's live counters (the
// capture package doc, "Counters", defines them): kernel_received =
// packets + dropped + pending, and dropped = kernel_dropped + skipped.
type InterfaceInfo struct {
	Name           string `json:"name"`
	Target         int    `json:"target"` // index into CaptureInfo.Targets
	LinkType       uint16 `json:"link_type"`
	Packets        uint64 `json:"packets"` // delivered: written to the stream
	Bytes          uint64 `json:"bytes"`
	KernelReceived uint64 `json:"kernel_received"`
	KernelDropped  uint64 `json:"kernel_dropped"`
	Skipped        uint64 `json:"skipped"`
	Dropped        uint64 `json:"dropped"`
	Pending        uint64 `json:"pending"`
}

// captures returns the running sessions (setting up ones are left out),
// oldest first.
func (s *Server) captures() []CaptureInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CaptureInfo
	for _, ss := range s.sessions {
		if ss.cs == nil {
			continue
		}
		ci := CaptureInfo{
			ID: ss.id, Target: TargetInfo{NetNS: ss.cs.NetNS()},
			Filter: ss.req.Filter, Snaplen: ss.req.Snaplen, Promiscuous: !ss.req.Chaste,
			Client: ss.client, Transport: ss.transport, StartTime: ss.start,
			BytesQueued: ss.st.Queued(),
			RingBytes:   ss.cs.RingSize(), BufferBytes: session.MessageSize,
		}
		if c := ss.req.Targets[0].Container; c != nil {
			ci.Target.Name, ci.Target.Type = c.Name, c.Type
		}
		refs := ss.req.Targets
		for i, tg := range ss.cs.Targets() {
			ci.Targets = append(ci.Targets, TargetInfo{NetNS: tg.NetNS, Name: tg.Name, Type: refs[i].kind()})
		}
		ifaces, stats := ss.cs.Interfaces(), ss.cs.Stats()
		for i, f := range ifaces {
			ii := InterfaceInfo{Name: f.Name, Target: f.Target, LinkType: f.LinkType}
			if i < len(stats) {
				x := stats[i]
				ii.Packets, ii.Bytes, ii.KernelReceived, ii.KernelDropped = x.Delivered, x.Bytes, x.Received, x.KernelDropped
				ii.Skipped, ii.Dropped, ii.Pending = x.Skipped, x.Dropped, x.Pending
			}
			ci.Interfaces = append(ci.Interfaces, ii)
		}
		out = append(out, ci)
	}
	slices.SortFunc(out, func(a, b CaptureInfo) int { return a.StartTime.Compare(b.StartTime) })
	return out
}

func (s *Server) handleCaptures(w http.ResponseWriter, r *http.Request) {
	cs := s.captures()
	if cs == nil {
		cs = []CaptureInfo{}
	}
	apiOK(w, "captures", cs)
}

func (s *Server) handleCaptureGet(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	for _, c := range s.captures() {
		if c.ID == id {
			apiOK(w, "capture", c)
			return
		}
	}
	apiError(w, http.StatusNotFound, "no capture with id %q", id)
}

// handleCaptureDelete ends a session: its client gets the ISBs and the
// close reason "stopped by operator".
func (s *Server) handleCaptureDelete(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	ss, ok := s.sessions[id]
	var cancel context.CancelCauseFunc
	if ok && ss.cs != nil { // running, not retired
		cancel = ss.cancel
	}
	s.mu.Unlock()
	if !ok || cancel == nil {
		apiError(w, http.StatusNotFound, "no capture with id %q", id)
		return
	}
	cancel(errOperator)
	s.log.Info("capture stopped by operator", zap.String("session", id), zap.String("remote", r.RemoteAddr))
	apiOK(w, "", nil)
}

// Info is what /api/v1/info reports.
type Info struct {
	Name          string    `json:"name"`
	Version       string    `json:"version"`
	GoVersion     string    `json:"go_version"`
	StartTime     time.Time `json:"start_time"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Captures      int       `json:"captures"`
	// RingMemoryBytes is the kernel ring memory the service locks now:
	// running captures' rings and idle rings kept for reuse.
	RingMemoryBytes int64 `json:"ring_memory_bytes"`
	// MaxRingMemoryBytes is --max-ring-memory; 0 means no cap.
	MaxRingMemoryBytes int64 `json:"max_ring_memory_bytes"`
	// IdleRings counts the rings kept for reuse (part of RingMemoryBytes;
	// closed, oldest first, when a capture would not fit otherwise).
	IdleRings int       `json:"idle_rings"`
	Build     BuildInfo `json:"build"`
}

// BuildInfo is the VCS state the binary was built from, when known.
type BuildInfo struct {
	VCSRevision string `json:"vcs_revision,omitempty"`
	VCSTime     string `json:"vcs_time,omitempty"`
	VCSModified bool   `json:"vcs_modified"`
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	info := Info{
		Name: Name, Version: s.cfg.Version, GoVersion: runtime.Version(),
		StartTime: s.started, UptimeSeconds: time.Since(s.started).Seconds(), Captures: len(s.captures()),
		RingMemoryBytes: s.budget.InUse(), MaxRingMemoryBytes: s.budget.Max(),
	}
	if s.pool != nil {
		info.IdleRings = s.pool.Idle()
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, kv := range bi.Settings {
			switch kv.Key {
			case "vcs.revision":
				info.Build.VCSRevision = kv.Value
			case "vcs.time":
				info.Build.VCSTime = kv.Value
			case "vcs.modified":
				info.Build.VCSModified = kv.Value == "true"
			}
		}
	}
	apiOK(w, "info", info)
}

// handleConfig reports the effective settings. The auth token is a secret:
// only whether one is set.
func (s *Server) handleConfig(w http.ResponseWriter, r *http.Request) {
	c := s.cfg
	ring := c.Ring
	apiOK(w, "config", map[string]any{
		"version":                c.Version,
		"node_name":              c.NodeName,
		"max_sessions":           c.MaxSessions,
		"sessions_per_client":    c.MaxSessionsPerClient,
		"allow_origins":          nonNil(c.AllowOrigins),
		"allow_hosts":            nonNil(c.AllowHosts),
		"client_timeout_seconds": c.ClientTimeout.Seconds(),
		"auth_required":          c.AuthToken != "",
		"deny_host_netns":        c.DenyHostNetNS,
		"discovery":              discoveryName(c),
		"discovery_url":          c.DiscoveryURL,
		"proxy_discovery":        c.ProxyDiscovery,
		"netns_check_seconds":    c.NetNSCheckInterval.Seconds(),
		"ring_block_bytes":       ring.BlockSize,
		"ring_blocks":            ring.NumBlocks,
		"ring_block_timeout_ms":  ring.BlockTimeout.Milliseconds(),
		"ring_bytes":             ring.Size(),
		// Caps: 0 means none.
		"max_ring_memory_bytes":         max(c.MaxRingMemory, 0),
		"max_session_ring_memory_bytes": max(c.MaxSessionRingMemory, 0),
		"max_interfaces_per_session":    max(c.MaxInterfacesPerSession, 0),
		"message_bytes":                 session.MessageSize,
		"idle_rings":                    c.IdleRings,
		"idle_ring_ttl_seconds":         c.IdleRingTTL.Seconds(),
		"log_requests":                  c.LogRequests,
	})
}

// authDetail is the auth check's detail: "on" with a token, else "off".
func authDetail(c Config) string {
	if c.AuthToken != "" {
		return "on"
	}
	return "off"
}

func discoveryName(c Config) string {
	if c.DiscoveryURL != "" {
		return "external"
	}
	return "builtin"
}

// Check is one line of a health answer.
type Check struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	Status string           `json:"status"` // "ok" or "failing"
	Checks map[string]Check `json:"checks"`
}

func writeHealth(w http.ResponseWriter, checks map[string]Check) {
	h := Health{Status: "ok", Checks: checks}
	code := http.StatusOK
	for _, c := range checks {
		if !c.OK {
			h.Status, code = "failing", http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, h)
}

// handleHealthz is liveness: the process serves requests and is not
// shutting down.
func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	c := Check{OK: true, Detail: fmt.Sprintf("%d goroutines, %d captures", runtime.NumGoroutine(), s.Sessions())}
	writeHealth(w, map[string]Check{"serving": c})
}

// neededCaps are the capabilities a capture needs (capabilities(7)).
var neededCaps = []struct {
	name string
	bit  int
	why  string
}{
	{"cap_net_raw", unix.CAP_NET_RAW, "AF_PACKET sockets"},
	{"cap_net_admin", unix.CAP_NET_ADMIN, "promiscuous mode"},
	{"cap_sys_admin", unix.CAP_SYS_ADMIN, "setns into network namespaces"},
	{"cap_sys_ptrace", unix.CAP_SYS_PTRACE, "other processes' /proc/PID/ns/net"},
}

// handleReadyz is readiness: the process has the capabilities capturing
// needs, and the configured discovery answers.
func (s *Server) handleReadyz(w http.ResponseWriter, r *http.Request) {
	checks := map[string]Check{}
	if s.base.Err() != nil {
		checks["serving"] = Check{OK: false, Detail: "shutting down"}
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		checks["capabilities"] = Check{OK: false, Detail: "capget: " + err.Error()}
	} else {
		for _, c := range neededCaps {
			have := data[c.bit/32].Effective&(1<<(uint(c.bit)%32)) != 0
			d := c.why
			if !have {
				d = "missing: needed for " + c.why
			}
			checks[c.name] = Check{OK: have, Detail: d}
		}
	}
	checks["discovery"] = s.discoveryCheck(r.Context())
	// Reported, never failing: an unauthenticated service is a choice,
	// which the log warns about at every start.
	checks["auth"] = Check{OK: true, Detail: authDetail(s.cfg)}
	writeHealth(w, checks)
}

// apiNotFound answers unknown /api/ paths in the envelope.
func (s *Server) apiNotFound(w http.ResponseWriter, r *http.Request) {
	apiError(w, http.StatusNotFound, "no API endpoint %s %s", r.Method, r.URL.Path)
}

// isAPI tells whether a path gets envelope errors.
func isAPI(path string) bool { return strings.HasPrefix(path, "/api/") }

// nonNil makes an absent list a JSON [] rather than null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
