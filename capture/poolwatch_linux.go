package capture

import (
	"errors"
	"os"
	"strconv"
	"time"

	"github.com/packetflix/packetflix/netns"
	"golang.org/x/sys/unix"
)

// How the pool lets go of a namespace.
//
// A packet socket holds a reference to its network namespace (sk_net), so
// an idle ring keeps a namespace alive after its container is gone, and
// with it the namespace's interfaces: the peer of a veth inside it stays
// in the other namespace, its name taken. A namespace lives while a bind
// mount of it (ip netns add, Docker's /var/run/docker/netns/ID), a process
// or thread in it, or an open fd (ours) holds it. The first two end in two
// ways, and each can be waited for without polling:
//
//   - A bind mount is removed: every change to a mount namespace's mount
//     table makes poll(2) on its /proc/PID/mountinfo report
//     POLLPRI|POLLERR (proc(5); the kernel's mounts_poll resets the flag
//     at each poll). We watch ours and, when PID 1 is in another mount
//     namespace (a container with hostPID), PID 1's: the two that
//     netns.Finder looks at.
//   - The last process leaves: a pidfd (pidfd_open(2)) becomes readable
//     when its process has exited, after the kernel has dropped the
//     process's namespaces (exit_task_namespaces runs before
//     exit_notify). We watch one process per namespace that has no bind
//     mount (netns.Holder.PID, the lowest PID, usually the container's
//     init); when it exits we look again and watch the next one, if any.
//
// On any such event (and when a ring is parked) one scan of /proc
// (netns.Finder.LiveHolders: mounts, processes, threads) says which
// namespaces still live, and the idle rings of the others are closed; the
// last close frees the namespace. Not seen as events: a namespace held
// only by threads whose process is elsewhere, or a process that leaves the
// namespace by setns(2) without exiting; while a pooled namespace has
// neither a mount nor a watched process, the scan is repeated every
// unwatchedRecheck. The TTL bounds everything else.
//
// The watcher is one goroutine, started when the first ring is parked and
// ended when the pool is empty or closed (woken through an eventfd): an
// idle service with an empty pool runs none. While rings are idle it
// blocks one thread in poll(2) and wakes only on mount changes of the
// host, exits of watched processes, and the TTL.
const unwatchedRecheck = time.Second

// watchLocked starts the watcher, or wakes it to look at a newly parked
// ring. p.mu must be held.
func (p *Pool) watchLocked() {
	if p.watching {
		p.wakeLocked()
		return
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		efd = -1 // the watcher then also wakes every wakeless interval
	}
	p.watching, p.wakeFD = true, efd
	p.wg.Add(1)
	go p.watch(efd)
}

// wakeLocked wakes the watcher, if any. p.mu must be held: the watcher
// closes wakeFD only after clearing it under p.mu.
func (p *Pool) wakeLocked() {
	if p.wakeFD >= 0 {
		var one = [8]byte{1}
		_, _ = unix.Write(p.wakeFD, one[:])
	}
}

// wakeless is how often a watcher without an eventfd looks at p.closed.
const wakeless = 100 * time.Millisecond

// nsWatch is the watcher's state; only the watcher goroutine touches it.
type nsWatch struct {
	finder netns.Finder // the real /proc: the rings are in this kernel
	mounts []int        // mountinfo fds, polled for POLLPRI
	procs  map[uint64]watchedProc
}

type watchedProc struct{ pid, fd int }

