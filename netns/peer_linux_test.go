package netns_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
)

func TestIntegrationVethPeers(t *testing.T) {
	a, b, c := testns.New(t), testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth1", "198.18.1.1/24", b, "eth0", "198.18.1.2/24")
	testns.Veth(t, a, "eth2", "198.18.2.1/24", c, "eth0", "198.18.2.2/24")
	a.IP("link", "add", "va", "type", "veth", "peer", "name", "vb") // both ends in a
	h := a.Open()
	f := &netns.Finder{}

	peers, err := f.VethPeers(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		ino  uint64
		name string
	}
	got := map[string]want{}
	for _, p := range peers {
		got[p.Of] = want{p.NetNS.Inode(), p.Name}
		p.NetNS.Close()
	}
	exp := map[string]want{
		"eth1": {b.Inode, "eth0"},
		"eth2": {c.Inode, "eth0"},
		"va":   {a.Inode, "vb"},
		"vb":   {a.Inode, "va"},
	}
	if len(got) != len(exp) {
		t.Errorf("peers of every interface of a: %v, want %v", got, exp)
	}
	for of, w := range exp {
		if got[of] != w {
			t.Errorf("peer of %s: %+v, want %+v", of, got[of], w)
		}
	}

	// Named interfaces only; lo (no veth) and absent names have none.
	peers, err = f.VethPeers(h, []string{"eth2", "lo", "nosuch"})
	if err != nil {
		t.Fatal(err)
	}
	var ofs []string
	for _, p := range peers {
		ofs = append(ofs, p.Of+">"+p.Name)
		p.NetNS.Close()
	}
	if !slices.Equal(ofs, []string{"eth2>eth0"}) {
		t.Errorf("peers of eth2,lo,nosuch: %v, want [eth2>eth0]", ofs)
	}

	// A namespace that only an open fd holds is not found: an error that
	// names the interface.
	c.Open() // held until cleanup
	c.Delete()
	_, err = f.VethPeers(h, []string{"eth1", "eth2"})
	if !errors.Is(err, netns.ErrNoPeer) {
		t.Fatalf("peer in a netns held only by an fd: %v, want ErrNoPeer", err)
	}
	t.Logf("error: %v", err)
	if !strings.Contains(err.Error(), "eth2") {
		t.Errorf("error %q does not name eth2", err)
	}
}
