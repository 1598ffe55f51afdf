// Package flows tells who talks to whom: a bounded flow table, fed with
// captured packets, that reports its flows in Skydive's flow JSON and
// answers the Gremlin subset Skydive's users type most (G.V(), G.Flows(),
// Has, Limit, Count). It knows no HTTP: server serves its answers.
//
// A Table counts the flows of one capture target (Config.NodeTID). It is
// fed through a Sink, the capture.Sink of a session, either alone (a
// flows-only session, whose rings need only Snaplen bytes of each packet)
// or next to the pcapng stream through Tee, whose flow side can neither
// fail nor refuse a packet. Readers take Flows (a snapshot) or Updated
// (what changed since the previous Updated, for a subscriber's push).
//
// # Flows and directions
//
// A flow is a conversation on one interface: for IP, the addresses, the
// IP protocol, and the ports (TCP, UDP, SCTP) or ICMP type, code and
// identifier; for a frame without IP, its MACs and EtherType. VLAN IDs and
// the interface keep otherwise equal flows apart. MACs are not part of an
// IP flow's key (Skydive's "L3 preferred" key mode): Link shows those of
// the flow's first packet. The key is direction-independent, so both
// directions count in one flow.
//
// A is the initiator: the source of the flow's first packet, except when
// that packet is an answer (a TCP SYN-ACK, an ICMP echo reply), whose
// destination is then A. A capture that starts mid-connection thus takes
// the first side it hears as A. ICMP request and reply share Skydive's
// ICMP type (ECHO), so they make one flow.
//
// TrackingID is a SHA-1 of the direction-independent addresses, ports,
// protocols and ICMP fields only, without interface, VLAN, MACs or
// NodeTID: the same packets seen on several interfaces or targets, or
// with different link-layer headers, share it. UUID is a SHA-1 of
// NodeTID, the whole key, the flow's start and its creation number, unique
// per flow. Both are computed when flows are read.
//
// Metric and LastUpdateMetric count packets and wire lengths (the
// capture's Packet.Length, not the snaplen), with Start and Last in Unix
// seconds as in Skydive's API documentation; the flow's own Start and
// Last are in Unix milliseconds, as later Skydive releases give them.
// Flow.Interface, the interface's name, is our only field Skydive does not
// have.
//
// # Bounds
//
// New allocates all of a table: a slab of MaxFlows flows (SlotSize bytes
// each) and an open-addressing index over it. At MaxFlows a new flow
// evicts the flow idle longest (an LRU list threaded through the slab,
// O(1)); flows idle longer than IdleTimeout end at the next Sweep (a Sink
// sweeps from Idle, once a second) or at their next packet. Stats counts
// flows tracked, created, evicted and expired, for Prometheus.
//
// Packet allocates nothing, for packets of known flows and for new ones
// alike: the key is a fixed-size array, the slab holds no pointers, and
// strings (addresses, LayersPath, IDs) are built only when flows are read.
// A test asserts this with testing.AllocsPerRun.
//
// # Decoding
//
// The decoder is written by hand over the byte slice: Ethernet with up to
// four 802.1Q/802.1ad tags (plus the tag the kernel took out of the frame,
// which a Sink puts back in front), raw IP, Linux cooked headers (SLL,
// SLL2), IPv4 (options; ports from first fragments only), IPv6 (hop-by-hop,
// routing, fragment, destination options and AH headers skipped), TCP,
// UDP, SCTP, ICMPv4 and ICMPv6. gopacket's DecodingLayerParser was the
// alternative: it can run without allocating, but needs a layer struct per
// protocol and decodes every field of them, where the table needs a few
// bytes at known offsets, and its IPv6 hop-by-hop and destination options
// allocate per option. The
// tests check the decoder against gopacket's, whose layer names LayersPath
// uses: "Ethernet/Dot1Q/IPv4/UDP", "IPv6/ICMPv6/ICMPv6Echo". Radiotap and
// other link types are not decoded (Stats.Undecoded).
//
// # Queries
//
// ParseQuery and Evaluate answer POST /api/topology's GremlinQuery and
// /api/capture's node selection (G.V().Has('Name', 'X')): G.V() over the
// caller's Nodes, G.Flows() over its flows. Anything outside the subset
// is a *QueryError naming the step and its position ("unsupported step
// \"Out\" at 6"), for a 400 answer.
//
// # Concurrency
//
// Packet runs on the capture's goroutine; every other Table method may be
// called from any goroutine. One mutex guards a table; Packet holds it for
// a lookup and a few counter updates, readers for a copy of the slab
// entries they report.
package flows
