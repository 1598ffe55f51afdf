package server

import (
	"fmt"
	"time"

	"github.com/packetflix/packetflix/capture"
	"go.uber.org/zap"
)

// watchNetNS ends the targets, of client sessions and flow captures,
// whose network namespace is gone. The capture's
// own sockets keep a namespace alive after its container has exited or its
// bind mount was removed, and its interfaces with it, so the kernel never
// tells the readers; instead, one scan of /proc per interval, for all
// sessions, finds namespaces that nothing but us refers to any more. Two
// misses in a row are needed, so a namespace between one process exiting
// and the next starting is not taken for gone. Server owns this goroutine;
// it ends with Shutdown. Idle rings in the pool are not its business: the
// pool closes them itself the moment their namespace loses its last
// holder (capture.Pool).
func (s *Server) watchNetNS(interval time.Duration) {
	defer close(s.watcherDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.base.Done():
			return
		case <-t.C:
		}
		active := s.watchedCaptures()
		if len(active) == 0 {
			continue
		}
		live, err := s.cfg.Finder.LiveInodes()
		if err != nil {
			s.log.Warn("cannot check network namespaces", zap.Error(err))
			continue
		}
		for _, w := range active {
			// A target that is gone ends its interfaces only; the
			// capture's reader ends the session when no interface of any
			// target is left, with this reason.
			if len(*w.misses) != len(w.targets) {
				*w.misses = make([]int, len(w.targets))
			}
			for i, t := range w.targets {
				if _, ok := live[t.NetNS]; ok {
					(*w.misses)[i] = 0
					continue
				}
				if (*w.misses)[i]++; (*w.misses)[i] == 2 {
					if len(w.targets) > 1 {
						s.log.Info("capture target gone", zap.String(w.key, w.id), zap.String("target", t.Name), zap.Uint64("netns", t.NetNS))
					}
					s.metrics.targetsGone.Inc()
					w.cs.EndTarget(i, fmt.Errorf("%w: nothing but this %s holds netns %d", errNetNSGone, w.what, t.NetNS))
				}
			}
		}
	}
}

// watched is a capture whose targets watchNetNS checks: a client's
// session, or a target of a flow capture.
type watched struct {
	cs      *capture.Session
	targets []capture.TargetInfo
	misses  *[]int // per target, scans in a row without a holder; owned by watchNetNS
	key     string // "session" or "flow_capture", as the logs name it
	id      string
	what    string // "capture" or "flow capture", as close reasons name it
}

// watchedCaptures lists every running capture, of clients and of flows.
func (s *Server) watchedCaptures() []watched {
	s.mu.Lock()
	var ws []watched
	for _, ss := range s.sessions {
		if ss.cs != nil {
			ws = append(ws, watched{ss.cs, ss.cs.Targets(), &ss.misses, "session", ss.id, "capture"})
		}
	}
	s.mu.Unlock()
	return append(ws, s.flows.watched()...)
}
