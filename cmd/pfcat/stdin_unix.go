//go:build unix

package main

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// watchStdin reports on eof when f reaches end of file, if f is a pipe or
// a socket: that is how sshd tells a remote command that sshdump closed
// its channel, and the command may not be writing just then to notice
// it on stdout. A terminal, /dev/null (stdin of a background job or a
// service) or a regular file is not watched: eof is nil. Data read from f
// is dropped. stop ends the watch and waits for its goroutine.
//
// poll(2) with a second pipe to wake it, rather than a blocking read:
// stdin is usually in blocking mode, where a read cannot be cancelled,
// and switching it to non-blocking would change it for every process
// that shares it.
func watchStdin(f *os.File) (eof <-chan struct{}, stop func(), err error) {
	st, err := f.Stat()
	if err != nil || st.Mode()&(os.ModeNamedPipe|os.ModeSocket) == 0 {
		return nil, func() {}, nil
	}
	fd, err := rawFD(f)
	if err != nil {
		return nil, nil, err
	}
	wr, ww, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	wfd, err := rawFD(wr)
	if err != nil {
		wr.Close()
		ww.Close()
		return nil, nil, err
	}
	ch := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if waitEOF(fd, wfd) {
			close(ch)
		}
	}()
	return ch, func() {
		ww.Close() // wakes the poll: wr reaches EOF
		<-done
		wr.Close()
	}, nil
}

// waitEOF returns true when fd reaches end of file (or fails: the other
// end is gone all the same), false when wake becomes readable first or
// fd cannot be watched.
func waitEOF(fd, wake int) bool {
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}, {Fd: int32(wake), Events: unix.POLLIN}}
	buf := make([]byte, 4096)
	for {
		_, err := unix.Poll(fds, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || fds[1].Revents != 0 || fds[0].Revents&unix.POLLNVAL != 0 {
			return false
		}
		if fds[0].Revents == 0 {
			continue
		}
		n, err := unix.Read(fd, buf)
		switch {
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		case err != nil || n == 0:
			return true
		}
	}
}

// rawFD returns f's descriptor without switching it to blocking mode, as
// f.Fd would.
func rawFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var fd int
	if err := rc.Control(func(x uintptr) { fd = int(x) }); err != nil {
		return 0, err
	}
	return fd, nil
}
