package flows_test

import (
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/packetflix/packetflix/flows"
)

// Addresses from 198.18.0.0/15 and 2001:db8::/32 only.
var (
	macClient = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	macServer = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	ipClient  = net.IP{198, 18, 0, 1}
	ipServer  = net.IP{198, 19, 0, 2}
	ip6Client = net.ParseIP("2001:db8::1")
	ip6Server = net.ParseIP("2001:db8::2")
)

// t0 is the time of the first packet of a test, in Unix ns.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()

// serialize builds a packet from gopacket layers, with lengths and
// checksums filled in.
func serialize(tb testing.TB, ls ...gopacket.SerializableLayer) []byte {
	tb.Helper()
	for _, l := range ls {
		var nl gopacket.NetworkLayer
		for _, m := range ls {
			switch m := m.(type) {
			case *layers.IPv4:
				nl = m
			case *layers.IPv6:
				nl = m
			}
		}
		switch l := l.(type) {
		case *layers.TCP:
			_ = l.SetNetworkLayerForChecksum(nl)
		case *layers.UDP:
			_ = l.SetNetworkLayerForChecksum(nl)
		case *layers.ICMPv6:
			_ = l.SetNetworkLayerForChecksum(nl)
		}
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		tb.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(src, dst net.HardwareAddr, t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: t}
}

func ip4(src, dst net.IP, proto layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: src, DstIP: dst}
}

func ip6(src, dst net.IP, next layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: next, SrcIP: src, DstIP: dst}
}

func udp(sport, dport uint16) *layers.UDP {
	return &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
}

// TCP flags for tcp.
const (
	fSYN = 1 << iota
	fACK
	fFIN
	fRST
	fPSH
)

func tcp(sport, dport uint16, flags int) *layers.TCP {
	return &layers.TCP{
		SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Window: 65535,
		SYN: flags&fSYN != 0, ACK: flags&fACK != 0, FIN: flags&fFIN != 0,
		RST: flags&fRST != 0, PSH: flags&fPSH != 0,
	}
}

func payload(n int) gopacket.Payload { return gopacket.Payload(make([]byte, n)) }

// hopByHop is an IPv6 hop-by-hop header with one PadN option.
func hopByHop(next layers.IPProtocol) *layers.IPv6HopByHop {
	h := &layers.IPv6HopByHop{}
	h.NextHeader = next
	h.Options = []*layers.IPv6HopByHopOption{{OptionType: 1, OptionLength: 4, OptionData: []byte{0, 0, 0, 0}}}
	return h
}

// udpFrame is an Ethernet/IPv4/UDP frame.
func udpFrame(tb testing.TB, smac, dmac net.HardwareAddr, src, dst net.IP, sport, dport uint16, n int) []byte {
	return serialize(tb, eth(smac, dmac, layers.EthernetTypeIPv4), ip4(src, dst, layers.IPProtocolUDP), udp(sport, dport), payload(n))
}

// ethHeader is an Ethernet header with optional 802.1Q tags (gopacket
// would pad a frame it serializes without the network layer).
func ethHeader(src, dst net.HardwareAddr, etype uint16, vids ...uint16) []byte {
	b := append(append([]byte(nil), dst...), src...)
	for _, v := range vids {
		b = binary.BigEndian.AppendUint16(b, 0x8100)
		b = binary.BigEndian.AppendUint16(b, v)
	}
	return binary.BigEndian.AppendUint16(b, etype)
}

// sll2 prepends a LINKTYPE_LINUX_SLL2 header to a network packet.
func sll2(proto uint16, pkt []byte) []byte {
	h := make([]byte, 20, 20+len(pkt))
	binary.BigEndian.PutUint16(h[0:], proto)
	binary.BigEndian.PutUint32(h[4:], 7)  // ifindex
	binary.BigEndian.PutUint16(h[8:], 65) // ARPHRD_NONE, as for tun
	h[10] = 0                             // PACKET_HOST
	return append(h, pkt...)
}

// gopacketPath is the LayersPath Skydive builds from gopacket's decoding
// of data (flow.LayersPath: no cooked header, up to the first payload),
// cut after the transport layer as ours is.
func gopacketPath(data []byte, linkType uint16) string {
	var first gopacket.LayerType
	switch linkType {
	case flows.LinkTypeEthernet:
		first = layers.LayerTypeEthernet
	case flows.LinkTypeLinuxSLL2:
		first = layers.LayerTypeLinuxSLL2
	case flows.LinkTypeRaw:
		first = layers.LayerTypeIPv4
		if data[0]>>4 == 6 {
			first = layers.LayerTypeIPv6
		}
	}
	p := gopacket.NewPacket(data, first, gopacket.Default)
	var names []string
	for _, l := range p.Layers() {
		tp := l.LayerType()
		if tp == layers.LayerTypeLinuxSLL || tp == layers.LayerTypeLinuxSLL2 {
			continue
		}
		if tp == gopacket.LayerTypePayload || tp == gopacket.LayerTypeDecodeFailure {
			break
		}
		names = append(names, tp.String())
		if tp == layers.LayerTypeTCP || tp == layers.LayerTypeUDP || tp == layers.LayerTypeSCTP {
			break
		}
	}
	return strings.Join(names, "/")
}

func newTable(tb testing.TB, cfg flows.Config) *flows.Table {
	tb.Helper()
	if cfg.NodeTID == "" {
		cfg.NodeTID = "tid-test"
	}
	t, err := flows.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

// pkt is one packet of a test exchange.
type pkt struct {
	data []byte
	ts   int64 // offset from t0
}

func feed(tb testing.TB, t *flows.Table, iface int, linkType uint16, ps ...pkt) {
	tb.Helper()
	for i, p := range ps {
		if !t.Packet(iface, linkType, p.data, t0+p.ts, len(p.data)) {
			tb.Fatalf("packet %d not counted", i)
		}
	}
}

func only(tb testing.TB, t *flows.Table) flows.Flow {
	tb.Helper()
	fs := t.Flows()
	if len(fs) != 1 {
		tb.Fatalf("got %d flows, want 1: %+v", len(fs), fs)
	}
	return fs[0]
}
