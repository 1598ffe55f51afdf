package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/netns"
)

// Limits on request parameters; beyond them a request is refused rather
// than passed to libpcap or the JSON decoder.
const (
	maxFilterLen    = 8 << 10
	maxContainerLen = 16 << 10
	maxIfNameLen    = 15 // IFNAMSIZ - 1
	maxInterfaces   = 256
	// maxTargets bounds the targets of one request (several netns=, or a
	// container= array); the session's interface and ring memory caps
	// count them all together.
	maxTargets = 16
	// maxBufferMiB bounds buffer=; the session's and the service's ring
	// memory caps (--max-session-ring-memory, --max-ring-memory) decide
	// below it.
	maxBufferMiB = 1024
)

// The headers csharg sends next to each query parameter; a header wins over
// the parameter because some proxies drop query strings.
const (
	hdrContainer = "Clustershark-Container"
	hdrNif       = "Clustershark-Nif"
	hdrFilter    = "Clustershark-Filter"
	hdrChaste    = "Clustershark-Chaste"
	// hdrPeer is ours (peer=); csharg sends no such thing.
	hdrPeer = "Packetflix-Peer"
	hdrOwn  = "Packetflix-Own"
)

// Container is the capture target reference of the container= parameter
// (its forms: docs/openapi.yaml). Unknown fields are ignored.
type Container struct {
	NetNS      uint64   `json:"netns,omitempty"`
	PID        int      `json:"pid,omitempty"`
	StartTime  uint64   `json:"starttime,omitempty"`
	Name       string   `json:"name,omitempty"`
	Prefix     *string  `json:"prefix,omitempty"`
	Type       string   `json:"type,omitempty"`
	NodeName   string   `json:"node-name,omitempty"`
	Cluster    *Cluster `json:"cluster,omitempty"` // nil unless the reference held a cluster object
	Interfaces []string `json:"network-interfaces,omitempty"`
}

// Cluster is the Kubernetes cluster of a target, as csharg sends it. Only
// UID reaches the SHB comment; Context is the client's own name for the
// cluster and means nothing to us.
type Cluster struct {
	Context string `json:"context"`
	UID     string `json:"uid,omitempty"`
}

// UnmarshalJSON decodes a Container. A cluster that is not an object (a
// string, as we once took) is ignored, as if absent: it only feeds the SHB
// comment, and is no reason to refuse a capture.
func (c *Container) UnmarshalJSON(b []byte) error {
	type plain Container // no UnmarshalJSON method: no recursion
	var in struct {
		*plain
		Cluster json.RawMessage `json:"cluster"` // shadows plain's
	}
	in.plain = (*plain)(c)
	if err := json.Unmarshal(b, &in); err != nil {
		// Name Container, not the decoding struct, in errors.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			te.Field = strings.TrimPrefix(te.Field, "plain.")
			if te.Field == "" {
				te.Type = reflect.TypeFor[Container]()
			}
		}
		return err
	}
	c.Cluster = nil
	if len(in.Cluster) > 0 && in.Cluster[0] == '{' {
		var cl Cluster
		if err := json.Unmarshal(in.Cluster, &cl); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				te.Field = strings.TrimSuffix("cluster."+te.Field, ".")
			}
			return err
		}
		c.Cluster = &cl
	}
	return nil
}

// targetRef is one target of a request.
type targetRef struct {
	NetNS      uint64
	Container  *Container // nil for a netns= target
	Interfaces []string   // nil: all
	NifGiven   bool
}

// name is what a stream calls the target: the container's name, or
// netns:INODE.
func (t targetRef) name(ino uint64) string {
	if t.Container != nil && t.Container.Name != "" {
		return t.Container.Name
	}
	return fmt.Sprintf("netns:%d", ino)
}

// kind is the target's type: the reference's, or netns.
func (t targetRef) kind() string {
	if t.Container != nil && t.Container.Type != "" {
		return t.Container.Type
	}
	return "netns"
}

// captureRequest is a parsed /capture request.
type captureRequest struct {
	// Targets holds at least one target: netns= (repeated) or container=
	// (a JSON array for several); with peer=1, open adds the netns that
	// veth peers bring (withPeers).
	Targets []targetRef
	Filter  string
	Chaste  bool
	// Peer (peer=1) adds the other end of every selected veth interface,
	// wherever it lives (withPeers).
	Peer bool
	// OwnInclude (own=include) keeps the service's own connections in a
	// capture of a netns they pass through; by default they are left out.
	OwnInclude bool
	Snaplen    int
	// Buffer is the kernel ring size per interface the client asked for
	// (buffer=, in MiB as dumpcap's -B), in bytes; 0: the service's
	// --ring-size.
	Buffer int64
	// Limits: the session ends normally after Count packets or Duration;
	// 0 means none.
	Count    int64
	Duration time.Duration
}

