package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// newOutput returns where the stream of o goes. Its Write gets each
// message whole, in order, from one goroutine; Close is called once, after
// the last Write.
func newOutput(o *captureOptions, e *env) io.WriteCloser {
	switch {
	case o.write == "" || o.write == "-":
		return nopCloser{e.stdout}
	case o.ring.fileSize > 0:
		now := e.now
		if now == nil {
			now = time.Now
		}
		return newRing(o.write, o.ring, now)
	default:
		return &file{path: o.write}
	}
}

// nopCloser is stdout. Its messages go out as they come, unbuffered:
// sshdump and Wireshark read the stream live.
type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// file is -w FILE without a ring. It is created at the first write, so a
// capture the service refuses leaves no empty file behind.
type file struct {
	path string
	f    *os.File
}

func (f *file) Write(p []byte) (int, error) {
	if f.f == nil {
		var err error
		if f.f, err = os.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode); err != nil {
			return 0, err
		}
	}
	return f.f.Write(p)
}

func (f *file) Close() error {
	if f.f == nil {
		return nil
	}
	if err := f.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", f.path, err)
	}
	return nil
}

// brokenPipe says the reader of our output went away: Wireshark was
// closed, sshdump closed its channel. That is a request to stop, not a
// failure.
func brokenPipe(err error) bool {
	return errors.Is(err, syscall.EPIPE)
}
