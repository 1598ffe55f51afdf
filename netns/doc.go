// Package netns finds Linux network namespaces by inode, path or process,
// holds them open so they cannot change identity between check and use, and
// runs short functions inside them. Do is the only place in packetflix that
// calls setns.
//
// It imports nothing of container engines, HTTP or gRPC: which namespaces
// are capture targets, and what they are called, is package discovery's
// business.
//
// # Identity and staleness
//
// A namespace is identified by the device and inode of its nsfs file (ID).
// Clients send only the inode; a NetNS, once open, pins the namespace, so
// the namespace captured is the one that was checked. A reference through a
// process is stale when that process has exited or moved (CheckProcess
// compares its start time, field 22 of /proc/PID/stat).
//
// # Threads
//
// A network namespace belongs to an OS thread. Do runs its function on a
// fresh locked thread and never hands a thread back to the scheduler unless
// it returned to its own namespace; see Do.
package netns