// requestError is an error in the request itself; it closes the WebSocket
// with 1008 and its text as the reason.
type requestError string

func (e requestError) Error() string { return string(e) }

func badRequest(format string, args ...any) error {
	return requestError(fmt.Sprintf(format, args...))
}

// param returns the header value when the header is present (even empty),
// else the query value; ok tells whether either was present.
func param(r *http.Request, name, header string) (v string, ok bool) {
	if vs, ok := r.Header[header]; ok {
		if len(vs) == 0 {
			return "", true
		}
		return vs[0], true
	}
	q := r.URL.Query()
	if vs, ok := q[name]; ok {
		if len(vs) == 0 {
			return "", true
		}
		return vs[0], true
	}
	return "", false
}

// parseCaptureRequest reads the query parameters and Clustershark-*
// headers of a /capture request.
func parseCaptureRequest(r *http.Request) (*captureRequest, error) {
	req := &captureRequest{Snaplen: capture.DefaultSnaplen}
	q := r.URL.Query()

	cjson, hasContainer := param(r, "container", hdrContainer)
	nsTexts, hasNetns := q["netns"], q.Has("netns")
	switch {
	case hasContainer && hasNetns:
		return nil, badRequest("give either netns or container, not both")
	case hasContainer:
		cs, err := parseContainers(cjson)
		if err != nil {
			return nil, err
		}
		for _, c := range cs {
			req.Targets = append(req.Targets, targetRef{NetNS: c.NetNS, Container: c, Interfaces: c.Interfaces})
		}
	case hasNetns:
		if len(nsTexts) > maxTargets {
			return nil, badRequest("more than %d targets in one request", maxTargets)
		}
		for _, nsText := range nsTexts {
			ino, err := strconv.ParseUint(strings.TrimSpace(nsText), 10, 64)
			if err != nil {
				return nil, badRequest("netns must be a network namespace inode number, got %q", clip(nsText, 24))
			}
			if err := netns.ValidInode(ino); err != nil {
				return nil, badRequest("netns %d is not a valid network namespace inode", ino)
			}
			if slices.ContainsFunc(req.Targets, func(t targetRef) bool { return t.NetNS == ino }) {
				return nil, badRequest("netns %d is named twice", ino)
			}
			req.Targets = append(req.Targets, targetRef{NetNS: ino})
		}
	default:
		return nil, badRequest("missing netns or container parameter")
	}

	if nif, ok := param(r, "nif", hdrNif); ok {
		ifs, err := parseNif(nif)
		if err != nil {
			return nil, err
		}
		// nif= applies to every target.
		for i := range req.Targets {
			req.Targets[i].Interfaces, req.Targets[i].NifGiven = ifs, true
		}
	} else {
		for i, t := range req.Targets {
			if t.Interfaces != nil {
				ifs, err := checkIfNames(t.Interfaces)
				if err != nil {
					return nil, err
				}
				req.Targets[i].Interfaces = ifs
			}
		}
	}

	if f, ok := param(r, "filter", hdrFilter); ok {
		if len(f) > maxFilterLen {
			return nil, badRequest("capture filter is longer than %d bytes", maxFilterLen)
		}
		req.Filter = strings.TrimSpace(f)
	}
	_, req.Chaste = param(r, "chaste", hdrChaste)
	if v, ok := param(r, "peer", hdrPeer); ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "1", "true", "yes", "":
			req.Peer = true
		case "0", "false", "no":
		default:
			return nil, badRequest("peer must be 1 or 0, got %q", clip(v, 24))
		}
	}

	if v, ok := param(r, "own", hdrOwn); ok {
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "include":
			req.OwnInclude = true
		case "exclude", "":
		default:
			return nil, badRequest("own must be include or exclude, got %q", clip(v, 24))
		}
	}
	if s := q.Get("snaplen"); q.Has("snaplen") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 || n > capture.DefaultSnaplen {
			return nil, badRequest("snaplen must be a number from 1 to %d, got %q", capture.DefaultSnaplen, clip(s, 24))
		}
		req.Snaplen = n
	}
	if v := q.Get("buffer"); q.Has("buffer") {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 || n > maxBufferMiB {
			return nil, badRequest("buffer must be a ring size in MiB from 1 to %d, got %q", maxBufferMiB, clip(v, 24))
		}
		req.Buffer = int64(n) << 20
	}
	if v := q.Get("count"); q.Has("count") {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 1 {
			return nil, badRequest("count must be a positive number of packets, got %q", clip(v, 24))
		}
		req.Count = n
	}
	if v := q.Get("duration"); q.Has("duration") {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		if err != nil || d <= 0 {
			return nil, badRequest("duration must be a positive duration such as 30s or 5m, got %q", clip(v, 24))
		}
		req.Duration = d
	}
	return req, nil
}

