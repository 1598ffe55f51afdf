package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/server"
)

func plainGet(t *testing.T, ts string, ino uint64) (int, string) {
	t.Helper()
	resp, err := http.Get(ts + "/capture.pcapng?netns=" + strconv.FormatUint(ino, 10))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// Per-session caps refuse a capture with the flag in the reason; the
// service-wide budget refuses a second capture that does not fit, and takes
// it once the first has ended, its idle rings given back.
func TestIntegrationRingLimits(t *testing.T) {
	ring := capture.RingOptions{BlockSize: 64 << 10, NumBlocks: 2}
	size := ring.Size()
	srv, ts := startServer(t, func(c *server.Config) {
		c.Ring = ring
		c.MaxInterfacesPerSession = 16
		c.MaxSessionRingMemory = 4 * size
		c.MaxRingMemory = 5 * size
	})
	_ = srv
	info := func() map[string]any {
		t.Helper()
		code, body := getJSON(t, "GET", ts.URL+"/api/v1/info", nil)
		if code != 200 {
			t.Fatalf("info: %d %v", code, body)
		}
		return body["info"].(map[string]any)
	}
	num := func(m map[string]any, k string) int64 { return int64(m[k].(float64)) }

	_, body := getJSON(t, "GET", ts.URL+"/api/v1/config", nil)
	cfg := body["config"].(map[string]any)
	if num(cfg, "ring_block_bytes") != 64<<10 || num(cfg, "ring_blocks") != 2 || num(cfg, "ring_bytes") != size ||
		num(cfg, "max_ring_memory_bytes") != 5*size || num(cfg, "max_session_ring_memory_bytes") != 4*size || num(cfg, "max_interfaces_per_session") != 16 {
		t.Errorf("config %v", cfg)
	}

	// 41 interfaces: over the per-session interface cap.
	many := newVethNS(t, 20)
	cl := dial(t, ts, q("netns", strconv.FormatUint(many.Inode, 10)), nil)
	code, why := cl.closeStatus()
	if want := "capture of 41 interfaces is over --max-interfaces-per-session 16: choose fewer with nif"; code != websocket.StatusPolicyViolation || why != want {
		t.Errorf("close %d %q, want 1008 %q", code, why, want)
	}
	if code, text := plainGet(t, ts.URL, many.Inode); code != 400 || !strings.Contains(text, "--max-interfaces-per-session 16") {
		t.Errorf("plain: %d %q, want 400 naming the cap", code, text)
	}
	// 5 interfaces: under that cap, over the session's ring memory.
	five := newVethNS(t, 2)
	cl = dial(t, ts, q("netns", strconv.FormatUint(five.Inode, 10)), nil)
	code, why = cl.closeStatus()
	if want := "capture needs 0.6 MiB of rings, over --max-session-ring-memory 0.5 MiB: use fewer interfaces (nif) or a smaller buffer"; code != websocket.StatusPolicyViolation || why != want {
		t.Errorf("close %d %q, want 1008 %q", code, why, want)
	}

	// Two captures of 3 interfaces do not fit in 5 rings.
	a, b := newVethNS(t, 1), newVethNS(t, 1)
	first := dial(t, ts, q("netns", strconv.FormatUint(a.Inode, 10)), nil)
	first.waitLive()
	if got := num(info(), "ring_memory_bytes"); got != 3*size {
		t.Errorf("ring_memory_bytes %d with one 3-interface capture, want %d", got, 3*size)
	}
	cl = dial(t, ts, q("netns", strconv.FormatUint(b.Inode, 10)), nil)
	code, why = cl.closeStatus()
	if want := "ring memory full: 0.4 MiB of --max-ring-memory 0.6 MiB in use, capture needs 0.4 MiB; try again later"; code != websocket.StatusPolicyViolation || why != want {
		t.Errorf("close %d %q, want 1008 %q", code, why, want)
	}
	if code, text := plainGet(t, ts.URL, b.Inode); code != 503 || !strings.Contains(text, "--max-ring-memory") {
		t.Errorf("plain: %d %q, want 503 naming the cap", code, text)
	}

	// The first ends; its rings wait in the pool, still counted.
	first.stop()
	deadline := time.Now().Add(10 * time.Second)
	for num(info(), "idle_rings") != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("rings of the ended capture not idle in the pool: %v", info())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := num(info(), "ring_memory_bytes"); got != 3*size {
		t.Errorf("ring_memory_bytes %d with 3 idle rings, want %d", got, 3*size)
	}
	// The pool gives back what the next capture needs.
	second := dial(t, ts, q("netns", strconv.FormatUint(b.Inode, 10)), nil)
	second.waitLive()
	if in := info(); num(in, "ring_memory_bytes") != 5*size || num(in, "idle_rings") != 2 {
		t.Errorf("info %v, want ring_memory_bytes %d and 2 idle rings", in, 5*size)
	}
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("packetflix_ring_memory_bytes %d\n", 5*size); !strings.Contains(string(m), want) {
		t.Errorf("/metrics lacks %q", want)
	}
	second.stop()
}

// newVethNS is a throwaway netns with pairs veth pairs (both ends in it,
// no addresses): 2*pairs+1 interfaces with lo.
func newVethNS(t *testing.T, pairs int) *testns.NS {
	t.Helper()
	n := testns.New(t)
	n.VethPairs(pairs)
	return n
}

// Without buffer=, the rings of a capture that would not fit the session's
// ring memory at the configured size are made smaller, and the sessions
// API says how large; a size the client asks for with buffer= is kept or
// refused, naming the cap.
func TestIntegrationRingFitAndBuffer(t *testing.T) {
	ring := capture.RingOptions{BlockSize: 64 << 10, NumBlocks: 8} // 512 KiB
	_, ts := startServer(t, func(c *server.Config) {
		c.Ring = ring
		c.MaxSessionRingMemory = 2 << 20
		c.MaxRingMemory = 64 << 20
	})
	five := newVethNS(t, 2) // lo + 4 veth ends
	cl := dial(t, ts, q("netns", strconv.FormatUint(five.Inode, 10)), nil)
	cl.waitLive()
	code, body := getJSON(t, "GET", ts.URL+"/api/v1/captures", nil)
	caps, _ := body["captures"].([]any)
	if code != 200 || len(caps) != 1 {
		t.Fatalf("captures: %d %v", code, body)
	}
	c := caps[0].(map[string]any)
	// 2 MiB for 5 rings: 409.6 KiB each, 6 whole blocks of 64 KiB.
	if got := int64(c["ring_bytes"].(float64)); got != 6*64<<10 {
		t.Errorf("ring_bytes %d, want %d (fitted: 6 blocks of 64 KiB)", got, 6*64<<10)
	}
	if got := int64(c["buffer_bytes"].(float64)); got <= 0 {
		t.Errorf("buffer_bytes %d, want the session's message buffer", got)
	}
	cl.stop()

	// buffer=1: 1 MiB for each of 5 interfaces, over the session's 2 MiB.
	cl = dial(t, ts, q("netns", strconv.FormatUint(five.Inode, 10), "buffer", "1"), nil)
	code2, why := cl.closeStatus()
	if want := "capture needs 5 MiB of rings, over --max-session-ring-memory 2 MiB: use fewer interfaces (nif) or a smaller buffer"; code2 != websocket.StatusPolicyViolation || why != want {
		t.Errorf("close %d %q, want 1008 %q", code2, why, want)
	}
	// buffer=1 on one interface fits, and is what it gets.
	one := newVethNS(t, 1)
	cl = dial(t, ts, q("netns", strconv.FormatUint(one.Inode, 10), "nif", "va0", "buffer", "1"), nil)
	cl.waitLive()
	_, body = getJSON(t, "GET", ts.URL+"/api/v1/captures", nil)
	caps, _ = body["captures"].([]any)
	if len(caps) != 1 || int64(caps[0].(map[string]any)["ring_bytes"].(float64)) != 1<<20 {
		t.Errorf("captures %v, want one with ring_bytes 1 MiB", body)
	}
	cl.stop()
}
