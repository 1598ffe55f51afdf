package testns

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/packetflix/packetflix/netns"
)

// This file holds helpers for tests about processes in namespaces: bind
// mounts the test removes itself, processes started inside a netns (whose
// tenancy discovery lists), and a check that no thread is left in a
// foreign netns.

// homeNetns is the netns this test process started in. It is read during
// package initialization, before any test can have left a thread, the main
// thread included, in another netns; /proc/self/ns/net read later shows
// only the main thread's current netns.
var homeNetns, homeErr = os.Readlink("/proc/self/ns/net")

// Home returns the netns this test process started in.
func Home(t testing.TB) string {
	t.Helper()
	if homeErr != nil {
		t.Fatalf("readlink /proc/self/ns/net at start: %v", homeErr)
	}
	return homeNetns
}

// AddNetNS creates /run/netns/NAME like testns.New, but its cleanup
// tolerates the test having deleted the name already: the tests below remove
// the bind mount to leave a netns held only by a process or thread.
func AddNetNS(t *testing.T) (name string, ino uint64) {
	t.Helper()
	RequireRoot(t)
	name = fmt.Sprintf("pfn%d-%d", os.Getpid(), seq.Add(1))
	Cmd(t, "ip", "netns", "add", name)
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

// Proc is a process the test started; stop kills and reaps it, and is
// registered with t.Cleanup, so it may also be called early.
type Proc struct {
	cmd  *exec.Cmd
	out  bytes.Buffer // read only after done is closed
	done chan struct{}
	once sync.Once
}

func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Stop kills the process group the test started (the process and any
// children it forked, which hold its output pipe) and reaps the process.
func (p *Proc) Stop() {
	p.once.Do(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

// SleepIn starts `sleep 60` inside the named netns and returns once the
// process is in it. `ip netns exec` execs its command in place, so the PID
// is sleep's own.
func SleepIn(t *testing.T, name string, ino uint64) *Proc {
	t.Helper()
	return StartIn(t, name, ino, "sleep", "sleep", "60")
}

// StartIn runs args inside the named netns and returns once the process
// is comm and in the netns.
func StartIn(t *testing.T, name string, ino uint64, comm string, args ...string) *Proc {
	t.Helper()
	p := &Proc{cmd: exec.Command("ip", append([]string{"netns", "exec", name}, args...)...), done: make(chan struct{})}
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %q in %s: %v", args, name, err)
	}
	go func() {
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)

	// ip enters the netns before it execs the command, so wait for both.
	WaitProc(t, p, p.Pid(), comm, ino)
	return p
}

// WaitProc waits until pid is comm in netns ino; p is the process the test
// started, which must not end meanwhile.
func WaitProc(t *testing.T, p *Proc, pid int, comm string, ino uint64) {
	t.Helper()
	want := fmt.Sprintf("%s in net:[%d]", comm, ino)
	state := func() string {
		l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		c, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		return strings.TrimSpace(string(c)) + " in " + l
	}
	deadline := time.Now().Add(10 * time.Second)
	for s := state(); s != want; s = state() {
		select {
		case <-p.done:
			t.Fatalf("%q exited early: %v: %s", p.cmd.Args, p.cmd.ProcessState, p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is %q after 10s, want %s", pid, s, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ChildOf returns the only child of pid, waiting up to 10 s for it.
func ChildOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) == 1 {
			c, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has children %q after 10s, want one", pid, b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ThreadsOutside returns the threads of this process, the main thread
// included, whose netns is not the one the process started in.
func ThreadsOutside(t testing.TB) []string {
	t.Helper()
	want := Home(t)
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
