package testns

import (
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

// This file runs a real, private Docker engine for a test, as
// shared/ENGINE-NOTES.md section 7 describes: Debian's dockerd as a child
// of the test, with its own data, exec root and socket under a short temp
// dir, and without touching the host's networking. dockerd starts its own
// containerd, which the containerd client can be tested against too.

// Docker is a private Docker engine that runs until the test ends. Its
// methods fail the test on error; they must be called from the test's
// goroutine.
type Docker struct {
	// Dir is the engine's temp dir ($B in the notes), removed at cleanup.
	Dir string
	// Host is the engine's address in DOCKER_HOST form: unix://Dir/docker.sock.
	Host string
	// Socket is the path of the engine's unix socket.
	Socket string
	// ContainerdSocket is the containerd that dockerd uses: its own, at
	// Dir/exec/containerd/containerd.sock, unless the host runs one at
	// /run/containerd/containerd.sock. Docker's containers are in its
	// namespace "moby".
	ContainerdSocket string
	// CgroupParent is the cgroup under which Run puts containers, so
	// cleanup can remove the cgroups the containers leave.
	CgroupParent string

	t     testing.TB
	cmd   *exec.Cmd
	done  chan struct{} // closed when dockerd has been waited for
	image string
}

// Container is a container started by Docker.Run.
type Container struct {
	Name string
	ID   string
	PID  int // its root process (docker-init, as Run uses --init)
}

const dockerImage = "pftest-busybox:latest"

// unavailable skips a test whose engine cannot be had, except under
// CI=true, where a skip would hide that the test never ran (the rule of
// RequireRoot).
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("docker engine unavailable, and CI=true forbids skipping: "+format, args...)
	}
	t.Skipf("docker engine unavailable: "+format, args...)
}

// StartDocker starts a private Docker engine and returns once it answers
// /_ping. dockerd and busybox come from Debian's docker.io and
// busybox-static, installed here when missing. Engines of concurrent test
// processes (go test runs packages in parallel) take turns through a lock
// file, as they share a few host paths (/run/docker/plugins,
// /etc/docker/key.json) that cleanup removes if it finds them new.
// Everything is torn down at cleanup, also when the test fails: the
// containers, dockerd and its containerd, mounts under Dir, Dir, the
// containers' cgroups.
func StartDocker(t testing.TB) *Docker {
	t.Helper()
	RequireRoot(t)
	if err := installDocker(t); err != nil {
		unavailable(t, "%v", err)
	}
	lockDocker(t)

	dir, err := os.MkdirTemp("/tmp", "pfd")
	if err != nil {
		t.Fatalf("docker temp dir: %v", err)
	}
	d := &Docker{
		Dir:          dir,
		Socket:       filepath.Join(dir, "docker.sock"),
		CgroupParent: "/" + filepath.Base(dir),
		t:            t,
		done:         make(chan struct{}),
	}
	d.Host = "unix://" + d.Socket
	leftovers := hostLeftovers()

	logf, err := os.Create(filepath.Join(dir, "dockerd.log"))
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("dockerd log: %v", err)
	}
	d.cmd = exec.Command("dockerd",
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--data-root", filepath.Join(dir, "docker"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", d.Host)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// Its own process group: a ^C in the terminal reaches the test, whose
	// cleanup then stops dockerd in order, not dockerd directly.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(dir)
		unavailable(t, "start dockerd: %v", err)
	}
	logf.Close()
	go func() {
		// Owned by d: stop waits for it through d.done.
		d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() { d.stop(leftovers) })

	start := time.Now()
	if err := d.waitPing(30 * time.Second); err != nil {
		unavailable(t, "dockerd not ready: %v\n%s", err, d.logTail())
	}
	t.Logf("dockerd %d ready in %v at %s", d.cmd.Process.Pid, time.Since(start).Round(time.Millisecond), d.Host)

	d.ContainerdSocket = filepath.Join(dir, "exec", "containerd", "containerd.sock")
	if _, err := os.Stat(d.ContainerdSocket); err != nil {
		d.ContainerdSocket = "/run/containerd/containerd.sock"
	}
	return d
}

