package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

func TestCaptureQuery(t *testing.T) {
	var doc struct{ Containers []json.RawMessage }
	if err := json.Unmarshal([]byte(targetsDoc), &doc); err != nil {
		t.Fatal(err)
	}
	var web bytes.Buffer
	if err := json.Compact(&web, doc.Containers[0]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want url.Values
	}{
		{"netns", []string{"--netns", "4026532389"}, url.Values{"netns": {"4026532389"}}},
		{"every flag", []string{"--netns", "4026532389", "-i", "eth0/eth1", "-f", "udp port 53", "--chaste", "-c", "10", "-a", "duration:30", "-s", "96", "-B", "4"},
			url.Values{"netns": {"4026532389"}, "nif": {"eth0/eth1"}, "filter": {"udp port 53"}, "chaste": {""}, "count": {"10"}, "duration": {"30s"}, "snaplen": {"96"}, "buffer": {"4"}}},
		{"long names", []string{"--netns=4026532389", "--interface", "eth0", "--filter=udp", "-p", "--count=3", "--autostop", "duration:5m"},
			url.Values{"netns": {"4026532389"}, "nif": {"eth0"}, "filter": {"udp"}, "chaste": {""}, "count": {"3"}, "duration": {"5m0s"}}},
		{"repeated -i", []string{"--netns", "1", "-i", "eth0", "-i", "eth1/eth2"}, url.Values{"netns": {"1"}, "nif": {"eth0/eth1/eth2"}}},
		{"packets and count: the first", []string{"--netns", "1", "-c", "10", "-a", "packets:5,duration:1.5"}, url.Values{"netns": {"1"}, "count": {"5"}, "duration": {"1.5s"}}},
		{"target", []string{"web"}, url.Values{"container": {web.String()}}},
		{"target and interfaces", []string{"web", "-i", "eth1"}, url.Values{"container": {web.String()}, "nif": {"eth1"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStream(0, 0)
			f := newFakeService(t, targetsDoc, sendAll([][]byte{s.header, s.tail}, websocket.StatusNormalClosure, "capture ended"))
			r, err := runPfcat(t, append([]string{"--addr", f.addr(), "capture"}, tc.args...)...)
			if err != nil {
				t.Fatalf("capture: %v; stderr: %s", err, r.stderr)
			}
			if got := f.lastCapture(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("query %v\nwant  %v", got, tc.want)
			}
		})
	}
}

func TestCaptureUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"nothing", nil, "capture needs a TARGET"},
		{"both", []string{"web", "--netns", "1"}, "a TARGET or --netns, not both"},
		{"two targets", []string{"web", "blue"}, "capture takes one TARGET"},
		{"netns 0", []string{"--netns", "0"}, "--netns 0"},
		{"ring to stdout", []string{"--netns", "1", "-b", "filesize:10"}, "-b needs -w FILE"},
		{"ring without size", []string{"--netns", "1", "-w", "x.pcapng", "-b", "files:3"}, "-b needs filesize:KB"},
		{"ring by duration", []string{"--netns", "1", "-w", "x.pcapng", "-b", "duration:60"}, "-b duration:60"},
		{"bad autostop", []string{"--netns", "1", "-a", "filesize:10"}, "-a filesize:10"},
		{"bad duration", []string{"--netns", "1", "-a", "duration:soon"}, "-a duration:soon"},
		{"negative count", []string{"--netns", "1", "-c", "-1"}, "positive numbers"},
		{"unknown flag", []string{"--netns", "1", "--promisc"}, "unknown flag: --promisc"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeService(t, targetsDoc, nil)
			_, err := runPfcat(t, append([]string{"--addr", f.addr(), "capture"}, tc.args...)...)
			var ue usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a usage error containing %q", err, tc.want)
			}
			if rs := f.requests(); len(rs) != 0 {
				t.Fatalf("a bad command line reached the service: %v", rs[0].URL)
			}
		})
	}
}

