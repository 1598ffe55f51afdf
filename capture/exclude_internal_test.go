package capture

import (
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// segment builds a TCP segment (or a UDP datagram) from src to dst, as an
// Ethernet frame or a bare IP packet.
func segment(t *testing.T, ether bool, src, dst netip.AddrPort, udp bool) []byte {
	t.Helper()
	var ls []gopacket.SerializableLayer
	var nl gopacket.NetworkLayer
	et := layers.EthernetTypeIPv4
	proto := layers.IPProtocolTCP
	if udp {
		proto = layers.IPProtocolUDP
	}
	if src.Addr().Is4() {
		nl = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	} else {
		et = layers.EthernetTypeIPv6
		nl = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: src.Addr().AsSlice(), DstIP: dst.Addr().AsSlice()}
	}
	if ether {
		ls = append(ls, &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: et})
	}
	ls = append(ls, nl.(gopacket.SerializableLayer))
	if udp {
		u := &layers.UDP{SrcPort: layers.UDPPort(src.Port()), DstPort: layers.UDPPort(dst.Port())}
		_ = u.SetNetworkLayerForChecksum(nl)
		ls = append(ls, u)
	} else {
		tc := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), ACK: true, Window: 100}
		_ = tc.SetNetworkLayerForChecksum(nl)
		ls = append(ls, tc)
	}
	ls = append(ls, gopacket.Payload("hello"))
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func runFilter(t *testing.T, prog []unix.SockFilter, pkt []byte) int {
	t.Helper()
	ins := make([]bpf.Instruction, len(prog))
	for i, f := range prog {
		ins[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatalf("program does not load: %v", err)
	}
	n, err := vm.Run(pkt)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func Test_excludeProgram(t *testing.T) {
	ap := netip.MustParseAddrPort
	eps := []netip.AddrPort{
		ap("127.0.0.1:5001"),     // the service on loopback
		ap("198.18.0.1:5002"),    // on an address of the netns
		ap("[2001:db8::5]:5002"), // IPv6
		ap("0.0.0.0:6000"),       // no specific address: matches nothing
	}
	for _, tc := range []struct {
		name     string
		src, dst string
		udp      bool
		dropped  bool
	}{
		{"to the endpoint", "127.0.0.1:51000", "127.0.0.1:5001", false, true},
		{"from the endpoint", "127.0.0.1:5001", "127.0.0.1:51000", false, true},
		{"endpoint's port, other address", "127.0.0.2:51000", "127.0.0.2:5001", false, false},
		{"udp to the endpoint", "127.0.0.1:51000", "127.0.0.1:5001", true, false},
		{"other loopback tcp", "127.0.0.1:51000", "127.0.0.1:6000", false, false},
		{"v4 address of the netns", "198.18.0.7:1234", "198.18.0.1:5002", false, true},
		{"v4, other port", "198.18.0.7:1234", "198.18.0.1:5003", false, false},
		{"v6, from the endpoint", "[2001:db8::5]:5002", "[2001:db8::7]:1234", false, true},
		{"v6, to the endpoint", "[2001:db8::7]:1234", "[2001:db8::5]:5002", false, true},
		{"v6, other address", "[2001:db8::8]:5002", "[2001:db8::7]:1234", false, false},
	} {
		for _, ether := range []bool{true, false} {
			lt := LinkTypeRaw
			if ether {
				lt = LinkTypeEthernet
			}
			user := []unix.SockFilter{{Code: 0x06, K: 1000}}
			prog, err := excludeProgram(lt, eps, user)
			if err != nil {
				t.Fatal(err)
			}
			pkt := segment(t, ether, ap(tc.src), ap(tc.dst), tc.udp)
			got := runFilter(t, prog, pkt)
			if want := map[bool]int{true: 0, false: 1000}[tc.dropped]; got != want {
				t.Errorf("%s (ethernet %v): filter returned %d, want %d", tc.name, ether, got, want)
			}
		}
	}
}

// The prefix keeps a compiled filter's meaning: its jumps are relative.
func Test_excludeProgramWithFilter(t *testing.T) {
	user, err := compileInProcess(LinkTypeEthernet, 1000, "tcp port 6000 or udp")
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	prog, err := excludeProgram(LinkTypeEthernet, []netip.AddrPort{ap("127.0.0.1:5001")}, user)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		src, dst string
		udp      bool
		kept     bool
	}{
		{"127.0.0.1:5001", "127.0.0.1:6000", false, false}, // ours, though the filter takes it
		{"127.0.0.1:6000", "127.0.0.1:7000", false, true},
		{"127.0.0.1:7000", "127.0.0.1:7001", false, false}, // the filter's no
		{"127.0.0.1:5001", "127.0.0.1:6000", true, true},   // udp
	} {
		pkt := segment(t, true, ap(tc.src), ap(tc.dst), tc.udp)
		if got := runFilter(t, prog, pkt) > 0; got != tc.kept {
			t.Errorf("%s > %s udp %v: kept %v, want %v", tc.src, tc.dst, tc.udp, got, tc.kept)
		}
	}
	if p, _ := excludeProgram(LinkTypeEthernet, nil, user); len(p) != len(user) {
		t.Errorf("no pairs: program of %d instructions, want the filter's %d", len(p), len(user))
	}
}
