package netns_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

var seq atomic.Uint32

// homeNetns is the netns this test process started in. It is read during
// package initialization, before any test can have left a thread, the main
// thread included, in another netns; /proc/self/ns/net read later shows
// only the main thread's current netns.
var homeNetns, homeErr = os.Readlink("/proc/self/ns/net")

// home returns homeNetns.
func home(t testing.TB) string {
	t.Helper()
	if homeErr != nil {
		t.Fatalf("readlink /proc/self/ns/net at start: %v", homeErr)
	}
	return homeNetns
}

// addNetNS creates /run/netns/NAME like testns.New, but its cleanup
// tolerates the test having deleted the name already: the tests below remove
// the bind mount to leave a netns held only by a process or thread.
func addNetNS(t *testing.T) (name string, ino uint64) {
	t.Helper()
	testns.RequireRoot(t)
	name = fmt.Sprintf("pfn%d-%d", os.Getpid(), seq.Add(1))
	testns.Cmd(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if _, err := os.Lstat("/run/netns/" + name); err != nil {
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v: %s", name, err, out)
		}
	})
	n, err := netns.OpenPath("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	defer n.Close()
	return name, n.Inode()
}

// proc is a process the test started; stop kills and reaps it, and is
// registered with t.Cleanup, so it may also be called early.
type proc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer // read only after done is closed
	done chan struct{}
	once sync.Once
}

func (p *proc) Pid() int { return p.cmd.Process.Pid }

func (p *proc) stop() {
	p.once.Do(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
}

// sleepIn starts `sleep 60` inside the named netns and returns once the
// process is in it. `ip netns exec` execs its command in place, so the PID
// is sleep's own.
func sleepIn(t *testing.T, name string, ino uint64) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command("ip", "netns", "exec", name, "sleep", "60"), done: make(chan struct{})}
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start sleep in %s: %v", name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)

	// ip enters the netns before it execs sleep, so wait for both.
	want := fmt.Sprintf("net:[%d]", ino)
	state := func() string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.Pid()))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.Pid()))
		return strings.TrimSpace(string(comm)) + " in " + l
	}
	deadline := time.Now().Add(10 * time.Second)
	for s := state(); s != "sleep in "+want; s = state() {
		select {
		case <-p.done:
			t.Fatalf("ip netns exec %s sleep 60 exited early: %v: %s", name, p.cmd.ProcessState, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is %q after 10s, want sleep in %s", p.Pid(), s, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p
}

// threadNetns returns the netns link of the calling goroutine's thread; the
// caller must hold the thread locked for the answer to mean anything.
func threadNetns(t testing.TB) string {
	t.Helper()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("readlink /proc/thread-self/ns/net: %v", err)
	}
	return l
}

// selfNetns returns the netns link of this process's main thread.
func selfNetns(t testing.TB) string {
	t.Helper()
	l, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("readlink /proc/self/ns/net: %v", err)
	}
	return l
}

// threadsOutside returns the threads of this process, the main thread
// included, whose netns is not the one the process started in.
func threadsOutside(t testing.TB) []string {
	t.Helper()
	want := home(t)
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatalf("list threads: %v", err)
	}
	var bad []string
	for _, tk := range tasks {
		// A thread may exit between ReadDir and Readlink; that is fine.
		if l, err := os.Readlink("/proc/self/task/" + tk.Name() + "/ns/net"); err == nil && l != want {
			bad = append(bad, tk.Name()+"="+l)
		}
	}
	return bad
}

// checkThreadHome fails if thread tid of this process still exists and is
// not in the netns the process started in. A thread that is gone is fine:
// that is what Do does with a thread it cannot restore.
func checkThreadHome(t testing.TB, tid int) {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", tid))
	if err != nil {
		return
	}
	if want := home(t); l != want {
		t.Errorf("thread %d left in %s, want %s", tid, l, want)
	}
}