// TestCaptureEnds: how the service ends a capture decides pfcat's outcome.
func TestCaptureEnds(t *testing.T) {
	s := newStream(3, 60)
	for _, tc := range []struct {
		name    string
		msgs    [][]byte
		code    websocket.StatusCode
		reason  string
		wantErr string // "": success
		stderr  string
	}{
		{"count reached", [][]byte{s.header, s.pkts[0], s.pkts[1], s.pkts[2], s.tail}, websocket.StatusNormalClosure, "capture ended", "", ""},
		{"interface gone", [][]byte{s.header, s.pkts[0], s.tail}, websocket.StatusNormalClosure, `capture ended: interface "eth0" vanished from netns 4026532389`, "",
			`pfcat: capture ended: interface "eth0" vanished from netns 4026532389`},
		{"refused", nil, websocket.StatusPolicyViolation, "no network namespace with inode 4026532999", "capture refused: no network namespace with inode 4026532999", ""},
		{"bad filter", nil, websocket.StatusPolicyViolation, "bad capture filter: syntax error", "capture refused: bad capture filter: syntax error", ""},
		{"failed", [][]byte{s.header}, websocket.StatusInternalError, "capture failed: read eth0: no buffer space", "capture failed: read eth0: no buffer space", ""},
		{"shutdown", [][]byte{s.header, s.pkts[0], s.tail}, websocket.StatusGoingAway, "service shutting down", "capture ended early: service shutting down", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeService(t, targetsDoc, sendAll(tc.msgs, tc.code, tc.reason))
			r, err := runPfcat(t, "--addr", f.addr(), "capture", "--netns", "4026532389")
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			var ue usageError
			if errors.As(err, &ue) {
				t.Fatal("a service's close is no usage error (exit 1, not 2)")
			}
			if got := strings.TrimSpace(r.stderr.String()); got != tc.stderr {
				t.Fatalf("stderr %q, want %q", got, tc.stderr)
			}
			if want := bytes.Join(tc.msgs, nil); !bytes.Equal(r.stdout.Bytes(), want) {
				t.Fatalf("stdout has %d bytes, want the %d the service sent", len(r.stdout.Bytes()), len(want))
			}
		})
	}
}

func TestCaptureUnknownTarget(t *testing.T) {
	f := newFakeService(t, targetsDoc, nil)
	_, err := runPfcat(t, "--addr", f.addr(), "capture", "wbe")
	if err == nil || err.Error() != `capture: no capture target "wbe"; did you mean web?` {
		t.Fatalf("error %v", err)
	}
	for _, r := range f.requests() {
		if r.URL.Path == "/capture" {
			t.Fatal("an unknown target reached /capture")
		}
	}
}

