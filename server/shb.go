package server

import (
	"fmt"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/pcapng"
	"github.com/packetflix/packetflix/session"
	"gopkg.in/yaml.v3"
)

// header is the start of a session's stream: the SHB, whose comment is
// targetComment, and an IDB per interface, each described by desc
// (ifDescription; the IDBs of interfaces that join later get the same).
func (s *Server) header(req *captureRequest, netns uint64, ifaces []capture.Interface, desc string) []byte {
	hdr := pcapng.AppendSHB(nil, pcapng.SectionInfo{
		OS:       s.cfg.OS,
		UserAppl: Name + " " + s.cfg.Version,
		Comment:  targetComment(req, netns, s.cfg.NodeName),
	})
	for _, f := range ifaces {
		hdr = pcapng.AppendIDB(hdr, session.IDB(f, desc))
	}
	return hdr
}

// targetMarker starts the capture target block of an SHB comment; csharg
// finds the block by these two lines and replaces it (clients.md).
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
// is used when the reference names no node; netns names a target given by
// netns alone.
func targetComment(req *captureRequest, netns uint64, node string) string {
	ti := targetInfo{
		ContainerName: fmt.Sprintf("netns:%d", netns),
		ContainerType: "netns",
		NodeName:      node,
		CaptureFilter: req.Filter,
		NoPromiscuous: req.Chaste,
	}
	if c := req.Container; c != nil {
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
	y, err := yaml.Marshal(ti)
	if err != nil {
		// Strings and a bool cannot fail to marshal; should yaml.v3 ever
		// disagree, the marker alone still tells csharg what to replace.
		return targetMarker
	}
	return targetMarker + string(y)
}

// ifDescription is the if_description of every IDB of a session: the
// netns inode, and the target's name when the request named one. These
// were fields of our SHB block once; csharg replaces that block, but it
// passes IDBs through untouched.
func ifDescription(req *captureRequest, netns uint64) string {
	if c := req.Container; c != nil && c.Name != "" {
		return fmt.Sprintf("netns %d, target %s", netns, c.Name)
	}
	return fmt.Sprintf("netns %d", netns)
}