// installDocker installs dockerd and busybox when missing, retrying once
// after apt-get update: a concurrent apt-get can delete downloaded .deb
// files mid-install, and a fresh machine may have no package lists.
func installDocker(t testing.TB) error {
	t.Helper()
	_, err1 := exec.LookPath("dockerd")
	_, err2 := os.Stat("/bin/busybox")
	_, err3 := exec.LookPath("docker")
	if err1 == nil && err2 == nil && err3 == nil {
		return nil
	}
	install := func() error {
		cmd := exec.Command("apt-get", "install", "-y", "-q", "docker.io", "busybox-static")
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("apt-get install docker.io busybox-static: %w: %s", err, lastLines(out, 5))
		}
		return nil
	}
	t.Log("installing docker.io busybox-static")
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

// lockDocker takes the lock that makes concurrent test processes run their
// engines one after the other; it is released at cleanup, or by the kernel
// when the process dies.
func lockDocker(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/tmp/packetflix-docker-test.lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("docker lock: %v", err)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			f.Close()
			t.Fatalf("docker lock: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the flock
}

// leftovers are host paths dockerd creates outside its roots; cleanup
// removes those that did not exist before it started.
type leftovers map[string]bool

func hostLeftovers() leftovers {
	l := leftovers{}
	for _, p := range []string{"/etc/docker/key.json", "/run/docker", "/run/containerd"} {
		_, err := os.Lstat(p)
		l[p] = err == nil
	}
	return l
}

// waitPing polls GET /_ping until it answers OK.
func (d *Docker) waitPing(limit time.Duration) error {
	c := &http.Client{
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.Socket)
		}},
		Timeout: time.Second,
	}
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.done:
			return fmt.Errorf("dockerd exited: %v", d.cmd.ProcessState)
		default:
		}
		resp, err := c.Get("http://docker/_ping")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(b) == "OK" {
				return nil
			}
			err = fmt.Errorf("_ping: %s %q", resp.Status, b)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no answer in %v: %v", limit, last)
}

func (d *Docker) logTail() string {
	b, _ := os.ReadFile(filepath.Join(d.Dir, "dockerd.log"))
	return lastLines(b, 20)
}

// cli runs the docker CLI against this engine, with a private client
// config so ~/.docker is left alone.
func (d *Docker) cli(ctx context.Context, args ...string) ([]byte, error) {
	args = append([]string{"--config", filepath.Join(d.Dir, "cli"), "-H", d.Host}, args...)
	return exec.CommandContext(ctx, "docker", args...).CombinedOutput()
}

// CLI runs `docker -H HOST args...`, logs it and returns its trimmed
// output; an error or 60 s without an answer fails the test.
func (d *Docker) CLI(args ...string) string {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := d.cli(ctx, args...)
	d.t.Logf("$ docker %s", strings.Join(args, " "))
	if err != nil {
		d.t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Image returns a busybox image made from /bin/busybox, imported on first
// use: no registry is needed.
func (d *Docker) Image() string {
	d.t.Helper()
	if d.image != "" {
		return d.image
	}
	rootfs := filepath.Join(d.Dir, "rootfs")
	for _, sub := range []string{"bin", "proc", "sys", "dev", "etc", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, sub), 0o755); err != nil {
			d.t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		d.t.Fatalf("busybox: %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin", "busybox"), bb, 0o755); err != nil {
		d.t.Fatal(err)
	}
	Cmd(d.t, "chroot", rootfs, "/bin/busybox", "--install", "-s")
	tar := filepath.Join(d.Dir, "rootfs.tar")
	Cmd(d.t, "tar", "-C", rootfs, "-cf", tar, ".")
	d.CLI("import", "-c", `CMD ["/bin/sh"]`, tar, dockerImage)
	d.image = dockerImage
	return d.image
}

// Run starts `sleep 300` in a container named name, detached, with --init
// (a bare sleep as PID 1 ignores SIGTERM), --pull never (a missing image
// must not send the engine to a registry) and --network none unless flags
// (more `docker run` flags) choose a network. The container is removed at
// cleanup.
func (d *Docker) Run(name string, flags ...string) Container {
	d.t.Helper()
	img := d.Image()
	args := []string{"run", "-d", "--pull", "never", "--init", "--cgroup-parent", d.CgroupParent, "--name", name}
	if !slices.ContainsFunc(flags, func(f string) bool { return f == "--network" || strings.HasPrefix(f, "--network=") }) {
		args = append(args, "--network", "none")
	}
	args = append(append(args, flags...), img, "sleep", "300")
	d.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := d.cli(ctx, "rm", "-f", name); err != nil {
			d.t.Errorf("cleanup: docker rm -f %s: %v: %s", name, err, out)
		}
	})
	d.CLI(args...)
	// docker run's output may hold warnings besides the ID; inspect does not.
	id := d.CLI("inspect", "-f", "{{.Id}}", name)
	pid, err := strconv.Atoi(d.CLI("inspect", "-f", "{{.State.Pid}}", name))
	if err != nil || pid <= 0 {
		d.t.Fatalf("container %s: pid %d, %v", name, pid, err)
	}
	return Container{Name: name, ID: id, PID: pid}
}

