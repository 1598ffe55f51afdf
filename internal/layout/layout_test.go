package layout_test

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/packetflix/packetflix/"

// allowed lists, per package, the packages of ours it may import directly
// or indirectly. Test-only helpers (internal/testns) are not counted: only
// non-test dependencies are listed by go list -deps. server still reaches
// capture and netns directly: opening captures has not moved into session
// yet (README.md, "Layout", says where each thing lives).
var allowed = map[string][]string{
	"pcapng":          {},
	"netns":           {},
	"discovery":       {"netns"},
	"capture":         {"netns"},
	"session":         {"capture", "pcapng", "netns"},
	"flows":           {"capture", "netns"},
	"server":          {"session", "capture", "pcapng", "netns", "discovery", "flows"},
	"cmd/packetflix":  {"server", "session", "capture", "pcapng", "netns", "discovery", "flows"},
	"cmd/pfcat":       {"pcapng"},
	"internal/testns": {"netns"},
	"internal/layout": {},
	"deployments":     {},
	// A tool of make bench (go run), not part of the product.
	"scripts/benchreport": {},
	"scripts/tcpfloor":    {},
	// Measures the service from outside: reads its stream, enters netns.
	"scripts/targetbench": {"pcapng", "netns"},
}

// lean are the packages of the data path, which must stay small and free of
// the heavy clients: their dependencies may not contain any package with
// one of the forbidden prefixes.
var lean = []string{"capture", "netns", "pcapng", "session"}

var forbidden = []string{
	"net/http",
	"google.golang.org/grpc",
	"google.golang.org/protobuf",
	"github.com/moby/",
	"github.com/docker/",
	"github.com/containerd/",
	"k8s.io/",
	"github.com/prometheus/",
}

type pkg struct {
	ImportPath string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var ps []pkg
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

func TestImportGraph(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range listPackages(t) {
		name := strings.TrimPrefix(p.ImportPath, mod)
		ok, known := allowed[name]
		if !known {
			t.Errorf("package %s is not in the layout test's table: add it with its allowed imports", name)
			continue
		}
		seen[name] = true
		for _, d := range p.Deps {
			if !strings.HasPrefix(d, mod) {
				continue
			}
			dep := strings.TrimPrefix(d, mod)
			if !slices.Contains(ok, dep) {
				t.Errorf("%s depends on %s, which its room does not allow", name, dep)
			}
		}
	}
	for name := range allowed {
		if !seen[name] {
			t.Errorf("table lists %s, which no longer exists", name)
		}
	}
}

func TestLeanDataPath(t *testing.T) {
	checked := 0
	for _, p := range listPackages(t) {
		name := strings.TrimPrefix(p.ImportPath, mod)
		if !slices.Contains(lean, name) {
			continue
		}
		checked++
		for _, d := range p.Deps {
			for _, f := range forbidden {
				if d == f || strings.HasPrefix(d, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
					t.Errorf("%s depends on %s: the data path may not pull in %s", name, d, f)
				}
			}
		}
	}
	if checked != len(lean) {
		t.Errorf("checked %d of the %d lean packages: one was renamed or removed", checked, len(lean))
	}
}
