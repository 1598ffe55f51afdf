package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/pcapng"
)

// waitLimit bounds a wait for something that normally takes
// milliseconds: generous, so that a loaded 2-core machine under -race
// does not fail a correct build.
const waitLimit = 20 * time.Second

// waitUntil polls cond until it holds, failing the test after waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// syncBuffer is a bytes.Buffer for one writer goroutine and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.b.Bytes())
}

func (s *syncBuffer) String() string { return string(s.Bytes()) }

// testRun is one in-process run of pfcat.
type testRun struct {
	env
	sigs   chan os.Signal
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan error
}

// newRun prepares a run whose stdout and stderr are buffers and whose
// signals come from the test; adjust its env before start.
func newRun() *testRun {
	r := &testRun{sigs: make(chan os.Signal, 2), stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan error, 1)}
	r.env = env{
		stdout: r.stdout,
		stderr: r.stderr,
		notify: func() (<-chan os.Signal, func()) { return r.sigs, func() {} },
	}
	return r
}

// start runs pfcat with args on a goroutine of its own; the test's
// cleanup waits for it.
func (r *testRun) start(t *testing.T, args ...string) {
	t.Helper()
	t.Logf("pfcat %s", strings.Join(args, " "))
	go func() { r.done <- run(args, &r.env) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		case <-time.After(waitLimit):
			t.Error("pfcat did not return")
		}
	})
}

// wait returns run's error, failing the test if it does not return.
func (r *testRun) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitLimit):
		t.Fatalf("pfcat did not return; stderr: %s", r.stderr)
		return nil
	}
}

// runPfcat runs pfcat to its end.
func runPfcat(t *testing.T, args ...string) (*testRun, error) {
	t.Helper()
	r := newRun()
	r.start(t, args...)
	return r, r.wait(t)
}

// stream is a small pcapng stream as the service sends it: header (SHB,
// IDB), one message per packet, and the tail (ISB) that ends it.
type stream struct {
	header []byte
	pkts   [][]byte
	tail   []byte
}

func (s *stream) all() []byte {
	b := bytes.Clone(s.header)
	for _, p := range s.pkts {
		b = append(b, p...)
	}
	return append(b, s.tail...)
}

// newStream builds a stream of n UDP packets on eth0 (198.18.0.1 to
// 198.18.0.2, port 4000), payload "pfcat packet N" padded to size bytes.
func newStream(n, size int) *stream {
	s := &stream{}
	s.header = pcapng.AppendSHB(nil, pcapng.SectionInfo{UserAppl: "fake packetflix", Comment: "a test stream"})
	s.header = pcapng.AppendIDB(s.header, pcapng.Interface{LinkType: pcapng.LinkTypeEthernet, SnapLen: 262144, Name: "eth0"})
	ts := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	for i := range n {
		f := udpFrame(i, size)
		s.pkts = append(s.pkts, pcapng.AppendEPB(nil, &pcapng.Packet{
			InterfaceID: 0, Timestamp: ts + int64(i)*1000, OrigLen: uint32(len(f)), Direction: pcapng.DirectionOutbound,
		}, f))
	}
	s.tail = pcapng.AppendISB(nil, 0, ts+int64(n)*1000, pcapng.Stats{Received: uint64(n), HasReceived: true, Dropped: 0, HasDropped: true})
	return s
}

// udpFrame is an Ethernet/IPv4/UDP frame whose payload names packet i.
func udpFrame(i, size int) []byte {
	payload := []byte(fmt.Sprintf("pfcat packet %d", i))
	payload = append(payload, make([]byte, max(0, size-len(payload)))...)
	f := []byte{0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00}
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	copy(ip[12:], []byte{198, 18, 0, 1})
	copy(ip[16:], []byte{198, 18, 0, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp, 4000)
	binary.BigEndian.PutUint16(udp[2:], 4000)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	f = append(append(append(f, ip...), udp...), payload...)
	return f
}

// blocks parses a whole pcapng stream, failing the test on any error.
func blocks(t *testing.T, b []byte) []*pcapng.Block {
	t.Helper()
	r := pcapng.NewReader(bytes.NewReader(b))
	var out []*pcapng.Block
	for {
		blk, err := r.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("stream does not parse after %d blocks: %v", len(out), err)
		}
		out = append(out, blk)
	}
}

