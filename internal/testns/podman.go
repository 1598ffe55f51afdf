package testns

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file runs a real, private, rootful Podman for a test, as
// docs/test-engines.md describes: Debian's podman with its
// storage, run root, temp dir, network config and runc state under a short
// temp dir, and its Docker-compatible API served by `podman system
// service` as a child of the test.

// Podman is a private Podman whose API service runs until the test ends.
// Its methods fail the test on error; they must be called from the test's
// goroutine.
type Podman struct {
	// Dir holds everything of this Podman; removed at cleanup.
	Dir string
	// Host is the API's address in DOCKER_HOST form: unix://Dir/podman.sock.
	Host string
	// Socket is the path of the API's unix socket.
	Socket string
	// CgroupParent is the cgroup under which Run puts containers (and
	// Podman their conmon), so cleanup can remove what they leave.
	CgroupParent string
	// Ready is how long the API service took to answer /_ping.
	Ready time.Duration

	t       testing.TB
	service *daemon
	image   string
}

const podmanImage = "localhost/pftest-busybox:1"

// StartPodman starts a private Podman API service and returns once it
// answers /_ping. podman and busybox come from Debian's podman and
// busybox-static, installed here when missing. Podmans of concurrent test
// processes take turns through a lock file, as `podman import` writes a
// cache outside Dir (/var/lib/containers/cache) that cleanup removes if it
// finds it new. Everything is torn down at cleanup, also when the test
// fails: the containers, the service (stopped by its PID), stray conmon
// processes, mounts under Dir, Dir, the containers' cgroups.
func StartPodman(t testing.TB) *Podman {
	t.Helper()
	RequireRoot(t)
	if err := aptInstall(t, []string{"podman", "busybox"}, []string{"podman", "busybox-static"}); err != nil {
		engineUnavailable(t, "podman", "%v", err)
	}
	lockFile(t, "/tmp/packetflix-podman-test.lock")

	dir, err := os.MkdirTemp("/tmp", "pfp")
	if err != nil {
		t.Fatalf("podman temp dir: %v", err)
	}
	p := &Podman{
		Dir:          dir,
		Socket:       filepath.Join(dir, "podman.sock"),
		CgroupParent: "/" + filepath.Base(dir),
		t:            t,
	}
	p.Host = "unix://" + p.Socket
	before := hostPaths("/var/lib/containers", "/run/libpod", "/run/containers", "/run/runc")
	// Registered first, so it runs last: after the containers' removal,
	// which Run registers.
	t.Cleanup(func() { p.stop(before) })

	start := time.Now()
	p.service, err = startDaemon(filepath.Join(dir, "service.log"), "podman",
		append(p.global(), "system", "service", "--time=0", p.Host)...)
	if err != nil {
		engineUnavailable(t, "podman", "start podman system service: %v", err)
	}
	if err := p.service.waitReady(30*time.Second, func() error { return pingAPI(p.Socket) }); err != nil {
		engineUnavailable(t, "podman", "%v\n%s", err, p.service.logTail())
	}
	p.Ready = time.Since(start)
	t.Logf("podman system service %d ready in %v at %s", p.service.Pid(), p.Ready.Round(time.Millisecond), p.Host)
	return p
}

// global returns the podman flags that keep all its state in Dir. Without
// --runtime-flag root, runc would keep its state in /run/runc; without
// --tmpdir, Podman would use /run/libpod; without --network-config-dir,
// /run/containers. cgroupfs and no event log: there is no systemd here.
func (p *Podman) global() []string {
	return []string{
		"--root", filepath.Join(p.Dir, "storage"),
		"--runroot", filepath.Join(p.Dir, "run"),
		"--tmpdir", filepath.Join(p.Dir, "tmp"),
		"--network-config-dir", filepath.Join(p.Dir, "net"),
		"--runtime-flag", "root=" + filepath.Join(p.Dir, "runc"),
		"--cgroup-manager", "cgroupfs",
		"--events-backend", "none",
	}
}

