package flows_test

import (
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/packetflix/packetflix/flows"
)

func TestUDPExchange(t *testing.T) {
	tb := newTable(t, flows.Config{})
	q := func(n int) []byte { return udpFrame(t, macClient, macServer, ipClient, ipServer, 40000, 53, n) }
	r := func(n int) []byte { return udpFrame(t, macServer, macClient, ipServer, ipClient, 53, 40000, n) }
	ps := []pkt{
		{q(30), 0},
		{r(100), 1e6},
		{q(31), 2e9},
		{r(101), 2e9 + 1e6},
		{q(32), 3e9},
	}
	feed(t, tb, 0, flows.LinkTypeEthernet, ps...)
	f := only(t, tb)
	wantAB := int64(len(ps[0].data) + len(ps[2].data) + len(ps[4].data))
	wantBA := int64(len(ps[1].data) + len(ps[3].data))
	want := flows.Metric{ABPackets: 3, ABBytes: wantAB, BAPackets: 2, BABytes: wantBA, Start: t0 / 1e9, Last: (t0 + 3e9) / 1e9}
	if f.Metric != want {
		t.Errorf("Metric = %+v, want %+v", f.Metric, want)
	}
	if f.LastUpdateMetric != want {
		t.Errorf("LastUpdateMetric = %+v, want %+v (nothing collected yet)", f.LastUpdateMetric, want)
	}
	if got, want := *f.Network, (flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"}); got != want {
		t.Errorf("Network = %+v, want %+v", got, want)
	}
	if got, want := *f.Transport, (flows.TransportLayer{Protocol: "UDP", A: 40000, B: 53}); got != want {
		t.Errorf("Transport = %+v, want %+v", got, want)
	}
	if got, want := *f.Link, (flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()}); got != want {
		t.Errorf("Link = %+v, want %+v", got, want)
	}
	if f.LayersPath != "Ethernet/IPv4/UDP" || f.Application != "UDP" {
		t.Errorf("LayersPath, Application = %q, %q", f.LayersPath, f.Application)
	}
	if f.ICMP != nil {
		t.Errorf("ICMP = %+v, want none", f.ICMP)
	}
	if f.Start != t0/1e6 || f.Last != (t0+3e9)/1e6 {
		t.Errorf("Start, Last = %d, %d; want ms %d, %d", f.Start, f.Last, t0/1e6, (t0+3e9)/1e6)
	}
	if len(f.UUID) != 40 || len(f.TrackingID) != 40 || f.UUID == f.TrackingID {
		t.Errorf("UUID %q, TrackingID %q: want two different 40-digit hex IDs", f.UUID, f.TrackingID)
	}
	if f.NodeTID != "tid-test" {
		t.Errorf("NodeTID = %q", f.NodeTID)
	}
	st := tb.Stats()
	if st != (flows.Stats{Tracked: 1, Created: 1, Packets: 5}) {
		t.Errorf("Stats = %+v", st)
	}
}

func TestTCPHandshake(t *testing.T) {
	c2s := func(flags, n int) []byte {
		return serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv4), ip4(ipClient, ipServer, layers.IPProtocolTCP), tcp(51000, 443, flags), payload(n))
	}
	s2c := func(flags, n int) []byte {
		return serialize(t, eth(macServer, macClient, layers.EthernetTypeIPv4), ip4(ipServer, ipClient, layers.IPProtocolTCP), tcp(443, 51000, flags), payload(n))
	}
	syn, synack := c2s(fSYN, 0), s2c(fSYN|fACK, 0)
	rest := [][]byte{
		c2s(fACK, 0),
		c2s(fACK|fPSH, 100),
		s2c(fACK|fPSH, 1000),
		c2s(fACK|fFIN, 0),
		s2c(fACK|fFIN, 0),
		c2s(fACK, 0),
	}
	for _, tc := range []struct {
		name  string
		first [][]byte
		ab    int64
	}{
		{"from SYN", [][]byte{syn, synack}, 5},
		{"from SYN-ACK", [][]byte{synack}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, flows.Config{})
			var ps []pkt
			var ab, ba int64
			for i, d := range append(slices.Clone(tc.first), rest...) {
				ps = append(ps, pkt{d, int64(i) * 1e6})
				if d[0] == macServer[0] && d[5] == macServer[5] { // dst MAC: to the server
					ab += int64(len(d))
				} else {
					ba += int64(len(d))
				}
			}
			feed(t, tb, 0, flows.LinkTypeEthernet, ps...)
			f := only(t, tb)
			if f.Network.A != ipClient.String() || f.Transport.A != 51000 || f.Transport.B != 443 {
				t.Errorf("A = %s:%d, want the client %s:51000 (B %s:%d)", f.Network.A, f.Transport.A, ipClient, f.Network.B, f.Transport.B)
			}
			if f.Link.A != macClient.String() {
				t.Errorf("Link.A = %s, want the client's %s", f.Link.A, macClient)
			}
			if f.Metric.ABPackets != tc.ab || f.Metric.BAPackets != 3 || f.Metric.ABBytes != ab || f.Metric.BABytes != ba {
				t.Errorf("Metric = %+v, want AB %d packets %d bytes, BA 3 packets %d bytes", f.Metric, tc.ab, ab, ba)
			}
			if f.LayersPath != "Ethernet/IPv4/TCP" || f.Transport.Protocol != "TCP" {
				t.Errorf("LayersPath %q, Transport %+v", f.LayersPath, f.Transport)
			}
		})
	}
}

