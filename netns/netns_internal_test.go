package netns

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeProc is a hand-written procfs tree; testdata/proc/README.md describes it.
const fakeProc = "../testdata/proc"

func TestParseStartTime(t *testing.T) {
	t.Parallel()
	// rest is fields 4..52 of a real stat line; field 22 (starttime) is 98765.
	const rest = " 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1234567 89 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 3 0 0 0 0 0 0 0 0 0 0 0\n"
	tests := []struct {
		name string
		stat string
		want uint64
		ok   bool
	}{
		{name: "plain", stat: "1234 (sleep) S" + rest, want: 98765, ok: true},
		{name: "comm with space and parens", stat: "1234 (a) b)) S" + rest, want: 98765, ok: true},
		{name: "comm that looks like fields", stat: "1234 (x) S 1 2 3) R" + rest, want: 98765, ok: true},
		{name: "empty comm", stat: "1234 () S" + rest, want: 98765, ok: true},
		{
			name: "exactly 22 fields",
			stat: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 1 0 42",
			want: 42, ok: true,
		},
		{name: "too few fields", stat: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 1 0"},
		{name: "fields consumed by comm", stat: "1234 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19) S 1 2"},
		{name: "no paren", stat: "1234 sleep S" + rest},
		{name: "empty", stat: ""},
		{name: "starttime not a number", stat: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 1 0 x1"},
		{name: "starttime negative", stat: "1 (init) S 0 1 1 0 -1 4194560 1 0 0 0 1 2 0 0 20 0 1 0 -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseStartTime([]byte(tt.stat))
			if tt.ok && err != nil {
				t.Fatalf("ParseStartTime(%q): %v", tt.stat, err)
			}
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseStartTime(%q) = %d, want an error", tt.stat, got)
				}
				return
			}
			if got != tt.want {
				t.Fatalf("ParseStartTime(%q) = %d, want %d", tt.stat, got, tt.want)
			}
		})
	}
}

func TestParseStartTimeSelf(t *testing.T) {
	t.Parallel()
	// The real kernel format: our own stat must parse, and to a time after
	// boot (0 would mean we picked the wrong field on this kernel).
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skipf("no procfs: %v", err)
	}
	st, err := ParseStartTime(b)
	if err != nil {
		t.Fatalf("ParseStartTime(%q): %v", b, err)
	}
	if st == 0 {
		t.Fatalf("ParseStartTime(%q) = 0", b)
	}
}

func Test_nsfsMounts(t *testing.T) {
	t.Parallel()
	const mountinfo = `22 1 0:21 / / rw,relatime shared:1 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
25 22 0:23 / /run rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,mode=755
43 25 0:4 net:[4026532389] /run/netns/a rw shared:2 - nsfs nsfs rw
44 25 0:4 net:[4026532389] /run/netns/with\040space rw shared:3 - nsfs nsfs rw
45 25 0:4 net:[4026532390] /run/netns/other rw shared:4 - nsfs nsfs rw
46 25 0:4 net:[40265323891] /run/netns/longer rw shared:6 - nsfs nsfs rw
47 25 0:23 / /srv/net:[4026532389] rw shared:7 - tmpfs tmpfs rw
48 25 0:24 net:[4026532389] /srv/fake rw shared:8 - tmpfs tmpfs rw
49 25 0:4 uts:[4026532389] /run/utsns/a rw shared:9 - nsfs nsfs rw
50 25 0:4 net:[4026532389] /run/netns/b rw master:2 propagate_from:1 - nsfs nsfs rw
51 25 0:4 net:[4026532389]
52 25 0:4 net:[4026532389] /run/netns/no-fstype -
53 25 0:4 net:[4026532389] /run/netns/no-separator rw shared:10 nsfs nsfs rw
`
	path := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(path, []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file string
		want string
		mps  []string
	}{
		{
			name: "two mounts and a propagated one",
			file: path, want: "net:[4026532389]",
			mps: []string{"/run/netns/a", "/run/netns/with space", "/run/netns/b"},
		},
		{name: "other inode", file: path, want: "net:[4026532390]", mps: []string{"/run/netns/other"}},
		{name: "no such inode", file: path, want: "net:[4026532391]"},
		{name: "prefix of a longer inode", file: path, want: "net:[4026532]"},
		{name: "missing file", file: filepath.Join(t.TempDir(), "nope"), want: "net:[4026532389]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := nsfsMounts(tt.file, tt.want)
			if !slices.Equal(got, tt.mps) {
				t.Fatalf("nsfsMounts(%q) = %q, want %q", tt.want, got, tt.mps)
			}
		})
	}
}

