package server_test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
)

// TestIntegrationPodmanNameOnly: a real Podman container, named in the
// request by its name alone, captures the traffic sent inside it; the
// built-in discovery finds it through Podman's Docker-compatible API.
func TestIntegrationPodmanNameOnly(t *testing.T) {
	testns.RequireRoot(t)
	pm := testns.StartPodman(t)
	name := fmt.Sprintf("pfpm-%d", os.Getpid())
	ctr := pm.Run(name)
	peer := testns.New(t)
	testns.Cmd(t, "ip", "link", "add", "pfh0", "netns", peer.Name, "type", "veth", "peer", "name", "eth1", "netns", fmt.Sprint(ctr.PID))
	cns, err := netns.OpenPath(fmt.Sprintf("/proc/%d/ns/net", ctr.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer cns.Close()
	if err := netns.Do(cns, func() error {
		// exec from a locked thread: the child inherits the netns.
		for _, args := range [][]string{
			{"addr", "add", "198.18.24.2/24", "dev", "eth1"},
			{"link", "set", "eth1", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %v: %v: %s", args, err, out)
			}
		}
		// No IPv6: keeps router solicitations and DAD out of the capture.
		return os.WriteFile("/proc/sys/net/ipv6/conf/eth1/disable_ipv6", []byte("1"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	peer.IP("addr", "add", "198.18.24.1/24", "dev", "pfh0")
	peer.IP("link", "set", "pfh0", "up")
	var u *net.UDPConn
	if err := netns.Do(cns, func() (err error) {
		u, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(198, 18, 24, 2), Port: 4000})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	// Only Podman answers: the other engines point at a socket that does
	// not exist, so the name cannot come from anywhere else.
	absent := filepath.Join(t.TempDir(), "absent.sock")
	_, ts := startServer(t, func(c *server.Config) {
		c.Discovery = discovery.NewDiscoverer(discovery.DiscoverConfig{
			DockerHost: "unix://" + absent, PodmanHost: pm.Host,
			ContainerdSocket: absent, CRISockets: []string{}, Log: testLogger(t),
		})
	})
	cl := dial(t, ts, q("container", fmt.Sprintf(`{"name":%q}`, name)), nil)
	cl.waitLive()
	send(t, u, "198.18.24.1:4000", 'P', 5)
	s := cl.waitPackets(5)
	cl.stop()
	var ifs []string
	for _, f := range s.ifaces {
		ifs = append(ifs, f.Name)
	}
	if !slices.Contains(ifs, "eth1") {
		t.Fatalf("interfaces %q, want the container's eth1 among them", ifs)
	}
	if !strings.Contains(s.section.Comment, "\ncontainer-name: "+name+"\n") {
		t.Fatalf("SHB comment:\n%s", s.section.Comment)
	}
}
