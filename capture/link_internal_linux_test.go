package capture

import (
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLinkTypeFor: libpcap's mapping, and cooked capture (SOCK_DGRAM,
// LINKTYPE_LINUX_SLL2) for every hardware type it has no link type for.
func TestLinkTypeFor(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hatype uint16
		want   linkMode
	}{
		{"ether", unix.ARPHRD_ETHER, linkMode{LinkTypeEthernet, unix.SOCK_RAW, LinkTypeEthernet, false}},
		{"loopback", unix.ARPHRD_LOOPBACK, linkMode{LinkTypeEthernet, unix.SOCK_RAW, LinkTypeEthernet, false}},
		{"tun", unix.ARPHRD_NONE, linkMode{LinkTypeRaw, unix.SOCK_RAW, LinkTypeRaw, false}},
		{"ipip", unix.ARPHRD_TUNNEL, linkMode{LinkTypeRaw, unix.SOCK_RAW, LinkTypeRaw, false}},
		{"sit", unix.ARPHRD_SIT, linkMode{LinkTypeRaw, unix.SOCK_RAW, LinkTypeRaw, false}},
		{"radiotap", unix.ARPHRD_IEEE80211_RADIOTAP, linkMode{LinkTypeRadiotap, unix.SOCK_RAW, LinkTypeRadiotap, false}},
		{"gre", unix.ARPHRD_IPGRE, linkMode{LinkTypeLinuxSLL2, unix.SOCK_DGRAM, LinkTypeRaw, true}},
		{"ip6tnl", unix.ARPHRD_TUNNEL6, linkMode{LinkTypeLinuxSLL2, unix.SOCK_DGRAM, LinkTypeRaw, true}},
		{"ip6gre", unix.ARPHRD_IP6GRE, linkMode{LinkTypeLinuxSLL2, unix.SOCK_DGRAM, LinkTypeRaw, true}},
		{"netlink", unix.ARPHRD_NETLINK, linkMode{LinkTypeLinuxSLL2, unix.SOCK_DGRAM, LinkTypeRaw, true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := linkTypeFor(tc.hatype); got != tc.want {
				t.Errorf("linkTypeFor(%d) = %+v, want %+v", tc.hatype, got, tc.want)
			}
		})
	}
}

// TestPutSLL2: the header of LINKTYPE_LINUX_SLL2, field by field, built
// without allocating.
func TestPutSLL2(t *testing.T) {
	var sll unix.RawSockaddrLinklayer
	p := (*[2]byte)(unsafePointer(&sll.Protocol))
	p[0], p[1] = 0x86, 0xdd // sll_protocol is in network order in memory
	sll.Ifindex = 0x01020304
	sll.Hatype = unix.ARPHRD_IPGRE
	sll.Pkttype = unix.PACKET_OUTGOING
	sll.Halen = 4
	sll.Addr = [8]uint8{198, 18, 0, 1, 0xee, 0xee, 0xee, 0xee} // stale bytes past Halen
	var b [sll2Len]byte
	for i := range b {
		b[i] = 0xff
	}
	putSLL2(&b, &sll)
	want := []byte{
		0x86, 0xdd, // protocol
		0, 0, // reserved
		1, 2, 3, 4, // ifindex
		0x03, 0x0a, // ARPHRD_IPGRE (778)
		unix.PACKET_OUTGOING,
		4,                         // address length
		198, 18, 0, 1, 0, 0, 0, 0, // address, zero-padded
	}
	if string(b[:]) != string(want) {
		t.Fatalf("SLL2 header\n% x\nwant\n% x", b, want)
	}
	if n := testing.AllocsPerRun(1000, func() { putSLL2(&b, &sll) }); n != 0 {
		t.Fatalf("putSLL2 allocates %v times", n)
	}
}

// TestMakeStats: the invariants of the counters.
func TestMakeStats(t *testing.T) {
	st := makeStats(100, 30, 50, 5, 5000)
	if st.Dropped != 35 || st.Pending != 15 || st.Received != st.Delivered+st.Dropped+st.Pending {
		t.Fatalf("live %+v", st)
	}
	if st := makeStats(10, 0, 11, 0, 0); st.Pending != 0 {
		t.Fatalf("pending underflowed: %+v", st)
	}
}

func unsafePointer[T any](p *T) unsafe.Pointer { return unsafe.Pointer(p) }