// fakeService stands in for packetflix: /mobyshark lists targets, and
// /capture runs the test's capture func on a coder/websocket connection.
type fakeService struct {
	t       *testing.T
	ts      *httptest.Server
	token   string
	targets string // the /mobyshark document
	capture func(c *websocket.Conn)

	mu   sync.Mutex
	reqs []*http.Request // every request, for the test to look at
}

func newFakeService(t *testing.T, targets string, capture func(c *websocket.Conn)) *fakeService {
	f := &fakeService{t: t, targets: targets, capture: capture}
	f.ts = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.ts.Close)
	return f
}

func (f *fakeService) addr() string { return f.ts.Listener.Addr().String() }

func (f *fakeService) requests() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*http.Request(nil), f.reqs...)
}

// lastCapture is the query of the last /capture request.
func (f *fakeService) lastCapture() url.Values {
	f.t.Helper()
	rs := f.requests()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].URL.Path == "/capture" {
			return rs[i].URL.Query()
		}
	}
	f.t.Fatal("no /capture request")
	return nil
}

func (f *fakeService) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r.Clone(context.Background()))
	f.mu.Unlock()
	if f.token != "" && r.Header.Get("Authorization") != "Bearer "+f.token {
		w.Header().Set("WWW-Authenticate", `Bearer realm="packetflix"`)
		http.Error(w, "unauthorized: send the service's token as \"Authorization: Bearer <token>\"", http.StatusUnauthorized)
		return
	}
	switch r.URL.Path {
	case "/mobyshark":
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, f.targets)
	case "/capture":
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		defer c.CloseNow()
		f.capture(c)
	default:
		http.NotFound(w, r)
	}
}

// sendAll writes msgs as binary messages, then closes with code and why;
// the close waits for the client's answer.
func sendAll(msgs [][]byte, code websocket.StatusCode, why string) func(c *websocket.Conn) {
	return func(c *websocket.Conn) {
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		for _, m := range msgs {
			if err := c.Write(ctx, websocket.MessageBinary, m); err != nil {
				return
			}
		}
		c.Close(code, why)
	}
}

// rawService is a /capture endpoint written on raw frames, which does
// what the real service does when a client stops and coder/websocket
// cannot do on the server side: after the client's close frame it still
// sends the rest of the stream (the tail), then its own close. It sends
// the header and then packets as the test releases them.
type rawService struct {
	t      *testing.T
	ts     *httptest.Server
	s      *stream
	answer bool // answer the client's close; false: never do

	send   chan []byte   // messages to send before the client's close
	closed chan closeMsg // the client's close frames, as read
	frames chan int      // after the server's close: how many more close frames came
}

type closeMsg struct {
	code   uint16
	reason string
}

func newRawService(t *testing.T, s *stream, answer bool) *rawService {
	rs := &rawService{t: t, s: s, answer: answer, send: make(chan []byte, 64), closed: make(chan closeMsg, 4), frames: make(chan int, 1)}
	rs.ts = httptest.NewServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.ts.Close)
	return rs
}

// newRawTLSService is a rawService behind TLS, as behind a proxy.
func newRawTLSService(t *testing.T, s *stream) *rawService {
	rs := &rawService{t: t, s: s, answer: true, send: make(chan []byte, 64), closed: make(chan closeMsg, 4), frames: make(chan int, 1)}
	rs.ts = httptest.NewTLSServer(http.HandlerFunc(rs.serve))
	t.Cleanup(rs.ts.Close)
	return rs
}

func (rs *rawService) addr() string { return rs.ts.Listener.Addr().String() }

