package testns

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file runs a real, private containerd with its CRI plugin for a
// test: Debian's containerd 1.6 (docker.io's dependency) as a child of the
// test, with its root, state, sockets, runc state, CNI configuration and
// /opt under a short temp dir. Pods get a network namespace of their own
// from a CNI plugin that configures nothing (no network, no real CNI
// plugins needed), and their pause image is a local busybox image
// imported under the configured name.

// CRI is a private containerd whose CRI plugin runs until the test ends.
// Its methods fail the test on error; they must be called from the test's
// goroutine.
type CRI struct {
	// Dir holds everything of this containerd; removed at cleanup.
	Dir string
	// Socket is containerd's unix socket, which serves both containerd's
	// own API and the CRI (runtime.v1.RuntimeService).
	Socket string
	// CgroupParent is the cgroup under which the pods run, so cleanup can
	// remove what they leave.
	CgroupParent string
	// Ready is how long containerd took to answer a CRI Version call.
	Ready time.Duration

	t       testing.TB
	daemon  *daemon
	conn    *grpc.ClientConn
	runtime cri.RuntimeServiceClient
}

// Pod is a pod sandbox with one running container, made by RunPod.
type Pod struct {
	Namespace, Name string
	SandboxID       string
	SandboxPID      int // the pause process, which holds the pod's netns
	ContainerID     string
	ContainerPID    int
}

// criPauseImage is the sandbox (pause) image containerd is configured
// with; it cannot be pulled here, so a busybox image is imported under
// this name.
const criPauseImage = "localhost/pftest-pause:1"

// StartCRI starts a private containerd and returns once its CRI plugin
// answers, with the pause image imported. containerd, ctr, runc and
// busybox come from Debian's containerd and busybox-static, installed here
// when missing. It takes turns with the Docker engines of concurrent test
// processes (their lock), as both use containerd's fixed shim socket
// directory /run/containerd/s. Everything is torn down at cleanup, also
// when the test fails: the pods, containerd (by its PID), stray shims,
// mounts under Dir, Dir, the pods' cgroups, and what containerd and CNI
// leave outside Dir (/run/containerd, /var/lib/cni) when it was not there
// before.
func StartCRI(t testing.TB) *CRI {
	t.Helper()
	RequireRoot(t)
	if err := aptInstall(t, []string{"containerd", "ctr", "runc", "busybox", "nsenter"},
		[]string{"containerd", "runc", "busybox-static", "util-linux"}); err != nil {
		engineUnavailable(t, "containerd", "%v", err)
	}
	lockFile(t, dockerLock)

	dir, err := os.MkdirTemp("/tmp", "pfc")
	if err != nil {
		t.Fatalf("containerd temp dir: %v", err)
	}
	c := &CRI{
		Dir:          dir,
		Socket:       filepath.Join(dir, "c.sock"),
		CgroupParent: "/" + filepath.Base(dir),
		t:            t,
	}
	before := hostPaths("/run/containerd", "/var/lib/cni")
	// Registered first, so it runs last: after the pods' removal.
	t.Cleanup(func() { c.stop(before) })
	c.configure()

	start := time.Now()
	c.daemon, err = startDaemon(filepath.Join(dir, "containerd.log"), "containerd",
		"--config", filepath.Join(dir, "config.toml"),
		"--root", filepath.Join(dir, "root"), "--state", filepath.Join(dir, "state"),
		"--address", c.Socket)
	if err != nil {
		engineUnavailable(t, "containerd", "start containerd: %v", err)
	}
	c.conn, err = grpc.NewClient("unix:"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("cri client: %v", err)
	}
	c.runtime = cri.NewRuntimeServiceClient(c.conn)
	if err := c.daemon.waitReady(30*time.Second, c.version); err != nil {
		engineUnavailable(t, "containerd", "%v\n%s", err, c.daemon.logTail())
	}
	c.Ready = time.Since(start)
	t.Logf("containerd %d with CRI ready in %v at %s", c.daemon.Pid(), c.Ready.Round(time.Millisecond), c.Socket)
	c.importPause()
	return c
}