// cli runs podman with this Podman's global flags.
func (p *Podman) cli(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "podman", append(p.global(), args...)...)
	cmd.Stdin = stdin
	return cmd.CombinedOutput()
}

// CLI runs `podman args...` against this Podman's storage, logs it and
// returns its trimmed output; an error or 60 s without an answer fails
// the test.
func (p *Podman) CLI(args ...string) string {
	p.t.Helper()
	return p.cliIn(nil, args...)
}

func (p *Podman) cliIn(stdin io.Reader, args ...string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := p.cli(ctx, stdin, args...)
	p.t.Logf("$ podman %s", strings.Join(args, " "))
	if err != nil {
		p.t.Fatalf("podman %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// Image returns a busybox image made from /bin/busybox, imported on first
// use (`podman import` of a rootfs tar): no registry is needed.
func (p *Podman) Image() string {
	p.t.Helper()
	if p.image != "" {
		return p.image
	}
	rootfs := busyboxRootfs(p.t, p.Dir)
	tar := filepath.Join(p.Dir, "rootfs.tar")
	Cmd(p.t, "tar", "-C", rootfs, "-cf", tar, ".")
	f, err := os.Open(tar)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	p.cliIn(f, "import", "--change", `CMD ["/bin/sh"]`, "-", podmanImage)
	p.image = podmanImage
	return p.image
}

// Run starts `sleep 300` in a container named name, detached, with
// --network none, --pull never (a missing image must not send Podman to a
// registry) and the two --ulimit flags without which runc fails here
// (Podman's default limits exceed this VM's hard limits, and raising them
// needs CAP_SYS_RESOURCE). The container is removed at cleanup.
func (p *Podman) Run(name string) Container {
	p.t.Helper()
	img := p.Image()
	p.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if out, err := p.cli(ctx, nil, "rm", "-f", "-t", "0", name); err != nil {
			p.t.Errorf("cleanup: podman rm -f %s: %v: %s", name, err, out)
		}
	})
	p.CLI("run", "-d", "--pull", "never", "--network", "none", "--cgroup-parent", p.CgroupParent,
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
		"--name", name, img, "sleep", "300")
	// run's output may hold warnings besides the ID; inspect's does not.
	id := p.CLI("inspect", "-f", "{{.Id}}", name)
	pid, err := strconv.Atoi(p.CLI("inspect", "-f", "{{.State.Pid}}", name))
	if err != nil || pid <= 0 {
		p.t.Fatalf("container %s: pid %d, %v", name, pid, err)
	}
	return Container{Name: name, ID: id, PID: pid}
}

// stop tears Podman down: containers first (the CLI needs no service),
// then the service by its PID, then what is left on the host. It reports
// what it could not clean up as test errors and goes on.
func (p *Podman) stop(before leftovers) {
	t := p.t
	if t.Failed() && p.service != nil {
		t.Logf("podman service log:\n%s", p.service.logTail())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	if out, err := p.cli(ctx, nil, "rm", "-a", "-f", "-t", "0"); err != nil {
		t.Errorf("cleanup: podman rm -a -f: %v: %s", err, out)
	}
	cancel()
	if p.service != nil {
		took := p.service.stop(t)
		t.Logf("podman system service %d stopped in %v", p.service.Pid(), took.Round(time.Millisecond))
	}
	removeEngineDir(t, p.Dir)
	removeCgroupTree(t, p.CgroupParent)
	// conmon's exit command (`podman container cleanup`) gets Podman's
	// global flags but not --runtime-flag (Podman 4.3), so when it runs
	// runc, runc creates its default root /run/runc, empty. Another
	// runc user may have put state there since: remove it only if empty.
	if !before["/run/runc"] {
		os.Remove("/run/runc")
	}
	delete(before, "/run/runc")
	before.removeNew(t)
}
