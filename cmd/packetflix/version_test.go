package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func Test_versionFrom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, base, module, rev string
		dirty                   bool
		want                    string
	}{
		{"commit", "0.1.0\n", "(devel)", "e262ebc4f1a2b3c4", false, "0.1.0+e262ebc"},
		{"dirty tree", "0.1.0", "(devel)", "e262ebc4f1a2b3c4", true, "0.1.0+e262ebc.dirty"},
		{"pseudo-version is not a release", "0.1.0", "v0.0.0-20261202004204-e262ebc4f1a2+dirty", "e262ebc4f1a2", true, "0.1.0+e262ebc.dirty"},
		{"pre-release pseudo-version", "0.2.0", "v0.1.1-0.20261202004204-e262ebc4f1a2", "e262ebc4f1a2", false, "0.2.0+e262ebc"},
		{"tagged release", "0.1.0", "v0.3.0", "e262ebc4f1a2", false, "0.3.0"},
		{"no VCS information", "0.1.0", "(devel)", "", false, "0.1.0+unknown"},
		{"short revision", "0.1.0", "", "abc", false, "0.1.0+abc"},
	}
	for _, tt := range tests {
		if got := versionFrom(tt.base, tt.module, tt.rev, tt.dirty); got != tt.want {
			t.Errorf("%s: versionFrom(%q, %q, %q, %v) = %q, want %q", tt.name, tt.base, tt.module, tt.rev, tt.dirty, got, tt.want)
		}
	}
}

// TestPlainGoBuildVersion builds the command as a user would without the
// Makefile and checks that it reports VERSION plus the commit, as make
// does (the go command counts untracked files as modified, hence the
// plain "git status --porcelain"). -buildvcs=true overrides a GOFLAGS=-buildvcs=false of the
// environment; a build outside a git checkout has nothing to stamp.
func TestPlainGoBuildVersion(t *testing.T) {
	git := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("git", args...).Output()
		if err != nil {
			t.Skipf("not in a git checkout (git %s: %v)", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	// The go command looks for a .git directory; a worktree's .git is a
	// file, and such a build carries no VCS information.
	if fi, err := os.Stat(filepath.Join(git("rev-parse", "--show-toplevel"), ".git")); err != nil || !fi.IsDir() {
		t.Skip("not a plain git checkout (.git is not a directory): the go command stamps no commit")
	}
	rev := git("rev-parse", "HEAD")[:7]
	if git("status", "--porcelain") != "" {
		rev += ".dirty"
	}
	bin := filepath.Join(t.TempDir(), "packetflix")
	if out, err := exec.Command("go", "build", "-buildvcs=true", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "packetflix " + strings.TrimSpace(baseVersion) + "+" + rev
	if got := strings.TrimSpace(string(out)); got != want {
		t.Errorf("--version = %q, want %q", got, want)
	}
}
