package capture

import (
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Exclusions tells a session which TCP traffic to leave out in each netns
// it captures, and when that changes: the service's own connections
// (package server keeps them).
type Exclusions interface {
	// In returns the local TCP endpoints (address and port) in the netns
	// with inode ino whose every segment, to or from them, is left out,
	// and a channel that is closed when they may have changed. An endpoint
	// without a specific address (0.0.0.0, ::) matches nothing.
	In(ino uint64) ([]netip.AddrPort, <-chan struct{})
}

// Scratch memory slots of the prefix program.
const (
	memSrc   = 0 // 1 word (IPv4) or 4 (IPv6)
	memDst4  = 1
	memDst6  = 4
	memPorts = 8 // source port; destination port in memPorts+1
)

// excludeProgram returns prog behind a prefix that drops the TCP segments
// from or to the endpoints eps (returns 0) and lets every other packet fall through to prog's
// first instruction. prog's jumps are relative, and it never reads the
// registers or scratch memory before writing them (the kernel's checker
// insists), so the prefix may use both. filterType is LinkTypeEthernet
// (frames of SOCK_RAW rings) or LinkTypeRaw (the network-layer packets of
// SOCK_DGRAM rings).
//
// Segments of IPv6 packets with extension headers before TCP, and IP
// fragments after the first, are not recognised and reach prog: they do not
// occur on the service's own connections in practice.
func excludeProgram(filterType uint16, eps []netip.AddrPort, prog []unix.SockFilter) ([]unix.SockFilter, error) {
	if len(eps) == 0 {
		return prog, nil
	}
	var a asm
	var v4, v6 int // the far jumps to each IP version's section
	switch filterType {
	case LinkTypeEthernet:
		const ethertype = 12
		a.emit(bpf.LoadAbsolute{Off: ethertype, Size: 2})
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: 1})
		v4 = a.jumpTo()
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IPV6, SkipFalse: 1})
		v6 = a.jumpTo()
		a.toEnd()
		a.section(v4, 14, false, eps)
		a.section(v6, 14, true, eps)
	case LinkTypeRaw:
		a.emit(bpf.LoadAbsolute{Off: 0, Size: 1})
		a.emit(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4})
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipFalse: 1})
		v4 = a.jumpTo()
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipFalse: 1})
		v6 = a.jumpTo()
		a.toEnd()
		a.section(v4, 0, false, eps)
		a.section(v6, 0, true, eps)
	default:
		return prog, nil
	}
	raw, err := a.assemble()
	if err != nil {
		return nil, err
	}
	if len(raw)+len(prog) > MaxFilterInstructions {
		return nil, fmt.Errorf("%w: leaving out %d own TCP endpoints takes %d instructions, the filter %d, over the kernel's %d", ErrFilterTooComplex, len(eps), len(raw), len(prog), MaxFilterInstructions)
	}
	out := make([]unix.SockFilter, 0, len(raw)+len(prog))
	for _, r := range raw {
		out = append(out, unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K})
	}
	return append(out, prog...), nil
}

// asm builds the prefix: a list of instructions with forward jumps to
// sections (v4, v6) and to its end, resolved in assemble. Far jumps are
// "ja", whose offset has 32 bits; conditional ones stay within a few
// instructions.
type asm struct {
	ins  []bpf.Instruction
	ends []int // indexes of the jumps past the prefix
}

func (a *asm) emit(i bpf.Instruction) { a.ins = append(a.ins, i) }

// jumpTo emits a far jump to a section not yet placed; the returned index
// is given to section, which places it.
func (a *asm) jumpTo() int {
	a.emit(bpf.Jump{})
	return len(a.ins) - 1
}

// toEnd emits a far jump past the prefix, to the user's program.
func (a *asm) toEnd() {
	a.ends = append(a.ends, len(a.ins))
	a.emit(bpf.Jump{})
}

