package pcapng

// Link types we use, from the tcpdump.org LINKTYPE_ registry.
const (
	LinkTypeEthernet uint16 = 1
	LinkTypeRaw      uint16 = 101
	LinkTypeLinuxSLL uint16 = 113
	LinkTypeRadiotap uint16 = 127
)

// Block types found in Block.Type.
const (
	BlockTypeSHB uint32 = 0x0A0D0D0A
	BlockTypeIDB uint32 = 0x00000001
	BlockTypeISB uint32 = 0x00000005
	BlockTypeEPB uint32 = 0x00000006
)

// Direction is the packet direction in bits 0-1 of epb_flags.
type Direction uint8

// Direction values. DirectionUnknown is what the spec calls "information
// not available".
const (
	DirectionUnknown  Direction = 0
	DirectionInbound  Direction = 1
	DirectionOutbound Direction = 2
)

// Reception is the reception type in bits 2-4 of epb_flags.
type Reception uint8

// Reception values.
const (
	ReceptionUnspecified Reception = 0
	ReceptionUnicast     Reception = 1
	ReceptionMulticast   Reception = 2
	ReceptionBroadcast   Reception = 3
	ReceptionPromiscuous Reception = 4
)

// SectionInfo is the content of a Section Header Block. Empty strings are
// omitted when writing.
type SectionInfo struct {
	Hardware string // shb_hardware
	OS       string // shb_os
	UserAppl string // shb_userappl
	Comment  string // opt_comment; the Reader puts the first one here and all in Block.Comments
}

// Interface is the content of an Interface Description Block. Empty
// strings are omitted when writing.
type Interface struct {
	LinkType    uint16
	SnapLen     uint32 // 0 means no limit
	Name        string // if_name
	Description string // if_description
	Filter      string // if_filter as a libpcap filter expression
	OS          string // if_os
	Comment     string // opt_comment: the first of the IDB's comments

	// TSResol is the raw if_tsresol byte, set only by Reader: 6 when the
	// option is absent, as the spec says. AppendIDB ignores it and always
	// writes 9, because the capture side hands us nanoseconds.
	TSResol uint8
}

// Packet describes one Enhanced Packet Block.
type Packet struct {
	InterfaceID uint32
	Timestamp   int64  // Unix nanoseconds
	OrigLen     uint32 // length on the wire, without a stripped VLAN tag
	Direction   Direction
	Reception   Reception

	// VLANValid says the kernel stripped an 802.1Q/802.1ad tag (as
	// AF_PACKET does, reporting it in tpacket3_hdr's hv1 instead), so a
	// reader would otherwise never see it. AppendEPB re-inserts TPID
	// (0 means 0x8100) and TCI, big-endian, after the two MAC addresses
	// and adds 4 to both lengths. Frames shorter than 12 bytes have no
	// place for the tag and are written unchanged. Reader never sets these.
	VLANValid bool
	VLANTPID  uint16
	VLANTCI   uint16
}

// Stats is the content of an Interface Statistics Block. A counter is
// written only when its Has flag is set, because "0 drops" and "drops not
// known" mean different things to a reader.
type Stats struct {
	StartTime int64 // isb_starttime, Unix ns; 0 means omitted
	EndTime   int64 // isb_endtime, Unix ns; 0 means omitted

	Received     uint64 // isb_ifrecv
	Dropped      uint64 // isb_ifdrop
	FilterAccept uint64 // isb_filteraccept
	OSDrop       uint64 // isb_osdrop
	Delivered    uint64 // isb_usrdeliv

	HasReceived, HasDropped, HasFilterAccept, HasOSDrop, HasDelivered bool
}

// Option codes, from the spec's option tables.
const (
	optEndOfOpt = 0
	optComment  = 1

	optSHBHardware = 2
	optSHBOS       = 3
	optSHBUserAppl = 4

	optIfName        = 2
	optIfDescription = 3
	optIfTSResol     = 9
	optIfFilter      = 11
	optIfOS          = 12

	optEPBFlags = 2

	optISBStartTime    = 2
	optISBEndTime      = 3
	optISBIfRecv       = 4
	optISBIfDrop       = 5
	optISBFilterAccept = 6
	optISBOSDrop       = 7
	optISBUsrDeliv     = 8
)

const (
	byteOrderMagic uint32 = 0x1A2B3C4D

	// tsResolNano is if_tsresol for 10^-9 s.
	tsResolNano = 9

	// maxOptLen is the largest value an option's 16-bit length can hold.
	maxOptLen = 0xFFFF

	// maxBlockLen bounds what Reader buffers. Real blocks are at most a
	// 256 KiB snap length plus options, so anything this big is garbage.
	maxBlockLen = 16 << 20
)

// pad4 rounds n up to a multiple of 4.
func pad4(n int) int { return (n + 3) &^ 3 }

// epbFlags builds epb_flags. Values wider than their field are masked so
// they cannot spill into the neighbouring bits.
func epbFlags(p *Packet) uint32 {
	return uint32(p.Direction&0x3) | uint32(p.Reception&0x7)<<2
}
