// Package testns builds throwaway network namespaces, veth pairs and
// sockets for integration tests, and tears every one of them down through
// t.Cleanup, even when the test fails. Only _test.go files import it.
//
// Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) only, and
// traffic never leaves namespaces the test created.
package testns

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/packetflix/packetflix/netns"
)

// RequireRoot skips a test that needs root, except under CI=true, where a
// skipped privileged test would hide a failure, so it fails instead.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("this test needs root, and CI=true forbids skipping it")
	}
	t.Skip("needs root (run make test as root)")
}

var seq atomic.Uint32

// NS is a named network namespace (/run/netns/Name) that exists until the
// test ends.
type NS struct {
	Name    string
	Inode   uint64
	t       testing.TB
	deleted bool
}

// Delete removes the namespace's bind mount now (ip netns del); the
// namespace itself lives on while anything holds it.
func (n *NS) Delete() {
	n.t.Helper()
	Cmd(n.t, "ip", "netns", "del", n.Name)
	n.deleted = true
}

// New creates a namespace with lo up. The name is unique per process and
// test run.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("pft%d-%d", os.Getpid(), seq.Add(1))
	Cmd(t, "ip", "netns", "add", name)
	n := &NS{Name: name, t: t}
	t.Cleanup(func() {
		if n.deleted {
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("cleanup: ip netns del %s: %v: %s", name, err, out)
		}
	})
	n.IP("link", "set", "lo", "up")
	h, err := netns.OpenPath("/run/netns/" + name)
	if err != nil {
		t.Fatalf("open netns %s: %v", name, err)
	}
	n.Inode = h.Inode()
	h.Close()
	return n
}

// IP runs `ip -n NAME args...` and fails the test on error.
func (n *NS) IP(args ...string) string {
	n.t.Helper()
	return Cmd(n.t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Open returns a handle to the namespace, closed at cleanup.
func (n *NS) Open() *netns.NetNS {
	n.t.Helper()
	h, err := netns.OpenPath("/run/netns/" + n.Name)
	if err != nil {
		n.t.Fatalf("open netns %s: %v", n.Name, err)
	}
	n.t.Cleanup(func() { h.Close() })
	return h
}

// Cmd runs a command, logs it, and fails the test on error.
func Cmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	t.Logf("$ %s %s", name, strings.Join(args, " "))
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Veth joins a and b by a veth pair, aIf in a with address aAddr and bIf in
// b with bAddr (CIDR, from 198.18.0.0/15), both up. The pair is created
// directly inside the namespaces, so nothing is left in the host's even if
// the test dies; deleting a namespace deletes its end and thus the pair.
func Veth(t testing.TB, a *NS, aIf, aAddr string, b *NS, bIf, bAddr string) {
	t.Helper()
	Cmd(t, "ip", "link", "add", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, x := range []struct {
		ns       *NS
		ifc, adr string
	}{{a, aIf, aAddr}, {b, bIf, bAddr}} {
		x.ns.IP("addr", "add", x.adr, "dev", x.ifc)
		// No IPv6: keeps router solicitations and DAD out of exact counts.
		Cmd(t, "ip", "netns", "exec", x.ns.Name, "sysctl", "-qw", "net.ipv6.conf."+x.ifc+".disable_ipv6=1")
		x.ns.IP("link", "set", x.ifc, "up")
	}
}

// UDP returns a UDP socket bound to laddr inside the namespace; it may be
// used from any goroutine and is closed at cleanup.
func (n *NS) UDP(laddr string) *net.UDPConn {
	n.t.Helper()
	h := n.Open()
	var c *net.UDPConn
	err := netns.Do(h, func() error {
		a, err := net.ResolveUDPAddr("udp", laddr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", a)
		return err
	})
	if err != nil {
		n.t.Fatalf("udp socket in %s on %s: %v", n.Name, laddr, err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// Promiscuity returns the interface's promiscuity counter (IFLA_PROMISCUITY).
func (n *NS) Promiscuity(ifc string) int {
	n.t.Helper()
	out := n.IP("-d", "link", "show", "dev", ifc)
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "promiscuity" {
			var v int
			fmt.Sscan(f[i+1], &v)
			return v
		}
	}
	n.t.Fatalf("no promiscuity in: %s", out)
	return -1
}

// Tun creates a tun interface (no link-layer header, ARPHRD_NONE) in the
// namespace and keeps its file open until cleanup: without an attached
// reader a tun has no carrier and transmits nothing.
func (n *NS) Tun(name string) *os.File {
	n.t.Helper()
	h := n.Open()
	var f *os.File
	err := netns.Do(h, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			unix.Close(fd)
			return err
		}
		ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			unix.Close(fd)
			return err
		}
		f = os.NewFile(uintptr(fd), "tun")
		return nil
	})
	if err != nil {
		n.t.Fatalf("tun %s in %s: %v", name, n.Name, err)
	}
	n.t.Cleanup(func() { f.Close() })
	return f
}

// VethPairs adds pairs veth pairs inside n, both ends there and up, with no
// addresses (nothing is sent): 2*pairs interfaces besides lo, for tests
// of captures of many interfaces. Created in one `ip -batch`, so a few
// dozen take well under a second.
func (n *NS) VethPairs(pairs int) {
	n.t.Helper()
	var b strings.Builder
	for i := range pairs {
		fmt.Fprintf(&b, "link add va%d type veth peer name vb%d\nlink set va%d up\nlink set vb%d up\n", i, i, i, i)
	}
	cmd := exec.Command("ip", "-n", n.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(b.String())
	n.t.Logf("$ ip -n %s -batch - (%d veth pairs)", n.Name, pairs)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("ip -n %s -batch: %v: %s", n.Name, err, out)
	}
}

// Line makes n namespaces in a line, each joined to the next by a veth
// pair: namespace i reaches i+1 over its eth1 (198.18.i+1.1/24) and i-1
// over its eth0 (198.18.i.2/24), forwards, and routes every subnet of the
// line the right way, so a datagram from the first to the last crosses
// every link.
func Line(t testing.TB, n int) []*NS {
	t.Helper()
	ns := make([]*NS, n)
	for i := range ns {
		ns[i] = New(t)
		Cmd(t, "ip", "netns", "exec", ns[i].Name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	for i := 0; i+1 < n; i++ {
		Veth(t, ns[i], "eth1", fmt.Sprintf("198.18.%d.1/24", i+1), ns[i+1], "eth0", fmt.Sprintf("198.18.%d.2/24", i+1))
	}
	for i := range ns {
		for k := 1; k < n; k++ { // link k joins namespaces k-1 and k
			switch {
			case k > i+1:
				ns[i].IP("route", "add", fmt.Sprintf("198.18.%d.0/24", k), "via", fmt.Sprintf("198.18.%d.2", i+1))
			case k < i:
				ns[i].IP("route", "add", fmt.Sprintf("198.18.%d.0/24", k), "via", fmt.Sprintf("198.18.%d.1", i))
			}
		}
	}
	return ns
}