func TestICMPEcho(t *testing.T) {
	echo := func(src, dst net.IP, smac, dmac net.HardwareAddr, typ uint8) []byte {
		return serialize(t, eth(smac, dmac, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolICMPv4),
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, 0), Id: 0x1234, Seq: 1}, payload(56))
	}
	req := echo(ipClient, ipServer, macClient, macServer, layers.ICMPv4TypeEchoRequest)
	rep := echo(ipServer, ipClient, macServer, macClient, layers.ICMPv4TypeEchoReply)
	other := serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv4), ip4(ipClient, ipServer, layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 0x4321, Seq: 1}, payload(56))
	for _, tc := range []struct {
		name string
		ps   [][]byte
	}{
		{"request first", [][]byte{req, rep, req, rep}},
		{"reply first", [][]byte{rep, req, rep, req}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, flows.Config{})
			for i, d := range tc.ps {
				feed(t, tb, 0, flows.LinkTypeEthernet, pkt{d, int64(i) * 1e9})
			}
			f := only(t, tb)
			if got, want := *f.ICMP, (flows.ICMPLayer{Type: "ECHO", Code: 0, ID: 0x1234}); got != want {
				t.Errorf("ICMP = %+v, want %+v", got, want)
			}
			if f.Network.A != ipClient.String() || f.Link.A != macClient.String() {
				t.Errorf("A = %s (%s), want the pinging side %s", f.Network.A, f.Link.A, ipClient)
			}
			if f.Metric.ABPackets != 2 || f.Metric.BAPackets != 2 || f.Transport != nil {
				t.Errorf("Metric %+v, Transport %+v", f.Metric, f.Transport)
			}
			if f.LayersPath != "Ethernet/IPv4/ICMPv4" {
				t.Errorf("LayersPath = %q", f.LayersPath)
			}
			// Another identifier is another flow.
			feed(t, tb, 0, flows.LinkTypeEthernet, pkt{other, 10e9})
			if n := len(tb.Flows()); n != 2 {
				t.Errorf("%d flows after a ping with another ID, want 2", n)
			}
		})
	}
}

