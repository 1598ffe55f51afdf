package server

import (
	"fmt"
	"strconv"
	"strings"
)

// targetComment is the SHB comment describing the capture target, in the
// YAML form the csharg client writes (clients.md): csharg replaces this
// block with its own, and other clients show ours as is.
func targetComment(req *captureRequest, netns uint64, ifaces []string, node string) string {
	var b strings.Builder
	b.WriteString("---\n# capture target information\n")
	name, typ := fmt.Sprintf("netns:%d", netns), "netns"
	if c := req.Container; c != nil {
		if c.Name != "" {
			name = c.Name
		}
		if c.Type != "" {
			typ = c.Type
		}
		if c.NodeName != "" {
			node = c.NodeName
		}
	}
	kv := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, strconv.Quote(v)) }
	kv("container-name", name)
	kv("container-type", typ)
	kv("node-name", node)
	if c := req.Container; c != nil && c.Cluster != "" {
		kv("cluster", c.Cluster)
	}
	fmt.Fprintf(&b, "netns: %d\n", netns)
	b.WriteString("network-interfaces:\n")
	for _, n := range ifaces {
		fmt.Fprintf(&b, "  - %s\n", strconv.Quote(n))
	}
	if req.Filter != "" {
		kv("capture-filter", req.Filter)
	}
	fmt.Fprintf(&b, "no-promiscuous-mode: %t\n", req.Chaste)
	b.WriteString("---\n")
	return b.String()
}