// stop tears the engine down in the order the notes give. It reports what
// it could not clean up as test errors and goes on.
func (d *Docker) stop(before leftovers) {
	t := d.t
	if t.Failed() {
		t.Logf("dockerd log:\n%s", d.logTail())
	}
	// Containers first, while the engine runs: a container left to a
	// dying engine may leave its shim and mounts behind.
	select {
	case <-d.done:
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if out, err := d.cli(ctx, "ps", "-aq"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				if out, err := d.cli(ctx, "rm", "-f", id); err != nil {
					t.Errorf("cleanup: docker rm -f %s: %v: %s", id, err, out)
				}
			}
		}
		cancel()
	}

	ctrdPid := d.containerdPID()
	d.cmd.Process.Signal(unix.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		t.Errorf("cleanup: dockerd %d did not stop in 15 s after SIGTERM; killing it", d.cmd.Process.Pid)
		d.cmd.Process.Kill()
		<-d.done
	}
	// dockerd stops its own containerd; after a SIGKILL it cannot.
	if ctrdPid > 0 && d.ours(ctrdPid) {
		t.Errorf("cleanup: containerd %d outlived dockerd; stopping it", ctrdPid)
		stopPID(ctrdPid)
	}
	// Shims re-parent to init; with every container removed none is left.
	for _, pid := range d.strays() {
		t.Errorf("cleanup: process %d of this engine outlived it; killing it", pid)
		stopPID(pid)
	}

	d.unmountAll()
	if m := mountsUnder(d.Dir); len(m) > 0 {
		t.Errorf("cleanup: still mounted under %s, not removing it: %q", d.Dir, m)
	} else if err := os.RemoveAll(d.Dir); err != nil {
		t.Errorf("cleanup: remove %s: %v", d.Dir, err)
	}
	d.removeCgroups()

	// Paths dockerd leaves outside its roots, when it made them.
	if !before["/etc/docker/key.json"] {
		os.Remove("/etc/docker/key.json")
	}
	if !before["/run/docker"] && len(mountsUnder("/run/docker")) == 0 {
		os.RemoveAll("/run/docker")
	}
	if !before["/run/containerd"] && len(mountsUnder("/run/containerd")) == 0 {
		os.RemoveAll("/run/containerd")
	}
}

// containerdPID reads the pid file of the containerd dockerd started.
func (d *Docker) containerdPID() int {
	b, err := os.ReadFile(filepath.Join(d.Dir, "exec", "containerd", "containerd.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// ours reports whether pid is alive and runs with this engine's Dir on its
// command line: only then is it ours to stop.
func (d *Docker) ours(pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), d.Dir+"/") {
		return false
	}
	return procState(pid) != 'Z'
}

// strays lists live processes whose command line names this engine's
// Dir: its containerd and shims (containerd-shim-runc-v2 -address
// Dir/exec/containerd/containerd.sock).
func (d *Docker) strays() []int {
	pids, _ := os.ReadDir("/proc")
	var out []int
	for _, p := range pids {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if d.ours(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// procState returns the state field of /proc/PID/stat, 0 if it is gone.
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

// unmountAll unmounts everything under Dir, deepest first, lazily where a
// mount is busy.
func (d *Docker) unmountAll() {
	m := mountsUnder(d.Dir)
	slices.SortFunc(m, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range m {
		if err := unix.Unmount(mp, 0); err != nil {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
				d.t.Errorf("cleanup: unmount %s: %v", mp, err)
			}
		}
	}
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
		mp := unescapeOctal(fields[4])
		if (mp == dir || strings.HasPrefix(mp, dir+"/")) && !seen[mp] {
			seen[mp] = true
			out = append(out, mp)
		}
	}
	return out
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes CgroupParent and what the containers left below it
// in every cgroup hierarchy (v1 controllers and v2), deepest first.
func (d *Docker) removeCgroups() {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + d.CgroupParent)
	roots = append(roots, "/sys/fs/cgroup"+d.CgroupParent)
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
				once.Do(func() { d.t.Errorf("cleanup: rmdir cgroup %s: %v", dir, err) })
			}
		}
	}
}