func Test_nsfsMountsLongLine(t *testing.T) {
	t.Parallel()
	// Overlay lines with many layers get long; one must not end the scan.
	long := "22 1 0:21 / / rw shared:1 - overlay overlay rw,lowerdir=" + strings.Repeat("/l", 40000) + "\n"
	line := "43 25 0:4 net:[4026532389] /run/netns/a rw shared:2 - nsfs nsfs rw\n"
	path := filepath.Join(t.TempDir(), "mountinfo")
	if err := os.WriteFile(path, []byte(long+line), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, want := nsfsMounts(path, "net:[4026532389]"), []string{"/run/netns/a"}; !slices.Equal(got, want) {
		t.Fatalf("nsfsMounts = %q, want %q", got, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, want string
	}{
		{name: "plain", in: "/run/netns/a", want: "/run/netns/a"},
		{name: "space", in: `/run/netns/with\040space`, want: "/run/netns/with space"},
		{name: "tab newline backslash", in: `/a\011b\012c\134d`, want: "/a\tb\nc\\d"},
		{name: "escape at end", in: `/a\040`, want: "/a "},
		{name: "escape only", in: `\040`, want: " "},
		{name: "two in a row", in: `\040\040`, want: "  "},
		{name: "short escape at end", in: `/a\04`, want: `/a\04`},
		{name: "lone backslash at end", in: `/a\`, want: `/a\`},
		{name: "not octal", in: `/a\089`, want: `/a\089`},
		{name: "above a byte", in: `/a\777`, want: `/a\777`},
		{name: "empty", in: "", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := UnescapeMount(tt.in); got != tt.want {
				t.Fatalf("UnescapeMount(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func Test_ValidInode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ino  uint64
		ok   bool
	}{
		{name: "zero", ino: 0},
		{name: "one", ino: 1, ok: true},
		{name: "typical", ino: 4026531840, ok: true},
		{name: "max uint32", ino: math.MaxUint32, ok: true},
		{name: "max uint32 plus one", ino: math.MaxUint32 + 1},
		{name: "max uint64", ino: math.MaxUint64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidInode(tt.ino)
			if tt.ok && err != nil {
				t.Fatalf("ValidInode(%d): %v", tt.ino, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalid) {
				t.Fatalf("ValidInode(%d) = %v, want ErrInvalid", tt.ino, err)
			}
		})
	}
}

func TestListPIDs(t *testing.T) {
	t.Parallel()
	got, err := ListPIDs(fakeProc)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"1", "123"}; !slices.Equal(got, want) {
		t.Fatalf("ListPIDs(%s) = %q, want %q", fakeProc, got, want)
	}
	got, err = ListPIDs(filepath.Join(fakeProc, "123", "task"))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if want := []string{"123", "124"}; !slices.Equal(got, want) {
		t.Fatalf("ListPIDs(123/task) = %q, want %q", got, want)
	}
	if _, err := ListPIDs(filepath.Join(fakeProc, "nope")); err == nil {
		t.Fatal("listPIDs of a missing dir: no error")
	}
}

// TestFinderFakeProc checks that Finder reads only its ProcRoot, and that
// entries which merely look right (text matches, file does not open or is
// not nsfs) never count as found.
func TestFinderFakeProc(t *testing.T) {
	t.Parallel()
	f := &Finder{ProcRoot: fakeProc}

	t.Run("OpenInode not found", func(t *testing.T) {
		t.Parallel()
		n, err := f.OpenInode(4026532999)
		if !errors.Is(err, ErrNotFound) {
			n.Close()
			t.Fatalf("OpenInode = %v, %v; want ErrNotFound", n, err)
		}
		var oe *OpError
		if !errors.As(err, &oe) || oe.Op != OpLookup || oe.NetNS != 4026532999 {
			t.Fatalf("OpenInode error %#v, want OpError{Op: lookup, NetNS: 4026532999}", err)
		}
	})

	t.Run("OpenInode invalid", func(t *testing.T) {
		t.Parallel()
		for _, ino := range []uint64{0, math.MaxUint32 + 1} {
			if _, err := f.OpenInode(ino); !errors.Is(err, ErrInvalid) {
				t.Errorf("OpenInode(%d) = %v, want ErrInvalid", ino, err)
			}
		}
	})

	t.Run("missing proc root", func(t *testing.T) {
		t.Parallel()
		f := &Finder{ProcRoot: filepath.Join(t.TempDir(), "nope")}
		_, err := f.OpenInode(4026532999)
		if err == nil || errors.Is(err, ErrNotFound) {
			// Not finding /proc at all is a setup error, not "no such netns".
			t.Fatalf("OpenInode = %v, want an error other than ErrNotFound", err)
		}
	})

	t.Run("mountinfo entries that are not the netns", func(t *testing.T) {
		t.Parallel()
		// self/mountinfo names two "nsfs" mounts of the wanted inode: a
		// regular file, and a real nsfs file of a different netns (our own).
		// Neither may be returned.
		var st unix.Stat_t
		if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
			t.Skipf("no /proc/self/ns/net: %v", err)
		}
		want := st.Ino + 1
		dir := t.TempDir()
		plain := filepath.Join(dir, "plain")
		if err := os.WriteFile(plain, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(dir, "self"), 0o755); err != nil {
			t.Fatal(err)
		}
		mi := "43 25 0:4 net:[" + strconv.FormatUint(want, 10) + "] " + plain + " rw shared:2 - nsfs nsfs rw\n" +
			"44 25 0:4 net:[" + strconv.FormatUint(want, 10) + "] /proc/self/ns/net rw shared:3 - nsfs nsfs rw\n"
		if err := os.WriteFile(filepath.Join(dir, "self", "mountinfo"), []byte(mi), 0o644); err != nil {
			t.Fatal(err)
		}
		n, err := (&Finder{ProcRoot: dir}).OpenInode(want)
		if !errors.Is(err, ErrNotFound) {
			n.Close()
			t.Fatalf("OpenInode(%d) = %v, %v; want ErrNotFound", want, n, err)
		}
	})

	t.Run("StartTime", func(t *testing.T) {
		t.Parallel()
		st, err := f.StartTime(123)
		if err != nil || st != 98765 {
			t.Fatalf("StartTime(123) = %d, %v; want 98765", st, err)
		}
		if _, err := f.StartTime(124); err == nil {
			t.Fatal("StartTime(124) without a stat file: no error")
		}
	})

	t.Run("CheckProcess", func(t *testing.T) {
		t.Parallel()
		n := &NetNS{h: -1, id: ID{Dev: 4, Ino: 4026532999}}
		tests := []struct {
			name string
			pid  int
			st   uint64
			want error
		}{
			{name: "pid zero", pid: 0, st: 98765, want: ErrInvalid},
			{name: "pid negative", pid: -1, st: 98765, want: ErrInvalid},
			{name: "no such process", pid: 124, st: 98765, want: ErrStale},
			{name: "no such process, start time unknown", pid: 124, st: 0, want: ErrStale},
			{name: "other start time", pid: 123, st: 98764, want: ErrStale},
			// The start time matches but ns/net does not lead to an nsfs
			// file with n's (dev, ino).
			{name: "ns link does not resolve", pid: 123, st: 98765, want: ErrStale},
			{name: "ns link does not resolve, start time unknown", pid: 123, st: 0, want: ErrStale},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				t.Parallel()
				if err := f.CheckProcess(n, tt.pid, tt.st); !errors.Is(err, tt.want) {
					t.Fatalf("CheckProcess(%d, %d) = %v, want %v", tt.pid, tt.st, err, tt.want)
				}
			})
		}
	})
}

func Test_netLinkInode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"net:[4026531993]", 4026531993, true},
		{"mnt:[4026531993]", 0, false},
		{"net:[4026531993", 0, false},
		{"net:[]", 0, false},
		{"net:[0]", 0, false},
		{"net:[x]", 0, false},
		{"net:[99999999999]", 0, false},
	}
	for _, tt := range tests {
		got, err := netLinkInode(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("netLinkInode(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
