package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
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
	var logs bytes.Buffer
	cmd := exec.Command(bin, "--port", fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	exited := make(chan struct{})
	go func() { exitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill() // only the PID this test started
			<-exited
		}
		t.Logf("service log:\n%s", logs.String())
	})
	base := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + base + "/version")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("service did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}

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
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
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
	case <-exited:
		if exitErr != nil {
			t.Fatalf("exit: %v", exitErr)
		}
		t.Logf("closed and exited %v after SIGTERM", time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("still running 5 s after SIGTERM")
	}
	if !strings.Contains(logs.String(), "shutting down") {
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
