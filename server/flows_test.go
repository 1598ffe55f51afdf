package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/flows"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

func Test_targetTID(t *testing.T) {
	t.Parallel()
	a := discovery.Target{Name: "web-1", Type: discovery.TypeDocker, NetNS: 4026532389, PID: 4242}
	id := targetTID(a)
	if !uuidRE.MatchString(id) {
		t.Fatalf("targetTID %q is not UUID-shaped", id)
	}
	if again := targetTID(a); again != id {
		t.Errorf("targetTID not stable: %q, then %q", id, again)
	}
	b := a
	b.Name = "web-2"
	c := a
	c.NetNS++
	if targetTID(b) == id || targetTID(c) == id {
		t.Errorf("targets of another name or netns share the TID %q", id)
	}
	// Not what the PID or interfaces say: a restarted tenant of the same
	// name and netns keeps its node.
	d := a
	d.PID, d.StartTime, d.Interfaces = 99, 7, []string{"eth0"}
	if targetTID(d) != id {
		t.Errorf("TID depends on PID or interfaces")
	}
}

func Test_nodeOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		t          discovery.Target
		typ, path  string
		skydiveTyp bool
	}{
		{"container", discovery.Target{Name: "web-1", Type: discovery.TypeDocker, NetNS: 4026532389, PID: 4242}, "docker", "/proc/4242/ns/net", false},
		{"pod", discovery.Target{Name: "default/web", Type: discovery.TypePod, NetNS: 4026532390, PID: 17}, "pod", "/proc/17/ns/net", false},
		{"bind mount (ip netns add)", discovery.Target{Name: "blue", Type: discovery.TypeBindMount, NetNS: 4026532391}, "netns", "netns:4026532391", true},
		{"process", discovery.Target{Name: "sleep(99)", Type: discovery.TypeProc, NetNS: 4026532392, PID: 99}, "proc", "/proc/99/ns/net", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := nodeOf("node1", tt.t)
			want := flows.Node{ID: targetTID(tt.t), Host: "node1", Metadata: flows.NodeMetadata{Name: tt.t.Name, Type: tt.typ, Path: tt.path, TID: targetTID(tt.t)}}
			if n != want {
				t.Errorf("nodeOf: %+v, want %+v", n, want)
			}
		})
	}
}

func Test_newUUID(t *testing.T) {
	t.Parallel()
	a, b := newUUID(), newUUID()
	if !uuidRE.MatchString(a) || a == b {
		t.Fatalf("newUUID: %q, %q", a, b)
	}
	if a[14] != '4' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Errorf("%q is not a version 4 variant 1 UUID", a)
	}
}

// listDiscovery lists fixed targets.
type listDiscovery []discovery.Target

func (l listDiscovery) List(context.Context) ([]discovery.Target, error) { return l, nil }
func (l listDiscovery) Lookup(context.Context, string, string) (discovery.Target, error) {
	return discovery.Target{}, discovery.ErrAmbiguous
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFlowAPIRequests: what the flow endpoints answer without any capture
// running, and how they refuse what they do not do.
func TestFlowAPIRequests(t *testing.T) {
	t.Parallel()
	targets := listDiscovery{
		{Name: "blue", Type: discovery.TypeBindMount, NetNS: 4026532391},
		{Name: "web-1", Type: discovery.TypeDocker, NetNS: 4026532389, PID: 4242},
	}
	_, ts := startTestServer(t, Config{NodeName: "node1", Discovery: targets})

	code, body := post(t, ts.URL+"/api/topology", `{"GremlinQuery":"G.V()"}`)
	var nodes []flows.Node
	if err := json.Unmarshal([]byte(body), &nodes); code != 200 || err != nil || len(nodes) != 2 {
		t.Fatalf("G.V(): %d %s (%v)", code, body, err)
	}
	if want := nodeOf("node1", targets[0]); nodes[0] != want {
		t.Errorf("G.V()[0] = %+v, want %+v", nodes[0], want)
	}

	tests := []struct {
		name, path, body string
		code             int
		want             string // in the body
	}{
		{"netns by type", "/api/topology", `{"GremlinQuery":"G.V().Has('Type', 'netns').Count()"}`, 200, "1\n"},
		{"by TID", "/api/topology", `{"GremlinQuery":"g.V().Has('TID', '` + targetTID(targets[1]) + `').Limit(1)"}`, 200, `"Name":"web-1"`},
		{"no flows", "/api/topology", `{"GremlinQuery":"G.Flows()"}`, 200, "[]\n"},
		{"no flows counted", "/api/topology", `{"GremlinQuery":"G.Flows().Has('Network.A', '198.18.1.1').Count()"}`, 200, "0\n"},
		{"unsupported step", "/api/topology", `{"GremlinQuery":"G.V().Out()"}`, 400, `"error":"unsupported step \"Out\" at 6"`},
		{"syntax", "/api/topology", `{"GremlinQuery":"G.V("}`, 400, `"status":false`},
		{"not JSON", "/api/topology", `G.V()`, 400, "a JSON object with a GremlinQuery"},
		{"no query", "/api/topology", `{}`, 400, "no GremlinQuery"},
		{"capture: unsupported step", "/api/capture", `{"GremlinQuery":"G.V().Out()"}`, 400, `unsupported step \"Out\"`},
		{"capture: flows", "/api/capture", `{"GremlinQuery":"G.Flows()"}`, 400, "starts with G.V()"},
		{"capture: count", "/api/capture", `{"GremlinQuery":"G.V().Count()"}`, 400, "cannot end in Count()"},
		{"capture: no match", "/api/capture", `{"GremlinQuery":"G.V().Has('Name', 'red')"}`, 400, `no target matches G.V().Has('Name', 'red')`},
	}
	for _, tt := range tests {
		code, body := post(t, ts.URL+tt.path, tt.body)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s: %d %s, want %d with %q", tt.name, code, body, tt.code, tt.want)
		}
	}

	if code, body := do(t, "GET", ts.URL+"/api/capture", nil); code != 200 || body != "{}\n" {
		t.Errorf("GET /api/capture: %d %q", code, body)
	}
	if code, body := do(t, "DELETE", ts.URL+"/api/capture/"+newUUID(), nil); code != 404 || !strings.Contains(body, "no flow capture with UUID") {
		t.Errorf("DELETE unknown: %d %s", code, body)
	}
	if code, body := do(t, "GET", ts.URL+"/ws/subscriber/flow", nil); code != http.StatusUpgradeRequired || !strings.Contains(body, "WebSocket") {
		t.Errorf("GET /ws/subscriber/flow without upgrade: %d %s", code, body)
	}
}

