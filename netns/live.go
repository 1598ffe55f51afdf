package netns

import (
	"fmt"
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
	proc := f.Proc()
	live := map[uint64]struct{}{}
	for _, pid := range []string{"self", "1"} {
		for _, m := range netMounts(filepath.Join(proc, pid, "mountinfo"), "") {
			live[m.Ino] = struct{}{}
		}
	}
	pids, err := ListPIDs(proc)
	if err != nil {
		return nil, err
	}
	add := func(path string) {
		if ino, err := LinkInode(path); err == nil {
			live[ino] = struct{}{}
		}
	}
	for _, pid := range pids {
		add(filepath.Join(proc, pid, "ns", "net"))
		tasks, _ := ListPIDs(filepath.Join(proc, pid, "task"))
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

// LinkInode returns the inode of the network namespace that a
// /proc/PID/ns/net (or task, or fd) link names.
func LinkInode(path string) (uint64, error) {
	l, err := os.Readlink(path)
	if err != nil {
		return 0, err
	}
	return netLinkInode(l)
}

// netLinkInode parses "net:[INODE]".
func netLinkInode(l string) (uint64, error) {
	num, ok := strings.CutPrefix(l, "net:[")
	if ok {
		num, ok = strings.CutSuffix(num, "]")
	}
	if !ok {
		return 0, fmt.Errorf("%q is not a netns link", l)
	}
	ino, err := strconv.ParseUint(num, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a netns link", l)
	}
	return ino, ValidInode(ino)
}