// parseContainers decodes container=: one reference (any form
// docs/openapi.yaml gives for the container parameter), or a JSON array
// of them, one per target.
func parseContainers(s string) ([]*Container, error) {
	t := strings.TrimSpace(s)
	if !strings.HasPrefix(t, "[") {
		c, err := parseContainer(s)
		if err != nil {
			return nil, err
		}
		return []*Container{c}, nil
	}
	if len(s) > maxContainerLen*maxTargets {
		return nil, badRequest("container list is longer than %d bytes", maxContainerLen*maxTargets)
	}
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(t), &raws); err != nil {
		return nil, badRequest("container is not a valid JSON array: %s", clip(jsonErr(err), 60))
	}
	switch {
	case len(raws) == 0:
		return nil, badRequest("container list is empty")
	case len(raws) > maxTargets:
		return nil, badRequest("more than %d targets in one request", maxTargets)
	}
	out := make([]*Container, 0, len(raws))
	for i, raw := range raws {
		if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
			return nil, badRequest("container %d of the list is not a JSON object", i+1)
		}
		c, err := parseContainer(string(raw))
		if err != nil {
			return nil, badRequest("container %d: %s", i+1, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// parseContainer decodes the container= JSON (any form docs/openapi.yaml
// gives for the container parameter; resolve decides what to do with it).
func parseContainer(s string) (*Container, error) {
	if len(s) > maxContainerLen {
		return nil, badRequest("container reference is longer than %d bytes", maxContainerLen)
	}
	var c Container
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if err := dec.Decode(&c); err != nil {
		return nil, badRequest("container is not valid JSON: %s", clip(jsonErr(err), 60))
	}
	if dec.More() {
		return nil, badRequest("container holds trailing data after the JSON object")
	}
	if c.PID < 0 {
		return nil, badRequest("container pid %d is negative", c.PID)
	}
	if c.Name != "" {
		// The name decides; a netns that cannot be one is a placeholder.
		if netns.ValidInode(c.NetNS) != nil {
			c.NetNS = 0
		}
		return &c, nil
	}
	if c.NetNS == 0 {
		return nil, badRequest("container reference has neither netns nor name")
	}
	if err := netns.ValidInode(c.NetNS); err != nil {
		return nil, badRequest("container netns %d is not a valid network namespace inode", c.NetNS)
	}
	return &c, nil
}

func jsonErr(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at offset %d", se.Error(), se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	return err.Error()
}

// parseNif splits a slash-separated interface list (names may contain
// commas, never slashes). Empty, "all" and "any" mean every interface.
func parseNif(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "all" || s == "any" {
		return nil, nil
	}
	return checkIfNames(strings.Split(s, "/"))
}

// checkIfNames validates interface names as the kernel would
// (dev_valid_name) and drops duplicates. "all"/"any" in a list mean every
// interface, as csharg sends "all" when the user named none.
func checkIfNames(names []string) ([]string, error) {
	if len(names) > maxInterfaces {
		return nil, badRequest("more than %d interfaces requested", maxInterfaces)
	}
	var out []string
	for _, n := range names {
		if n == "all" || n == "any" {
			return nil, nil
		}
		if n == "" {
			return nil, badRequest("empty network interface name in nif")
		}
		if len(n) > maxIfNameLen || n == "." || n == ".." || strings.ContainsFunc(n, func(r rune) bool {
			return r == '/' || r == ':' || unicode.IsSpace(r) || r < 0x20
		}) {
			return nil, badRequest("%q is not a valid network interface name", clip(n, 20))
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// clip shortens user input quoted in an error so that reasons stay short.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return truncateUTF8(s, n) + "..."
}
