package testns

import (
	"github.com/packetflix/packetflix/netns"

	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// This file holds what the private engines of docker.go, podman.go and
// cri.go share:
// installing their packages, taking turns with other test processes, a
// daemon started as a child the test waits on, a busybox image, and the
// teardown of what an engine leaves on the host.

// engineUnavailable skips a test whose engine cannot be had, except under
// CI=true, where a skip would hide that the test never ran (the rule of
// RequireRoot).
func engineUnavailable(t testing.TB, engine, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s unavailable, and CI=true forbids skipping: %s", engine, msg)
	}
	t.Skipf("%s unavailable: %s", engine, msg)
}

// aptInstall installs Debian packages when one of the commands is missing,
// retrying once after apt-get update: a concurrent apt-get can delete
// downloaded .deb files mid-install, and a fresh machine may have no
// package lists.
func aptInstall(t testing.TB, commands, packages []string) error {
	t.Helper()
	missing := false
	for _, c := range commands {
		if _, err := exec.LookPath(c); err != nil {
			missing = true
		}
	}
	if !missing {
		return nil
	}
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "-q"}, packages...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install %s: %w: %s", strings.Join(packages, " "), err, lastLines(out, 5))
		}
		return nil
	}
	t.Logf("installing %s", strings.Join(packages, " "))
	err := install()
	if err != nil {
		t.Logf("%v; retrying after apt-get update", err)
		exec.Command("apt-get", "update", "-q").Run()
		err = install()
	}
	return err
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// lockFile takes an exclusive flock on path, waiting up to 3 minutes, so
// that engines of concurrent test processes (go test runs packages in
// parallel) run one after the other where they share host paths. It is
// released at cleanup, or by the kernel when the process dies.
func lockFile(t testing.TB, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("engine lock: %v", err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("engine lock %s: %v", path, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the flock
}

// daemon is an engine process started by the test as its child, in its
// own process group (a ^C reaches the test, whose cleanup then stops the
// engine in order). The goroutine that waits on it is owned by the daemon:
// stop waits for it through done.
type daemon struct {
	name string
	log  string // path of its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
}

// startDaemon starts name with args, its output going to logPath.
func startDaemon(logPath, name string, args ...string) (*daemon, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d := &daemon{name: name, log: logPath, cmd: exec.Command(name, args...), done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		d.cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// Pid is the daemon's process ID.
func (d *daemon) Pid() int { return d.cmd.Process.Pid }

// exited reports whether the daemon has exited (and been reaped).
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// waitReady polls ready every 20 ms until it returns nil, the daemon
// exits, or limit passes.
func (d *daemon) waitReady(limit time.Duration, ready func() error) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		if d.exited() {
			return fmt.Errorf("%s exited: %v", d.name, d.cmd.ProcessState)
		}
		if last = ready(); last == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready in %v: %v", d.name, limit, last)
}

// stop sends SIGTERM to the daemon by its PID and waits for it, up to
// 15 s, then SIGKILLs it. It reports how long the stop took.
func (d *daemon) stop(t testing.TB) time.Duration {
	start := time.Now()
	if d.exited() {
		return 0
	}
	d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Errorf("cleanup: %s %d did not stop in 15 s after SIGTERM; killing it", d.name, d.Pid())
		d.cmd.Process.Kill()
		<-d.done
	}
	return time.Since(start)
}

func (d *daemon) logTail() string {
	b, _ := os.ReadFile(d.log)
	return lastLines(b, 20)
}

// pingAPI asks the Docker-compatible API (dockerd's, Podman's) on the
// unix socket socket for /_ping once; nil means it answered OK.
func pingAPI(socket string) error {
	c := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket)
		}},
		Timeout: time.Second,
	}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://engine/_ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "OK" {
		return fmt.Errorf("_ping: %s %q", resp.Status, b)
	}
	return nil
}

// ofEngine reports whether pid is alive and runs with a path under the
// engine's dir on its command line: only then is it ours to stop.
func ofEngine(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), dir+"/") {
		return false
	}
	return procState(pid) != 'Z'
}

// straysUnder lists live processes, other than this one, whose command
// line names a path under dir: an engine's containerd, shims and monitors
// (conmon, containerd-shim-runc-v2 -address DIR/...), which re-parent to
// init.
func straysUnder(dir string) []int {
	pids, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if ofEngine(pid, dir) {
			out = append(out, pid)
		}
	}
	return out
}