// configure writes containerd's config and the CNI plugin and network.
//
//   - restrict_oom_score_adj: the CRI plugin gives the sandbox an OOM
//     score adjustment of -998, and lowering it needs CAP_SYS_RESOURCE,
//     which root lacks on this VM; without this runc fails ("can't get
//     final child's PID from pipe: EOF").
//   - netns_mounts_under_state_dir: the pods' netns bind mounts go under
//     Dir, not the host's /var/run/netns.
//   - the runc options' Root: runc's state goes under Dir, not
//     /run/containerd/runc.
//   - opt's path: containerd would create /opt/containerd.
//
// The CNI plugin "pfnull" (also installed as "loopback", which the CRI
// plugin always runs) sets only lo up and reports an eth0 with an address
// from 198.18.0.0/15 that is never configured: containerd wants eth0 in
// the result, and the test wants the pod's own netns without a network.
func (c *CRI) configure() {
	c.t.Helper()
	cniBin, cniConf := filepath.Join(c.Dir, "cni", "bin"), filepath.Join(c.Dir, "cni", "net.d")
	for _, d := range []string{cniBin, cniConf, filepath.Join(c.Dir, "logs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			c.t.Fatal(err)
		}
	}
	config := fmt.Sprintf(`version = 2
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]
[ttrpc]
  address = %[1]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[2]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[3]q
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[4]q
    conf_dir = %[5]q
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = %[6]q
`, c.Socket+".ttrpc", filepath.Join(c.Dir, "opt"), criPauseImage, cniBin, cniConf, filepath.Join(c.Dir, "runc"))
	plugin := `#!/bin/sh
# A CNI plugin that configures nothing but lo: see testns.CRI.
cat >/dev/null
case "$CNI_COMMAND" in
ADD)
	nsenter --net="$CNI_NETNS" ip link set lo up
	printf '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"%s"}],"ips":[{"version":"4","address":"198.18.99.2/24","interface":0}],"dns":{}}' "$CNI_NETNS" ;;
VERSION)
	printf '{"cniVersion":"0.4.0","supportedVersions":["0.3.0","0.3.1","0.4.0"]}' ;;
esac
`
	files := []struct {
		path, data string
		mode       os.FileMode
	}{
		{filepath.Join(c.Dir, "config.toml"), config, 0o644},
		{filepath.Join(cniBin, "pfnull"), plugin, 0o755},
		{filepath.Join(cniConf, "10-pfnull.conf"), `{"cniVersion":"0.4.0","name":"pfnull","type":"pfnull"}`, 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(f.path, []byte(f.data), f.mode); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := os.Symlink("pfnull", filepath.Join(cniBin, "loopback")); err != nil {
		c.t.Fatal(err)
	}
}

// version asks the CRI plugin for its version once.
func (c *CRI) version() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := c.runtime.Version(ctx, &cri.VersionRequest{})
	return err
}

// ctr runs ctr against this containerd in namespace k8s.io, the CRI
// plugin's.
func (c *CRI) ctr(args ...string) string {
	c.t.Helper()
	return Cmd(c.t, "ctr", append([]string{"--address", c.Socket, "--namespace", "k8s.io"}, args...)...)
}

// importPause imports a busybox image whose command is a long sleep under
// criPauseImage, as an OCI archive built here.
func (c *CRI) importPause() {
	c.t.Helper()
	rootfs := busyboxRootfs(c.t, c.Dir)
	layerPath := filepath.Join(c.Dir, "layer.tar")
	Cmd(c.t, "tar", "-C", rootfs, "-cf", layerPath, ".")
	layer, err := os.ReadFile(layerPath)
	if err != nil {
		c.t.Fatal(err)
	}
	archive, err := ociArchive(layer, criPauseImage, []string{"/bin/sleep", "3600"})
	if err != nil {
		c.t.Fatal(err)
	}
	path := filepath.Join(c.Dir, "image.tar")
	if err := os.WriteFile(path, archive, 0o644); err != nil {
		c.t.Fatal(err)
	}
	c.ctr("images", "import", path)
}

// ociArchive builds an OCI image layout archive of one image of one
// uncompressed layer, named name through the annotation ctr import reads.
func ociArchive(layer []byte, name string, cmd []string) ([]byte, error) {
	digest := func(b []byte) string {
		s := sha256.Sum256(b)
		return "sha256:" + hex.EncodeToString(s[:])
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": cmd},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{digest(layer)}},
	})
	if err != nil {
		return nil, err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        desc{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest(config), Size: len(config)},
		"layers":        []desc{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: digest(layer), Size: len(layer)}},
	})
	if err != nil {
		return nil, err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []desc{{
			MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: digest(manifest), Size: len(manifest),
			Annotations: map[string]string{"io.containerd.image.name": name},
		}},
	})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
		{"blobs/sha256/" + strings.TrimPrefix(digest(layer), "sha256:"), layer},
		{"blobs/sha256/" + strings.TrimPrefix(digest(config), "sha256:"), config},
		{"blobs/sha256/" + strings.TrimPrefix(digest(manifest), "sha256:"), manifest},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// RunPod runs a pod sandbox namespace/name in a network namespace of its
