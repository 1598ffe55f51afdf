package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/pcapng"
	"github.com/packetflix/packetflix/server"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// startServer runs the API on a loopback port, configured as cmd/packetflix
// does; opts adjust the Config.
func startServer(t *testing.T, opts ...func(*server.Config)) (*server.Server, *httptest.Server) {
	t.Helper()
	cfg := server.Config{Log: zaptest.NewLogger(t), Version: "1.2.3-test", NodeName: "testnode", OS: "Linux"}
	for _, o := range opts {
		o(&cfg)
	}
	srv := server.New(cfg)
	ts := httptest.NewUnstartedServer(nil)
	srv.Configure(ts.Config)
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		ts.Close()
	})
	return srv, ts
}

// client is one capture connection whose messages are collected in the
// background until the connection closes.
type client struct {
	t    *testing.T
	c    *websocket.Conn
	mu   sync.Mutex
	data []byte
	msgs int
	done chan struct{}
	err  error // the Read error that ended collection
}

// dial connects to /capture with query q and headers h.
func dial(t *testing.T, ts *httptest.Server, q url.Values, h http.Header) *client {
	t.Helper()
	u := "ws" + strings.TrimPrefix(ts.URL, "http") + "/capture?" + q.Encode()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		t.Fatalf("dial %s: %v (resp %v)", u, err, resp)
	}
	c.SetReadLimit(4 << 20)
	return collect(t, c)
}

// collect gathers the messages of an open capture connection in the
// background until it closes.
func collect(t *testing.T, c *websocket.Conn) *client {
	cl := &client{t: t, c: c, done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				cl.mu.Lock()
				cl.err = err
				cl.mu.Unlock()
				return
			}
			cl.mu.Lock()
			cl.data = append(cl.data, b...)
			cl.msgs++
			cl.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.CloseNow() })
	return cl
}

func (cl *client) bytes() []byte {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return bytes.Clone(cl.data)
}

// closeStatus waits for the server to end the session and returns its
// close code and reason.
func (cl *client) closeStatus() (websocket.StatusCode, string) {
	cl.t.Helper()
	select {
	case <-cl.done:
	case <-time.After(10 * time.Second):
		cl.t.Fatal("server did not close the session within 10 s")
	}
	var ce websocket.CloseError
	if !errors.As(cl.err, &ce) {
		cl.t.Fatalf("session ended without a close frame: %v", cl.err)
	}
	return ce.Code, ce.Reason
}

// stop closes from the client side, as csharg does, and waits for the
// server's answer.
func (cl *client) stop() {
	cl.t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- cl.c.Close(websocket.StatusNormalClosure, "done") }()
	select {
	case err := <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			cl.t.Logf("client close: %v", err)
		}
	case <-time.After(10 * time.Second):
		cl.t.Fatal("close handshake did not finish within 10 s")
	}
	<-cl.done
}

// stream is a parsed capture.
type stream struct {
	section *pcapng.SectionInfo
	ifaces  []pcapng.Interface
	pkts    []*pcapng.Block
	isbs    []*pcapng.Block
}

// parse reads every whole block of data; a block cut off at the end (the
// stream is still running) is fine, anything else fails the test.
func parse(t *testing.T, data []byte) *stream {
	t.Helper()
	r := pcapng.NewReader(bytes.NewReader(data))
	s := &stream{}
	for {
		b, err := r.Next()
		if err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatalf("stream does not parse: %v", err)
		}
		switch b.Type {
		case pcapng.BlockTypeSHB:
			s.section = b.Section
		case pcapng.BlockTypeIDB:
			s.ifaces = append(s.ifaces, *b.Interface)
		case pcapng.BlockTypeEPB:
			s.pkts = append(s.pkts, b)
		case pcapng.BlockTypeISB:
			s.isbs = append(s.isbs, b)
		}
	}
	return s
}

// payload is a 40-byte test datagram (testns.Payload).
func payload(tag byte, seq int) []byte { return testns.Payload(tag, seq, 40) }

var udpPayload = testns.UDPPayload

// ours returns the test packets in s, keyed by payload; a duplicate fails.
func (s *stream) ours(t *testing.T) map[string]*pcapng.Block {
	t.Helper()
	m := map[string]*pcapng.Block{}
	for _, b := range s.pkts {
		pl := udpPayload(b.Data)
		if !bytes.HasPrefix(pl, []byte("PFTEST")) {
			continue
		}
		if _, dup := m[string(pl)]; dup {
			t.Fatalf("packet %c%d appears twice", pl[6], binary.BigEndian.Uint32(pl[8:]))
		}
		m[string(pl)] = b
	}
	return m
}

