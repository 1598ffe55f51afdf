// Package discovery lists the capture targets of this host - containers of
// Docker, Podman and containerd, Kubernetes pods, processes with a network
// namespace of their own, and process-less bind-mounted namespaces - named
// the way GhostWire's /mobyshark list names them, so that csharg, its
// Wireshark plugin and containerlab work with no other service installed.
// It also holds the client of an external GhostWire service.
//
// Every container-engine, gRPC and HTTP client import of packetflix lives
// here; namespaces themselves are opened through package netns.
//
// # Rules
//
// Discoverer's doc gives the listing rules (which targets a namespace
// yields, and how names are made unique); docs/discovery.md explains them
// with examples.
package discovery