// procState returns the state field of /proc/PID/stat, 0 if it is gone. A
// dead process that is not our child stays a zombie ('Z') until init
// reaps it, and answers kill -0 meanwhile.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

// stopPID sends SIGTERM to a process that is not our child, waits up to
// 5 s for it to go, then SIGKILLs it.
func stopPID(pid int) {
	unix.Kill(pid, unix.SIGTERM)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if s := procState(pid); s == 0 || s == 'Z' {
			return
		}
	}
	unix.Kill(pid, unix.SIGKILL)
}

// mountsUnder returns the mount points at or below dir in our mount
// namespace, each once.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	seen := map[string]bool{}
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := netns.UnescapeMount(fields[4])
		if (mp == dir || strings.HasPrefix(mp, dir+"/")) && !seen[mp] {
			seen[mp] = true
			out = append(out, mp)
		}
	}
	return out
}

// removeEngineDir stops stray processes of the engine at dir, unmounts
// everything under dir (deepest first, lazily where busy) and removes
// dir. What cannot be cleaned up is reported as a test error.
func removeEngineDir(t testing.TB, dir string) {
	// A container's monitor may still be finishing (conmon runs `podman
	// container cleanup` when its container exits): give such processes
	// 5 s to go on their own before they count as strays.
	for deadline := time.Now().Add(5 * time.Second); len(straysUnder(dir)) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range straysUnder(dir) {
		t.Errorf("cleanup: process %d of the engine in %s outlived it; killing it", pid, dir)
		stopPID(pid)
	}
	m := mountsUnder(dir)
	slices.SortFunc(m, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range m {
		if err := unix.Unmount(mp, 0); err != nil {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				t.Errorf("cleanup: unmount %s: %v", mp, err)
			}
		}
	}
	if m := mountsUnder(dir); len(m) > 0 {
		t.Errorf("cleanup: still mounted under %s, not removing it: %q", dir, m)
	} else if err := os.RemoveAll(dir); err != nil {
		t.Errorf("cleanup: remove %s: %v", dir, err)
	}
}

// removeCgroupTree removes the cgroup parent (an absolute cgroup path)
// and everything below it in every hierarchy (v1 controllers and v2),
// deepest first.
func removeCgroupTree(t testing.TB, parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + parent)
	roots = append(roots, "/sys/fs/cgroup"+parent)
	var once sync.Once
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		slices.SortFunc(dirs, func(a, b string) int { return len(b) - len(a) })
		for _, dir := range dirs {
			// A v1 controller mounted twice (cpu and cpu,cpuacct) shows one
			// directory under two names; the second rmdir finds it gone.
			if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.ENOENT) {
				once.Do(func() { t.Errorf("cleanup: rmdir cgroup %s: %v", dir, err) })
			}
		}
	}
}

// leftovers are host paths an engine creates outside its own directory
// (dockerd: /etc/docker/key.json, /run/docker, /run/containerd), each
// with whether it existed before the engine started; cleanup removes
// those that did not.
type leftovers map[string]bool

// hostPaths records which of paths exist, so that removeNew can take
// away those an engine created outside its own directory.
func hostPaths(paths ...string) leftovers {
	l := leftovers{}
	for _, p := range paths {
		_, err := os.Lstat(p)
		l[p] = err == nil
	}
	return l
}

// removeNew removes the recorded paths that did not exist before and
// have nothing mounted below them.
func (l leftovers) removeNew(t testing.TB) {
	for p, existed := range l {
		if existed || len(mountsUnder(p)) > 0 {
			continue
		}
		if err := os.RemoveAll(p); err != nil {
			t.Errorf("cleanup: remove %s: %v", p, err)
		}
	}
}

// busyboxRootfs makes dir/rootfs from /bin/busybox with its applets
// installed as symlinks, and returns its path: the root file system of
// every test image, so no registry is needed.
func busyboxRootfs(t testing.TB, dir string) string {
	t.Helper()
	rootfs := filepath.Join(dir, "rootfs")
	for _, sub := range []string{"bin", "proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		t.Fatal(err)
	}
	// Applets outside /bin (/sbin, /usr/bin) have no directory here and
	// are not installed; sleep and sh are in /bin.
	exec.Command("chroot", rootfs, "/bin/busybox", "--install", "-s").Run()
	if _, err := os.Lstat(filepath.Join(rootfs, "bin", "sleep")); err != nil {
		t.Fatalf("busybox --install: %v", err)
	}
	return rootfs
}
