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
	holders, err := f.LiveHolders()
	if err != nil {
		return nil, err
	}
	live := make(map[uint64]struct{}, len(holders))
	for ino := range holders {
		live[ino] = struct{}{}
	}
	return live, nil
}

// Holder says what keeps a live network namespace alive (LiveHolders).
type Holder struct {
	// Mounted: an nsfs bind mount in our or PID 1's mount namespace.
	Mounted bool
	// PID is the lowest PID of a process whose main thread is in the
	// namespace (usually the oldest, such as a container's init), or 0
	// when only bind mounts or other threads hold it. Someone waiting for
	// the namespace to lose its last holder can watch this process and
	// look again when it exits.
	PID int
}

// LiveHolders is LiveInodes, one scan of proc, with what holds each
// namespace.
func (f *Finder) LiveHolders() (map[uint64]Holder, error) {
	live := map[uint64]Holder{}
	err := f.scanLive(func(ino uint64, _ string, pid int, mounted bool) {
		h := live[ino]
		h.Mounted = h.Mounted || mounted
		if pid != 0 && (h.PID == 0 || pid < h.PID) {
			h.PID = pid
		}
		live[ino] = h
	})
	if err != nil {
		return nil, err
	}
	return live, nil
}

// livePaths returns one path to open for every network namespace that
// LiveInodes sees.
func (f *Finder) livePaths() (map[uint64]string, error) {
	paths := map[uint64]string{}
	err := f.scanLive(func(ino uint64, path string, _ int, _ bool) {
		if _, ok := paths[ino]; !ok {
			paths[ino] = path
		}
	})
	return paths, err
}

// scanLive calls fn for every nsfs bind mount (ours, then PID 1's) and
// every process's and thread's netns link, with a path that opens it; pid
// is the process whose main thread is in it, or 0.
func (f *Finder) scanLive(fn func(ino uint64, path string, pid int, mounted bool)) error {
	proc := f.Proc()
	for _, pid := range []string{"self", "1"} {
		for _, m := range netMounts(filepath.Join(proc, pid, "mountinfo"), "") {
			path := m.Point
			if pid != "self" {
				path = filepath.Join(proc, pid, "root", m.Point)
			}
			fn(m.Ino, path, 0, true)
		}
	}
	pids, err := ListPIDs(proc)
	if err != nil {
		return err
	}
	add := func(path string, pid int) {
		if ino, err := LinkInode(path); err == nil {
			fn(ino, path, pid, false)
		}
	}
	for _, pid := range pids {
		n, _ := strconv.Atoi(pid)
		add(filepath.Join(proc, pid, "ns", "net"), n)
		tasks, _ := ListPIDs(filepath.Join(proc, pid, "task"))
		if len(tasks) > 1 {
			for _, tid := range tasks {
				if tid != pid {
					add(filepath.Join(proc, pid, "task", tid, "ns", "net"), 0)
				}
			}
		}
	}
	return nil
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