func TestCaptureToFile(t *testing.T) {
	s := newStream(5, 100)
	f := newFakeService(t, targetsDoc, sendAll([][]byte{s.header, s.pkts[0], s.pkts[1], s.pkts[2], s.pkts[3], s.pkts[4], s.tail}, websocket.StatusNormalClosure, "capture ended"))
	out := filepath.Join(t.TempDir(), "cap.pcapng")
	if r, err := runPfcat(t, "--addr", f.addr(), "capture", "--netns", "1", "-w", out); err != nil || r.stdout.String() != "" {
		t.Fatalf("capture -w: %v; stdout %q; stderr %s", err, r.stdout, r.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil || !bytes.Equal(b, s.all()) {
		t.Fatalf("file holds %d bytes (%v), want the stream's %d", len(b), err, len(s.all()))
	}
	if st, _ := os.Stat(out); st.Mode().Perm() != fileMode {
		t.Fatalf("file mode %v, want %v", st.Mode().Perm(), os.FileMode(fileMode))
	}

	// A refused capture leaves no file behind.
	refused := filepath.Join(t.TempDir(), "refused.pcapng")
	f2 := newFakeService(t, targetsDoc, sendAll(nil, websocket.StatusPolicyViolation, "no network namespace with inode 1"))
	if _, err := runPfcat(t, "--addr", f2.addr(), "capture", "--netns", "1", "-w", refused); err == nil {
		t.Fatal("refused capture succeeded")
	}
	if _, err := os.Stat(refused); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("refused capture left %s: %v", refused, err)
	}
}

// stopCase starts a capture against a raw service, waits for the header
// and two packets on stdout, and returns what a stop test needs.
func stopCase(t *testing.T, answer bool, adjust func(r *testRun)) (*testRun, *rawService, *stream) {
	t.Helper()
	s := newStream(3, 50)
	rs := newRawService(t, s, answer)
	r := newRun()
	if adjust != nil {
		adjust(r)
	}
	r.start(t, "--addr", rs.addr(), "capture", "--netns", "4026532389")
	return r, rs, s
}

// streamed waits until out holds want.
func streamed(t *testing.T, out func() []byte, want []byte) {
	t.Helper()
	waitUntil(t, "the stream on stdout", func() bool { return bytes.Equal(out(), want) })
}

// checkStopped checks the service got exactly our one close frame, and
// pfcat wrote the whole stream including the tail the service sent after
// it, and returned nil.
func checkStopped(t *testing.T, r *testRun, rs *rawService, want []byte, out func() []byte) {
	t.Helper()
	if err := r.wait(t); err != nil {
		t.Fatalf("stopped capture: %v; stderr: %s", err, r.stderr)
	}
	select {
	case c := <-rs.closed:
		if c.code != 1000 || c.reason != stopReason {
			t.Fatalf("close frame %d %q, want 1000 %q", c.code, c.reason, stopReason)
		}
	default:
		t.Fatal("the service got no close frame")
	}
	select {
	case n := <-rs.frames:
		if n != 0 {
			t.Fatalf("%d more close frames after the first", n)
		}
	case <-time.After(waitLimit):
		t.Fatal("the connection did not end")
	}
	if out != nil && !bytes.Equal(out(), want) {
		t.Fatalf("stdout has %d bytes, want %d: the stream up to the stop and its tail", len(out()), len(want))
	}
	if s := r.stderr.String(); s != "" {
		t.Fatalf("a stop asked for printed %q", s)
	}
}

func TestCaptureStop(t *testing.T) {
	t.Run("signal", func(t *testing.T) {
		r, rs, s := stopCase(t, true, nil)
		streamed(t, r.stdout.Bytes, s.header)
		rs.send <- s.pkts[0]
		rs.send <- s.pkts[1]
		streamed(t, r.stdout.Bytes, bytes.Join([][]byte{s.header, s.pkts[0], s.pkts[1]}, nil))
		r.sigs <- syscall.SIGTERM
		checkStopped(t, r, rs, bytes.Join([][]byte{s.header, s.pkts[0], s.pkts[1], s.tail}, nil), r.stdout.Bytes)
	})

	t.Run("stdin EOF", func(t *testing.T) {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pr.Close(); pw.Close() })
		r, rs, s := stopCase(t, true, func(r *testRun) { r.stdin = pr })
		streamed(t, r.stdout.Bytes, s.header)
		rs.send <- s.pkts[0]
		streamed(t, r.stdout.Bytes, append(bytes.Clone(s.header), s.pkts[0]...))
		// Data on stdin is no reason to stop; its end is.
		if _, err := pw.Write([]byte("keep going\n")); err != nil {
			t.Fatal(err)
		}
		rs.send <- s.pkts[1]
		streamed(t, r.stdout.Bytes, bytes.Join([][]byte{s.header, s.pkts[0], s.pkts[1]}, nil))
		if len(rs.closed) != 0 {
			t.Fatal("data on stdin stopped the capture")
		}
		pw.Close()
		checkStopped(t, r, rs, bytes.Join([][]byte{s.header, s.pkts[0], s.pkts[1], s.tail}, nil), r.stdout.Bytes)
	})

	t.Run("stdin not a pipe", func(t *testing.T) {
		// /dev/null, as a background job or a service has it: at EOF from
		// the start, and no request to stop.
		null, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { null.Close() })
		r, rs, s := stopCase(t, true, func(r *testRun) { r.stdin = null })
		streamed(t, r.stdout.Bytes, s.header)
		rs.send <- s.pkts[0]
		streamed(t, r.stdout.Bytes, append(bytes.Clone(s.header), s.pkts[0]...))
		if len(rs.closed) != 0 {
			t.Fatal("stdin at /dev/null stopped the capture")
		}
		r.sigs <- os.Interrupt
		checkStopped(t, r, rs, bytes.Join([][]byte{s.header, s.pkts[0], s.tail}, nil), r.stdout.Bytes)
	})

	t.Run("stdout closed", func(t *testing.T) {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pr.Close(); pw.Close() })
		r, rs, s := stopCase(t, true, func(r *testRun) { r.env.stdout = pw })
		// Read the header, then go away as Wireshark does when closed.
		got := make([]byte, len(s.header))
		pr.SetReadDeadline(time.Now().Add(waitLimit))
		if _, err := io.ReadFull(pr, got); err != nil || !bytes.Equal(got, s.header) {
			t.Fatalf("header: %v", err)
		}
		pr.Close()
		rs.send <- s.pkts[0]
		checkStopped(t, r, rs, nil, nil)
	})

	t.Run("no answer", func(t *testing.T) {
		r, rs, s := stopCase(t, false, func(r *testRun) { r.closeWait = 200 * time.Millisecond })
		streamed(t, r.stdout.Bytes, s.header)
		r.sigs <- syscall.SIGTERM
		err := r.wait(t)
		if err == nil || !strings.Contains(err.Error(), "did not answer the close within 200ms") {
			t.Fatalf("error %v", err)
		}
		if c := <-rs.closed; c.code != 1000 {
			t.Fatalf("close code %d", c.code)
		}
	})

	t.Run("second signal", func(t *testing.T) {
		r, rs, s := stopCase(t, false, nil)
		streamed(t, r.stdout.Bytes, s.header)
		start := time.Now()
		r.sigs <- syscall.SIGTERM
		<-rs.closed
		r.sigs <- syscall.SIGTERM
		if err := r.wait(t); err != nil {
			t.Fatalf("forced stop: %v", err)
		}
		if d := time.Since(start); d >= defaultCloseWait {
			t.Fatalf("a second signal still waited %v for the service", d)
		}
	})
}

