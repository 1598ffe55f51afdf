package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Why our own TPACKET_V3 reader instead of gopacket/afpacket (measured; see
// docs/capture-engine.md): afpacket binds before a filter can be
// attached, so packets the filter rejects reach the ring in the first
// milliseconds; it hides sll_pkttype, so the pcapng direction flag and the
// loopback de-duplication are impossible; and it hides the fd, so neither
// the Go netpoller nor PACKET_IGNORE_OUTGOING can be used. The ring layout
// is documented in Documentation/networking/packet_mmap.rst.

// sllOffset is where the kernel puts a struct sockaddr_ll after each
// tpacket3_hdr: TPACKET_ALIGN(sizeof(struct tpacket3_hdr)).
const sllOffset = (int(unsafe.Sizeof(unix.Tpacket3Hdr{})) + unix.TPACKET_ALIGNMENT - 1) &^ (unix.TPACKET_ALIGNMENT - 1)

// frameSize only sets tp_frame_nr for TPACKET_V3; packets are packed into
// blocks at their own size, up to the block size minus its header.
const frameSize = 2048

// RingOptions size the kernel ring of one interface. The ring is the
// session's buffer in front of the client: while the client is slower than
// the traffic, packets wait here, and once it is full the kernel drops and
// counts them.
type RingOptions struct {
	BlockSize    int           // bytes, a multiple of the page size
	NumBlocks    int           // blocks per ring
	BlockTimeout time.Duration // the kernel hands over a partly filled block after this
}

// DefaultRingOptions: 8 MiB per interface, about 28 ms of 1400-byte packets
// at 200 kpps (2.2 Gbit/s) and 300 ms of 64-byte ones: enough to ride out
// the scheduling stalls of a busy 2-core machine, where 4 MiB lost 0.1 %
// of 1400-byte packets at that rate (docs/capture-engine.md). A partly
// filled block reaches us after 2 ms, which bounds the latency a quiet
// capture adds.
var DefaultRingOptions = RingOptions{BlockSize: 256 << 10, NumBlocks: 32, BlockTimeout: 2 * time.Millisecond}

// WithDefaults returns o with its zero fields set from DefaultRingOptions:
// the geometry a capture with these options gets.
func (o RingOptions) WithDefaults() RingOptions { return o.withDefaults() }

// Size is the memory one ring of these options locks: BlockSize x
// NumBlocks, after defaults.
func (o RingOptions) Size() int64 {
	o = o.withDefaults()
	return int64(o.BlockSize) * int64(o.NumBlocks)
}

func (o RingOptions) withDefaults() RingOptions {
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultRingOptions.BlockSize
	}
	if o.NumBlocks <= 0 {
		o.NumBlocks = DefaultRingOptions.NumBlocks
	}
	if o.BlockTimeout <= 0 {
		o.BlockTimeout = DefaultRingOptions.BlockTimeout
	}
	return o
}

// ring is one AF_PACKET socket with a TPACKET_V3 receive ring. It is read by
// its session's reader only, and closed only once that reader has stopped
// reading it: close unmaps the ring, and a concurrent read would fault.
type ring struct {
	fd  int // the session's poller watches it; not in the netpoller
	mem []byte
	bs  int // block size
	nb  int // number of blocks
	cur int // next block to read

	// Counters (see "# Counters" in doc.go). PACKET_STATISTICS resets on
	// every read, so every read goes through readStats, under statsMu,
	// and adds into kernPackets and kernDrops. Any goroutine may read
	// them: the reader may be blocked in the Sink for as long as a client
	// stalls, which is exactly when the drops happen. statsMu also keeps
	// close from freeing the fd under a concurrent read.
	statsMu                sync.Mutex
	kernPackets, kernDrops atomic.Uint64 // written under statsMu
	delivered              atomic.Uint64 // taken by the Sink
	skipped                atomic.Uint64 // in the ring but not taken (see Stats.Skipped)
	bytes                  atomic.Uint64
	closed                 bool // owned by the reader; set under statsMu

	// cooked, for an interface of a hardware type libpcap has no link
	// type for (read with SOCK_DGRAM), makes readBlock put a Linux cooked
	// header (LINKTYPE_LINUX_SLL2) in front of each packet, in the ring's
	// own headroom, and keep at most cookedSnap bytes of the packet after
	// it, so that header plus data stay within the snaplen.
	cooked     bool
	cookedSnap int

	// The ring's filter is the user's program (for filterType) behind
	// the exclusion prefix of generation exclGen (Config.Exclude); the
	// reader attaches a new one when the target's generation moves on.
	filterType uint16
	userProg   []unix.SockFilter
	exclGen    uint64

	tov time.Duration // the block timeout
	c   cursor        // the reader's place in the current block
	// notBefore (Unix ns) makes a reused ring skip packets captured before
	// its new capture began, should any have escaped the draining.
	notBefore int64
	key       poolKey // for Pool: which captures may reuse it
	promisc   bool    // holds a promiscuous membership

	// budget was charged charged bytes for this ring when it was opened;
	// close gives them back, wherever the ring is then (a reader, the
	// Pool, a failed Open).
	budget  *Budget
	charged int64
}

