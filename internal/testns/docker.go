package testns

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// This file runs a real, private Docker engine for a test, as
// docs/test-engines.md describes: Debian's dockerd as a child
// of the test, with its own data, exec root and socket under a short temp
// dir, and without touching the host's networking. dockerd starts its own
// containerd, which the containerd client can be tested against too.

// Docker is a private Docker engine that runs until the test ends. Its
// methods fail the test on error; they must be called from the test's
// goroutine.
type Docker struct {
	// Dir is the engine's temp dir, removed at cleanup.
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

	t       testing.TB
	dockerd *daemon
	image   string
}

// Container is a container started by Docker.Run.
type Container struct {
	Name string
	ID   string
	PID  int // its root process (docker-init, as Run uses --init)
}

const dockerImage = "pftest-busybox:latest"

// dockerLock is the lock file that makes the engines of concurrent test
// processes run one after the other. StartCRI takes it too: its containerd
// shares containerd's fixed shim socket directory /run/containerd/s with
// dockerd's.
const dockerLock = "/tmp/packetflix-docker-test.lock"

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
	// /bin/busybox by path: Image copies that file into the rootfs.
	if err := aptInstall(t, []string{"dockerd", "docker", "/bin/busybox"}, []string{"docker.io", "busybox-static"}); err != nil {
		engineUnavailable(t, "docker engine", "%v", err)
	}
	lockFile(t, dockerLock)

	dir, err := os.MkdirTemp("/tmp", "pfd")
	if err != nil {
		t.Fatalf("docker temp dir: %v", err)
	}
	d := &Docker{
		Dir:          dir,
		Socket:       filepath.Join(dir, "docker.sock"),
		CgroupParent: "/" + filepath.Base(dir),
		t:            t,
	}
	d.Host = "unix://" + d.Socket
	// Paths dockerd creates outside its roots.
	before := hostPaths("/etc/docker/key.json", "/run/docker", "/run/containerd")

	start := time.Now()
	// --ip-forward=false: otherwise dockerd turns on the host's
	// net.ipv4.ip_forward, which every netns created afterwards copies.
	d.dockerd, err = startDaemon(filepath.Join(dir, "dockerd.log"), "dockerd",
		"--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false",
		"--data-root", filepath.Join(dir, "docker"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"-H", d.Host)
	if err != nil {
		os.RemoveAll(dir)
		engineUnavailable(t, "docker engine", "start dockerd: %v", err)
	}
	t.Cleanup(func() { d.stop(before) })

	if err := d.dockerd.waitReady(30*time.Second, func() error { return pingAPI(d.Socket) }); err != nil {
		engineUnavailable(t, "docker engine", "%v\n%s", err, d.dockerd.logTail())
	}
	t.Logf("dockerd %d ready in %v at %s", d.dockerd.Pid(), time.Since(start).Round(time.Millisecond), d.Host)

	d.ContainerdSocket = filepath.Join(dir, "exec", "containerd", "containerd.sock")
	if _, err := os.Stat(d.ContainerdSocket); err != nil {
		d.ContainerdSocket = "/run/containerd/containerd.sock"
	}
	return d
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
	rootfs := busyboxRootfs(d.t, d.Dir)
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

// stop tears the engine down in the order docs/test-engines.md gives. It reports what
// it could not clean up as test errors and goes on.
func (d *Docker) stop(before leftovers) {
	t := d.t
	if t.Failed() {
		t.Logf("dockerd log:\n%s", d.dockerd.logTail())
	}
	// Containers first, while the engine runs: a container left to a
	// dying engine may leave its shim and mounts behind.
	if !d.dockerd.exited() {
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
	took := d.dockerd.stop(t)
	t.Logf("dockerd %d stopped in %v", d.dockerd.Pid(), took.Round(time.Millisecond))
	// dockerd stops its own containerd; after a SIGKILL it cannot.
	if ctrdPid > 0 && ofEngine(ctrdPid, d.Dir) {
		t.Errorf("cleanup: containerd %d outlived dockerd; stopping it", ctrdPid)
		stopPID(ctrdPid)
	}
	// Shims re-parent to init; with every container removed none is left.
	// removeEngineDir stops any that is, then unmounts what is left under
	// Dir and removes it.
	removeEngineDir(t, d.Dir)
	removeCgroupTree(t, d.CgroupParent)
	// Paths dockerd leaves outside its roots, when it made them.
	before.removeNew(t)
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
