package netnsutil

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LiveInodes returns the inodes of every network namespace that a bind
// mount (in our or PID 1's mount namespace), a process or a thread of the
// host refers to. A namespace missing from it exists only because someone
// still holds it open - for a capture, that is the capture's own sockets:
// its container or netns is gone. Namespaces held only by an open fd of
// another process are not seen (scanning every fd is too costly to repeat).
func (f *Finder) LiveInodes() (map[uint64]struct{}, error) {
	proc := f.proc()
	live := map[uint64]struct{}{}
	for _, pid := range []string{"self", "1"} {
		for _, ino := range nsfsNetInodes(filepath.Join(proc, pid, "mountinfo")) {
			live[ino] = struct{}{}
		}
	}
	pids, err := listPIDs(proc)
	if err != nil {
		return nil, err
	}
	add := func(path string) {
		if l, err := os.Readlink(path); err == nil {
			if ino, ok := parseNetLink(l); ok {
				live[ino] = struct{}{}
			}
		}
	}
	for _, pid := range pids {
		add(filepath.Join(proc, pid, "ns", "net"))
		tasks, _ := listPIDs(filepath.Join(proc, pid, "task"))
		if len(tasks) > 1 {
			for _, tid := range tasks {
				if tid != pid {
					add(filepath.Join(proc, pid, "task", tid, "ns", "net"))
				}
			}
		}
	}
	return live, nil
}

// parseNetLink reads the inode out of a "net:[INODE]" link.
func parseNetLink(l string) (uint64, bool) {
	if !strings.HasPrefix(l, "net:[") || !strings.HasSuffix(l, "]") {
		return 0, false
	}
	ino, err := strconv.ParseUint(l[5:len(l)-1], 10, 64)
	return ino, err == nil
}

// nsfsNetInodes returns the inodes of all nsfs network namespace mounts in
// a mountinfo file.
func nsfsNetInodes(mountinfo string) []uint64 {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return nil
	}
	var out []uint64
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, " - nsfs ") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) > 3 {
			if ino, ok := parseNetLink(fields[3]); ok {
				out = append(out, ino)
			}
		}
	}
	return out
}
