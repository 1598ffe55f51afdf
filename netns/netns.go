package netns

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ID identifies a network namespace: the device and inode of its nsfs file.
// Inodes alone are what clients send; the device guards against comparing
// inodes of different filesystems.
type ID struct {
	Dev uint64
	Ino uint64
}

// NetNS is an open network namespace. Holding it keeps the namespace alive
// and pins its identity: a namespace that is deleted and whose inode is
// reused cannot be mistaken for this one. A NetNS may be used from several
// goroutines; Close must be called exactly once, after all use.
type NetNS struct {
	h    vns.NsHandle
	id   ID
	path string
}

// ID returns the namespace's device and inode.
func (n *NetNS) ID() ID { return n.id }

// Inode returns the namespace's inode, the identifier clients use.
func (n *NetNS) Inode() uint64 { return n.id.Ino }

// Path returns the path through which the namespace was opened.
func (n *NetNS) Path() string { return n.path }

// Close releases the namespace.
func (n *NetNS) Close() error {
	if n == nil || n.h == vns.None() {
		return nil
	}
	err := n.h.Close()
	n.h = vns.None()
	return err
}

// Finder looks namespaces up in a proc filesystem.
type Finder struct {
	// ProcRoot is where procfs is mounted; "" means /proc. Tests point it at
	// a fake tree.
	ProcRoot string
}

func (f *Finder) Proc() string {
	if f == nil || f.ProcRoot == "" {
		return "/proc"
	}
	return f.ProcRoot
}

// ValidInode reports whether ino can be a namespace inode at all: the kernel
// allocates them as unsigned int (proc_inum), never 0.
func ValidInode(ino uint64) error {
	if ino == 0 || ino > math.MaxUint32 {
		return fmt.Errorf("%w: %d is not a namespace inode", ErrInvalid, ino)
	}
	return nil
}

// OpenInode finds the network namespace with inode ino and opens it. It looks
// at nsfs bind mounts (such as /run/netns/NAME) first, then at the namespaces
// of all processes, then of all threads, then at open fds, so namespaces
// without any process are found as well as those of containers.
func (f *Finder) OpenInode(ino uint64) (*NetNS, error) {
	if err := ValidInode(ino); err != nil {
		return nil, opErr(OpLookup, ino, err)
	}
	want := fmt.Sprintf("net:[%d]", ino)
	proc := f.Proc()

	// Bind mounts: our own mount namespace, then PID 1's (when we run in a
	// container with hostPID, the host's /run/netns lives there).
	for _, pid := range []string{"self", "1"} {
		for _, mp := range nsfsMounts(filepath.Join(proc, pid, "mountinfo"), want) {
			path := mp
			if pid != "self" {
				path = filepath.Join(proc, pid, "root", mp)
			}
			if n, err := OpenPathInode(path, ino); err == nil {
				return n, nil
			}
		}
	}

	pids, err := ListPIDs(proc)
	if err != nil {
		return nil, opErr(OpLookup, ino, err)
	}
	for _, pid := range pids {
		path := filepath.Join(proc, pid, "ns", "net")
		if l, err := os.Readlink(path); err == nil && l == want {
			if n, err := OpenPathInode(path, ino); err == nil {
				return n, nil
			}
			// The process may have exited or changed netns since readlink;
			// keep looking.
		}
	}
	// A namespace may be held by a single thread that switched into it.
	for _, pid := range pids {
		tasks, _ := ListPIDs(filepath.Join(proc, pid, "task"))
		for _, tid := range tasks {
			if tid == pid {
				continue
			}
			path := filepath.Join(proc, pid, "task", tid, "ns", "net")
			if l, err := os.Readlink(path); err == nil && l == want {
				if n, err := OpenPathInode(path, ino); err == nil {
					return n, nil
				}
			}
		}
	}
	// Last, and most costly: a namespace kept alive only by an open fd
	// (a runtime holding it for a container it is about to start).
	for _, pid := range pids {
		dir := filepath.Join(proc, pid, "fd")
		fds, _ := ListPIDs(dir)
		for _, fd := range fds {
			path := filepath.Join(dir, fd)
			if l, err := os.Readlink(path); err == nil && l == want {
				if n, err := OpenPathInode(path, ino); err == nil {
					return n, nil
				}
			}
		}
	}
	return nil, opErr(OpLookup, ino, ErrNotFound)
}

// OpenPath opens the network namespace at path (an nsfs file such as
// /run/netns/NAME or /proc/PID/ns/net).
func OpenPath(path string) (*NetNS, error) {
	h, err := vns.GetFromPath(path)
	if err != nil {
		return nil, opErr(OpOpen, 0, err)
	}
	n, err := fromHandle(h, path)
	if err != nil {
		h.Close()
		return nil, err
	}
	return n, nil
}

// Self opens the network namespace of this process (its main thread), the
// host's namespace when the service runs with host networking.
func (f *Finder) Self() (*NetNS, error) {
	return OpenPath(filepath.Join(f.Proc(), "self", "ns", "net"))
}

// openChecked opens path and confirms that it is the nsfs file of the
// namespace with inode ino. Only the fd counts: the path may have been
// rebound or its process replaced since it was listed.
func OpenPathInode(path string, ino uint64) (*NetNS, error) {
	n, err := OpenPath(path)
	if err != nil {
		return nil, err
	}
	if n.id.Ino != ino {
		n.Close()
		return nil, opErr(OpOpen, ino, ErrStale)
	}
	return n, nil
}