// waitPackets waits until the stream holds at least n test packets.
func (cl *client) waitPackets(n int) *stream {
	cl.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		s := parse(cl.t, cl.bytes())
		if len(s.ours(cl.t)) >= n {
			return s
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("got %d of %d test packets after %v", len(s.ours(cl.t)), n, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLive waits until the stream header (SHB and IDBs) has arrived, which
// the server sends once the rings are open.
func (cl *client) waitLive() {
	cl.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for len(parse(cl.t, cl.bytes()).ifaces) == 0 {
		if time.Now().After(deadline) {
			cl.t.Fatalf("no stream header within %v", waitLimit)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// send sends n test packets with tag from c to dst.
func send(t *testing.T, c *net.UDPConn, dst string, tag byte, n int) {
	t.Helper()
	a, err := net.ResolveUDPAddr("udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := c.WriteToUDP(payload(tag, i), a); err != nil {
			t.Fatalf("send %c%d: %v", tag, i, err)
		}
	}
}

// writeFile saves a stream for tshark and capinfos.
func writeFile(t *testing.T, data []byte) string {
	p := filepath.Join(t.TempDir(), "capture.pcapng")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = testns.RequireRoot

func testLogger(t *testing.T) *zap.Logger { return zaptest.NewLogger(t) }

// noPool turns ring reuse off, for tests that count fds.
func noPool(c *server.Config) { c.IdleRings = -1 }

// rawWS is a minimal RFC 6455 client that, unlike library clients, keeps
// every data message it receives after sending its own close frame, as
// csharg does while it waits for the server's close.
type rawWS struct {
	c  net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, ts *httptest.Server, q url.Values) *rawWS {
	t.Helper()
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "GET /capture?%s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", q.Encode())
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &rawWS{c: c, br: br}
}

// next reads one frame: opcode and payload.
func (w *rawWS) next() (byte, []byte, error) {
	w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [2]byte
	if _, err := io.ReadFull(w.br, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		io.ReadFull(w.br, b[:])
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		io.ReadFull(w.br, b[:])
		n = binary.BigEndian.Uint64(b[:])
	}
	p := make([]byte, n)
	_, err := io.ReadFull(w.br, p)
	return h[0] & 0x0f, p, err
}

// sendClose sends a masked close frame with code.
func (w *rawWS) sendClose(code uint16) {
	mask := [4]byte{1, 2, 3, 4}
	payload := binary.BigEndian.AppendUint16(nil, code)
	f := []byte{0x88, 0x80 | byte(len(payload))}
	f = append(f, mask[:]...)
	for i, b := range payload {
		f = append(f, b^mask[i%4])
	}
	w.c.Write(f)
}

// readingClient is a WebSocket capture client whose connection is wrapped
// (to slow or stall its reads) and that reads the whole stream on a
// goroutine of its own until the close.
type readingClient struct {
	mu   sync.Mutex
	data []byte
	done chan websocket.CloseError // the close, once the stream ended
}

// bytes returns a copy of what arrived so far.
func (rc *readingClient) bytes() []byte {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return bytes.Clone(rc.data)
}

// dialReading opens /capture with the query u over a connection wrap
// returns, reads on until the close, and returns once the stream header
// arrived. The reader ends with the test at the latest.
func dialReading(t *testing.T, ts *httptest.Server, u url.Values, wrap func(net.Conn) net.Conn) *readingClient {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wrap(c), nil
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/capture?"+u.Encode(), &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	c.SetReadLimit(4 << 20)
	rc := &readingClient{done: make(chan websocket.CloseError, 1)}
	go func() {
		var ce websocket.CloseError
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				asClose(err, &ce)
				rc.done <- ce
				return
			}
			rc.mu.Lock()
			rc.data = append(rc.data, b...)
			rc.mu.Unlock()
		}
	}()
	waitUntil(t, "stream header", func() bool { rc.mu.Lock(); defer rc.mu.Unlock(); return len(rc.data) > 0 })
	return rc
}

// staticNeighbour makes b's eth0 address a permanent neighbour of a: a
// flood needs no ARP, and ARP stays out of exact counts.
func (h hosts) staticNeighbour() {
	mac := strings.Fields(h.b.IP("-br", "link", "show", "dev", "eth0"))[2]
	h.a.IP("neigh", "replace", "198.18.1.2", "lladdr", mac, "dev", "eth0", "nud", "permanent")
}

// udpFlood sends tagged datagrams from a to b (198.18.1.2:4000) as fast
// as it can until stop, which the test's cleanup calls too.
type udpFlood struct {
	sent atomic.Int64 // datagrams the kernel took
	stop func()
}

func (h hosts) flood(t *testing.T, tag byte) *udpFlood {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	f := &udpFlood{stop: func() { cancel(); wg.Wait() }}
	ua := h.a.UDP("198.18.1.1:4000")
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			if _, err := ua.WriteToUDP(payload(tag, i), dst); err == nil {
				f.sent.Add(1)
			}
		}
	})
	t.Cleanup(f.stop)
	return f
}
