package capture

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// monitor receives rtnetlink link notifications of one netns, so that an
// all-interfaces capture can take in interfaces created after it started.
// Its socket is created inside the netns (by Open, in netns.Do) and
// belongs to that netns from then on. One goroutine reads it and closes it.
type monitor struct {
	file *os.File
	rc   syscall.RawConn
	buf  []byte
}

// openMonitor subscribes to RTNLGRP_LINK. It must run inside the netns,
// before the interfaces are listed, so that no interface created between
// the listing and the subscription is missed.
func openMonitor() (*monitor, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("netlink bind RTMGRP_LINK: %w", err)
	}
	m := &monitor{file: os.NewFile(uintptr(fd), "rtnetlink"), buf: make([]byte, 64<<10)}
	if m.rc, err = m.file.SyscallConn(); err != nil {
		m.file.Close()
		return nil, err
	}
	return m, nil
}

// next blocks until links are announced and returns the new or changed
// ones; errStopped after stop.
func (m *monitor) next() ([]link, error) {
	var n int
	var rerr error
	err := m.rc.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), m.buf, 0)
		return rerr != unix.EAGAIN
	})
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, errStopped
		}
		return nil, err
	}
	if rerr != nil {
		// ENOBUFS: notifications were lost; the caller rescans nothing,
		// so say so rather than pretend.
		return nil, fmt.Errorf("netlink receive: %w", rerr)
	}
	return parseLinks(m.buf[:n])
}

// stop makes next return errStopped; safe from any goroutine.
func (m *monitor) stop() { _ = m.file.SetReadDeadline(time.Unix(1, 0)) }

func (m *monitor) close() { _ = m.file.Close() }