func TestDecode(t *testing.T) {
	udp4 := serialize(t, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40000, 9999), payload(10))
	udp6 := serialize(t, ip6(ip6Client, ip6Server, layers.IPProtocolUDP), udp(40000, 9999), payload(10))
	hbh := hopByHop(layers.IPProtocolIPv6Fragment)
	frag6 := func(offset uint16) *layers.IPv6Fragment {
		return &layers.IPv6Fragment{NextHeader: layers.IPProtocolUDP, FragmentOffset: offset, MoreFragments: true, Identification: 7}
	}
	fragIP := ip4(ipClient, ipServer, layers.IPProtocolUDP)
	fragIP.FragOffset = 185
	sctp := &layers.SCTP{SrcPort: 36412, DstPort: 38412}

	for _, tc := range []struct {
		name      string
		linkType  uint16
		data      []byte
		path      string
		network   *flows.Layer
		transport *flows.TransportLayer
		icmp      *flows.ICMPLayer
		link      *flows.Layer
		gopacket  bool // LayersPath is what gopacket decodes
	}{
		{
			name: "IPv6 UDP", linkType: flows.LinkTypeEthernet,
			data:      serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv6), ip6(ip6Client, ip6Server, layers.IPProtocolUDP), udp(40000, 9999), payload(10)),
			path:      "Ethernet/IPv6/UDP",
			network:   &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			link:      &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()},
			gopacket:  true,
		},
		{
			name: "IPv6 extension headers", linkType: flows.LinkTypeEthernet,
			data:      serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv6), ip6(ip6Client, ip6Server, layers.IPProtocolIPv6HopByHop), hbh, frag6(0), udp(40000, 9999), payload(10)),
			path:      "Ethernet/IPv6/IPv6HopByHop/IPv6Fragment/UDP",
			network:   &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			link:      &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()},
		},
		{
			name: "IPv6 later fragment", linkType: flows.LinkTypeRaw,
			data:    serialize(t, ip6(ip6Client, ip6Server, layers.IPProtocolIPv6Fragment), frag6(100), payload(40)),
			path:    "IPv6/IPv6Fragment/Fragment",
			network: &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
		},
		{
			name: "ICMPv6 echo", linkType: flows.LinkTypeEthernet,
			data: serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv6), ip6(ip6Client, ip6Server, layers.IPProtocolICMPv6),
				&layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}, &layers.ICMPv6Echo{Identifier: 77, SeqNumber: 1}),
			path:     "Ethernet/IPv6/ICMPv6/ICMPv6Echo",
			network:  &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
			icmp:     &flows.ICMPLayer{Type: "ECHO", ID: 77},
			link:     &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()},
			gopacket: true,
		},
		{
			name: "ICMPv4 unreachable", linkType: flows.LinkTypeRaw,
			data:    serialize(t, ip4(ipServer, ipClient, layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, payload(28)),
			path:    "IPv4/ICMPv4",
			network: &flows.Layer{Protocol: "IPV4", A: "198.19.0.2", B: "198.18.0.1"},
			icmp:    &flows.ICMPLayer{Type: "DESTINATION_UNREACHABLE", Code: 3},
		},
		{
			name: "VLAN", linkType: flows.LinkTypeEthernet,
			data: serialize(t, eth(macClient, macServer, layers.EthernetTypeDot1Q),
				&layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}, ip4(ipClient, ipServer, layers.IPProtocolTCP), tcp(51000, 8080, fSYN)),
			path:      "Ethernet/Dot1Q/IPv4/TCP",
			network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			transport: &flows.TransportLayer{Protocol: "TCP", A: 51000, B: 8080},
			link:      &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String(), ID: 100},
			gopacket:  true,
		},
		{
			name: "QinQ", linkType: flows.LinkTypeEthernet,
			data: serialize(t, eth(macClient, macServer, layers.EthernetTypeQinQ),
				&layers.Dot1Q{VLANIdentifier: 10, Type: layers.EthernetTypeDot1Q},
				&layers.Dot1Q{VLANIdentifier: 20, Type: layers.EthernetTypeIPv4}, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40000, 9999), payload(4)),
			path:      "Ethernet/Dot1Q/Dot1Q/IPv4/UDP",
			network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			link:      &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String(), ID: 20<<12 | 10},
			gopacket:  true,
		},
		{
			name: "raw IPv4", linkType: flows.LinkTypeRaw, data: udp4,
			path:      "IPv4/UDP",
			network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			gopacket:  true,
		},
		{
			name: "raw IPv6", linkType: flows.LinkTypeRaw, data: udp6,
			path:      "IPv6/UDP",
			network:   &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			gopacket:  true,
		},
		{
			name: "SLL2 IPv4", linkType: flows.LinkTypeLinuxSLL2, data: sll2(0x0800, udp4),
			path:      "IPv4/UDP",
			network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			gopacket:  true,
		},
		{
			name: "SLL2 IPv6", linkType: flows.LinkTypeLinuxSLL2, data: sll2(0x86dd, udp6),
			path:      "IPv6/UDP",
			network:   &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::2"},
			transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 9999},
			gopacket:  true,
		},
		{
			name: "SCTP", linkType: flows.LinkTypeEthernet,
			data:      serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv4), ip4(ipClient, ipServer, layers.IPProtocolSCTP), sctp),
			path:      "Ethernet/IPv4/SCTP",
			network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			transport: &flows.TransportLayer{Protocol: "SCTP", A: 36412, B: 38412},
			link:      &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()},
			gopacket:  true,
		},
		{
			name: "IPv4 later fragment", linkType: flows.LinkTypeEthernet,
			data:     serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv4), fragIP, payload(100)),
			path:     "Ethernet/IPv4/Fragment",
			network:  &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.19.0.2"},
			link:     &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: macServer.String()},
			gopacket: true,
		},
		{
			name: "ARP", linkType: flows.LinkTypeEthernet,
			data: serialize(t, eth(macClient, layers.EthernetBroadcast, layers.EthernetTypeARP), &layers.ARP{
				AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
				Operation: layers.ARPRequest, SourceHwAddress: macClient, SourceProtAddress: ipClient,
				DstHwAddress: make([]byte, 6), DstProtAddress: ipServer,
			}),
			path:     "Ethernet/ARP",
			link:     &flows.Layer{Protocol: "ETHERNET", A: macClient.String(), B: "ff:ff:ff:ff:ff:ff"},
			gopacket: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tb := newTable(t, flows.Config{})
			feed(t, tb, 0, tc.linkType, pkt{tc.data, 0})
			f := only(t, tb)
			if f.LayersPath != tc.path {
				t.Errorf("LayersPath = %q, want %q", f.LayersPath, tc.path)
			}
			if tc.gopacket {
				if gp := gopacketPath(tc.data, tc.linkType); gp != f.LayersPath {
					t.Errorf("LayersPath = %q, gopacket decodes %q", f.LayersPath, gp)
				}
			}
			check := func(name string, got, want any) {
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s = %s, want %s", name, js(got), js(want))
				}
			}
			check("Network", f.Network, tc.network)
			check("Transport", f.Transport, tc.transport)
			check("ICMP", f.ICMP, tc.icmp)
			check("Link", f.Link, tc.link)
		})
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestUndecoded(t *testing.T) {
	tb := newTable(t, flows.Config{})
	udp4 := serialize(t, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40000, 9999), payload(10))
	for _, tc := range []struct {
		name     string
		linkType uint16
		data     []byte
	}{
		{"radiotap", 127, []byte{0, 0, 8, 0, 0, 0, 0, 0}},
		{"short Ethernet", flows.LinkTypeEthernet, make([]byte, 13)},
		{"empty raw", flows.LinkTypeRaw, nil},
		{"raw version 5", flows.LinkTypeRaw, []byte{0x50, 0, 0, 20}},
		{"raw truncated IPv4", flows.LinkTypeRaw, udp4[:19]},
		{"short SLL2", flows.LinkTypeLinuxSLL2, make([]byte, 19)},
		{"SLL2 ARP", flows.LinkTypeLinuxSLL2, sll2(0x0806, make([]byte, 28))},
	} {
		if tb.Packet(0, tc.linkType, tc.data, t0, 100) {
			t.Errorf("%s: counted", tc.name)
		}
	}
	if st := tb.Stats(); st.Undecoded != 7 || st.Tracked != 0 || st.Packets != 0 {
		t.Errorf("Stats = %+v, want 7 undecoded", st)
	}
}