// udpPacket is a raw IPv4 UDP datagram (flows.LinkTypeRaw).
func udpPacket(src, dst [4]byte, sport, dport uint16) []byte {
	b := make([]byte, 28)
	b[0], b[2], b[3], b[8], b[9] = 0x45, 0, 28, 64, 17
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[20:], sport)
	binary.BigEndian.PutUint16(b[22:], dport)
	b[25] = 8
	return b
}

// feedServer is a Server whose registry holds one flow capture of a table
// the test feeds, with no kernel capture behind it, and whose loop does
// not tick by itself unless interval says so.
func feedServer(t *testing.T, interval time.Duration, maxFlows int) (*Server, *httptest.Server, *flows.Table) {
	t.Helper()
	srv, ts := startTestServer(t, Config{NodeName: "node1", FlowInterval: interval, NetNSCheckInterval: time.Hour, MaxFlows: maxFlows})
	tb, err := flows.New(flows.Config{MaxFlows: srv.flows.maxFlows, NodeTID: "t1"})
	if err != nil {
		t.Fatal(err)
	}
	r := srv.flows
	n := &flowNode{node: flows.Node{ID: "t1"}, table: tb, done: make(chan struct{}), running: true}
	fc := &flowCapture{uuid: newUUID(), query: "G.V()", created: time.Now(), cancel: func(error) {}, nodes: []*flowNode{n}}
	close(n.done)
	r.mu.Lock()
	r.captures[fc.uuid] = fc
	r.live[n] = fc
	r.claimed["t1"] = fc.uuid
	r.mu.Unlock()
	return srv, ts, tb
}

// TestFlowSubscriber reads /ws/subscriber/flow as Skydive's Python example
// does (json.loads, then msg["Obj"]): a message per push with updated
// flows, only those.
func TestFlowSubscriber(t *testing.T) {
	t.Parallel()
	_, ts, tb := feedServer(t, 20*time.Millisecond, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws/subscriber/flow", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	read := func() map[string]any {
		t.Helper()
		typ, b, err := c.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageText {
			t.Fatalf("message type %v", typ)
		}
		var msg map[string]any
		if err := json.Unmarshal(b, &msg); err != nil {
			t.Fatalf("not JSON: %s", b)
		}
		return msg
	}
	now := time.Now().UnixNano()
	a, b := [4]byte{198, 18, 0, 1}, [4]byte{198, 18, 0, 2}
	tb.Packet(0, flows.LinkTypeRaw, udpPacket(a, b, 4000, 53), now, 28)
	tb.Packet(0, flows.LinkTypeRaw, udpPacket(b, a, 53, 4000), now+1, 28)
	// The two packets may fall into one push or two: read until the
	// answer has been counted.
	for {
		msg := read()
		if msg["Namespace"] != "flow" || msg["Type"] != "store" || msg["Status"] != float64(200) || !uuidRE.MatchString(msg["UUID"].(string)) {
			t.Errorf("message header %v", msg)
		}
		obj := msg["Obj"].([]any)
		if len(obj) != 1 {
			t.Fatalf("Obj has %d flows, want 1: %v", len(obj), obj)
		}
		f := obj[0].(map[string]any)
		m := f["Metric"].(map[string]any)
		if f["Transport"].(map[string]any)["A"] != float64(4000) || m["ABPackets"] != float64(1) {
			t.Fatalf("flow %v", f)
		}
		if m["BAPackets"] == float64(1) {
			break
		}
	}
	// Only the flow that counted since goes out next time.
	tb.Packet(0, flows.LinkTypeRaw, udpPacket(a, b, 4001, 53), now+2, 28)
	obj := read()["Obj"].([]any)
	if len(obj) != 1 || obj[0].(map[string]any)["Transport"].(map[string]any)["A"] != float64(4001) {
		t.Fatalf("second push: %v", obj)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("close: %v", err)
	}
}

