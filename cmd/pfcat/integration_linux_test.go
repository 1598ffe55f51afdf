package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/pcapng"
	"github.com/packetflix/packetflix/server"
	"go.uber.org/zap/zaptest"
)

// exitLimit is how long pfcat may take to exit once told to stop: the
// close handshake takes milliseconds, and a hung one is cut after
// defaultCloseWait, which this catches.
const exitLimit = 8 * time.Second

// startService runs the real service in-process on a loopback port, as
// the server package's tests do.
func startService(t *testing.T) (*server.Server, *httptest.Server) {
	t.Helper()
	srv := server.New(server.Config{Log: zaptest.NewLogger(t), Version: "1.2.3-test", NodeName: "testnode", OS: "Linux"})
	ts := httptest.NewUnstartedServer(nil)
	srv.Configure(ts.Config)
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("service shutdown: %v", err)
		}
		ts.Close()
	})
	return srv, ts
}

// buildPfcat builds this command into a temporary directory.
func buildPfcat(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pfcat")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// proc is pfcat run as sshdump runs its remote command: stdin and stdout
// are pipes (sshd's), stdout read as it comes.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *os.File // the read end of pfcat's stdout
	out    *syncBuffer
	stderr *syncBuffer
	eof    chan struct{} // stdout reached EOF
	exited chan error
}

func startProc(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, out: &syncBuffer{}, stderr: &syncBuffer{}, eof: make(chan struct{}), exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = p.stderr
	var err error
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = pw
	t.Logf("$ pfcat %s", strings.Join(args, " "))
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close() // the child's now
	p.stdout = pr
	go func() {
		defer close(p.eof)
		defer pr.Close()
		io.Copy(p.out, pr)
	}()
	go func() {
		<-p.eof // Wait closes nothing of ours, but reads must end first
		p.exited <- p.cmd.Wait()
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		p.stdin.Close()
		select {
		case <-p.exited:
		case <-time.After(waitLimit):
			t.Error("pfcat did not exit after SIGKILL")
		}
	})
	return p
}

// stream parses what pfcat wrote so far: whole blocks only, since the
// stream may still be running.
func (p *proc) stream() []*pcapng.Block {
	r := pcapng.NewReader(bytes.NewReader(p.out.Bytes()))
	var bs []*pcapng.Block
	for {
		b, err := r.Next()
		if err != nil {
			return bs
		}
		bs = append(bs, b)
	}
}

// waitIDB waits for the stream header: the service sends it once the
// capture is open, so packets sent after it are captured.
func (p *proc) waitIDB() {
	p.t.Helper()
	waitUntil(p.t, "the stream header on pfcat's stdout", func() bool {
		return slices.ContainsFunc(p.stream(), func(b *pcapng.Block) bool { return b.Type == pcapng.BlockTypeIDB })
	})
}

// ours returns the payloads of the test datagrams in blocks.
func ours(bs []*pcapng.Block) []string {
	var ps []string
	for _, b := range bs {
		if b.Type != pcapng.BlockTypeEPB {
			continue
		}
		if pl := testns.UDPPayload(b.Data); bytes.HasPrefix(pl, []byte("PFTEST")) {
			ps = append(ps, string(pl))
		}
	}
	return ps
}

// waitExit waits for pfcat to exit and returns its exit code.
func (p *proc) waitExit(limit time.Duration) int {
	p.t.Helper()
	select {
	case err := <-p.exited:
		p.exited <- err // for the cleanup
		if err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				p.t.Fatalf("pfcat: %v", err)
			}
		}
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(limit):
		p.t.Fatalf("pfcat did not exit within %v; stderr: %s", limit, p.stderr)
		return -1
	}
}

// tsharkUDP reads a stream with tshark: per UDP datagram, its source,
// destination and payload (hex).
func tsharkUDP(t *testing.T, data []byte) []string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "capture.pcapng")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	out, err := exec.CommandContext(ctx, "tshark", "-r", file, "-Y", "udp", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e", "udp.payload").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	if n := capinfosPackets(t, file); n != strings.Count(string(out), "\n") {
		t.Fatalf("capinfos counts %d packets, tshark shows %d UDP datagrams:\n%s", n, strings.Count(string(out), "\n"), out)
	}
	return strings.Split(strings.TrimSpace(string(out)), "\n")
}

