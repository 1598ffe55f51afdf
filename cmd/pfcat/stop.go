package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// stopper collects the requests to stop a capture: signals, stdin's end,
// a closed output. The first one calls stop; a second signal closes
// force: stop without waiting for the service. Its methods may be called
// from any goroutine.
type stopper struct {
	stop  func() // ends the capture's context
	force chan struct{}

	requested atomic.Bool
	once      sync.Once // closes force
}

func (s *stopper) request() {
	s.requested.Store(true)
	s.stop()
}

// watch turns signals and stdin's end into requests, until done is
// closed.
func (s *stopper) watch(sigs <-chan os.Signal, eof <-chan struct{}, done <-chan struct{}) {
	for {
		select {
		case <-sigs:
			if s.requested.Load() {
				s.once.Do(func() { close(s.force) })
			}
			s.request()
		case <-eof:
			eof = nil
			s.request()
		case <-done:
			return
		}
	}
}

// pumpResult is how the stream ended: read is the error that ended the
// connection (a websocket.CloseError when the service closed it), write
// the first error of the output.
type pumpResult struct {
	read, write error

	timedOut time.Duration // the service did not answer our close in this long
	forced   bool          // a second signal: we did not wait
}

// pump copies the stream's messages to out until the connection ends.
// Once out fails, the rest is read and dropped, and st is asked to stop.
// Reads take no context: an ending context would cut the connection
// (coder/websocket's Conn doc), and the stream must end with the close
// handshake; CloseNow is what cuts it.
func pump(ws *websocket.Conn, out io.Writer, st *stopper) pumpResult {
	var buf bytes.Buffer // one message, reused
	var r pumpResult
	for {
		typ, mr, err := ws.Reader(context.Background())
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(mr)
		}
		if err != nil {
			r.read = err
			return r
		}
		if typ != websocket.MessageBinary || r.write != nil {
			continue
		}
		if _, err := out.Write(buf.Bytes()); err != nil {
			r.write = err
			st.request()
		}
	}
}

// wait waits for the pump's result. When stop is closed it sends the
// close frame and then waits up to closeWait for the service's; force
// closing or the time running out cuts the connection.
func (cc *captureConn) wait(stop, force <-chan struct{}, res <-chan pumpResult, closeWait time.Duration) pumpResult {
	if closeWait <= 0 {
		closeWait = defaultCloseWait
	}
	var timeout <-chan time.Time
	var timedOut time.Duration
	var forced bool
	for {
		select {
		case r := <-res:
			r.timedOut, r.forced = timedOut, forced
			return r
		case <-stop:
			stop = nil
			// A failed write needs nothing more: the service may have
			// closed at this very moment, and its close frame is then
			// still to be read; the timer bounds the rest.
			_ = cc.raw.sendClose(uint16(websocket.StatusNormalClosure), stopReason)
			t := time.NewTimer(closeWait)
			defer t.Stop()
			timeout = t.C
		case <-timeout:
			timeout, timedOut = nil, closeWait
			cc.ws.CloseNow()
		case <-force:
			force, forced = nil, true
			cc.ws.CloseNow()
		}
	}
}