// openRing creates the socket in the calling thread's netns (so it must run
// inside netns.Do) and sets it up in the order that lets no unfiltered
// packet in: socket with protocol 0 (receives nothing), filter, ring, then
// bind to the interface with ETH_P_ALL.
func openRing(ifindex int, sockType int, prog []unix.SockFilter, ignoreOutgoing, promisc bool, o RingOptions) (_ *ring, err error) {
	fd, err := unix.Socket(unix.AF_PACKET, sockType|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	r := &ring{fd: fd, bs: o.BlockSize, nb: o.NumBlocks, tov: time.Duration(max(1, o.BlockTimeout.Milliseconds())) * time.Millisecond, promisc: promisc}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if err := r.setFilter(prog); err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fmt.Errorf("set TPACKET_V3: %w", err)
	}
	req := unix.TpacketReq3{
		Block_size:     uint32(o.BlockSize),
		Block_nr:       uint32(o.NumBlocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(o.BlockSize / frameSize * o.NumBlocks),
		Retire_blk_tov: uint32(max(1, o.BlockTimeout.Milliseconds())),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fmt.Errorf("set PACKET_RX_RING (%d x %d bytes): %w", o.NumBlocks, o.BlockSize, err)
	}
	r.mem, err = unix.Mmap(fd, 0, o.BlockSize*o.NumBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED|unix.MAP_POPULATE)
	if err != nil {
		// MAP_LOCKED can fail under RLIMIT_MEMLOCK; the ring works unlocked.
		r.mem, err = unix.Mmap(fd, 0, o.BlockSize*o.NumBlocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, fmt.Errorf("mmap ring: %w", err)
		}
	}
	if ignoreOutgoing {
		// On lo every packet passes the tap twice, as OUTGOING and as HOST;
		// keep one copy, as libpcap does.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return nil, fmt.Errorf("set PACKET_IGNORE_OUTGOING: %w", err)
		}
	}
	sa := unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, &sa); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	if promisc {
		// A membership raises the device's promiscuity count; the kernel
		// drops it when the socket closes, so a crash cannot leave the
		// interface promiscuous.
		mreq := unix.PacketMreq{Ifindex: int32(ifindex), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mreq); err != nil {
			return nil, fmt.Errorf("%s: %w", OpPromisc, err)
		}
	}
	// Bind on a down interface succeeds and flags the socket with
	// ENETDOWN; delivery starts when the interface comes up. Clear that
	// flag so the reader does not take it for a vanished interface.
	if e, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 && syscall.Errno(e) != unix.ENETDOWN {
		return nil, fmt.Errorf("bind: %w", syscall.Errno(e))
	}
	// The session's poller (poller_linux.go) is told when a block is
	// retired (sk_data_ready) or the socket reports an error.
	return r, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// close unmaps the ring and closes the socket, once: whoever holds the
// ring last (the reader's end, Session.finish, the Pool, or Open and the
// link watcher on failure) calls it when no one reads the ring any more.
func (r *ring) close() {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	if r.closed {
		return
	}
	r.closed = true
	// Released after the socket is closed, which frees the ring.
	defer r.budget.release(r.charged)
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	_ = unix.Close(r.fd)
}

func (r *ring) blockHdr(i int) *unix.TpacketHdrV1 {
	bd := (*unix.TpacketBlockDesc)(unsafe.Pointer(&r.mem[i*r.bs]))
	return (*unix.TpacketHdrV1)(unsafe.Pointer(&bd.Hdr[0]))
}

// ready reports whether the kernel has handed block i to user space. The
// atomic load orders the reads of the block's contents after it.
func (r *ring) ready(i int) bool {
	return atomic.LoadUint32(&r.blockHdr(i).Block_status)&unix.TP_STATUS_USER != 0
}

