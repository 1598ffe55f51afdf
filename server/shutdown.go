package server

import (
	"context"
	"time"
)

// Shutdown in two steps. First every session is asked to end (base is
// cancelled): it flushes what it has, writes its ISBs and closes with
// "service shutting down". A client that does not read (its TCP window
// closed) blocks those writes forever, so when the caller's deadline comes
// near, hard is cancelled: every transport's writes fail at once and its
// connection is closed, and the sessions finish. Shutdown then returns
// nil, so the service exits 0 within the caller's deadline.

// hardStopShare is the part of Shutdown's remaining time kept for the
// hard stop; at least minHardStop. Ending a session whose writes fail takes
// a few ms (close the socket, release the rings), so a second is plenty
// even on a loaded machine.
const (
	hardStopShare = 5 // 1/5
	minHardStop   = time.Second
)

// untilHardStop returns a context that ends with ctx or at the hard stop,
// for a transport's writes.
func (s *Server) untilHardStop(ctx context.Context) context.Context {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.hard, cancel)
	context.AfterFunc(c, func() { stop() })
	return c
}

// Shutdown ends every capture session (each client gets its ISBs and the
// close reason "service shutting down", where its socket takes them) and
// waits for them until ctx ends. Sessions still writing to clients that do
// not read when ctx's deadline is near are cut off (see above). Call it
// together with http.Server.Shutdown, which does not wait for hijacked
// WebSocket connections. The error is ctx's when even the cut-off sessions
// did not end in time.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown()
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		<-s.watcherDone
		if s.pool != nil {
			s.pool.Close()
		}
		close(done)
	}()
	var soft <-chan time.Time
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		t := time.NewTimer(left - max(left/hardStopShare, min(minHardStop, left/2)))
		defer t.Stop()
		soft = t.C
	}
	select {
	case <-done:
		return nil
	case <-soft:
		s.log.Warn("shutdown: cutting off clients that do not read")
		s.hardStop()
	case <-ctx.Done():
		s.hardStop()
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