// TestIntegrationSSHDump runs the built pfcat as Wireshark's sshdump runs
// a remote capture command: `pfcat --addr HOST:PORT capture --netns N -i
// eth0 -f udp` with stdout a pipe read as it comes, stopped by SIGTERM or
// by the end of stdin, as sshd does when sshdump closes the channel. The
// stream must hold exactly the datagrams sent, for tshark too, and pfcat
// must exit 0 at once.
func TestIntegrationSSHDump(t *testing.T) {
	testns.RequireRoot(t)
	requireWireshark(t)
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.1.1/24", b, "eth0", "198.18.1.2/24")
	ua := a.UDP("198.18.1.1:4000")
	b.UDP("198.18.1.2:4000") // a listener: no ICMP port unreachable
	dst := &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 4000}
	_, ts := startService(t)
	addr := ts.Listener.Addr().String()
	bin := buildPfcat(t)

	send := func(t *testing.T, tag byte, n int) []string {
		var want []string
		for i := range n {
			pl := testns.Payload(tag, i, 40)
			if _, err := ua.WriteToUDP(pl, dst); err != nil {
				t.Fatalf("send: %v", err)
			}
			want = append(want, string(pl))
		}
		return want
	}
	check := func(t *testing.T, p *proc, want []string) {
		t.Helper()
		if s := p.stderr.String(); s != "" {
			t.Errorf("pfcat wrote to stderr: %s", s)
		}
		select {
		case <-p.eof:
		case <-time.After(waitLimit):
			t.Fatal("stdout did not end with pfcat")
		}
		bs := blocks(t, p.out.Bytes()) // whole: nothing cut off
		if got := ours(bs); !slices.Equal(got, want) {
			t.Fatalf("stream holds %d test datagrams %q, want %d", len(got), got, len(want))
		}
		last := bs[len(bs)-1]
		if last.Type != pcapng.BlockTypeISB || !last.Stats.HasReceived {
			t.Fatalf("the stream does not end with the ISB: %+v", last)
		}
		var lines []string
		for _, pl := range want {
			lines = append(lines, fmt.Sprintf("198.18.1.1\t198.18.1.2\t%x", pl))
		}
		if got := tsharkUDP(t, p.out.Bytes()); !slices.Equal(got, lines) {
			t.Fatalf("tshark reads\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(lines, "\n"))
		}
	}

	for _, tc := range []struct {
		name string
		tag  byte
		stop func(p *proc) (read bool) // read: the stream was read to its end
	}{
		{"SIGTERM", 'T', func(p *proc) bool {
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				p.t.Fatal(err)
			}
			return true
		}},
		{"stdin closed", 'E', func(p *proc) bool { p.stdin.Close(); return true }},
		// The reader goes away (sshd's channel, Wireshark): the next
		// write gets EPIPE, which must not kill pfcat with SIGPIPE.
		{"stdout closed", 'P', func(p *proc) bool {
			p.stdout.Close()
			send(p.t, 'X', 1)
			return false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startProc(t, bin, "--addr", addr, "capture", "--netns", fmt.Sprint(a.Inode), "-i", "eth0", "-f", "udp")
			p.waitIDB()
			want := send(t, tc.tag, 5)
			waitUntil(t, "the datagrams on pfcat's stdout", func() bool { return len(ours(p.stream())) == len(want) })
			read := tc.stop(p)
			if code := p.waitExit(exitLimit); code != 0 {
				t.Fatalf("pfcat exited %d after a stop (%v); stderr: %s", code, p.cmd.ProcessState, p.stderr)
			}
			if read {
				check(t, p, want)
			} else if s := p.stderr.String(); s != "" {
				t.Errorf("pfcat wrote to stderr: %s", s)
			}
		})
	}

	// The same capture by the target's name, as list shows it, ended by
	// the service at -c: exit 0 on its own.
	t.Run("target and count", func(t *testing.T) {
		p := startProc(t, bin, "--addr", addr, "list")
		if code := p.waitExit(waitLimit); code != 0 {
			t.Fatalf("list exited %d: %s", code, p.stderr)
		}
		line := ""
		for _, l := range strings.Split(p.out.String(), "\n") {
			if f := strings.Fields(l); len(f) >= 5 && f[0] == a.Name {
				line = l
				if f[1] != "bindmount" || f[2] != fmt.Sprint(a.Inode) || f[3] != "-" || !strings.Contains(f[4], "eth0") {
					t.Fatalf("list line %q", l)
				}
			}
		}
		if line == "" {
			t.Fatalf("list does not show %s:\n%s", a.Name, p.out)
		}

		p = startProc(t, bin, "--addr", addr, "capture", a.Name, "-i", "eth0", "-f", "udp", "-c", "3")
		p.waitIDB()
		want := send(t, 'C', 3)
		if code := p.waitExit(waitLimit); code != 0 {
			t.Fatalf("pfcat exited %d at the count; stderr: %s", code, p.stderr)
		}
		check(t, p, want)
	})

	// Every capture was ended properly: the service holds no session.
	waitUntil(t, "no live capture sessions", func() bool {
		resp, err := http.Get(ts.URL + "/api/v1/captures")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Captures []json.RawMessage }
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return len(body.Captures) == 0
	})
}
