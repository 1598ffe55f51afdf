package capture_test

import (
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

// vanishLimit is how long a netns may outlive its last holder but our
// pooled ring: the watcher's reaction, the ring's close (an RCU grace
// period) and the kernel's namespace cleanup (a workqueue). Generous, for
// a busy machine; the figures measured are logged.
const vanishLimit = 2 * time.Second

// parkRing captures eth0 of the namespace that ns names until a packet
// arrived, ends the capture and waits for its ring to be idle in pool. It
// closes ns: afterwards only the pooled ring, of ours, holds the netns.
func parkRing(t *testing.T, pool *capture.Pool, ns *netns.NetNS, ping func()) {
	t.Helper()
	s, err := capture.Open(capture.Config{NetNS: ns, Interfaces: []string{"eth0"}, Pool: pool})
	ns.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := &collector{}
	stop := run(t, s, c)
	ping()
	waitFor(t, "a captured packet", func() bool { return len(c.snapshot()) > 0 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ring idle in the pool", func() bool { return pool.Idle() == 1 })
}

// udpIn opens a UDP socket on 198.18.1.1:4000 in the namespace n, closed
// at cleanup. Unlike testns.NS.UDP it keeps no handle of the namespace
// open: the test decides when the socket goes.
func udpIn(t *testing.T, n *netns.NetNS) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := netns.Do(n, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(198, 18, 1, 1), Port: 4000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// linkGone reports whether interface name no longer exists in the
// namespace n.
func linkGone(t *testing.T, n *netns.NetNS, name string) bool {
	t.Helper()
	gone := false
	if err := netns.Do(n, func() error {
		_, err := net.InterfaceByName(name)
		gone = err != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return gone
}

// waitVanish waits, up to vanishLimit, for the veth peer peerIf in peer to
// go (the other end's netns was freed) and returns how long it took.
func waitVanish(t *testing.T, peer *testns.NS, peerIf string, since time.Time) time.Duration {
	t.Helper()
	h := peer.Open()
	for !linkGone(t, h, peerIf) {
		if time.Since(since) > vanishLimit {
			t.Fatalf("veth peer %s still in netns %s %v after its other end's netns lost its last holder: a pooled ring keeps it alive", peerIf, peer.Name, vanishLimit)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(since)
}

// stillPooled checks that the pool keeps its ring while the namespace
// lives, across the watcher's wake-ups: a mount change elsewhere (a
// namespace created and deleted) must not evict it.
func stillPooled(t *testing.T, pool *capture.Pool) {
	t.Helper()
	other := testns.New(t)
	other.Delete()
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if pool.Idle() != 1 {
			t.Fatal("the pool let go of a ring whose namespace is alive")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIntegrationPoolReleasesNetNS: a ring kept for reuse does not keep its
// network namespace alive once the last bind mount or process of it is
// gone: the veth peer in the other namespace vanishes at once, not when the
// pool's TTL (a minute here) ends. While the namespace lives, the ring stays
// and is reused. An empty pool runs no goroutine.
func TestIntegrationPoolReleasesNetNS(t *testing.T) {
	// newPool returns a pool and a check that, once the pool is empty
	// again, its watcher has ended (before Close).
	newPool := func(t *testing.T) (*capture.Pool, func()) {
		g0 := runtime.NumGoroutine()
		pool := capture.NewPool(4, time.Minute)
		t.Cleanup(pool.Close)
		return pool, func() {
			waitFor(t, "goroutines back to baseline", func() bool { return runtime.NumGoroutine() <= g0 })
		}
	}

	t.Run("bind mount removed", func(t *testing.T) {
		pool, noWatcher := newPool(t)
		p := twoHosts(t)
		h := p.a.Open()
		ua := udpIn(t, h)
		ping := func() { ua.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 9}) }
		parkRing(t, pool, h, ping)
		stillPooled(t, pool)
		// Still reused: the second capture takes the pooled ring.
		h = p.a.Open()
		s, err := capture.Open(capture.Config{NetNS: h, Interfaces: []string{"eth0"}, Pool: pool})
		if err != nil {
			t.Fatal(err)
		}
		if pool.Idle() != 0 {
			t.Fatal("the second capture did not take the pooled ring")
		}
		stop := run(t, s, &collector{})
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "ring idle in the pool again", func() bool { return pool.Idle() == 1 })
		h.Close()
		ua.Close()

		start := time.Now()
		p.a.Delete()
		took := waitVanish(t, p.b, "eth0", start)
		t.Logf("veth peer gone %v after ip netns del (pool TTL %v)", took, time.Minute)
		waitFor(t, "pool empty", func() bool { return pool.Idle() == 0 })
		noWatcher()
	})

	t.Run("last process exits", func(t *testing.T) {
		pool, noWatcher := newPool(t)
		p := twoHosts(t)
		sleep := exec.Command("ip", "netns", "exec", p.a.Name, "sleep", "600")
		if err := sleep.Start(); err != nil {
			t.Fatal(err)
		}
		exited := false
		t.Cleanup(func() {
			if !exited {
				sleep.Process.Kill()
				sleep.Wait()
			}
		})
		nsPath := "/proc/" + strconv.Itoa(sleep.Process.Pid) + "/ns/net"
		waitFor(t, "sleep inside the netns", func() bool {
			ino, err := netns.LinkInode(nsPath)
			return err == nil && ino == p.a.Inode
		})
		p.a.Delete() // from now on only the process holds the netns
		h, err := netns.OpenPathInode(nsPath, p.a.Inode)
		if err != nil {
			t.Fatal(err)
		}
		ua := udpIn(t, h)
		ping := func() { ua.WriteToUDP([]byte("x"), &net.UDPAddr{IP: net.IPv4(198, 18, 1, 2), Port: 9}) }
		parkRing(t, pool, h, ping)
		ua.Close()
		stillPooled(t, pool)

		start := time.Now()
		sleep.Process.Kill()
		sleep.Wait()
		exited = true
		took := waitVanish(t, p.b, "eth0", start)
		t.Logf("veth peer gone %v after the netns's last process was killed (pool TTL %v)", took, time.Minute)
		waitFor(t, "pool empty", func() bool { return pool.Idle() == 0 })
		noWatcher()
	})

}