// TestTrackingID feeds the same conversation through different link
// types, MACs, VLANs, interfaces and targets: one TrackingID, many UUIDs.
func TestTrackingID(t *testing.T) {
	ipq := serialize(t, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40000, 9999), payload(10))
	ipr := serialize(t, ip4(ipServer, ipClient, layers.IPProtocolUDP), udp(9999, 40000), payload(10))
	ethq := append(ethHeader(macClient, macServer, 0x0800), ipq...)
	other := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	vlanr := append(ethHeader(other, macClient, 0x0800, 7), ipr...)

	a := newTable(t, flows.Config{NodeTID: "target-a"})
	b := newTable(t, flows.Config{NodeTID: "target-b"})
	feed(t, a, 0, flows.LinkTypeEthernet, pkt{ethq, 0})
	feed(t, a, 1, flows.LinkTypeRaw, pkt{ipr, 1}) // the answer first, on another interface
	feed(t, a, 2, flows.LinkTypeEthernet, pkt{vlanr, 2})
	feed(t, b, 0, flows.LinkTypeLinuxSLL2, pkt{sll2(0x0800, ipq), 3})
	fs := append(a.Flows(), b.Flows()...)
	if len(fs) != 4 {
		t.Fatalf("%d flows, want 4 (3 interfaces of a, 1 of b)", len(fs))
	}
	uuids := map[string]bool{}
	for _, f := range fs {
		if f.TrackingID != fs[0].TrackingID {
			t.Errorf("TrackingID %s (%s) != %s", f.TrackingID, f.LayersPath, fs[0].TrackingID)
		}
		uuids[f.UUID] = true
	}
	if len(uuids) != 4 {
		t.Errorf("%d distinct UUIDs, want 4", len(uuids))
	}
	// A different conversation has a different TrackingID.
	c := newTable(t, flows.Config{})
	feed(t, c, 0, flows.LinkTypeRaw, pkt{serialize(t, ip4(ipClient, ipServer, layers.IPProtocolUDP), udp(40001, 9999), payload(10)), 0})
	if only(t, c).TrackingID == fs[0].TrackingID {
		t.Error("another port, same TrackingID")
	}
}