func fromHandle(h vns.NsHandle, path string) (*NetNS, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return nil, opErr(OpOpen, 0, fmt.Errorf("fstat %s: %w", path, err))
	}
	var sfs unix.Statfs_t
	if err := unix.Fstatfs(int(h), &sfs); err != nil {
		return nil, opErr(OpOpen, st.Ino, fmt.Errorf("fstatfs %s: %w", path, err))
	}
	// A plain file at /run/netns/x (not a bind mount) is not a namespace.
	if sfs.Type != unix.NSFS_MAGIC {
		return nil, opErr(OpOpen, 0, fmt.Errorf("%s is not a namespace file: %w", path, ErrNotFound))
	}
	// nsfs files of other namespace types live on the same filesystem;
	// setns with CLONE_NEWNET would refuse them later, refuse them now.
	if t, err := unix.IoctlRetInt(int(h), unix.NS_GET_NSTYPE); err == nil && t != unix.CLONE_NEWNET {
		return nil, opErr(OpOpen, st.Ino, fmt.Errorf("%s is not a network namespace: %w", path, ErrNotFound))
	}
	return &NetNS{h: h, id: ID{Dev: uint64(st.Dev), Ino: st.Ino}, path: path}, nil
}

// listPIDs returns the numeric entries of dir.
func ListPIDs(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if n != "" && n[0] >= '0' && n[0] <= '9' {
			if _, err := strconv.ParseUint(n, 10, 32); err == nil {
				out = append(out, n)
			}
		}
	}
	return out, nil
}

// nsfsMounts returns the mount points of nsfs mounts whose root is want
// ("net:[INODE]") in a mountinfo file.
func nsfsMounts(mountinfo, want string) []string {
	var out []string
	for _, m := range netMounts(mountinfo, want) {
		out = append(out, m.Point)
	}
	return out
}

// BindMount is an nsfs bind mount of a network namespace.
type BindMount struct {
	Ino   uint64 // the namespace's inode
	Point string // mount point, unescaped, as seen in the mount namespace whose mountinfo was read
}

// BindMounts returns the nsfs bind mounts of network namespaces in a
// mountinfo file (such as /proc/self/mountinfo), in file order. A file that
// cannot be read has none.
func BindMounts(mountinfo string) []BindMount { return netMounts(mountinfo, "") }

// netMounts returns the nsfs mounts of network namespaces in a mountinfo
// file, in file order; with want ("net:[INODE]") set, only those of that
// namespace. A file that cannot be read has none. Line format (proc(5)):
//
//	61 42 0:4 net:[4026532389] /run/netns/x rw shared:5 - nsfs nsfs rw
func netMounts(mountinfo, want string) []BindMount {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return nil
	}
	filter := want
	if filter == "" {
		filter = "net:["
	}
	var out []BindMount
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, filter) {
			continue
		}
		fields := strings.Fields(line)
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "nsfs" {
			continue
		}
		root := fields[3]
		if want != "" && root != want {
			continue
		}
		// Roots of other namespace types (uts:[N], mnt:[N]) share nsfs.
		num, ok := strings.CutPrefix(root, "net:[")
		if !ok {
			continue
		}
		num, ok = strings.CutSuffix(num, "]")
		if !ok {
			continue
		}
		ino, err := strconv.ParseUint(num, 10, 64)
		if err != nil || ValidInode(ino) != nil {
			continue
		}
		out = append(out, BindMount{Ino: ino, Point: UnescapeMount(fields[4])})
	}
	return out
}

// UnescapeMount undoes the octal escapes (\040 for space etc.) that the
// kernel writes into mount points in mountinfo.
func UnescapeMount(s string) string {
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

// CheckProcess confirms that process pid still has start time starttime
// (field 22 of /proc/PID/stat, clock ticks since boot; 0 means unknown and
// is not compared) and is still in the namespace n. A mismatch means the reference that named pid is stale: the
// process ended (its PID may be reused) or moved, and n may not be the
// namespace the client meant; the error then wraps ErrStale.
func (f *Finder) CheckProcess(n *NetNS, pid int, starttime uint64) error {
	ino := n.Inode()
	if pid <= 0 {
		return opErr(OpLookup, ino, fmt.Errorf("%w: pid %d", ErrInvalid, pid))
	}
	st, err := f.StartTime(pid)
	if err != nil {
		return opErr(OpLookup, ino, fmt.Errorf("%w: process %d is gone", ErrStale, pid))
	}
	if starttime != 0 && st != starttime {
		return opErr(OpLookup, ino, fmt.Errorf("%w: process %d started at %d, not %d", ErrStale, pid, st, starttime))
	}
	var s unix.Stat_t
	if err := unix.Stat(filepath.Join(f.Proc(), strconv.Itoa(pid), "ns", "net"), &s); err != nil ||
		(ID{Dev: uint64(s.Dev), Ino: s.Ino}) != n.ID() {
		return opErr(OpLookup, ino, fmt.Errorf("%w: process %d is no longer in netns %d", ErrStale, pid, ino))
	}
	return nil
}

// StartTime returns field 22 of /proc/PID/stat: the process start time in
// clock ticks since boot.
func (f *Finder) StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(f.Proc(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	return ParseStartTime(b)
}

// parseStartTime reads field 22 of a /proc/PID/stat line. comm (field 2)
// may hold spaces and parentheses, so fields are counted after its last ')'.
func ParseStartTime(stat []byte) (uint64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("malformed stat: no ')'")
	}
	fields := strings.Fields(string(stat[i+1:]))
	// fields[0] is field 3 (state), so field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("malformed stat: %d fields after comm", len(fields))
	}
	return strconv.ParseUint(fields[19], 10, 64)
}