// own, and in it a container "app" running `sleep 300`, as kubelet would.
// With kubeletLabels, the sandbox and container carry the labels kubelet
// sets (io.kubernetes.pod.namespace, .name, .uid), through which
// containerd's own API names pods; without, the pod is as crictl makes
// it. The pod is stopped and removed at cleanup.
func (c *CRI) RunPod(namespace, name string, kubeletLabels bool) Pod {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	uid := fmt.Sprintf("uid-%s-%s", namespace, name)
	var labels map[string]string
	if kubeletLabels {
		labels = map[string]string{
			"io.kubernetes.pod.namespace": namespace,
			"io.kubernetes.pod.name":      name,
			"io.kubernetes.pod.uid":       uid,
		}
	}
	sandbox := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: namespace, Uid: uid},
		LogDirectory: filepath.Join(c.Dir, "logs", uid),
		Labels:       labels,
		Linux:        &cri.LinuxPodSandboxConfig{CgroupParent: c.CgroupParent},
	}
	c.t.Logf("cri: RunPodSandbox %s/%s", namespace, name)
	run, err := c.runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: sandbox})
	if err != nil {
		c.t.Fatalf("RunPodSandbox %s/%s: %v\n%s", namespace, name, err, c.daemon.logTail())
	}
	p := Pod{Namespace: namespace, Name: name, SandboxID: run.GetPodSandboxId()}
	c.t.Cleanup(func() { c.removePod(p.SandboxID) })

	ctrLabels := map[string]string{}
	for k, v := range labels {
		ctrLabels[k] = v
	}
	if kubeletLabels {
		ctrLabels["io.kubernetes.container.name"] = "app"
	}
	created, err := c.runtime.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId:  p.SandboxID,
		SandboxConfig: sandbox,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "app"},
			Image:    &cri.ImageSpec{Image: criPauseImage},
			Command:  []string{"/bin/sleep", "300"},
			Labels:   ctrLabels,
			LogPath:  "app.log",
		},
	})
	if err != nil {
		c.t.Fatalf("CreateContainer in %s/%s: %v", namespace, name, err)
	}
	p.ContainerID = created.GetContainerId()
	if _, err := c.runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: p.ContainerID}); err != nil {
		c.t.Fatalf("StartContainer %s: %v", p.ContainerID, err)
	}
	// The PIDs as containerd's task list shows them, independently of the
	// CRI's verbose status that discovery reads.
	pids := c.taskPIDs()
	p.SandboxPID, p.ContainerPID = pids[p.SandboxID], pids[p.ContainerID]
	if p.SandboxPID <= 0 || p.ContainerPID <= 0 {
		c.t.Fatalf("pod %s/%s: no running tasks in %v", namespace, name, pids)
	}
	return p
}

// taskPIDs returns the PIDs of the running tasks of namespace k8s.io by
// their IDs (`ctr task ls`: TASK PID STATUS).
func (c *CRI) taskPIDs() map[string]int {
	c.t.Helper()
	pids := map[string]int{}
	for _, line := range strings.Split(c.ctr("tasks", "ls"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[2] != "RUNNING" {
			continue
		}
		if pid, err := strconv.Atoi(f[1]); err == nil {
			pids[f[0]] = pid
		}
	}
	return pids
}

// removePod stops and removes a pod sandbox with its containers.
func (c *CRI) removePod(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
		c.t.Errorf("cleanup: StopPodSandbox %s: %v", id, err)
	}
	if _, err := c.runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
		c.t.Errorf("cleanup: RemovePodSandbox %s: %v", id, err)
	}
}

// stop tears containerd down: any pod left (while containerd runs, so
// their shims, mounts and netns go with them), then containerd by its
// PID, then what is left on the host. It reports what it could not clean
// up as test errors and goes on.
func (c *CRI) stop(before leftovers) {
	t := c.t
	if t.Failed() && c.daemon != nil {
		t.Logf("containerd log:\n%s", c.daemon.logTail())
	}
	if c.runtime != nil && c.daemon != nil && !c.daemon.exited() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pods, err := c.runtime.ListPodSandbox(ctx, &cri.ListPodSandboxRequest{})
		cancel()
		if err == nil {
			for _, p := range pods.GetItems() {
				c.removePod(p.GetId())
			}
		}
	}
	if c.conn != nil {
		c.conn.Close()
	}
	if c.daemon != nil {
		took := c.daemon.stop(t)
		t.Logf("containerd %d stopped in %v", c.daemon.Pid(), took.Round(time.Millisecond))
	}
	removeEngineDir(t, c.Dir)
	removeCgroupTree(t, c.CgroupParent)
	before.removeNew(t)
}