func TestInterfacesAndVLANsSeparate(t *testing.T) {
	tb := newTable(t, flows.Config{})
	tb.SetInterfaceName(0, "eth0")
	tb.SetInterfaceName(3, "eth3")
	d := udpFrame(t, macClient, macServer, ipClient, ipServer, 40000, 9999, 10)
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{d, 0})
	feed(t, tb, 3, flows.LinkTypeEthernet, pkt{d, 1})
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{d, 2})
	fs := tb.Flows()
	if len(fs) != 2 {
		t.Fatalf("%d flows, want 2", len(fs))
	}
	// Most recently active first.
	if fs[0].Interface != "eth0" || fs[0].Metric.ABPackets != 2 || fs[1].Interface != "eth3" || fs[1].Metric.ABPackets != 1 {
		t.Errorf("flows: %s", js(fs))
	}
}

func TestEviction(t *testing.T) {
	tb := newTable(t, flows.Config{MaxFlows: 3})
	port := func(p uint16) []byte { return udpFrame(t, macClient, macServer, ipClient, ipServer, p, 9999, 10) }
	feed(t, tb, 0, flows.LinkTypeEthernet,
		pkt{port(1), 1e9},
		pkt{port(2), 2e9},
		pkt{port(3), 3e9},
		pkt{port(1), 4e9}, // 2 is now the flow idle longest
		pkt{port(4), 5e9},
	)
	var ports []int64
	for _, f := range tb.Flows() {
		ports = append(ports, f.Transport.A)
	}
	if want := []int64{4, 1, 3}; !slices.Equal(ports, want) {
		t.Errorf("flows by port %v, want %v", ports, want)
	}
	if st := tb.Stats(); st != (flows.Stats{Tracked: 3, Created: 4, Evicted: 1, Packets: 5}) {
		t.Errorf("Stats = %+v", st)
	}
	// The evicted flow comes back as a new one, evicting 3.
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{port(2), 6e9})
	for _, f := range tb.Flows() {
		if f.Transport.A == 3 {
			t.Error("flow 3 not evicted")
		}
		if f.Transport.A == 2 && (f.Metric.ABPackets != 1 || f.Metric.Start != (t0+6e9)/1e9) {
			t.Errorf("flow 2 came back as %+v, want a new flow", f.Metric)
		}
	}
	if st := tb.Stats(); st.Evicted != 2 || st.Created != 5 || st.Tracked != 3 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestIdleExpiry(t *testing.T) {
	tb := newTable(t, flows.Config{IdleTimeout: 10 * time.Second})
	port := func(p uint16) []byte { return udpFrame(t, macClient, macServer, ipClient, ipServer, p, 9999, 10) }
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{port(1), 0}, pkt{port(2), 5e9})
	if n := tb.Sweep(time.Unix(0, t0+10e9)); n != 0 {
		t.Errorf("Sweep at 10 s expired %d, want 0", n)
	}
	if n := tb.Sweep(time.Unix(0, t0+12e9)); n != 1 {
		t.Errorf("Sweep at 12 s expired %d, want 1", n)
	}
	if fs := tb.Flows(); len(fs) != 1 || fs[0].Transport.A != 2 {
		t.Errorf("flows after sweep: %s", js(fs))
	}
	// A packet after the timeout, before any sweep, starts a new flow.
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{port(2), 16e9})
	f := only(t, tb)
	if f.Metric.ABPackets != 1 || f.Metric.Start != (t0+16e9)/1e9 {
		t.Errorf("flow after the timeout: %+v, want a new one", f.Metric)
	}
	if st := tb.Stats(); st != (flows.Stats{Tracked: 1, Created: 3, Expired: 2, Packets: 3}) {
		t.Errorf("Stats = %+v", st)
	}
}

