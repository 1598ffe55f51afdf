package capture

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// poller lets the one reader goroutine of a session sleep until any of its
// rings has something for it, without an OS thread per interface and
// without a goroutine per ring handing packets over (a hand-off per block
// costs futex wake-ups that measured more than the packet work itself; see
// docs/capture-engine.md).
//
// It is an epoll instance of its own holding the ring sockets (edge-
// triggered: "something happened on ring i since the last look") and an
// eventfd for wake-ups from other goroutines. The epoll fd itself is
// pollable, so it is registered with the Go netpoller: the reader parks as
// a goroutine, a read deadline wakes it for timeouts and for stop. The
// rings' own fds are not registered with the netpoller at all. Which ring
// has a block ready is read from the ring memory (block status), not from
// epoll; epoll only says when to look again and which socket reported an
// error.
type poller struct {
	file    *os.File // the epoll fd, registered with the netpoller
	rc      syscall.RawConn
	epfd    int
	wakefd  int // eventfd: wake() from any goroutine
	events  []unix.EpollEvent
	stopped atomic.Bool
	// errs collects, per wait, the ring ids whose sockets reported
	// EPOLLERR; owned by the reader.
	errs []int
}

// wakeID is the epoll data of the eventfd; ring ids are >= 0.
const wakeID = -1

func newPoller() (_ *poller, err error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	p := &poller{epfd: epfd, wakefd: -1, events: make([]unix.EpollEvent, 64)}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if p.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	if err := p.add(p.wakefd, wakeID); err != nil {
		return nil, err
	}
	// os.NewFile registers a non-blocking fd with the netpoller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		return nil, fmt.Errorf("epoll fd: %w", err)
	}
	p.file = os.NewFile(uintptr(epfd), "capture-poller")
	if p.rc, err = p.file.SyscallConn(); err != nil {
		return nil, fmt.Errorf("netpoller: %w", err)
	}
	return p, nil
}

// add watches fd under id.
func (p *poller) add(fd, id int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLERR | unix.EPOLLET, Fd: int32(id)}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll_ctl add: %w", err)
	}
	return nil
}

// remove stops watching fd (before it is closed or handed to the Pool).
func (p *poller) remove(fd int) {
	_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// wait returns when ready() reports true, when a ring socket reported an
// error (its id is then in p.errs), when wake was called, at the deadline
// (errTimeout), or after stop (errStopped). ready is checked after the
// pending events are taken, so a block retired after that check wakes the
// netpoller again: nothing is missed.
func (p *poller) wait(deadline time.Time, ready func() bool) error {
	p.errs = p.errs[:0]
	_ = p.file.SetReadDeadline(deadline)
	if p.stopped.Load() {
		return errStopped
	}
	err := p.rc.Read(func(uintptr) bool {
		woken := p.drain()
		return woken || len(p.errs) > 0 || ready()
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if p.stopped.Load() {
				return errStopped
			}
			return errTimeout
		}
		return err
	}
	return nil
}

// epollPoll is epoll_wait with a zero timeout as a raw system call: it
// never blocks, so it need not tell the Go scheduler, and entering a
// system call the scheduler's way wakes its monitor thread (sysmon) when
// that sleeps - measured, a tenth of the service's context switches came
// from this one call.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// drain takes the pending events without blocking: ring ids with socket
// errors go to p.errs; it reports whether wake was called.
func (p *poller) drain() (woken bool) {
	for {
		n, err := epollPoll(p.epfd, p.events)
		if err == unix.EINTR {
			continue
		}
		for _, ev := range p.events[:max(n, 0)] {
			switch {
			case ev.Fd == wakeID:
				var b [8]byte
				_, _ = unix.Read(p.wakefd, b[:])
				woken = true
			case ev.Events&unix.EPOLLERR != 0:
				p.errs = append(p.errs, int(ev.Fd))
			}
		}
		if n < len(p.events) {
			return woken
		}
	}
}

// poll is drain for a busy reader that does not wait: it refreshes p.errs.
func (p *poller) poll() {
	p.errs = p.errs[:0]
	p.drain()
}

// wake makes a waiting reader return; safe from any goroutine.
func (p *poller) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakefd, one[:])
}

// stop makes wait return errStopped, now and from then on; safe from any
// goroutine. The flag is set before the deadline, so a reader arming its
// own deadline at the same time either sees the flag or has its deadline
// overwritten.
func (p *poller) stop() {
	p.stopped.Store(true)
	if p.file != nil {
		_ = p.file.SetReadDeadline(time.Unix(1, 0))
	}
}

// close releases the epoll and eventfd; only the reader calls it, once
// wait can no longer run.
func (p *poller) close() {
	if p.file != nil {
		_ = p.file.Close()
	} else if p.epfd >= 0 {
		_ = unix.Close(p.epfd)
	}
	if p.wakefd >= 0 {
		_ = unix.Close(p.wakefd)
	}
}
