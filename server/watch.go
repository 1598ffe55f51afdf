package server

import (
	"fmt"
	"slices"
	"time"

	"github.com/packetflix/packetflix/capture"
	"go.uber.org/zap"
)

// watchNetNS ends sessions whose network namespace is gone. The capture's
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
		s.mu.Lock()
		type watched struct {
			ss      *liveSession
			targets []capture.TargetInfo
		}
		var active []watched
		for _, ss := range s.sessions {
			if ss.cs != nil {
				active = append(active, watched{ss, ss.cs.Targets()})
			}
		}
		s.mu.Unlock()
		if len(active) == 0 {
			continue
		}
		live, err := s.cfg.Finder.LiveInodes()
		if err != nil {
			s.log.Warn("cannot check network namespaces", zap.Error(err))
			continue
		}
		for _, w := range active {
			// A session of several targets ends when all are gone; one
			// that is gone meanwhile just has nothing more to capture.
			if slices.ContainsFunc(w.targets, func(t capture.TargetInfo) bool { _, ok := live[t.NetNS]; return ok }) {
				w.ss.misses = 0
				continue
			}
			if w.ss.misses++; w.ss.misses == 2 {
				w.ss.cancel(fmt.Errorf("%w: nothing but this capture holds netns %d", errNetNSGone, w.targets[len(w.targets)-1].NetNS))
			}
		}
	}
}