func TestUpdated(t *testing.T) {
	tb := newTable(t, flows.Config{})
	q := func(p uint16) []byte { return udpFrame(t, macClient, macServer, ipClient, ipServer, p, 9999, 10) }
	r := func(p uint16) []byte { return udpFrame(t, macServer, macClient, ipServer, ipClient, 9999, p, 20) }
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{q(1), 0}, pkt{r(1), 1e9}, pkt{q(2), 2e9})
	if up := tb.Updated(); len(up) != 2 || up[0].LastUpdateMetric != up[0].Metric || up[1].LastUpdateMetric != up[1].Metric {
		t.Fatalf("first Updated: %s", js(up))
	}
	if up := tb.Updated(); len(up) != 0 {
		t.Fatalf("Updated without packets: %s", js(up))
	}
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{r(1), 70e9}, pkt{r(1), 71e9}, pkt{q(1), 72e9})
	for _, f := range tb.Flows() {
		if f.Transport.A == 2 && f.LastUpdateMetric != (flows.Metric{}) {
			t.Errorf("flow 2 LastUpdateMetric = %+v, want zero", f.LastUpdateMetric)
		}
	}
	up := tb.Updated()
	if len(up) != 1 {
		t.Fatalf("Updated: %s, want flow 1", js(up))
	}
	qn, rn := int64(len(q(1))), int64(len(r(1)))
	want := flows.Metric{ABPackets: 1, ABBytes: qn, BAPackets: 2, BABytes: 2 * rn, Start: (t0 + 70e9) / 1e9, Last: (t0 + 72e9) / 1e9}
	if up[0].LastUpdateMetric != want {
		t.Errorf("LastUpdateMetric = %+v, want %+v", up[0].LastUpdateMetric, want)
	}
	if m := up[0].Metric; m.ABPackets != 2 || m.BAPackets != 3 || m.Start != t0/1e9 {
		t.Errorf("Metric = %+v", m)
	}
}

// TestJSON checks the field names against Skydive's flow JSON
// (shared/reference/skydive-api.txt).
func TestJSON(t *testing.T) {
	tb := newTable(t, flows.Config{NodeTID: "488789f9-38be-4eba-704a-79996382de41"})
	feed(t, tb, 0, flows.LinkTypeEthernet, pkt{udpFrame(t, macClient, macServer, ipClient, ipServer, 40000, 9999, 10), 0})
	b, err := json.Marshal(tb.Flows())
	if err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	f := got[0]
	for _, k := range []string{"UUID", "LayersPath", "Link", "Network", "Transport", "Metric", "LastUpdateMetric", "TrackingID", "NodeTID", "Start", "Last"} {
		if _, ok := f[k]; !ok {
			t.Errorf("no %q in %s", k, b)
		}
	}
	for _, k := range []string{"ABBytes", "ABPackets", "BABytes", "BAPackets", "Start", "Last"} {
		if _, ok := f["Metric"].(map[string]any)[k]; !ok {
			t.Errorf("no Metric.%s in %s", k, b)
		}
	}
	for _, k := range []string{"A", "B", "Protocol"} {
		if _, ok := f["Network"].(map[string]any)[k]; !ok {
			t.Errorf("no Network.%s in %s", k, b)
		}
	}
	if _, ok := f["ICMP"]; ok {
		t.Errorf("ICMP in a UDP flow: %s", b)
	}
	if tp := f["Transport"].(map[string]any); tp["A"] != 40000.0 || tp["Protocol"] != "UDP" {
		t.Errorf("Transport = %v: ports are numbers", tp)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg flows.Config
		ok  bool
	}{
		{flows.Config{}, true},
		{flows.Config{MaxFlows: 1}, true},
		{flows.Config{MaxFlows: -1}, false},
		{flows.Config{MaxFlows: flows.MaxMaxFlows + 1}, false},
		{flows.Config{IdleTimeout: -time.Second}, false},
	} {
		tb, err := flows.New(tc.cfg)
		if (err == nil) != tc.ok {
			t.Errorf("New(%+v) = %v, want ok %v", tc.cfg, err, tc.ok)
		}
		if err == nil {
			c := tb.Config()
			if c.MaxFlows <= 0 || c.IdleTimeout <= 0 || c.Now == nil {
				t.Errorf("defaults not filled in: %+v", c)
			}
		}
	}
	tb, _ := flows.New(flows.Config{})
	if c := tb.Config(); c.MaxFlows != flows.DefaultMaxFlows || c.IdleTimeout != flows.DefaultIdleTimeout {
		t.Errorf("defaults %+v", c)
	}
}