func (rs *rawService) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/capture" || r.Header.Get("Upgrade") != "websocket" {
		http.NotFound(w, r)
		return
	}
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		rs.t.Errorf("hijack: %v", err)
		return
	}
	defer conn.Close()
	fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
		base64.StdEncoding.EncodeToString(h[:]))
	writeFrame(brw.Writer, 0x2, rs.s.header)
	brw.Flush()

	// The client's frames, read on; the first close stops the sending.
	got := make(chan closeMsg, 1)
	more := make(chan int, 1)
	go func() {
		n := 0
		for {
			op, p, err := readFrame(brw.Reader)
			if err != nil {
				more <- n - 1
				return
			}
			if op == 0x8 {
				n++
				if n == 1 {
					got <- closeMsg{binary.BigEndian.Uint16(p), string(p[2:])}
				}
			}
		}
	}()
	for {
		select {
		case m := <-rs.send:
			writeFrame(brw.Writer, 0x2, m)
			brw.Flush()
			continue
		case c := <-got:
			rs.closed <- c
			if !rs.answer {
				<-more // until the client gives up
				return
			}
			writeFrame(brw.Writer, 0x2, rs.s.tail)
			writeFrame(brw.Writer, 0x8, append(binary.BigEndian.AppendUint16(nil, c.code), c.reason...))
			brw.Flush()
			// Half-close, as a server does once both closes are out, and
			// count what else the client sends until it closes too.
			conn.(interface{ CloseWrite() error }).CloseWrite()
			rs.frames <- <-more
		}
		return
	}
}

// writeFrame writes one unmasked frame, as a server does.
func writeFrame(w *bufio.Writer, op byte, p []byte) {
	w.WriteByte(0x80 | op)
	switch n := len(p); {
	case n < 126:
		w.WriteByte(byte(n))
	case n < 1<<16:
		w.WriteByte(126)
		w.Write(binary.BigEndian.AppendUint16(nil, uint16(n)))
	default:
		w.WriteByte(127)
		w.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
	}
	w.Write(p)
}

// readFrame reads one frame from the client; client frames are masked.
func readFrame(r *bufio.Reader) (op byte, p []byte, err error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 == 0 {
		return 0, nil, errors.New("unmasked client frame")
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = uint64(binary.BigEndian.Uint16(b[:]))
	case 127:
		var b [8]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return 0, nil, err
		}
		n = binary.BigEndian.Uint64(b[:])
	}
	var key [4]byte
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return 0, nil, err
	}
	p = make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	for i := range p {
		p[i] ^= key[i%4]
	}
	return h[0] & 0x0f, p, nil
}

// requireWireshark skips when tshark or capinfos is missing, except under
// CI=true, where a skip would hide that Wireshark never judged the files
// (make test installs tshark).
func requireWireshark(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"tshark", "capinfos"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and CI=true forbids skipping (make test installs it)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// tsharkPayloads reads file with tshark and returns, per UDP packet, its
// payload as text (zero padding cut off).
func tsharkPayloads(t *testing.T, file string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	// Output, not CombinedOutput: tshark warns on stderr when run as root.
	out, err := exec.CommandContext(ctx, "tshark", "-r", file, "-Y", "udp", "-T", "fields", "-e", "udp.payload").Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", file, err, out)
	}
	var ps []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l == "" {
			continue
		}
		b := make([]byte, len(l)/2)
		if _, err := fmt.Sscanf(l, "%x", &b); err != nil {
			t.Fatalf("tshark payload %q: %v", l, err)
		}
		ps = append(ps, string(bytes.TrimRight(b, "\x00")))
	}
	return ps
}

// capinfosPackets runs capinfos on file and returns its packet count.
func capinfosPackets(t *testing.T, file string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "capinfos", "-M", "-c", file).Output()
	if err != nil {
		t.Fatalf("capinfos %s: %v\n%s", file, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "Number of packets:"); ok {
			var n int
			fmt.Sscan(strings.TrimSpace(v), &n)
			return n
		}
	}
	t.Fatalf("capinfos %s: no packet count in\n%s", file, out)
	return 0
}
