package server_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/flows"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
	"golang.org/x/sys/unix"
)

// postQuery posts {"GremlinQuery": q} (and more fields) to path.
func postQuery(t *testing.T, ts *httptest.Server, path, q string, more ...string) (int, []byte) {
	t.Helper()
	body := map[string]string{"GremlinQuery": q}
	for i := 0; i+1 < len(more); i += 2 {
		body[more[i]] = more[i+1]
	}
	b, _ := json.Marshal(body)
	resp, err := http.Post(ts.URL+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// startFlows starts a flow capture and returns its UUID.
func startFlows(t *testing.T, ts *httptest.Server, q string) string {
	t.Helper()
	code, body := postQuery(t, ts, "/api/capture", q)
	var c server.FlowCaptureInfo
	if err := json.Unmarshal(body, &c); code != 200 || err != nil || c.UUID == "" {
		t.Fatalf("POST /api/capture %s: %d %s", q, code, body)
	}
	if c.GremlinQuery != q || c.Count != 1 {
		t.Fatalf("POST /api/capture %s: %+v", q, c)
	}
	return c.UUID
}

// topoFlows answers a G.Flows() query.
func topoFlows(t *testing.T, ts *httptest.Server, q string) []flows.Flow {
	t.Helper()
	code, body := postQuery(t, ts, "/api/topology", q)
	var fs []flows.Flow
	if err := json.Unmarshal(body, &fs); code != 200 || err != nil {
		t.Fatalf("POST /api/topology %s: %d %s", q, code, body)
	}
	return fs
}

// waitFlow waits until q selects exactly one flow for which ok holds, and
// returns it.
func waitFlow(t *testing.T, ts *httptest.Server, q string, ok func(f flows.Flow) bool) flows.Flow {
	t.Helper()
	var last []flows.Flow
	deadline := time.Now().Add(waitLimit)
	for {
		last = topoFlows(t, ts, q)
		if len(last) == 1 && ok(last[0]) {
			return last[0]
		}
		if time.Now().After(deadline) {
			b, _ := json.Marshal(last)
			t.Fatalf("timed out waiting for the flow of %s; have %s", q, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// neighbours makes each end of the a-b link a permanent neighbour of the
// other: no ARP, so every flow of the test is one it made.
func (h hosts) neighbours() {
	h.staticNeighbour()
	mac := strings.Fields(h.a.IP("-br", "link", "show", "dev", "eth0"))[2]
	h.b.IP("neigh", "replace", "198.18.1.1", "lladdr", mac, "dev", "eth0", "nud", "permanent")
}

// linkCounters are an interface's packet and byte counters.
type linkCounters struct{ txPackets, txBytes, rxPackets, rxBytes int64 }

func counters(t *testing.T, n *testns.NS, ifc string) linkCounters {
	t.Helper()
	var out []struct {
		Stats struct {
			RX struct{ Bytes, Packets int64 } `json:"rx"`
			TX struct{ Bytes, Packets int64 } `json:"tx"`
		} `json:"stats64"`
	}
	b, err := exec.Command("ip", "-n", n.Name, "-s", "-j", "link", "show", "dev", ifc).Output()
	if err != nil || json.Unmarshal(b, &out) != nil || len(out) != 1 {
		t.Fatalf("ip -s -j link show %s in %s: %v: %s", ifc, n.Name, err, b)
	}
	s := out[0].Stats
	return linkCounters{s.TX.Packets, s.TX.Bytes, s.RX.Packets, s.RX.Bytes}
}

// tcpExchange connects a (198.18.1.1) to b's 198.18.1.2:5000, sends
// "hello", gets "world", and closes both ends, a first. It returns once
// the connection is fully closed (b's end no longer waits in LAST-ACK),
// with a's local port.
func tcpExchange(t *testing.T, h hosts) int {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(h.b.Open(), func() (err error) { ln, err = net.Listen("tcp4", "198.18.1.2:5000"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		ln.Close() // only the connection is left on port 5000
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(waitLimit))
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			srvDone <- err
			return
		}
		if _, err := c.Write([]byte("world")); err != nil {
			srvDone <- err
			return
		}
		_, err = c.Read(buf) // the client's FIN
		if err != io.EOF {
			srvDone <- fmt.Errorf("server read after data: %v", err)
			return
		}
		srvDone <- nil
	}()
	var c net.Conn
	if err := netns.Do(h.a.Open(), func() (err error) { c, err = net.DialTimeout("tcp4", "198.18.1.2:5000", 5*time.Second); return err }); err != nil {
		t.Fatal(err)
	}
	port := c.LocalAddr().(*net.TCPAddr).Port
	c.SetDeadline(time.Now().Add(waitLimit))
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "world" {
		t.Fatalf("client read %q: %v", buf, err)
	}
	c.Close()
	if err := <-srvDone; err != nil {
		t.Fatal(err)
	}
	// b closed after the client's FIN: it waits in LAST-ACK until a's ACK
	// of its own FIN arrives, the exchange's last packet.
	waitUntil(t, "TCP teardown", func() bool {
		out, err := exec.Command("ip", "netns", "exec", h.b.Name, "ss", "-Htan", "sport", "= :5000").Output()
		return err == nil && len(bytes.TrimSpace(out)) == 0
	})
	return port
}

// icmpEcho sends n echo requests (56 bytes of data, identifier id) from a
// raw socket in from to dst and waits for each reply.
func icmpEcho(t *testing.T, from *testns.NS, dst [4]byte, id uint16, n int) {
	t.Helper()
	var fd int
	if err := netns.Do(from.Open(), func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5}); err != nil {
		t.Fatal(err)
	}
	for seq := 1; seq <= n; seq++ {
		pkt := make([]byte, 8+56)
		pkt[0] = 8 // echo request
		binary.BigEndian.PutUint16(pkt[4:], id)
		binary.BigEndian.PutUint16(pkt[6:], uint16(seq))
		copy(pkt[8:], "PFTEST flows echo")
		var sum uint32
		for i := 0; i < len(pkt); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(pkt[2:], ^uint16(sum))
		if err := unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: dst}); err != nil {
			t.Fatalf("echo %d: %v", seq, err)
		}
		buf := make([]byte, 1500)
		for {
			m, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				t.Fatalf("no echo reply %d: %v", seq, err)
			}
			icmp := buf[int(buf[0]&0x0f)*4 : m]
			if len(icmp) >= 8 && icmp[0] == 0 && binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == uint16(seq) {
				break
			}
		}
	}
}

// flowSubscriber reads /ws/subscriber/flow exactly as Skydive's Python
// example does: json.loads each message, then every flow of msg["Obj"].
type flowSubscriber struct {
	mu    sync.Mutex
	flows []map[string]any
	msgs  int
	bad   []string // flows pushed without an update
	done  chan error
}

func subscribeFlows(t *testing.T, ts *httptest.Server) (*flowSubscriber, *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/ws/subscriber/flow", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(16 << 20)
	t.Cleanup(func() { c.CloseNow() })
	fs := &flowSubscriber{done: make(chan error, 1)}
	go func() {
		for {
			_, payload, err := c.Read(context.Background())
			if err != nil {
				fs.done <- err
				return
			}
			var msg map[string]any
			if err := json.Unmarshal(payload, &msg); err != nil {
				fs.done <- err
				return
			}
			fs.mu.Lock()
			fs.msgs++
			for _, f := range msg["Obj"].([]any) {
				flow := f.(map[string]any)
				fs.flows = append(fs.flows, flow)
				u := flow["LastUpdateMetric"].(map[string]any)
				if u["ABPackets"].(float64)+u["BAPackets"].(float64) == 0 {
					b, _ := json.Marshal(flow)
					fs.bad = append(fs.bad, string(b))
				}
			}
			fs.mu.Unlock()
		}
	}()
	return fs, c
}

// seen reports whether a pushed flow satisfied ok.
func (fs *flowSubscriber) seen(ok func(f map[string]any) bool) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, f := range fs.flows {
		if ok(f) {
			return true
		}
	}
	return false
}

// jsonAt returns the value at a dotted path of a JSON flow, or nil.
func jsonAt(f map[string]any, p string) any {
	var v any = f
	for _, k := range strings.Split(p, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// metricValue reads one unlabelled metric from /metrics.
func metricValue(t *testing.T, ts *httptest.Server, name string) float64 {
	t.Helper()
	_, body := httpGet(t, ts.URL+"/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", name)
	return 0
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIntegrationFlows: known UDP, TCP and ICMP exchanges between two
// netns make exactly the expected flows, with the initiator as A and the
// counters the kernel's own interface counters show; a subscriber reads
// them as Skydive's Python example does; the capture is listed, refuses a
// second capture of its target, and ends on DELETE.
func TestIntegrationFlows(t *testing.T) {
	h := newHosts(t, false)
	h.neighbours()
	_, ts := startServer(t, func(c *server.Config) { c.FlowInterval = 50 * time.Millisecond })
	sub, subConn := subscribeFlows(t, ts)

	// The netns is listed by the discovery as a bind mount of its name:
	// a node of type netns.
	q := fmt.Sprintf("G.V().Has('Name', '%s')", h.a.Name)
	code, body := postQuery(t, ts, "/api/topology", q)
	var nodes []flows.Node
	if err := json.Unmarshal(body, &nodes); code != 200 || err != nil || len(nodes) != 1 {
		t.Fatalf("%s: %d %s", q, code, body)
	}
	node := nodes[0]
	if node.Host != "testnode" || node.Metadata.Type != "netns" || node.Metadata.Path != "netns:"+ino(h.a) ||
		node.ID != node.Metadata.TID || len(node.ID) != 36 {
		t.Errorf("node %+v", node)
	}
	id := startFlows(t, ts, q)

	code, body = postQuery(t, ts, "/api/capture", q)
	if code != http.StatusConflict || !strings.Contains(string(body), id) {
		t.Errorf("second capture of the target: %d %s", code, body)
	}
	code, body = postQuery(t, ts, "/api/capture", fmt.Sprintf("G.V().Has('Name', '%s')", h.b.Name), "BPFFilter", "udp and and")
	if code != http.StatusBadRequest || !strings.Contains(string(body), h.b.Name) {
		t.Errorf("bad BPFFilter: %d %s", code, body)
	}
	for _, path := range []string{"/api/capture", "/api/topology"} {
		code, body = postQuery(t, ts, path, "G.V().Out()")
		if code != http.StatusBadRequest || !strings.Contains(string(body), `unsupported step \"Out\"`) {
			t.Errorf("%s G.V().Out(): %d %s", path, code, body)
		}
	}

	// UDP: 3 datagrams a→b, then 2 b→a, each a known 82 bytes on the wire.
	ua, ub := h.a.UDP("198.18.1.1:4000"), h.b.UDP("198.18.1.2:4001")
	send(t, ua, "198.18.1.2:4001", 'A', 3)
	buf := make([]byte, 100)
	ub.SetReadDeadline(time.Now().Add(waitLimit))
	for range 3 {
		if _, err := ub.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	send(t, ub, "198.18.1.1:4000", 'B', 2)
	ua.SetReadDeadline(time.Now().Add(waitLimit))
	for range 2 {
		if _, err := ua.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	const udpWire = 14 + 20 + 8 + 40
	udp := waitFlow(t, ts, "G.Flows().Has('Transport.Protocol', 'UDP')", func(f flows.Flow) bool {
		return f.Metric.ABPackets == 3 && f.Metric.BAPackets == 2
	})
	if udp.LayersPath != "Ethernet/IPv4/UDP" || udp.Network.A != "198.18.1.1" || udp.Network.B != "198.18.1.2" ||
		udp.Transport.A != 4000 || udp.Transport.B != 4001 || udp.Metric.ABBytes != 3*udpWire || udp.Metric.BABytes != 2*udpWire ||
		udp.NodeTID != node.ID || udp.Interface != "eth0" || udp.Link == nil || udp.Link.Protocol != "ETHERNET" {
		b, _ := json.Marshal(udp)
		t.Errorf("UDP flow %s", b)
	}
	waitUntil(t, "the subscriber sees the UDP flow", func() bool {
		return sub.seen(func(f map[string]any) bool {
			return jsonAt(f, "Transport.Protocol") == "UDP" && jsonAt(f, "Metric.ABPackets") == float64(3) && jsonAt(f, "Metric.BAPackets") == float64(2)
		})
	})

	// TCP: handshake, 5 bytes each way, teardown. The kernel's counters of
	// a's eth0 over the exchange are what the flow must count.
	before := counters(t, h.a, "eth0")
	port := tcpExchange(t, h)
	after := counters(t, h.a, "eth0")
	ab, ba := after.txPackets-before.txPackets, after.rxPackets-before.rxPackets
	abBytes, baBytes := after.txBytes-before.txBytes, after.rxBytes-before.rxBytes
	// At least SYN, ACK, data, FIN, last ACK from a; SYN-ACK, data, FIN
	// from b (ACKs may ride on data and FINs).
	if ab < 5 || ba < 3 {
		t.Fatalf("eth0 of a counted %d packets out, %d in over the TCP exchange", ab, ba)
	}
	tcp := waitFlow(t, ts, "G.Flows().Has('Transport.Protocol', 'TCP')", func(f flows.Flow) bool {
		return f.Metric.ABPackets == ab && f.Metric.BAPackets == ba
	})
	if tcp.LayersPath != "Ethernet/IPv4/TCP" || tcp.Network.A != "198.18.1.1" || tcp.Transport.A != int64(port) || tcp.Transport.B != 5000 ||
		tcp.Metric.ABBytes != abBytes || tcp.Metric.BABytes != baBytes {
		b, _ := json.Marshal(tcp)
		t.Errorf("TCP flow %s; eth0 counted %d/%d bytes", b, abBytes, baBytes)
	}

	// ICMP: 3 echo requests and their replies, 98 bytes each.
	icmpEcho(t, h.a, [4]byte{198, 18, 1, 2}, 0x4242, 3)
	icmp := waitFlow(t, ts, "G.Flows().Has('LayersPath', 'Ethernet/IPv4/ICMPv4')", func(f flows.Flow) bool {
		return f.Metric.ABPackets == 3 && f.Metric.BAPackets == 3
	})
	if icmp.ICMP == nil || icmp.ICMP.Type != "ECHO" || icmp.ICMP.ID != 0x4242 || icmp.Network.A != "198.18.1.1" ||
		icmp.Metric.ABBytes != 3*98 || icmp.Metric.BABytes != 3*98 || icmp.Transport != nil {
		b, _ := json.Marshal(icmp)
		t.Errorf("ICMP flow %s", b)
	}

	// Exactly these three, and nothing else.
	if all := topoFlows(t, ts, "G.Flows()"); len(all) != 3 {
		b, _ := json.Marshal(all)
		t.Errorf("G.Flows(): %d flows, want 3: %s", len(all), b)
	}
	if _, body := postQuery(t, ts, "/api/topology", "G.Flows().Has('Network.B', '198.18.1.2').Count()"); string(body) != "3\n" {
		t.Errorf("Count(): %s", body)
	}
	if v := metricValue(t, ts, "packetflix_flows_created_total"); v != 3 {
		t.Errorf("packetflix_flows_created_total %v, want 3", v)
	}
	if v := metricValue(t, ts, "packetflix_flows_tracked"); v != 3 {
		t.Errorf("packetflix_flows_tracked %v, want 3", v)
	}

	// The list, as Skydive's.
	_, list := httpGet(t, ts.URL+"/api/capture")
	var caps map[string]server.FlowCaptureInfo
	if err := json.Unmarshal([]byte(list), &caps); err != nil || len(caps) != 1 || caps[id] != (server.FlowCaptureInfo{UUID: id, GremlinQuery: q, Count: 1}) {
		t.Errorf("GET /api/capture: %s", list)
	}

	sub.mu.Lock()
	if len(sub.bad) > 0 {
		t.Errorf("flows pushed without an update: %v", sub.bad)
	}
	t.Logf("subscriber: %d messages, %d flows", sub.msgs, len(sub.flows))
	sub.mu.Unlock()
	if err := subConn.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("subscriber close: %v", err)
	}

	req, _ := http.NewRequest("DELETE", ts.URL+"/api/capture/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, list := httpGet(t, ts.URL+"/api/capture"); list != "{}\n" {
		t.Errorf("GET /api/capture after DELETE: %s", list)
	}
	if all := topoFlows(t, ts, "G.Flows()"); len(all) != 0 {
		t.Errorf("G.Flows() after DELETE: %d flows", len(all))
	}
	if v := metricValue(t, ts, "packetflix_flows_created_total"); v != 3 {
		t.Errorf("packetflix_flows_created_total after DELETE: %v, want 3", v)
	}
	if v := metricValue(t, ts, "packetflix_flow_targets_active"); v != 0 {
		t.Errorf("packetflix_flow_targets_active after DELETE: %v", v)
	}
	// The target is free again.
	startFlows(t, ts, q)
}

// TestIntegrationFlowEviction: a table at its cap makes room for a new
// flow by ending the idlest, counted on /metrics.
func TestIntegrationFlowEviction(t *testing.T) {
	h := newHosts(t, false)
	h.neighbours()
	_, ts := startServer(t, func(c *server.Config) { c.MaxFlows = 4 })
	startFlows(t, ts, fmt.Sprintf("G.V().Has('Name', '%s')", h.a.Name))
	ua := h.a.UDP("198.18.1.1:4000")
	buf := make([]byte, 100)
	for p := 6000; p < 6010; p++ {
		// A socket at every port: no ICMP port unreachable, no extra flow.
		ub := h.b.UDP(fmt.Sprintf("198.18.1.2:%d", p))
		send(t, ua, fmt.Sprintf("198.18.1.2:%d", p), 'E', 1)
		ub.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := ub.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "10 flows created", func() bool { return metricValue(t, ts, "packetflix_flows_created_total") == 10 })
	if e, tr := metricValue(t, ts, "packetflix_flows_evicted_total"), metricValue(t, ts, "packetflix_flows_tracked"); e != 6 || tr != 4 {
		t.Errorf("evicted %v, tracked %v; want 6 and 4", e, tr)
	}
	fs := topoFlows(t, ts, "G.Flows()")
	var ports []int64
	for _, f := range fs {
		ports = append(ports, f.Transport.B)
	}
	// Most recently active first: the four last.
	if fmt.Sprint(ports) != "[6009 6008 6007 6006]" {
		t.Errorf("flows left at ports %v", ports)
	}
}

// TestIntegrationFlowLimits: --max-flow-targets, a failing discovery, and
// a shutdown that ends flow captures and subscribers.
func TestIntegrationFlowLimits(t *testing.T) {
	h := newHosts(t, true)
	srv, ts := startServer(t, func(c *server.Config) { c.MaxFlowTargets = 1 })
	byName := func(n *testns.NS) string { return fmt.Sprintf("G.V().Has('Name', '%s')", n.Name) }
	startFlows(t, ts, byName(h.a))
	code, body := postQuery(t, ts, "/api/capture", byName(h.b))
	if code != http.StatusServiceUnavailable || !strings.Contains(string(body), "--max-flow-targets 1") {
		t.Errorf("over the cap: %d %s", code, body)
	}
	code, body = postQuery(t, ts, "/api/capture", "G.V().Has('Type', 'netns')")
	if code != http.StatusBadRequest || !strings.Contains(string(body), "over --max-flow-targets 1") {
		t.Errorf("more targets than the cap: %d %s", code, body)
	}

	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	_, dead := startServer(t, func(c *server.Config) { c.Discovery = &discovery.GhostWire{URL: gone.URL, Timeout: time.Second} })
	for _, path := range []string{"/api/capture", "/api/topology"} {
		if code, body := postQuery(t, dead, path, "G.V()"); code != http.StatusBadGateway || !strings.Contains(string(body), "discovery failed") {
			t.Errorf("%s with a dead discovery: %d %s", path, code, body)
		}
	}
	if code, body := postQuery(t, dead, "/api/topology", "G.Flows()"); code != 200 || string(body) != "[]\n" {
		t.Errorf("G.Flows() needs no discovery: %d %s", code, body)
	}

	sub, _ := subscribeFlows(t, ts)
	waitUntil(t, "subscriber registered", func() bool { return metricValue(t, ts, "packetflix_flow_subscribers") == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	select {
	case err := <-sub.done:
		if code := websocket.CloseStatus(err); code != websocket.StatusGoingAway {
			t.Errorf("subscriber ended with %v, want 1001", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("subscriber not closed at shutdown")
	}
	if v := metricValue(t, ts, "packetflix_flow_targets_active"); v != 0 {
		t.Errorf("flow targets after shutdown: %v", v)
	}
	_, info := httpGet(t, ts.URL+"/api/v1/info")
	if !strings.Contains(info, `"ring_memory_bytes":0,`) {
		t.Errorf("rings left after shutdown: %s", info)
	}
}

// TestIntegrationFlowTargetGone: the namespace watcher that ends client
// sessions' targets ends a flow capture's too; the capture stays listed
// (as in Skydive) with Count 0.
func TestIntegrationFlowTargetGone(t *testing.T) {
	x := testns.New(t)
	_, ts := startServer(t, func(c *server.Config) { c.NetNSCheckInterval = 100 * time.Millisecond })
	id := startFlows(t, ts, fmt.Sprintf("G.V().Has('Name', '%s')", x.Name))
	x.Delete() // only the capture holds it now
	waitUntil(t, "the flow capture's target to end", func() bool {
		code, body := httpGet(t, ts.URL+"/api/capture")
		var list map[string]server.FlowCaptureInfo
		return code == 200 && json.Unmarshal([]byte(body), &list) == nil && list[id].UUID == id && list[id].Count == 0
	})
	if v := metricValue(t, ts, "packetflix_capture_targets_gone_total"); v != 1 {
		t.Errorf("targets gone %v, want 1", v)
	}
}