// TestConcurrentReaders runs readers against a feeding goroutine, for
// the race detector.
func TestConcurrentReaders(t *testing.T) {
	tb := newTable(t, flows.Config{MaxFlows: 64, IdleTimeout: time.Second})
	frames := make([][]byte, 256)
	for i := range frames {
		frames[i] = udpFrame(t, macClient, macServer, ipClient, ipServer, uint16(1000+i), 9999, 10)
	}
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		for i := range 20000 {
			tb.Packet(i%3, flows.LinkTypeEthernet, frames[i%len(frames)], t0+int64(i)*1e6, 100)
		}
	})
	for r := range 4 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				switch r {
				case 0:
					_ = tb.Flows()
				case 1:
					_ = tb.Updated()
				case 2:
					_ = tb.Stats()
					tb.Sweep(time.Unix(0, t0+10e9))
				case 3:
					tb.SetInterfaceName(r, fmt.Sprint("if", r))
				}
			}
		})
	}
	wg.Wait()
	st := tb.Stats()
	if st.Tracked > 64 || st.Packets != 20000 || st.Created != st.Tracked+st.Evicted+st.Expired {
		t.Errorf("Stats = %+v", st)
	}
}

func TestAllocs(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation")
	}
	const n = 1000
	frames := make([][]byte, n+2)
	for i := range frames {
		frames[i] = udpFrame(t, macClient, macServer, ipClient, net.IP{198, 19, byte(i >> 8), byte(i)}, 40000, 9999, 10)
	}
	v6 := serialize(t, eth(macClient, macServer, layers.EthernetTypeIPv6), ip6(ip6Client, ip6Server, layers.IPProtocolTCP), tcp(1, 2, fACK))

	tb := newTable(t, flows.Config{MaxFlows: 2 * n})
	i := 0
	if a := testing.AllocsPerRun(n, func() {
		tb.Packet(0, flows.LinkTypeEthernet, frames[i], t0+int64(i), 100)
		i++
	}); a != 0 {
		t.Errorf("new flows within the cap: %v allocs per packet", a)
	}
	if a := testing.AllocsPerRun(n, func() {
		tb.Packet(0, flows.LinkTypeEthernet, frames[0], t0+int64(n), 100)
		tb.Packet(0, flows.LinkTypeEthernet, v6, t0+int64(n), 100)
	}); a != 0 {
		t.Errorf("packets of existing flows: %v allocs", a)
	}

	full := newTable(t, flows.Config{MaxFlows: 16})
	i = 0
	if a := testing.AllocsPerRun(n, func() {
		full.Packet(0, flows.LinkTypeEthernet, frames[i], t0+int64(i), 100)
		i++
	}); a != 0 {
		t.Errorf("new flows at the cap (evicting): %v allocs per packet", a)
	}
	if st := full.Stats(); st.Evicted < n-16 {
		t.Errorf("Stats = %+v: expected evictions", st)
	}

	s := flows.NewSink(nil, tb)
	_ = s.AddInterface(0, ifc(0, "eth0", flows.LinkTypeEthernet))
	p := capPacket(0, frames[1], t0+2*n)
	p.VLANValid, p.VLANTCI = true, 5
	tee := flows.Tee(nopSink{}, s)
	if a := testing.AllocsPerRun(n, func() {
		_ = tee.WritePacket(&p)
	}); a != 0 {
		t.Errorf("Tee and Sink: %v allocs per packet", a)
	}
}

