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
// non-test dependencies are listed by go list -deps.
var allowed = map[string][]string{
	"pcapng":          {},
	"netnsutil":       {},
	"capture":         {"netnsutil"},
	"server":          {"capture", "pcapng", "netnsutil"},
	"cmd/packetflix":  {"server", "capture", "pcapng", "netnsutil"},
	"cmd/pfcat":       {"pcapng"},
	"internal/testns": {"netnsutil"},
	"internal/layout": {},
	"deployments":     {},
}

func TestImportGraph(t *testing.T) {
	out, err := exec.Command("go", "list", "-json=ImportPath,Deps", mod+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for dec.More() {
		var p struct {
			ImportPath string
			Deps       []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
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
