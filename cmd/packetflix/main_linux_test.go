package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/pcapng"
)

// TestIntegrationSIGTERM runs the real binary: on SIGTERM every session is
// closed with its ISBs and "service shutting down", and the process exits 0
// within a few seconds.
func TestIntegrationSIGTERM(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.7.1/24", b, "eth0", "198.18.7.2/24")

	svc := startService(t)
	base := svc.addr

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://%s/capture?netns=%d&nif=eth0", base, a.Inode), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	var data []byte
	_, hdr, err := c.Read(ctx)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, hdr...)

	// A plain-HTTP capture too: it must not hold the shutdown up.
	plain := make(chan []byte, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/capture.pcapng?netns=%d&nif=eth0", base, a.Inode))
		if err != nil {
			plain <- nil
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		plain <- b
	}()
	// Both captures run once the management API lists two.
	deadline := time.Now().Add(10 * time.Second)
	for captures(t, base) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d captures listed after 10 s, want 2", captures(t, base))
		}
		time.Sleep(20 * time.Millisecond)
	}

	start := time.Now()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var ce websocket.CloseError
	for {
		_, m, err := c.Read(ctx)
		if err != nil {
			if !errors.As(err, &ce) {
				t.Fatalf("no close frame: %v", err)
			}
			break
		}
		data = append(data, m...)
	}
	if ce.Code != websocket.StatusGoingAway || ce.Reason != "service shutting down" {
		t.Fatalf("close %d %q", ce.Code, ce.Reason)
	}
	if isbs := countISBs(data); isbs != 1 {
		t.Fatalf("%d ISBs, want 1", isbs)
	}
	select {
	case b := <-plain:
		if n := countISBs(b); n != 1 {
			t.Fatalf("plain-HTTP capture got %d ISBs (%d bytes)", n, len(b))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("plain-HTTP capture not ended by SIGTERM")
	}
	select {
	case <-svc.exited:
		if svc.exitErr != nil {
			t.Fatalf("exit: %v", svc.exitErr)
		}
		t.Logf("closed and exited %v after SIGTERM", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after SIGTERM")
	}
	if !strings.Contains(svc.logs.String(), "shutting down") {
		t.Fatalf("log lacks the shutdown line")
	}
}

func countISBs(data []byte) int {
	r := pcapng.NewReader(bytes.NewReader(data))
	n := 0
	for {
		blk, err := r.Next()
		if err != nil {
			return n
		}
		if blk.Type == pcapng.BlockTypeISB {
			n++
		}
	}
}

// TestIntegrationSIGTERMStalledClient: a client that stops reading under a
// flood must not hold SIGTERM up. Its writes are cut off before
// --shutdown-timeout ends and the process exits 0 in time.
func TestIntegrationSIGTERMStalledClient(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.7.1/24", b, "eth0", "198.18.7.2/24")
	const shutdownTimeout = 2 * time.Second
	svc := startService(t, "--shutdown-timeout", shutdownTimeout.String())

	// The stalled client: a WebSocket upgrade over a socket with a small
	// receive buffer whose owner never reads, so the service's send queue
	// fills and its writes block.
	d := net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.Dial("tcp", svc.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /capture?netns=%d&nif=eth0 HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", a.Inode, svc.addr)
	clientPort := conn.LocalAddr().(*net.TCPAddr).Port

	stop := make(chan struct{})
	flooded := make(chan struct{})
	go func() {
		defer close(flooded)
		ua := a.UDP("198.18.7.1:4000")
		dst := &net.UDPAddr{IP: net.IPv4(198, 18, 7, 2), Port: 4000}
		p := make([]byte, 1000)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = ua.WriteToUDP(p, dst)
		}
	}()
	defer func() { close(stop); <-flooded }()

	// Stalled: the service has at least 64 KiB queued towards the client
	// (four times the client's receive buffer: the window is closed).
	waitFor(t, 30*time.Second, "service's send queue to the stalled client", func() bool {
		return sendQueue(t, svc.port, clientPort) >= 64<<10
	})

	start := time.Now()
	if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Bound: the timeout, plus process exit and scheduling on a loaded
	// 2-core machine (3 s of slack).
	select {
	case <-svc.exited:
		if svc.exitErr != nil {
			t.Fatalf("exit: %v", svc.exitErr)
		}
		t.Logf("exited 0 %v after SIGTERM (shutdown timeout %v)", time.Since(start), shutdownTimeout)
	case <-time.After(shutdownTimeout + 3*time.Second):
		t.Fatalf("still running %v after SIGTERM with --shutdown-timeout %v", time.Since(start), shutdownTimeout)
	}
	if !strings.Contains(svc.logs.String(), "cutting off clients that do not read") {
		t.Errorf("log lacks the cut-off line")
	}
}

// service is a packetflix process a test started.
type service struct {
	cmd     *exec.Cmd
	addr    string
	port    int
	logs    *bytes.Buffer // read after exited is closed
	exited  chan struct{}
	exitErr error
}

// startService builds and runs the service on a free loopback port and
// waits until it answers. Cleanup kills it (only the PID it started).
func startService(t *testing.T, args ...string) *service {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "packetflix")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &service{addr: fmt.Sprintf("127.0.0.1:%d", port), port: port, logs: &bytes.Buffer{}, exited: make(chan struct{})}
	s.cmd = exec.Command(bin, append([]string{"--port", fmt.Sprint(port)}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.exitErr = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Kill() // only the PID this test started
			<-s.exited
		}
		t.Logf("service log:\n%s", s.logs.String())
	})
	waitFor(t, 10*time.Second, "service to answer", func() bool {
		resp, err := http.Get("http://" + s.addr + "/version")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	return s
}

// waitFor polls cond until it holds, failing the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendQueue returns the bytes queued on the loopback TCP socket from
// localPort to remotePort (tx_queue in /proc/net/tcp, or tcp6 for a
// dual-stack listener; ports in hex).
func sendQueue(t *testing.T, localPort, remotePort int) int {
	t.Helper()
	var b []byte
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, data...)
	}
	want := fmt.Sprintf(":%04X", localPort)
	peer := fmt.Sprintf(":%04X", remotePort)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasSuffix(f[1], want) || !strings.HasSuffix(f[2], peer) {
			continue
		}
		tx, _, _ := strings.Cut(f[4], ":")
		n, err := strconv.ParseInt(tx, 16, 64)
		if err != nil {
			t.Fatalf("/proc/net/tcp tx_queue %q: %v", f[4], err)
		}
		return int(n)
	}
	return 0
}

// captures returns how many captures the service's management API lists.
func captures(t *testing.T, base string) int {
	t.Helper()
	resp, err := http.Get("http://" + base + "/api/v1/captures")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Captures []json.RawMessage `json:"captures"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return len(body.Captures)
}
