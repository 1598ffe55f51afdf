package capture

import (
	"fmt"
	"strings"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcap"
	"golang.org/x/sys/unix"
)

// MaxFilterInstructions is the kernel's limit for a classic BPF program
// (BPF_MAXINSNS).
const MaxFilterInstructions = 4096

// compileFilter turns a tcpdump expression into a classic BPF program for
// linkType whose accept value is snaplen: the kernel truncates each packet
// to the filter's return value, which is how snaplen is applied on an
// AF_PACKET socket. An empty expression yields the one-instruction program
// "accept snaplen bytes".
//
// libpcap compiles offline here (pcap_open_dead), so "vlan" expressions test
// the in-packet TPID, which the kernel has already stripped; see
// ENGINE-NOTES section 1.
func compileFilter(linkType uint16, snaplen int, expr string) ([]unix.SockFilter, error) {
	if strings.TrimSpace(expr) == "" {
		return []unix.SockFilter{{Code: 0x06 /* BPF_RET|BPF_K */, K: uint32(snaplen)}}, nil
	}
	insns, err := pcap.CompileBPFFilter(dlt(linkType), snaplen, expr)
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrBadFilter, cleanPcapErr(err))
	}
	if len(insns) > MaxFilterInstructions {
		return nil, fmt.Errorf("%w: %d BPF instructions, the kernel takes at most %d",
			ErrBadFilter, len(insns), MaxFilterInstructions)
	}
	prog := make([]unix.SockFilter, len(insns))
	for i, in := range insns {
		prog[i] = unix.SockFilter{Code: in.Code, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	return prog, nil
}

// dlt maps a LINKTYPE_* value to the DLT_* value libpcap's pcap_open_dead
// takes; they differ for raw IP (LINKTYPE_RAW 101 is DLT_RAW 12 on Linux).
func dlt(linkType uint16) layers.LinkType {
	if linkType == LinkTypeRaw {
		return 12
	}
	return layers.LinkType(linkType)
}

// cleanPcapErr drops libpcap's generic prefix so that the message a user
// sees starts with what is wrong.
func cleanPcapErr(err error) string {
	s := err.Error()
	s = strings.TrimPrefix(s, "can't parse filter expression: ")
	return s
}