// section places the test of one IP version where the jump at index
// from leads, for a network header at offset nh.
func (a *asm) section(from int, nh uint32, v6 bool, eps []netip.AddrPort) {
	a.ins[from] = bpf.Jump{Skip: uint32(len(a.ins) - from - 1)}
	// TCP only, and (IPv4) the first fragment only: later ones have no
	// ports.
	if v6 {
		a.emit(bpf.LoadAbsolute{Off: nh + 6, Size: 1}) // next header
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipTrue: 1})
		a.toEnd()
		for w := range uint32(4) {
			a.emit(bpf.LoadAbsolute{Off: nh + 8 + 4*w, Size: 4})
			a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memSrc + int(w)})
			a.emit(bpf.LoadAbsolute{Off: nh + 24 + 4*w, Size: 4})
			a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memDst6 + int(w)})
		}
		a.emit(bpf.LoadAbsolute{Off: nh + 40, Size: 2})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memPorts})
		a.emit(bpf.LoadAbsolute{Off: nh + 42, Size: 2})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memPorts + 1})
	} else {
		a.emit(bpf.LoadAbsolute{Off: nh + 9, Size: 1}) // protocol
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_TCP, SkipTrue: 1})
		a.toEnd()
		a.emit(bpf.LoadAbsolute{Off: nh + 6, Size: 2}) // fragment offset
		a.emit(bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipFalse: 1})
		a.toEnd()
		a.emit(bpf.LoadAbsolute{Off: nh + 12, Size: 4})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memSrc})
		a.emit(bpf.LoadAbsolute{Off: nh + 16, Size: 4})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memDst4})
		a.emit(bpf.LoadMemShift{Off: nh}) // X = IP header length
		a.emit(bpf.LoadIndirect{Off: nh, Size: 2})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memPorts})
		a.emit(bpf.LoadIndirect{Off: nh + 2, Size: 2})
		a.emit(bpf.StoreScratch{Src: bpf.RegA, N: memPorts + 1})
	}
	dst := memDst4
	if v6 {
		dst = memDst6
	}
	for _, ep := range eps {
		ip := ep.Addr().Unmap()
		if !ip.IsValid() || ip.IsUnspecified() || ip.Is6() != v6 {
			continue // none of this section's segments are to or from it
		}
		a.match(endChecks(ip, ep.Port(), memSrc, memPorts)) // from it
		a.match(endChecks(ip, ep.Port(), dst, memPorts+1))  // to it
	}
	a.toEnd()
}

// check is one comparison of a scratch word with a value.
type check struct {
	mem int
	val uint32
}

// endChecks are the comparisons that the address kept in scratch words
// from addr on is ip, and the port kept at port is pt.
func endChecks(ip netip.Addr, pt uint16, addr, port int) []check {
	b := ip.AsSlice()
	cs := make([]check, 0, len(b)/4+1)
	for w := 0; w < len(b)/4; w++ {
		cs = append(cs, check{mem: addr + w, val: uint32(b[4*w])<<24 | uint32(b[4*w+1])<<16 | uint32(b[4*w+2])<<8 | uint32(b[4*w+3])})
	}
	return append(cs, check{mem: port, val: uint32(pt)})
}

// match emits: when every check holds, return 0 (drop the packet); else go
// on after the return.
func (a *asm) match(cs []check) {
	for i, c := range cs {
		a.emit(bpf.LoadScratch{Dst: bpf.RegA, N: c.mem})
		// A mismatch skips the rest of the checks and the return.
		a.emit(bpf.JumpIf{Cond: bpf.JumpEqual, Val: c.val, SkipFalse: uint8(2*(len(cs)-i-1) + 1)})
	}
	a.emit(bpf.RetConstant{Val: 0})
}

// assemble resolves the far jumps to the end of the prefix and encodes it.
func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	end := len(a.ins)
	for _, i := range a.ends {
		a.ins[i] = bpf.Jump{Skip: uint32(end - i - 1)}
	}
	return bpf.Assemble(a.ins)
}
