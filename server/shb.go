package server

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/pcapng"
	"github.com/packetflix/packetflix/session"
	"gopkg.in/yaml.v3"
)

// header is the start of a session's stream: the SHB, whose comment is
// targetComment, and an IDB per interface, each made by describe (the
// IDBs of interfaces that join later are made the same way).
func (s *Server) header(req *captureRequest, tgs []capture.TargetInfo, ifaces []capture.Interface, describe func(capture.Interface) pcapng.Interface) []byte {
	hdr := pcapng.AppendSHB(nil, pcapng.SectionInfo{
		OS:       s.cfg.OS,
		UserAppl: Name + " " + s.cfg.Version,
		Comment:  targetComment(req, tgs, s.cfg.NodeName),
	})
	for _, f := range ifaces {
		hdr = pcapng.AppendIDB(hdr, describe(f))
	}
	return hdr
}

// describer returns how a session's interfaces are described in IDBs:
// if_description names the netns and the target (ifDescription); in a
// stream of several targets, if_name is TARGET/IFNAME, which stays unique
// when two targets have an eth1 (a stream of one target keeps the plain
// interface name, byte for byte as before).
//
// excluded gives the service's own endpoints that a target's capture
// leaves out (capture.Session.Excluded); the IDB's comment names them
// (if_filter keeps the user's expression alone).
func describer(req *captureRequest, tgs []capture.TargetInfo, excluded func(ti int) []netip.AddrPort) func(capture.Interface) pcapng.Interface {
	refs := req.Targets
	multi := len(tgs) > 1
	return func(f capture.Interface) pcapng.Interface {
		idb := session.IDB(f, ifDescription(refs[f.Target], f.NetNS))
		if multi {
			idb.Name = tgs[f.Target].Name + "/" + f.Name
		}
		if excluded != nil {
			idb.Comment = ownComment(excluded(f.Target))
		}
		return idb
	}
}

// ownComment says which of the service's own connections a capture
// leaves out; "" when none.
func ownComment(eps []netip.AddrPort) string {
	if len(eps) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString("packetflix leaves out its own connections here: TCP to and from ")
	for i, e := range eps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.String())
	}
	b.WriteString(" (own=include keeps them)")
	return b.String()
}

// targetMarker starts the capture target block of an SHB comment; csharg
// finds the block by these two lines and replaces it (docs/pcapng.md, "Why").
const targetMarker = "---\n# capture target information\n"

// targetInfo is the capture target block of the SHB comment. Its fields,
// their order, tags and omitempty rules are those of the block csharg
// writes, and yaml.v3 is what csharg marshals it with, so that a client
// that does not rewrite the comment sees the very bytes csharg would
// have written. Anything of ours beyond these fields goes into the IDBs
// (ifDescription): see docs/pcapng.md.
type targetInfo struct {
	ContainerName string       `yaml:"container-name"`
	ContainerType string       `yaml:"container-type"`
	NodeName      string       `yaml:"node-name"`
	Cluster       *clusterInfo `yaml:"cluster,omitempty"`
	CaptureFilter string       `yaml:"capture-filter,omitempty"`
	NoPromiscuous bool         `yaml:"no-promiscuous-mode,omitempty"`
}

type clusterInfo struct {
	UID string `yaml:"uid,omitempty"`
}

// targetComment is the SHB comment describing the capture target: the
// marker and the YAML of targetInfo, with no closing "---", so that the
// block runs to the end of the comment. csharg removes a block from the
// marker to the next "\n---" line, or to the end when there is none; with
// a "\n---" after the block it leaves the block's tail behind (it takes the
// end's offset from the wrong place), in every file its users save. node
// is used when the reference names no node; a target given by netns alone
// is named netns:INODE. A stream of several targets lists them all in the
// one block: container-name is their names joined by ", ", container-type
// their types (one type when all share it), so that csharg's editing rule
// still finds and replaces exactly this block (docs/pcapng.md).
func targetComment(req *captureRequest, tgs []capture.TargetInfo, node string) string {
	ti := targetInfo{NodeName: node, CaptureFilter: req.Filter, NoPromiscuous: req.Chaste}
	if len(tgs) > 1 {
		refs := req.Targets
		var names, types []string
		for i, t := range tgs {
			names = append(names, t.Name)
			if typ := refs[i].kind(); !slices.Contains(types, typ) {
				types = append(types, typ)
			}
		}
		ti.ContainerName, ti.ContainerType = strings.Join(names, ", "), strings.Join(types, ", ")
	} else {
		ti.ContainerName, ti.ContainerType = fmt.Sprintf("netns:%d", tgs[0].NetNS), "netns"
		if c := req.Targets[0].Container; c != nil {
			if c.Name != "" {
				ti.ContainerName = c.Name
			}
			if c.Type != "" {
				ti.ContainerType = c.Type
			}
			if c.NodeName != "" {
				ti.NodeName = c.NodeName
			}
			if c.Cluster != nil {
				ti.Cluster = &clusterInfo{UID: c.Cluster.UID}
			}
		}
	}
	y, err := yaml.Marshal(ti)
	if err != nil {
		// Strings and a bool cannot fail to marshal; should yaml.v3 ever
		// disagree, the marker alone still tells csharg what to replace.
		return targetMarker
	}
	return targetMarker + string(y)
}

// ifDescription is the if_description of the IDBs of a target's
// interfaces: the netns inode, and the target's name when the request
// named one. These were fields of our SHB block once; csharg replaces that
// block, but it passes IDBs through untouched.
func ifDescription(t targetRef, netns uint64) string {
	if c := t.Container; c != nil && c.Name != "" {
		return fmt.Sprintf("netns %d, target %s", netns, c.Name)
	}
	return fmt.Sprintf("netns %d", netns)
}