func BenchmarkPacket(b *testing.B) {
	for _, nflows := range []int{16, 1024, 65536} {
		b.Run(fmt.Sprint("flows=", nflows), func(b *testing.B) {
			// A mix: UDP and TCP over IPv4, UDP over IPv6 and VLAN; both
			// directions.
			frames := make([][]byte, 0, nflows)
			for i := range nflows {
				hi, lo := byte(i>>8), byte(i)
				srv := net.IP{198, 19, hi, lo}
				var d []byte
				switch i % 4 {
				case 0:
					d = udpFrame(b, macClient, macServer, ipClient, srv, 40000, 53, 60)
				case 1:
					d = serialize(b, eth(macServer, macClient, layers.EthernetTypeIPv4), ip4(srv, ipClient, layers.IPProtocolTCP), tcp(443, 51000, fACK), payload(1400))
				case 2:
					d = serialize(b, eth(macClient, macServer, layers.EthernetTypeIPv6), ip6(ip6Client, net.ParseIP(fmt.Sprintf("2001:db8::%x", i)), layers.IPProtocolUDP), udp(40000, 443), payload(1200))
				case 3:
					d = serialize(b, eth(macClient, macServer, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 42, Type: layers.EthernetTypeIPv4}, ip4(ipClient, srv, layers.IPProtocolTCP), tcp(51000, 443, fACK), payload(100))
				}
				frames = append(frames, d)
			}
			tb := newTable(b, flows.Config{MaxFlows: nflows})
			var bytes int64
			for _, d := range frames {
				bytes += int64(len(d))
			}
			b.SetBytes(bytes / int64(len(frames)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				d := frames[i%len(frames)]
				tb.Packet(0, flows.LinkTypeEthernet, d, t0+int64(i), len(d))
			}
			b.ReportMetric(float64(tb.Stats().Tracked), "flows")
		})
	}
	b.Run("new flows at the cap", func(b *testing.B) {
		frames := make([][]byte, 4096)
		for i := range frames {
			frames[i] = udpFrame(b, macClient, macServer, ipClient, net.IP{198, 19, byte(i >> 8), byte(i)}, 40000, 53, 60)
		}
		tb := newTable(b, flows.Config{MaxFlows: 1024})
		b.ReportAllocs()
		b.ResetTimer()
		for i := range b.N {
			tb.Packet(0, flows.LinkTypeEthernet, frames[i%len(frames)], t0+int64(i), 100)
		}
	})
}

func BenchmarkFlows(b *testing.B) {
	tb := newTable(b, flows.Config{MaxFlows: 4096})
	for i := range 4096 {
		tb.Packet(0, flows.LinkTypeEthernet, udpFrame(b, macClient, macServer, ipClient, net.IP{198, 19, byte(i >> 8), byte(i)}, 40000, 53, 60), t0, 100)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = tb.Flows()
	}
}

func FuzzTablePacket(f *testing.F) {
	seed := []struct {
		lt   uint16
		data []byte
	}{
		{flows.LinkTypeEthernet, udpFrame(f, macClient, macServer, ipClient, ipServer, 40000, 53, 4)},
		{flows.LinkTypeEthernet, serialize(f, eth(macClient, macServer, layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 1, Type: layers.EthernetTypeIPv6},
			ip6(ip6Client, ip6Server, layers.IPProtocolICMPv6), &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(128, 0)}, &layers.ICMPv6Echo{Identifier: 1})},
		{flows.LinkTypeRaw, serialize(f, ip4(ipClient, ipServer, layers.IPProtocolTCP), tcp(1, 2, fSYN))},
		{flows.LinkTypeLinuxSLL2, sll2(0x86dd, serialize(f, ip6(ip6Client, ip6Server, layers.IPProtocolIPv6HopByHop), hopByHop(layers.IPProtocolUDP), udp(1, 2)))},
		{flows.LinkTypeLinuxSLL, make([]byte, 16)},
		{flows.LinkTypeEthernet, []byte(strings.Repeat("\x81\x00", 20))},
	}
	for _, s := range seed {
		f.Add(s.lt, s.data)
	}
	tb := newTable(f, flows.Config{MaxFlows: 8})
	f.Fuzz(func(t *testing.T, lt uint16, data []byte) {
		tb.Packet(int(lt&3), lt, data, t0, len(data))
		for _, fl := range tb.Flows() {
			if len(fl.UUID) != 40 || len(fl.TrackingID) != 40 {
				t.Fatalf("bad IDs in %s", js(fl))
			}
		}
		if st := tb.Stats(); st.Tracked > 8 {
			t.Fatalf("Stats %+v over the cap", st)
		}
	})
}

var _ = gopacket.Payload(nil)