func Test_parseAutostop(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		dur     time.Duration
		packets int64
		ok      bool
	}{
		{nil, 0, 0, true},
		{[]string{"duration:30"}, 30 * time.Second, 0, true},
		{[]string{"duration:0.5"}, 500 * time.Millisecond, 0, true},
		{[]string{"duration:2m"}, 2 * time.Minute, 0, true},
		{[]string{"packets:7"}, 0, 7, true},
		{[]string{"duration:10,packets:7"}, 10 * time.Second, 7, true},
		{[]string{"duration:10", "packets:7"}, 10 * time.Second, 7, true},
		{[]string{"duration:0"}, 0, 0, false},
		{[]string{"duration:-3"}, 0, 0, false},
		{[]string{"packets:0"}, 0, 0, false},
		{[]string{"files:3"}, 0, 0, false},
		{[]string{"duration"}, 0, 0, false},
		{[]string{"duration:1e300"}, 0, 0, false},
	} {
		d, p, err := parseAutostop(tc.in)
		if (err == nil) != tc.ok || tc.ok && (d != tc.dur || p != tc.packets) {
			t.Errorf("parseAutostop(%q) = %v, %d, %v; want %v, %d (ok %v)", tc.in, d, p, err, tc.dur, tc.packets, tc.ok)
		}
	}
}

func Test_parseRing(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want ringOptions
		ok   bool
	}{
		{nil, ringOptions{}, true},
		{[]string{"filesize:1000"}, ringOptions{fileSize: 1000000}, true},
		{[]string{"filesize:1000,files:5"}, ringOptions{fileSize: 1000000, files: 5}, true},
		{[]string{"files:5", "filesize:2"}, ringOptions{fileSize: 2000, files: 5}, true},
		{[]string{"files:5"}, ringOptions{}, false},
		{[]string{"filesize:0"}, ringOptions{}, false},
		{[]string{"filesize:x"}, ringOptions{}, false},
		{[]string{"interval:60"}, ringOptions{}, false},
		{[]string{"filesize:99999999999999999"}, ringOptions{}, false},
	} {
		got, err := parseRing(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("parseRing(%q) = %+v, %v; want %+v (ok %v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestCaptureTLS: over https (a TLS proxy in front of the service), our
// close frame goes out encrypted like the rest, and the stream's tail
// still arrives after it.
func TestCaptureTLS(t *testing.T) {
	s := newStream(2, 50)
	rs := newRawTLSService(t, s)
	base, err := serviceURL(rs.ts.URL)
	if err != nil || base.Scheme != "https" {
		t.Fatalf("serviceURL(%s) = %v, %v", rs.ts.URL, base, err)
	}
	r := newRun()
	go func() {
		svc := &service{base: base, tls: rs.ts.Client().Transport.(*http.Transport).TLSClientConfig}
		r.done <- captureStream(svc, &captureOptions{netns: 4026532389, write: "-"}, &r.env)
	}()
	streamed(t, r.stdout.Bytes, s.header)
	rs.send <- s.pkts[0]
	streamed(t, r.stdout.Bytes, append(bytes.Clone(s.header), s.pkts[0]...))
	r.sigs <- syscall.SIGTERM
	checkStopped(t, r, rs, bytes.Join([][]byte{s.header, s.pkts[0], s.tail}, nil), r.stdout.Bytes)
}
