// Package capture is the packet capture engine: it opens one AF_PACKET
// TPACKET_V3 ring per interface inside a network namespace, with the filter
// attached before any packet can arrive, and feeds every packet, with its
// interface, direction and nanosecond timestamp, to a Sink. It knows nothing
// about HTTP or pcapng.
//
// # Counters
//
// Every interface of a session has these counters (Stats), counted from
// the moment its capture began, for this session only:
//
//   - Received: packets the filter accepted, as the kernel counts them
//     (PACKET_STATISTICS tp_packets, which includes the ones it dropped).
//   - KernelDropped: packets the kernel dropped because the ring was full
//     (tp_drops): the client was slower than the traffic.
//   - Delivered: packets the Sink took (its WritePacket returned nil); for
//     the server, packets written to the stream. It advances a ring block
//     at a time (no per-packet atomic); until then those packets are
//     Pending.
//   - Skipped: packets that reached the ring but were not delivered:
//     packets older than the capture found in a ring reused from the Pool,
//     the packet the Sink refused (the session was ending) and the rest of
//     its block, and the packets still in the ring when the capture ended.
//   - Dropped = KernelDropped + Skipped: received, never to be delivered.
//   - Pending: in the ring, not yet reached by the reader.
//
// Received = Delivered + Dropped + Pending holds at every Stats call, and
// once an interface's capture has ended Pending is 0: Received = Delivered
// + Dropped, exactly, which is what an ISB reports. Stats reads the kernel
// counters at each call and Run reads them every second from its own
// goroutine, so the counters advance while the reader is blocked in a Sink
// whose client has stalled (that is when the kernel drops). A session's
// final counters are recorded before its ring is closed or handed to the
// Pool, so they are never read from a ring another session has reused.
//
// # Link types
//
// Interfaces get the link type libpcap gives them (map_arphrd_to_dlt):
// Ethernet for Ethernet and loopback, RAW for tun, wireguard, ipip and sit,
// radiotap for monitor interfaces. A hardware type libpcap has no link
// type for is read as libpcap does, from the network header (SOCK_DGRAM),
// and each packet gets a Linux cooked header (LINKTYPE_LINUX_SLL2, 20
// bytes: protocol, ifindex, hardware type, packet type, address), written
// into the ring's headroom in front of the packet, so it costs no
// allocation or copy.
//
// # Filter compilation
//
// Filters are compiled by libpcap in a child process, this binary
// re-executed through /proc/self/exe: every program using the package calls
// MaybeRunFilterCompiler first thing in main (test binaries in TestMain).
// The child limits itself to FilterCPUBudget of CPU (1 s) and
// FilterMemoryBudget of address space (256 MiB) before it reads the
// filter, and is killed after FilterCompileTimeout (5 s) or when the
// OpenContext ctx ends and no other session waits for the same compile. A
// filter over budget fails with ErrFilterTooComplex. The child runs in a
// new, empty network namespace, so host names are never resolved over the
// network (only /etc/hosts answers) and fail at once with ErrBadFilter.
// Compiles share no lock: max(4, CPUs), at most 16, run at once, one per
// (filter, link type, snaplen), and the last 64 results are cached. A
// child costs about 10 ms; see docs/reliability.md.
//
// # Threads and namespaces
//
// Open sets up the sockets inside the target network namespace (on a
// locked thread, through netns.Do); from then on the sockets belong to that
// namespace and are read by one ordinary goroutine per session, which
// sleeps in the Go netpoller on an epoll instance holding all of them and
// hands their packets to the Sink in timestamp order (within
// ReorderWindow). At
// most MaxSetupThreads rings of one capture, and 16 in the process, are set
// up at once, so a netns with many interfaces costs a bounded number of
// locked threads.
//
// # Ring memory
//
// Each ring locks RingOptions.Size() bytes of kernel memory that no cgroup
// accounts for. Config.MaxInterfaces and Config.MaxRingMemory cap one
// capture; a Budget caps a whole service, counting idle rings in a Pool,
// which gives them back before a capture is refused. A capture over a cap
// fails with a *LimitError before any ring is opened.
//
// # Pooled rings and namespaces
//
// A packet socket holds its network namespace, so a ring kept in the Pool
// would keep a deleted container's namespace, and its interfaces (the veth
// peer outside, names a lab tool wants back), alive for the pool's TTL.
// The Pool lets go at once instead: while it holds idle rings, one watcher
// goroutine waits in poll(2) for a change to the mount table (our
// /proc/self/mountinfo and, if PID 1 is in another mount namespace, PID
// 1's: `ip netns del`, Docker removing its netns mount) and for the exit
// of one process per pooled namespace that has no bind mount (a pidfd).
// On each it scans /proc (netns.Finder.LiveHolders) and closes the idle
// rings of namespaces that nothing but us holds; the kernel then frees the
// namespace. Measured: the veth peer is gone 25-45 ms after `ip netns del`
// or after the namespace's last process was killed (see
// docs/reliability.md). A namespace held only by threads, or one whose
// last process left it by setns(2) without exiting, is looked at again
// every second. An empty pool runs no goroutine.
//
// # Ownership
//
// Each ring is read by the session's reader only, the goroutine that
// called Session.Run; once it has stopped reading a ring, the ring is
// closed or handed to the Pool, before Run returns. Run's helpers end
// before Run returns: the counter poller, a link watcher per
// all-interfaces target, and an exclusion watcher per target when
// Config.Exclude is set.
package capture