// TestFlowPush: a push of many flows is split into messages that reach a
// subscriber together, however many (a queue counts pushes, not
// messages), and a subscriber whose queue is full loses whole pushes,
// counted in messages, while the others get them.
func TestFlowPush(t *testing.T) {
	t.Parallel()
	srv, ts, tb := feedServer(t, time.Hour, 1024)
	r := srv.flows
	slow, err := r.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.unsubscribe(slow)
	fast, err := r.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.unsubscribe(fast)
	feed := func(n, round int) {
		for i := range n {
			tb.Packet(0, flows.LinkTypeRaw, udpPacket([4]byte{198, 18, 0, 1}, [4]byte{198, 18, 0, 2}, uint16(1000+i), 53), int64(round), 28)
		}
	}
	feed(flowsPerMessage+88, 1)
	r.push()
	var sizes []int
	for _, m := range <-fast.ch {
		var msg flowMessage
		if err := json.Unmarshal(m, &msg); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, len(msg.Obj))
	}
	if len(sizes) != 2 || sizes[0] != flowsPerMessage || sizes[1] != 88 {
		t.Errorf("messages of %v flows, want [%d 88]", sizes, flowsPerMessage)
	}
	// slow holds that push; flowSubQueue more of one message each: the
	// last finds its queue full.
	for round := range flowSubQueue {
		feed(1, round+2)
		r.push()
		<-fast.ch
	}
	if len(slow.ch) != flowSubQueue {
		t.Fatalf("slow queue %d", len(slow.ch))
	}
	r.mu.Lock()
	dropped, total := slow.dropped, r.dropped
	r.mu.Unlock()
	if dropped != 1 || total != 1 {
		t.Errorf("dropped %d for the slow subscriber, %d in all; want 1", dropped, total)
	}
	_, body := do(t, "GET", ts.URL+"/metrics", nil)
	for _, want := range []string{"packetflix_flow_messages_dropped_total 1", "packetflix_flow_subscribers 2",
		"packetflix_flows_tracked 600", "packetflix_flows_created_total 600", "packetflix_flow_targets_active 1"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestFlowSubscriberCap: past maxFlowSubscribers a subscriber is refused
// after the upgrade with 1008 and the reason.
func TestFlowSubscriberCap(t *testing.T) {
	t.Parallel()
	srv, ts, _ := feedServer(t, time.Hour, 0)
	for range maxFlowSubscribers {
		sub, err := srv.flows.subscribe()
		if err != nil {
			t.Fatal(err)
		}
		defer srv.flows.unsubscribe(sub)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws/subscriber/flow", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusPolicyViolation || !strings.Contains(ce.Reason, "too many flow subscribers") {
		t.Fatalf("subscriber over the cap: %v", err)
	}
}

// TestFlowPushLarge: one push of more messages than a subscriber's queue
// holds reaches it whole (the queue counts pushes).
func TestFlowPushLarge(t *testing.T) {
	t.Parallel()
	const n = (flowSubQueue + 1) * flowsPerMessage
	srv, _, tb := feedServer(t, time.Hour, n)
	r := srv.flows
	sub, err := r.subscribe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.unsubscribe(sub)
	for i := range n {
		tb.Packet(0, flows.LinkTypeRaw, udpPacket([4]byte{198, 18, 0, 1}, [4]byte{198, 18, byte(i >> 8), byte(i)}, 1000, 53), 1, 28)
	}
	r.push()
	got := 0
	for _, m := range <-sub.ch {
		var msg flowMessage
		if err := json.Unmarshal(m, &msg); err != nil {
			t.Fatal(err)
		}
		got += len(msg.Obj)
	}
	r.mu.Lock()
	dropped := r.dropped
	r.mu.Unlock()
	if got != n || dropped != 0 {
		t.Fatalf("subscriber got %d of %d flows, %d messages dropped", got, n, dropped)
	}
}