// watch is the pool's watcher goroutine (see above). It owns efd and
// closes it.
func (p *Pool) watch(efd int) {
	defer p.wg.Done()
	w := &nsWatch{procs: map[uint64]watchedProc{}}
	w.openMounts()
	defer w.close()
	defer func() {
		if efd >= 0 {
			unix.Close(efd)
		}
	}()
	scan := true
	var recheck time.Time // when to scan again for an unwatched namespace
	for {
		p.mu.Lock()
		if p.closed || p.count == 0 {
			p.watching, p.wakeFD = false, -1
			p.mu.Unlock()
			return
		}
		inos := map[uint64]bool{}
		for k := range p.idle {
			inos[k.netns.Ino] = true
		}
		p.mu.Unlock()

		now := time.Now()
		if scan || (!recheck.IsZero() && !now.Before(recheck)) {
			recheck = time.Time{}
			if unwatched, err := w.scan(p, inos); err != nil || unwatched {
				recheck = now.Add(unwatchedRecheck)
			}
		}
		next := p.expire(now)
		if next.IsZero() {
			continue // nothing left: end at the top
		}
		wait := next.Sub(now)
		if !recheck.IsZero() {
			wait = min(wait, recheck.Sub(now))
		}
		if efd < 0 {
			wait = min(wait, wakeless)
		}

		fds := make([]unix.PollFd, 0, 1+len(w.mounts)+len(w.procs))
		if efd >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
		}
		for _, fd := range w.mounts {
			// Not POLLIN: mountinfo is always readable; only POLLPRI
			// (with POLLERR) says the mount table changed.
			fds = append(fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLPRI})
		}
		for _, wp := range w.procs {
			fds = append(fds, unix.PollFd{Fd: int32(wp.fd), Events: unix.POLLIN})
		}
		_, err := unix.Poll(fds, int((max(wait, 0)+time.Millisecond-1)/time.Millisecond))
		scan = false
		if err != nil {
			if !errors.Is(err, unix.EINTR) { // Go's preemption signals
				// Cannot happen with these fds; do not spin if it does.
				time.Sleep(wakeless)
				scan = true
			}
			continue
		}
		for _, f := range fds {
			if f.Revents == 0 {
				continue
			}
			scan = true
			if int(f.Fd) == efd {
				var buf [8]byte
				_, _ = unix.Read(efd, buf[:])
			}
		}
	}
}

// openMounts opens our mountinfo and, when PID 1 is in another mount
// namespace, PID 1's. Without them, only watched processes, the recheck
// and the TTL end idle rings.
func (w *nsWatch) openMounts() {
	paths := []string{"/proc/self/mountinfo"}
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	init, err2 := os.Readlink("/proc/1/ns/mnt")
	if err1 != nil || err2 != nil || self != init {
		paths = append(paths, "/proc/1/mountinfo")
	}
	for _, path := range paths {
		if fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err == nil {
			w.mounts = append(w.mounts, fd)
		}
	}
}

// scan looks at which pooled namespaces (inos) still live, evicts the
// rings of the others, and watches one process of each live namespace
// without a bind mount. unwatched reports a live namespace that neither a
// mount nor a watched process stands for.
func (w *nsWatch) scan(p *Pool, inos map[uint64]bool) (unwatched bool, err error) {
	live, err := w.finder.LiveHolders()
	if err != nil {
		return false, err
	}
	p.Evict(func(ino uint64) bool { _, ok := live[ino]; return ok })
	for ino, wp := range w.procs {
		if h, ok := live[ino]; !ok || !inos[ino] || h.Mounted || h.PID != wp.pid {
			unix.Close(wp.fd)
			delete(w.procs, ino)
		}
	}
	for ino := range inos {
		h, ok := live[ino]
		if !ok || h.Mounted {
			continue
		}
		if _, ok := w.procs[ino]; ok {
			continue
		}
		if h.PID == 0 {
			unwatched = true
			continue
		}
		fd, err := unix.PidfdOpen(h.PID, 0)
		if err != nil {
			unwatched = true // exited meanwhile, or no pidfd (Linux < 5.3)
			continue
		}
		// The PID may have been reused between the scan and pidfd_open;
		// the pidfd names one process for good, so check that one.
		if got, err := netns.LinkInode("/proc/" + strconv.Itoa(h.PID) + "/ns/net"); err != nil || got != ino {
			unix.Close(fd)
			unwatched = true
			continue
		}
		w.procs[ino] = watchedProc{pid: h.PID, fd: fd}
	}
	return unwatched, nil
}

func (w *nsWatch) close() {
	for _, fd := range w.mounts {
		unix.Close(fd)
	}
	for _, wp := range w.procs {
		unix.Close(wp.fd)
	}
}