// sockError reads and clears the socket's pending error (SO_ERROR): the
// kernel reports an interface that went down or away this way.
func (r *ring) sockError() error {
	if e, _ := unix.GetsockoptInt(r.fd, unix.SOL_SOCKET, unix.SO_ERROR); e != 0 {
		return syscall.Errno(e)
	}
	return nil
}

var (
	errStopped = errors.New("stopped")
	errTimeout = errors.New("timeout")
)

// present reports whether interface index still exists with this name in
// the socket's netns (an ioctl on a socket acts in the socket's netns, from
// any thread).
func (r *ring) present(index int, name string) bool {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return false
	}
	ifr.SetUint32(uint32(index))
	if err := unix.IoctlIfreq(r.fd, unix.SIOCGIFNAME, ifr); err != nil {
		return false
	}
	return ifr.Name() == name
}

// A ring is read packet by packet through a cursor over its current block,
// so that the session's reader can merge the packets of several rings in
// timestamp order: head fills p with the next deliverable packet, taken
// says the Sink took it, and a block goes back to the kernel once every
// packet in it was taken or skipped. Every packet of a block ends up
// counted exactly once, as delivered or as skipped: the kernel counted all
// of them in tp_packets. p is the caller's reusable Packet, so nothing is
// allocated per packet.
type cursor struct {
	open      bool // the current block is being read
	off       int  // offset in the block of the next packet
	left      int  // packets of the block not yet looked at
	n         int  // packets in the block
	delivered int  // of them taken by the Sink
	bytes     uint64
}

// head makes p the next deliverable packet of the ring and reports
// whether there is one; false means no block is ready. Blocks that hold
// nothing deliverable are released on the way.
func (r *ring) head(p *Packet) bool {
	for {
		c := &r.c
		if !c.open {
			if !r.ready(r.cur) {
				return false
			}
			h := r.blockHdr(r.cur)
			*c = cursor{open: true, off: int(h.Offset_to_first_pkt), left: int(h.Num_pkts), n: int(h.Num_pkts)}
		}
		for c.left > 0 {
			if r.parse(p) {
				return true
			}
			if c.left == 0 {
				break // malformed from here on: there is no next packet to step to
			}
			r.step() // older than this capture (a reused ring): skipped
		}
		r.closeBlock()
	}
}

// parse fills p from the packet at the cursor; false if it is not to be
// delivered (or the block is malformed from here on: then left is 0).
func (r *ring) parse(p *Packet) bool {
	c := &r.c
	base := r.cur * r.bs
	end := base + r.bs
	at := base + c.off
	if at+sllOffset+sllSize > end {
		c.left = 0
		return false
	}
	th := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[at]))
	sll := (*unix.RawSockaddrLinklayer)(unsafe.Pointer(&r.mem[at+sllOffset]))
	start := at + int(th.Mac)
	stop := start + int(th.Snaplen)
	if stop > end || start > stop {
		c.left = 0
		return false
	}
	p.Timestamp = int64(th.Sec)*1e9 + int64(th.Nsec)
	p.Length = int(th.Len)
	if p.Timestamp < r.notBefore || (r.cooked && start-sll2Len < at+sllOffset+sllSize) {
		// Older than this capture (a reused ring), or no headroom for the
		// cooked header (never seen).
		return false
	}
	if r.cooked {
		// libpcap does the same (pcap-linux.c, cooked mode): the kernel
		// leaves headroom between sockaddr_ll and the network header of a
		// SOCK_DGRAM packet.
		if stop-start > r.cookedSnap {
			stop = start + r.cookedSnap
		}
		start -= sll2Len
		putSLL2((*[sll2Len]byte)(r.mem[start:]), sll)
		p.Length += sll2Len
	}
	p.Data = r.mem[start:stop:stop]
	p.PktType = sll.Pkttype
	p.VLANValid = th.Status&unix.TP_STATUS_VLAN_VALID != 0
	p.VLANTCI, p.VLANTPID = 0, 0
	if p.VLANValid {
		p.VLANTCI = uint16(th.Hv1.Vlan_tci)
		if th.Status&unix.TP_STATUS_VLAN_TPID_VALID != 0 {
			p.VLANTPID = th.Hv1.Vlan_tpid
		}
	}
	return true
}

// step moves the cursor past the packet at it.
func (r *ring) step() {
	c := &r.c
	c.left--
	th := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[r.cur*r.bs+c.off]))
	if th.Next_offset == 0 {
		c.left = 0
	}
	c.off += int(th.Next_offset)
}

