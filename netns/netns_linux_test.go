package netns_test

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

// checkFound checks that OpenInode(ino) opened the netns ino, through path
// unless path is "", and closes it at cleanup.
func checkFound(t *testing.T, f *netns.Finder, ino uint64, path string) *netns.NetNS {
	t.Helper()
	n, err := f.OpenInode(ino)
	if err != nil {
		t.Fatalf("OpenInode(%d): %v", ino, err)
	}
	t.Cleanup(func() { n.Close() })
	if n.Inode() != ino || n.ID().Ino != ino {
		t.Errorf("OpenInode(%d): Inode() = %d, ID() = %+v", ino, n.Inode(), n.ID())
	}
	if n.ID().Dev == 0 {
		t.Errorf("OpenInode(%d): ID().Dev = 0", ino)
	}
	if path != "" && n.Path() != path {
		t.Errorf("OpenInode(%d): Path() = %q, want %q", ino, n.Path(), path)
	}
	return n
}

func TestIntegrationOpenInode(t *testing.T) {
	testns.RequireRoot(t)
	f := &netns.Finder{}

	t.Run("bind mount without process", func(t *testing.T) {
		ns := testns.New(t)
		n := checkFound(t, f, ns.Inode, "/run/netns/"+ns.Name)
		p, err := netns.OpenPath("/run/netns/" + ns.Name)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if n.ID() != p.ID() {
			t.Errorf("OpenInode ID %+v, OpenPath ID %+v", n.ID(), p.ID())
		}
	})

	t.Run("bind mount in PID 1 mount namespace", func(t *testing.T) {
		// A fake proc root whose PID 1 has the mount and whose root is our
		// own: the lookup must go through 1/root, not take the path as is.
		ns := testns.New(t)
		line := mountinfoLine(t, ns.Inode)
		dir := t.TempDir()
		mustMkdir(t, filepath.Join(dir, "1"))
		mustWrite(t, filepath.Join(dir, "1", "mountinfo"), line+"\n")
		if err := os.Symlink("/", filepath.Join(dir, "1", "root")); err != nil {
			t.Fatal(err)
		}
		checkFound(t, &netns.Finder{ProcRoot: dir}, ns.Inode, filepath.Join(dir, "1", "root", "run", "netns", ns.Name))
	})

	t.Run("held only by a process", func(t *testing.T) {
		name, ino := testns.AddNetNS(t)
		p := testns.SleepIn(t, name, ino)
		testns.Cmd(t, "ip", "netns", "del", name)
		if line := mountinfoLine(nil, ino); line != "" {
			t.Fatalf("netns %d still mounted after ip netns del: %s", ino, line)
		}
		n := checkFound(t, f, ino, fmt.Sprintf("/proc/%d/ns/net", p.Pid()))

		// The fd pins the netns: it still works once the process is gone.
		p.Stop()
		var in string
		if err := netns.Do(n, func() error {
			var err error
			in, err = os.Readlink("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			t.Fatalf("Do in pinned netns: %v", err)
		}
		if want := fmt.Sprintf("net:[%d]", ino); in != want {
			t.Errorf("Do in pinned netns ran in %s, want %s", in, want)
		}
	})

	t.Run("held only by a thread", func(t *testing.T) {
		name, ino := testns.AddNetNS(t)
		h, err := netns.OpenPath("/run/netns/" + name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { h.Close() })

		// Do keeps a thread of this process in the netns while fn waits.
		// Waiting in fn is wrong in production code, but here the thread
		// is locked for the whole wait and Do restores it afterwards.
		tidc := make(chan int, 1)
		release := make(chan struct{})
		done := make(chan error, 1)
		go func() {
			done <- netns.Do(h, func() error {
				tidc <- unix.Gettid()
				<-release
				return nil
			})
		}()
		stopped := false
		stopHolder := func() {
			if stopped {
				return
			}
			stopped = true
			close(release)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Do holding the netns: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Do holding the netns did not return within 10s")
			}
		}
		t.Cleanup(stopHolder)
		var tid int
		select {
		case tid = <-tidc:
		case <-time.After(10 * time.Second):
			t.Fatal("Do did not run fn within 10s")
		}
		h.Close()
		testns.Cmd(t, "ip", "netns", "del", name)

		// The holder may have landed on the main thread, whose link is
		// /proc/PID/ns/net.
		pid := os.Getpid()
		want := fmt.Sprintf("/proc/%d/task/%d/ns/net", pid, tid)
		if tid == pid {
			want = fmt.Sprintf("/proc/%d/ns/net", pid)
		}
		checkFound(t, f, ino, want)

		stopHolder()
		checkThreadHome(t, tid)
	})

	t.Run("unknown inode", func(t *testing.T) {
		n, err := f.OpenInode(math.MaxUint32)
		if !errors.Is(err, netns.ErrNotFound) {
			n.Close()
			t.Fatalf("OpenInode(MaxUint32) = %v, %v; want ErrNotFound", n, err)
		}
	})

	t.Run("invalid inode", func(t *testing.T) {
		for _, ino := range []uint64{0, math.MaxUint32 + 1} {
			n, err := f.OpenInode(ino)
			if !errors.Is(err, netns.ErrInvalid) {
				n.Close()
				t.Errorf("OpenInode(%d) = %v, %v; want ErrInvalid", ino, n, err)
			}
		}
	})

	t.Run("Self", func(t *testing.T) {
		n, err := f.Self()
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		if want := fmt.Sprintf("net:[%d]", n.Inode()); selfNetns(t) != want {
			t.Errorf("Self() inode %d, /proc/self/ns/net is %s", n.Inode(), selfNetns(t))
		}
		// Our own netns is always findable, through whichever process
		// comes first.
		checkFound(t, f, n.Inode(), "")
	})
}

// TestIntegrationOpenPath needs no root: anyone may open their own
// /proc/self/ns files.
func TestIntegrationOpenPath(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "plain")
	mustWrite(t, plain, "")
	tests := []struct {
		name, path string
	}{
		{name: "regular file", path: plain},
		{name: "directory", path: t.TempDir()},
		{name: "missing", path: filepath.Join(t.TempDir(), "nope")},
		{name: "uts namespace", path: "/proc/self/ns/uts"},
		{name: "mount namespace", path: "/proc/self/ns/mnt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := netns.OpenPath(tt.path)
			if err == nil {
				n.Close()
				t.Fatalf("OpenPath(%s) = %+v, want an error", tt.path, n.ID())
			}
			var oe *netns.OpError
			if !errors.As(err, &oe) || oe.Op != netns.OpOpen {
				t.Errorf("OpenPath(%s) error %#v, want an OpError with Op %q", tt.path, err, netns.OpOpen)
			}
		})
	}

	t.Run("closed twice", func(t *testing.T) {
		n, err := netns.OpenPath("/proc/self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	})
}

func TestIntegrationCheckProcess(t *testing.T) {
	testns.RequireRoot(t)
	f := &netns.Finder{}
	ns := testns.New(t)
	n := ns.Open()
	p := testns.SleepIn(t, ns.Name, ns.Inode)
	st, err := f.StartTime(p.Pid())
	if err != nil {
		t.Fatalf("StartTime(%d): %v", p.Pid(), err)
	}
	self, err := f.StartTime(os.Getpid())
	if err != nil {
		t.Fatalf("StartTime(self): %v", err)
	}
	if st < self {
		t.Errorf("sleep started at %d, before this test process (%d)", st, self)
	}

	// A process that ran and was reaped, with the start time it really had.
	gone := exec.Command("sleep", "60")
	if err := gone.Start(); err != nil {
		t.Fatal(err)
	}
	goneSt, stErr := f.StartTime(gone.Process.Pid)
	gone.Process.Kill()
	gone.Wait()
	if stErr != nil {
		t.Fatalf("StartTime(%d): %v", gone.Process.Pid, stErr)
	}

	tests := []struct {
		name string
		pid  int
		st   uint64
		want error // nil: no error
	}{
		{name: "same process", pid: p.Pid(), st: st},
		{name: "other start time", pid: p.Pid(), st: st + 1, want: netns.ErrStale},
		// 0 means the client did not know the start time: only the netns
		// is checked.
		{name: "start time unknown", pid: p.Pid(), st: 0},
		{name: "process in another netns", pid: os.Getpid(), st: self, want: netns.ErrStale},
		{name: "start time unknown, another netns", pid: os.Getpid(), st: 0, want: netns.ErrStale},
		{name: "exited process", pid: gone.Process.Pid, st: goneSt, want: netns.ErrStale},
		{name: "start time unknown, exited process", pid: gone.Process.Pid, st: 0, want: netns.ErrStale},
		{name: "pid zero", pid: 0, st: st, want: netns.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.CheckProcess(n, tt.pid, tt.st)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("CheckProcess(%d, %d): %v", tt.pid, tt.st, err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("CheckProcess(%d, %d) = %v, want %v", tt.pid, tt.st, err, tt.want)
			}
		})
	}

	t.Run("after the process exits", func(t *testing.T) {
		p.Stop()
		if err := f.CheckProcess(n, p.Pid(), st); !errors.Is(err, netns.ErrStale) {
			t.Fatalf("CheckProcess(%d, %d) after exit = %v, want ErrStale", p.Pid(), st, err)
		}
	})
}

// mountinfoLine returns our mountinfo line of the nsfs mount of netns ino,
// or "" if there is none. With t nil it does not fail on read errors.
func mountinfoLine(t *testing.T, ino uint64) string {
	want := fmt.Sprintf(" net:[%d] ", ino)
	fh, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		if t != nil {
			t.Fatal(err)
		}
		return ""
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if strings.Contains(sc.Text(), want) && strings.Contains(sc.Text(), " - nsfs ") {
			return sc.Text()
		}
	}
	if t != nil {
		t.Fatalf("no nsfs mount of net:[%d] in /proc/self/mountinfo", ino)
	}
	return ""
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
