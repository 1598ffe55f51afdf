package netns

import (
	"errors"
	"fmt"
	"runtime"

	vns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs fn on a fresh OS thread that has entered the network namespace
// target, and returns fn's error. Sockets fn creates stay in target for
// their whole life and may be used from any goroutine afterwards.
//
// fn must be short and synchronous: it must not start goroutines (they would
// not inherit the namespace), block on channels, or do DNS or HTTP.
//
// If the thread cannot switch back to its own namespace, it is never
// released to the Go scheduler: the goroutine exits while still locked, so
// the runtime terminates the thread (see runtime.LockOSThread), and Do
// returns an OpError with Op OpRestoreNetns. Without this, unrelated
// goroutines would later run inside the target namespace.
func Do(target *NetNS, fn func() error) error {
	if target == nil || target.h == vns.None() {
		return opErr(OpSetns, 0, errors.New("namespace is not open"))
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// vns.Get opens /proc/self/task/TID/ns/net: this thread's own
		// namespace, which need not be the main thread's.
		orig, err := vns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- opErr(OpSetns, target.id.Ino, fmt.Errorf("open own netns: %w", err))
			return
		}
		defer orig.Close()
		if err := vns.Set(target.h); err != nil {
			// setns failed, so the thread is still where it was.
			runtime.UnlockOSThread()
			errc <- opErr(OpSetns, target.id.Ino, err)
			return
		}
		// If fn never returns (runtime.Goexit, as t.Fatal does), the
		// caller still gets an answer and the thread, still locked and
		// possibly in target, dies with the goroutine.
		returned := false
		defer func() {
			if !returned {
				errc <- opErr(OpSetns, target.id.Ino, errors.New("function run in netns did not return"))
			}
		}()
		ferr := fn()
		returned = true
		if err := vns.Set(orig); err != nil {
			// From here the thread must not be released: it stays locked and
			// dies with this goroutine.
			errc <- errors.Join(ferr, opErr(OpRestoreNetns, target.id.Ino,
				fmt.Errorf("return to netns %s: %w", orig.UniqueId(), err)))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Dup returns a second handle to the same namespace, for a holder whose
// lifetime differs from the original's. Close both.
func (n *NetNS) Dup() (*NetNS, error) {
	fd, err := unix.FcntlInt(uintptr(n.h), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, opErr(OpOpen, n.id.Ino, fmt.Errorf("dup: %w", err))
	}
	return &NetNS{h: vns.NsHandle(fd), id: n.id, path: n.path}, nil
}