// taken records that the Sink took the head (p, as head filled it) and
// moves past it; the block goes back to the kernel after its last packet.
func (r *ring) taken(p *Packet) {
	r.c.delivered++
	r.c.bytes += uint64(len(p.Data))
	p.Data = nil
	r.step()
	if r.c.left == 0 {
		r.closeBlock()
	}
}

// closeBlock counts the block's packets (those not taken as skipped) and
// returns it to the kernel; the Sink refused its head, or it is done.
func (r *ring) closeBlock() {
	c := &r.c
	if !c.open {
		return
	}
	r.delivered.Add(uint64(c.delivered))
	r.bytes.Add(c.bytes)
	if c.n > c.delivered {
		r.skipped.Add(uint64(c.n - c.delivered))
	}
	*c = cursor{}
	r.release()
}

const sllSize = int(unsafe.Sizeof(unix.RawSockaddrLinklayer{}))

// sll2Len is the size of a LINKTYPE_LINUX_SLL2 header.
const sll2Len = 20

// putSLL2 writes the LINKTYPE_LINUX_SLL2 header of a packet from its
// sockaddr_ll (https://www.tcpdump.org/linktypes/LINKTYPE_LINUX_SLL2.html):
// protocol (as sll_protocol, network order), 2 reserved bytes, ifindex,
// ARPHRD type (both big-endian), packet type, address length and 8
// address bytes (those past the length zeroed).
func putSLL2(b *[sll2Len]byte, sll *unix.RawSockaddrLinklayer) {
	proto := (*[2]byte)(unsafe.Pointer(&sll.Protocol))
	b[0], b[1] = proto[0], proto[1]
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[4:8], uint32(sll.Ifindex))
	binary.BigEndian.PutUint16(b[8:10], sll.Hatype)
	b[10] = sll.Pkttype
	halen := min(sll.Halen, 8)
	b[11] = halen
	for i := range 8 {
		b[12+i] = 0
		if i < int(halen) {
			b[12+i] = sll.Addr[i]
		}
	}
}

// release hands the current block back to the kernel and moves on.
func (r *ring) release() {
	atomic.StoreUint32(&r.blockHdr(r.cur).Block_status, unix.TP_STATUS_KERNEL)
	r.cur = (r.cur + 1) % r.nb
}

// readStats adds the kernel's counters since the last read to the totals;
// any goroutine may call it. It does nothing once the ring is closed (the
// final read was made before).
func (r *ring) readStats() error {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	return r.readStatsLocked()
}

func (r *ring) readStatsLocked() error {
	if r.closed {
		return nil
	}
	st, err := unix.GetsockoptTpacketStatsV3(r.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return err
	}
	// tp_packets counts queued packets plus drops.
	r.kernPackets.Add(uint64(st.Packets))
	r.kernDrops.Add(uint64(st.Drops))
	return nil
}

// snapshot returns the ring's counters as of now, from any goroutine.
// The user-space counters are loaded before the kernel's are read, so
// every packet counted as delivered or skipped is already in Received,
// and Pending (queued, not yet read) is never negative.
func (r *ring) snapshot() Stats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	d, sk, b := r.delivered.Load(), r.skipped.Load(), r.bytes.Load()
	_ = r.readStatsLocked() // a failed read shows the last totals
	return makeStats(r.kernPackets.Load(), r.kernDrops.Load(), d, sk, b)
}

// final returns the ring's counters once its reader has ended: packets
// still in the ring will never be read and count as skipped.
func (r *ring) final() Stats {
	r.statsMu.Lock()
	defer r.statsMu.Unlock()
	_ = r.readStatsLocked()
	st := makeStats(r.kernPackets.Load(), r.kernDrops.Load(), r.delivered.Load(), r.skipped.Load(), r.bytes.Load())
	st.Skipped += st.Pending
	st.Dropped += st.Pending
	st.Pending = 0
	return st
}

func makeStats(received, kdrops, delivered, skipped, bytes uint64) Stats {
	st := Stats{Received: received, KernelDropped: kdrops, Skipped: skipped, Delivered: delivered, Bytes: bytes}
	st.Dropped = kdrops + skipped
	if settled := delivered + st.Dropped; received > settled {
		st.Pending = received - settled
	}
	return st
}

// setFilter replaces the ring's filter. The kernel swaps the program in
// one step (sk_attach_filter): every packet meets either the old one or
// the new one.
func (r *ring) setFilter(prog []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.SetsockoptSockFprog(r.fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("%s: attach filter: %w", OpSetFilter, err)
	}
	return nil
}
