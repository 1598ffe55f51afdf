package deployments

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/packetflix/packetflix/discovery"
	"gopkg.in/yaml.v3"
)

// servicePort is the default of cmd/packetflix's --port flag (package main,
// so it cannot be imported): the port the image exposes and the manifest
// serves and probes on.
const servicePort = 5001

// wantCaps are the capabilities the service needs (see the Dockerfile for
// why each): the manifest must add exactly these, and the Dockerfile's
// setcap must grant exactly these. A file capability that the container's
// bounding set lacks makes execve fail with EPERM, and one the binary lacks
// is not effective for the non-root process, so the two lists must match.
var wantCaps = []string{"DAC_OVERRIDE", "NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_PTRACE"}

// The parts of Kubernetes objects the tests look at. yaml.v3 maps an
// untagged field to its lowercased name, so every camelCase key is tagged.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
}

type daemonSet struct {
	object `yaml:",inline"`
	Spec   struct {
		Template struct {
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	HostPID         bool `yaml:"hostPID"`
	HostNetwork     bool `yaml:"hostNetwork"`
	SecurityContext *struct {
		FSGroup *int64 `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name     string `yaml:"name"`
		HostPath *struct {
			Path string `yaml:"path"`
			Type string `yaml:"type"`
		} `yaml:"hostPath"`
		Secret *secretVolume `yaml:"secret"`
	} `yaml:"volumes"`
}

type secretVolume struct {
	SecretName string `yaml:"secretName"`
	Optional   *bool  `yaml:"optional"`
	// An octal literal in the manifest (0440), which YAML 1.1 (what
	// Kubernetes reads) takes for octal: kept as written.
	DefaultMode yaml.Node `yaml:"defaultMode"`
	Items       []struct {
		Key  string `yaml:"key"`
		Path string `yaml:"path"`
	} `yaml:"items"`
}

type container struct {
	Name            string          `yaml:"name"`
	Args            []string        `yaml:"args"`
	Ports           []containerPort `yaml:"ports"`
	SecurityContext *struct {
		RunAsNonRoot             *bool  `yaml:"runAsNonRoot"`
		RunAsUser                *int64 `yaml:"runAsUser"`
		RunAsGroup               *int64 `yaml:"runAsGroup"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		Capabilities             struct {
			Add  []string `yaml:"add"`
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
	} `yaml:"resources"`
	VolumeMounts []volumeMount `yaml:"volumeMounts"`
}

type containerPort struct {
	Name          string `yaml:"name"`
	ContainerPort int    `yaml:"containerPort"`
}

type volumeMount struct {
	Name      string `yaml:"name"`
	MountPath string `yaml:"mountPath"`
	ReadOnly  bool   `yaml:"readOnly"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		// An int or the name of a container port (IntOrString).
		Port yaml.Node `yaml:"port"`
	} `yaml:"httpGet"`
}

// document is one YAML document of a manifest file.
type document struct {
	file string
	obj  object
	node *yaml.Node
}

// manifests parses every YAML document of deployments/*.yaml.
func manifests(t *testing.T) []document {
	t.Helper()
	files, err := filepath.Glob("*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	var docs []document
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var n yaml.Node
			if err := dec.Decode(&n); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			var o object
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s: document %d: %v", f, i, err)
			}
			if o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "" {
				t.Errorf("%s: document %d lacks apiVersion, kind or metadata.name", f, i)
			}
			docs = append(docs, document{file: f, obj: o, node: &n})
		}
	}
	return docs
}

// theDaemonSet returns the packetflix DaemonSet and its one container.
func theDaemonSet(t *testing.T, docs []document) (*daemonSet, *container) {
	t.Helper()
	var found []*daemonSet
	for _, d := range docs {
		if d.obj.Kind != "DaemonSet" {
			continue
		}
		if d.obj.APIVersion != "apps/v1" {
			t.Errorf("%s: DaemonSet apiVersion %q, want apps/v1", d.file, d.obj.APIVersion)
		}
		var ds daemonSet
		if err := d.node.Decode(&ds); err != nil {
			t.Fatalf("%s: %v", d.file, err)
		}
		found = append(found, &ds)
	}
	if len(found) != 1 {
		t.Fatalf("%d DaemonSets in deployments/*.yaml, want 1", len(found))
	}
	ds := found[0]
	if n := len(ds.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("DaemonSet has %d containers, want 1", n)
	}
	return ds, &ds.Spec.Template.Spec.Containers[0]
}

func TestManifest(t *testing.T) {
	docs := manifests(t)
	ds, c := theDaemonSet(t, docs)
	pod := ds.Spec.Template.Spec

	if ds.Metadata.Name != "packetflix" || ds.Metadata.Namespace != "packetflix" {
		t.Errorf("DaemonSet is %s/%s, want packetflix/packetflix", ds.Metadata.Namespace, ds.Metadata.Name)
	}
	if !slices.ContainsFunc(docs, func(d document) bool {
		return d.obj.Kind == "Namespace" && d.obj.Metadata.Name == ds.Metadata.Namespace
	}) {
		t.Errorf("no Namespace %q among the manifests", ds.Metadata.Namespace)
	}
	if !pod.HostPID {
		t.Error("hostPID is not true: the service would see only its own processes' namespaces")
	}

	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("container has no securityContext")
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("runAsNonRoot is not true")
	}
	if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		t.Error("runAsUser is 0")
	}
	if sc.AllowPrivilegeEscalation == nil || !*sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not true: no_new_privs would void the binary's file capabilities")
	}
	if add := normCaps(sc.Capabilities.Add); !slices.Equal(add, wantCaps) {
		t.Errorf("capabilities.add = %v, want exactly %v", add, wantCaps)
	}
	if drop := sc.Capabilities.Drop; len(drop) != 1 || !strings.EqualFold(drop[0], "ALL") {
		t.Errorf("capabilities.drop = %v, want [ALL]", drop)
	}

	// The port: the container port, --port in args (the flag default when
	// absent) and both probes.
	if !slices.ContainsFunc(c.Ports, func(p containerPort) bool { return p.ContainerPort == servicePort }) {
		t.Errorf("no containerPort %d in %+v", servicePort, c.Ports)
	}
	if p, err := portArg(c.Args); err != nil {
		t.Error(err)
	} else if p != servicePort {
		t.Errorf("args give port %d, want %d", p, servicePort)
	}
	for _, pr := range []struct {
		name  string
		probe *probe
		path  string
	}{{"livenessProbe", c.LivenessProbe, "/healthz"}, {"readinessProbe", c.ReadinessProbe, "/readyz"}} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s: no httpGet probe", pr.name)
			continue
		}
		if pr.probe.HTTPGet.Path != pr.path {
			t.Errorf("%s: path %q, want %q", pr.name, pr.probe.HTTPGet.Path, pr.path)
		}
		if p := probePort(c, &pr.probe.HTTPGet.Port); p != servicePort {
			t.Errorf("%s: port %q is not %d", pr.name, pr.probe.HTTPGet.Port.Value, servicePort)
		}
	}

	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("resources.requests.%s is not set", r)
		}
	}

	// Every hostPath volume is mounted (an unmounted one is a host path
	// exposed to the pod for nothing, or a mount that was forgotten).
	for _, v := range pod.Volumes {
		if v.HostPath == nil {
			continue
		}
		if !slices.ContainsFunc(c.VolumeMounts, func(m volumeMount) bool { return m.Name == v.Name }) {
			t.Errorf("hostPath volume %q (%s) is not mounted", v.Name, v.HostPath.Path)
		}
	}
}

// normCaps spells capabilities as Kubernetes does (NET_RAW), sorted.
func normCaps(caps []string) []string {
	out := make([]string, 0, len(caps))
	for _, c := range caps {
		c = strings.ToUpper(strings.TrimSpace(c))
		out = append(out, strings.TrimPrefix(c, "CAP_"))
	}
	slices.Sort(out)
	return out
}

// portArg finds -p/--port in args; absent, the flag's default applies.
func portArg(args []string) (int, error) {
	for i, a := range args {
		var v string
		switch {
		case a == "--port" || a == "-p":
			if i+1 == len(args) {
				return 0, errors.New("args end in " + a + " without a value")
			}
			v = args[i+1]
		case strings.HasPrefix(a, "--port="):
			v = strings.TrimPrefix(a, "--port=")
		case strings.HasPrefix(a, "-p") && len(a) > 2:
			v = strings.TrimPrefix(strings.TrimPrefix(a, "-p"), "=")
		default:
			continue
		}
		p, err := strconv.Atoi(v)
		if err != nil {
			return 0, errors.New("args: port " + strconv.Quote(v) + " is not a number")
		}
		return p, nil
	}
	return servicePort, nil
}

// probePort resolves a probe's port, a number or a container port's name.
func probePort(c *container, n *yaml.Node) int {
	if p, err := strconv.Atoi(n.Value); err == nil && n.Tag == "!!int" {
		return p
	}
	for _, p := range c.Ports {
		if p.Name != "" && p.Name == n.Value {
			return p.ContainerPort
		}
	}
	return -1
}

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	cmd  string // upper case
	args string
}

// dockerfile returns the Dockerfile's stages, each a list of instructions
// starting with its FROM.
func dockerfile(t *testing.T) [][]instruction {
	t.Helper()
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages [][]instruction
		cur    strings.Builder
	)
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{strings.ToUpper(cmd), strings.TrimSpace(args)}
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("Dockerfile: %s before the first FROM", in.cmd)
			}
			return
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur.Len() == 0) {
			continue // comments, also between continuation lines
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(body + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a builder and a runtime stage", len(stages))
	}
	return stages
}

var setcapRE = regexp.MustCompile(`\bsetcap\s+'?([a-z_,]+)[+=]ep'?\s+(\S+)`)

func TestDockerfile(t *testing.T) {
	stages := dockerfile(t)
	final := stages[len(stages)-1]
	last := func(cmd string) (instruction, bool) {
		for i := len(final) - 1; i >= 0; i-- {
			if final[i].cmd == cmd {
				return final[i], true
			}
		}
		return instruction{}, false
	}

	if !strings.Contains(stages[0][0].args, "bookworm") || !strings.Contains(final[0].args, "bookworm") {
		t.Errorf("builder %q and runtime %q must both be Debian bookworm (the binary links glibc through cgo)",
			stages[0][0].args, final[0].args)
	}

	if in, ok := last("EXPOSE"); !ok || !slices.Contains(strings.Fields(in.args), strconv.Itoa(servicePort)) {
		t.Errorf("runtime stage does not EXPOSE %d (got %q)", servicePort, in.args)
	}

	var entry []string
	if in, ok := last("ENTRYPOINT"); !ok {
		t.Fatal("runtime stage has no ENTRYPOINT")
	} else if err := json.Unmarshal([]byte(in.args), &entry); err != nil || len(entry) == 0 {
		t.Fatalf("ENTRYPOINT %s is not in exec (JSON array) form: %v", in.args, err)
	}
	if entry[0] != "/usr/local/bin/packetflix" {
		t.Errorf("ENTRYPOINT runs %s, want /usr/local/bin/packetflix", entry[0])
	}

	if in, ok := last("USER"); !ok {
		t.Error("runtime stage has no USER: the service would run as root")
	} else if user, _, _ := strings.Cut(in.args, ":"); user == "root" || user == "0" {
		t.Errorf("USER %s is root", in.args)
	}

	// setcap on the entrypoint binary, in the runtime stage, with the
	// manifest's capabilities.
	_, c := theDaemonSet(t, manifests(t))
	var manifestCaps []string
	if c.SecurityContext != nil {
		manifestCaps = normCaps(c.SecurityContext.Capabilities.Add)
	}
	var found bool
	for _, in := range final {
		m := setcapRE.FindStringSubmatch(in.args)
		if in.cmd != "RUN" || m == nil {
			continue
		}
		found = true
		caps := normCaps(strings.Split(m[1], ","))
		if !slices.Equal(caps, wantCaps) {
			t.Errorf("setcap grants %v, want %v", caps, wantCaps)
		}
		if !slices.Equal(caps, manifestCaps) {
			t.Errorf("setcap grants %v but the DaemonSet adds %v: the lists must be equal", caps, manifestCaps)
		}
		if m[2] != entry[0] {
			t.Errorf("setcap is on %s, the ENTRYPOINT is %s", m[2], entry[0])
		}
	}
	if !found {
		t.Error("no RUN setcap ...+ep in the runtime stage")
	}
}

// TestEngineSockets follows the built-in discovery's engine socket paths
// through the image's symlinks and the DaemonSet's hostPath mounts back to
// the host: each must arrive at the path where the engine listens on the
// host, or the discovery silently finds no engine.
func TestEngineSockets(t *testing.T) {
	stages := dockerfile(t)
	final := stages[len(stages)-1]
	ds, c := theDaemonSet(t, manifests(t))

	// Where the runtime stage copies a builder directory to /.
	var root string
	for _, in := range final {
		f := strings.Fields(in.args)
		if in.cmd == "COPY" && len(f) == 3 && strings.HasPrefix(f[0], "--from=") && f[2] == "/" {
			root = strings.TrimSuffix(f[1], "/")
		}
	}
	if root == "" {
		t.Fatal("runtime stage copies no builder directory to / (the engine socket links)")
	}
	// ln -s TARGET LINK in the builder stages, LINK under root.
	links := map[string]string{}
	lnRE := regexp.MustCompile(`\bln\s+-s\s+(\S+)\s+(\S+)`)
	for _, st := range stages[:len(stages)-1] {
		for _, in := range st {
			for _, m := range lnRE.FindAllStringSubmatch(in.args, -1) {
				if rest, ok := strings.CutPrefix(m[2], root+"/"); ok {
					links[canonRun("/"+rest)] = m[1]
				}
			}
		}
	}

	dockerSock := strings.TrimPrefix(discovery.DefaultDockerHost, "unix://")
	podmanSock := strings.TrimPrefix(discovery.DefaultPodmanHost, "unix://")
	for _, sock := range []string{dockerSock, discovery.DefaultContainerdSocket, podmanSock, discovery.DefaultCRISocket} {
		target, ok := links[canonRun(sock)]
		if !ok {
			t.Errorf("the image has no link at %s (links: %v)", sock, links)
			continue
		}
		host := hostPathOf(ds, c, target)
		if host == "" {
			t.Errorf("%s links to %s, which no hostPath volume mount covers", sock, target)
			continue
		}
		if canonRun(host) != canonRun(sock) {
			t.Errorf("%s links to %s, which is the host's %s, not %s", sock, target, host, sock)
		}
	}
}

// canonRun spells /var/run/... as /run/...: in Debian (the image and the
// hosts alike) /var/run is a link to /run.
func canonRun(p string) string {
	p = path.Clean(p)
	if rest, ok := strings.CutPrefix(p, "/var/run/"); ok {
		return "/run/" + rest
	}
	return p
}

// hostPathOf maps a path in the container to the host path that a hostPath
// volume mount puts there, "" when none does.
func hostPathOf(ds *daemonSet, c *container, p string) string {
	best, host := "", ""
	for _, m := range c.VolumeMounts {
		rest, ok := strings.CutPrefix(p, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok || len(m.MountPath) <= len(best) {
			continue
		}
		for _, v := range ds.Spec.Template.Spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				best, host = m.MountPath, path.Join(v.HostPath.Path, rest)
			}
		}
	}
	return host
}

// flagArg finds --name in args (as "--name value" or "--name=value").
func flagArg(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// createSecretRE finds the documented `kubectl create secret` command:
// namespace, Secret name, key.
var createSecretRE = regexp.MustCompile(`kubectl\s+-n\s+(\S+)\s+create\s+secret\s+generic\s+(\S+)\s+(?:\\\s*#?\s*)?--from-(?:literal|file)=([A-Za-z0-9_.-]+)=`)

// TestToken: the DaemonSet and the image ship secure: --auth-token-file
// names a file that a Kubernetes Secret provides (mounted read-only, not
// optional, readable by the service's user), the manifest documents how
// to create that Secret, and the image's default arguments name the same
// file.
func TestToken(t *testing.T) {
	ds, c := theDaemonSet(t, manifests(t))
	pod := ds.Spec.Template.Spec
	file, ok := flagArg(c.Args, "auth-token-file")
	if !ok {
		t.Fatalf("args %q lack --auth-token-file: the DaemonSet would serve without a token", c.Args)
	}

	var secret *secretVolume
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, file)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			key := rel
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			if key != "token" {
				t.Errorf("the token file %s is the Secret's key %q, want \"token\"", file, key)
			}
			if !m.ReadOnly {
				t.Errorf("volume %q is not mounted readOnly", m.Name)
			}
			secret = v.Secret
		}
	}
	if secret == nil {
		t.Fatalf("--auth-token-file %s is not in a mounted Secret volume", file)
	}
	if secret.Optional != nil && *secret.Optional {
		t.Error("the token Secret is optional: a missing Secret would start the pod with no token file")
	}
	mode := int64(0o644) // Kubernetes' default
	if secret.DefaultMode.Value != "" {
		m, err := strconv.ParseInt(secret.DefaultMode.Value, 0, 32)
		if err != nil {
			t.Fatalf("defaultMode %q: %v", secret.DefaultMode.Value, err)
		}
		mode = m
	}
	// Secret files belong to root and, with fsGroup, to that group.
	var fsGroup, runAs int64 = -1, -2
	if pod.SecurityContext != nil && pod.SecurityContext.FSGroup != nil {
		fsGroup = *pod.SecurityContext.FSGroup
	}
	if sc := c.SecurityContext; sc != nil && sc.RunAsGroup != nil {
		runAs = *sc.RunAsGroup
	}
	if mode&0o004 == 0 && (mode&0o040 == 0 || fsGroup != runAs) {
		t.Errorf("token file mode %#o with fsGroup %d: not readable by the service's group %d", mode, fsGroup, runAs)
	}
	if mode&0o002 != 0 || mode&0o020 != 0 {
		t.Errorf("token file mode %#o is writable by others", mode)
	}

	b, err := os.ReadFile("daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	m := createSecretRE.FindStringSubmatch(string(b))
	if m == nil {
		t.Fatal("daemonset.yaml does not document `kubectl -n NS create secret generic NAME --from-literal=KEY=...`")
	}
	if m[1] != ds.Metadata.Namespace || m[2] != secret.SecretName || m[3] != "token" {
		t.Errorf("documented secret %s/%s key %s, the DaemonSet uses %s/%s key token", m[1], m[2], m[3], ds.Metadata.Namespace, secret.SecretName)
	}

	// The image's default arguments ask for the same file.
	final := dockerfile(t)
	stage := final[len(final)-1]
	var cmd []string
	for _, in := range stage {
		if in.cmd == "CMD" {
			cmd = nil
			if err := json.Unmarshal([]byte(in.args), &cmd); err != nil {
				t.Fatalf("CMD %s is not in exec (JSON array) form: %v", in.args, err)
			}
		}
	}
	if f, ok := flagArg(cmd, "auth-token-file"); !ok || f != file {
		t.Errorf("the image's CMD %q does not ask for the token file %s", cmd, file)
	}
}
