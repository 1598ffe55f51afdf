package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/netns"
)

func request(query string, hdr map[string]string) *http.Request {
	r := httptest.NewRequest("GET", "/capture?"+query, nil)
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	return r
}

func Test_parseCaptureRequest(t *testing.T) {
	for _, tc := range []struct {
		name  string
		query string
		hdr   map[string]string
		want  *captureRequest
		err   string
	}{
		{name: "netns", query: "netns=4026532000",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Snaplen: capture.DefaultSnaplen}},
		{name: "nif list", query: "netns=4026532000&nif=eth0/eth1,x/eth0",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000, Interfaces: []string{"eth0", "eth1,x"}, NifGiven: true}}, Snaplen: capture.DefaultSnaplen}},
		{name: "nif all", query: "netns=4026532000&nif=all",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000, NifGiven: true}}, Snaplen: capture.DefaultSnaplen}},
		{name: "filter chaste snaplen", query: "netns=4026532000&filter=udp+port+53&chaste=&snaplen=96",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Filter: "udp port 53", Chaste: true, Snaplen: 96}},
		{name: "csharg form", query: "chaste=&container=" + url.QueryEscape(`{"netns":4026532000,"network-interfaces":["eth0"],"name":"web","type":"docker","node-name":"n1","extra":true}`) + "&nif=eth0",
			hdr: map[string]string{
				hdrContainer: `{"netns":4026532001,"network-interfaces":["eth0","eth1"],"name":"web","type":"docker"}`,
				hdrNif:       "eth1", hdrChaste: "", hdrFilter: "tcp",
			},
			want: &captureRequest{Filter: "tcp", Chaste: true, Snaplen: capture.DefaultSnaplen, Targets: []targetRef{{NetNS: 4026532001, Interfaces: []string{"eth1"}, NifGiven: true,
				Container: &Container{NetNS: 4026532001, Name: "web", Type: "docker", Interfaces: []string{"eth0", "eth1"}}}}}},
		{name: "container interfaces when no nif", query: "container=" + url.QueryEscape(`{"netns":4026532000,"network-interfaces":["eth3"]}`),
			want: &captureRequest{Snaplen: capture.DefaultSnaplen, Targets: []targetRef{{NetNS: 4026532000, Interfaces: []string{"eth3"},
				Container: &Container{NetNS: 4026532000, Interfaces: []string{"eth3"}}}}}},
		{name: "missing", query: "", err: "missing netns or container parameter"},
		{name: "both", query: "netns=4026532000&container=%7B%7D", err: "give either netns or container, not both"},
		{name: "negative netns", query: "netns=-1", err: "netns must be a network namespace inode number"},
		{name: "netns too big", query: "netns=4294967296", err: "netns 4294967296 is not a valid"},
		{name: "empty nif element", query: "netns=4026532000&nif=eth0//eth1", err: "empty network interface name"},
		{name: "long nif", query: "netns=4026532000&nif=abcdefghijklmnop", err: `"abcdefghijklmnop" is not a valid network interface name`},
		{name: "netns repeated", query: "netns=4026532000&netns=4026532001&nif=eth0",
			want: &captureRequest{Snaplen: capture.DefaultSnaplen,
				Targets: []targetRef{{NetNS: 4026532000, Interfaces: []string{"eth0"}, NifGiven: true}, {NetNS: 4026532001, Interfaces: []string{"eth0"}, NifGiven: true}}}},
		{name: "netns twice", query: "netns=4026532000&netns=4026532000", err: "netns 4026532000 is named twice"},
		{name: "netns too many", query: strings.Repeat("netns=4026532000&", 17), err: "more than 16 targets in one request"},
		{name: "container array", query: "container=" + url.QueryEscape(`[{"name":"r1","network-interfaces":["eth1"]},{"netns":4026532005,"type":"docker","name":"r2"}]`),
			want: &captureRequest{Snaplen: capture.DefaultSnaplen, Targets: []targetRef{{Container: &Container{Name: "r1", Interfaces: []string{"eth1"}}, Interfaces: []string{"eth1"}},
				{NetNS: 4026532005, Container: &Container{NetNS: 4026532005, Type: "docker", Name: "r2"}}}}},
		{name: "container array empty", query: "container=" + url.QueryEscape(`[]`), err: "container list is empty"},
		{name: "container array bad element", query: "container=" + url.QueryEscape(`[{"name":"r1"},{"pid":-1,"name":"x"}]`), err: "container 2: container pid -1 is negative"},
		{name: "peer", query: "netns=4026532000&peer=1",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Peer: true, Snaplen: capture.DefaultSnaplen}},
		{name: "peer header wins", query: "netns=4026532000&peer=1", hdr: map[string]string{hdrPeer: "0"},
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Snaplen: capture.DefaultSnaplen}},
		{name: "own include", query: "netns=4026532000&own=include",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, OwnInclude: true, Snaplen: capture.DefaultSnaplen}},
		{name: "own header", query: "netns=4026532000&own=include", hdr: map[string]string{hdrOwn: "exclude"},
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Snaplen: capture.DefaultSnaplen}},
		{name: "own bad", query: "netns=4026532000&own=yes", err: `own must be include or exclude, got "yes"`},
		{name: "peer bad", query: "netns=4026532000&peer=both", err: `peer must be 1 or 0, got "both"`},
		{name: "buffer", query: "netns=4026532000&buffer=32",
			want: &captureRequest{Targets: []targetRef{{NetNS: 4026532000}}, Snaplen: capture.DefaultSnaplen, Buffer: 32 << 20}},
		{name: "buffer zero", query: "netns=4026532000&buffer=0", err: "buffer must be a ring size in MiB from 1 to 1024"},
		{name: "buffer big", query: "netns=4026532000&buffer=1025", err: "buffer must be a ring size in MiB"},
		{name: "buffer bytes", query: "netns=4026532000&buffer=8MiB", err: "buffer must be a ring size in MiB"},
		{name: "snaplen words", query: "netns=4026532000&snaplen=lots", err: "snaplen must be a number"},
		{name: "snaplen big", query: "netns=4026532000&snaplen=262145", err: "snaplen must be a number"},
		{name: "long filter", query: "netns=4026532000&filter=" + strings.Repeat("x", maxFilterLen+1), err: "capture filter is longer than"},
		{name: "trailing json", query: "container=" + url.QueryEscape(`{"netns":4026532000} {}`), err: "container holds trailing data"},
		{name: "containerlab name only", query: "nif=eth1&container=" + url.QueryEscape(`{"network-interfaces":["eth1"],"name":"clab-lab-node1","type":"docker"}`),
			want: &captureRequest{Snaplen: capture.DefaultSnaplen, Targets: []targetRef{{Interfaces: []string{"eth1"}, NifGiven: true,
				Container: &Container{Name: "clab-lab-node1", Type: "docker", Interfaces: []string{"eth1"}}}}}},
		{name: "placeholder netns with name", query: "container=" + url.QueryEscape(`{"netns":0,"name":"n1","prefix":""}`),
			want: &captureRequest{Snaplen: capture.DefaultSnaplen, Targets: []targetRef{{Container: &Container{Name: "n1", Prefix: new(string)}}}}},
		{name: "no netns no name", query: "container=" + url.QueryEscape(`{"pid":1}`), err: "container reference has neither netns nor name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCaptureRequest(request(tc.query, tc.hdr))
			if tc.err != "" {
				var re requestError
				if !errors.As(err, &re) || !strings.HasPrefix(err.Error(), tc.err) {
					t.Fatalf("err = %v, want request error %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			for i, w := range tc.want.Targets {
				g := got.Targets[i].Container
				if (g == nil) != (w.Container == nil) || g != nil && !reflect.DeepEqual(*g, *w.Container) {
					t.Fatalf("target %d: container got %+v want %+v", i, g, w.Container)
				}
			}
		})
	}
}

func Test_closeFor(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: must be cut at a rune boundary
	for _, tc := range []struct {
		name   string
		err    error
		code   websocket.StatusCode
		reason string
	}{
		{"ended", nil, 1000, "capture ended"},
		{"shutdown", errShutdown, 1001, "service shutting down"},
		{"request", badRequest("netns must be a number"), 1008, "netns must be a number"},
		{"not found", &netns.OpError{Op: netns.OpLookup, NetNS: 4026532999, Err: netns.ErrNotFound}, 1008, "no network namespace with inode 4026532999"},
		{"stale", &netns.OpError{Op: netns.OpLookup, NetNS: 7, Err: fmt.Errorf("%w: process 5 is gone", netns.ErrStale)}, 1008, "stale container reference: process 5 is gone"},
		{"filter", &capture.OpError{Op: capture.OpSetFilter, NetNS: 7, Err: fmt.Errorf("%w: syntax error", capture.ErrBadFilter)}, 1008, "invalid capture filter: syntax error"},
		{"no interface", &capture.OpError{NetNS: 7, Interface: "eth9", Err: capture.ErrNoSuchInterface}, 1008, `no network interface "eth9" in netns 7`},
		{"filter host name", &capture.OpError{Op: capture.OpSetFilter, NetNS: 7, Err: fmt.Errorf("%w: host name %q is not looked up (no DNS); use an address", capture.ErrBadFilter, "example.invalid")}, 1008, `invalid capture filter: host name "example.invalid" is not looked up (no DNS); use an address`},
		{"filter too complex", &capture.OpError{Op: capture.OpSetFilter, NetNS: 7, Err: fmt.Errorf("%w: compiling it takes more than 1s of CPU time", capture.ErrFilterTooComplex)}, 1008, "capture filter too complex: compiling it takes more than 1s of CPU time"},
		{"gone", &capture.OpError{NetNS: 7, Interface: "eth0", Err: capture.ErrInterfaceGone}, 1000, `capture ended: interface "eth0" vanished from netns 7`},
		{"too many interfaces", &capture.OpError{Op: capture.OpOpenRing, NetNS: 7, Err: &capture.LimitError{Err: capture.ErrTooManyInterfaces, Want: 42, Max: 16}}, 1008, "capture of 42 interfaces is over --max-interfaces-per-session 16: choose fewer with nif"},
		{"session ring memory", &capture.OpError{Op: capture.OpOpenRing, NetNS: 7, Err: &capture.LimitError{Err: capture.ErrSessionRingMemory, Want: 168 << 20, Max: 128 << 20}}, 1008, "capture needs 168 MiB of rings, over --max-session-ring-memory 128 MiB: use fewer interfaces (nif) or a smaller buffer"},
		{"ring memory", &capture.OpError{Op: capture.OpOpenRing, NetNS: 7, Err: &capture.LimitError{Err: capture.ErrRingMemory, Want: 12 << 20, Max: 256 << 20, InUse: 250 << 20}}, 1008, "ring memory full: 250 MiB of --max-ring-memory 256 MiB in use, capture needs 12 MiB; try again later"},
		{"other", errors.New("boom"), 1011, "capture failed: boom"},
		{"long", errors.New(long), 1011, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, why := closeFor(tc.err)
			if code != tc.code || (tc.reason != "" && why != tc.reason) {
				t.Fatalf("closeFor = %d %q, want %d %q", code, why, tc.code, tc.reason)
			}
			if len(why) > maxReason || !utf8.ValidString(why) {
				t.Fatalf("reason %d bytes, valid UTF-8 %v", len(why), utf8.ValidString(why))
			}
		})
	}
}

// FuzzParseCaptureRequest: no query or header reaches a panic, every
// refusal is a request error with a reason that fits a close frame, and an
// accepted request is within limits and gives an SHB comment that csharg
// removes whole.
func FuzzParseCaptureRequest(f *testing.F) {
	f.Add("netns=4026532000&nif=eth0/eth1&filter=udp&chaste=&snaplen=96", "", "", "")
	f.Add("container=%7B%22netns%22%3A4026532000%7D", `{"netns":1,"name":"x","prefix":""}`, "eth0", "tcp")
	f.Add("netns=../../etc/passwd", `{"netns":-1}`, "//", "")
	f.Add("", `{"network-interfaces":[1]}`, "all", "x")
	f.Add("", `{"name":"w","type":"pod","cluster":{"context":"kind","uid":"u1"}}`, "", "")
	f.Add("", `{"netns":4026532000,"cluster":"c1"}`, "eth0", "")
	f.Fuzz(func(t *testing.T, query, container, nif, filter string) {
		r := httptest.NewRequest("GET", "/capture", nil)
		r.URL.RawQuery = query
		if container != "" {
			r.Header.Set(hdrContainer, container)
		}
		if nif != "" {
			r.Header.Set(hdrNif, nif)
		}
		if filter != "" {
			r.Header.Set(hdrFilter, filter)
		}
		req, err := parseCaptureRequest(r)
		if err != nil {
			var re requestError
			if !errors.As(err, &re) {
				t.Fatalf("non-request error %T %v", err, err)
			}
			code, why := closeFor(err)
			if code != websocket.StatusPolicyViolation || len(why) > maxReason {
				t.Fatalf("close %d %q", code, why)
			}
			return
		}
		if len(req.Targets) == 0 || req.Snaplen < 1 || req.Snaplen > capture.DefaultSnaplen || len(req.Filter) > maxFilterLen {
			t.Fatalf("accepted out-of-range request %+v", req)
		}
		for _, ref := range req.Targets {
			byName := ref.Container != nil && ref.Container.Name != ""
			if !byName && netns.ValidInode(ref.NetNS) != nil {
				t.Fatalf("accepted out-of-range target %+v", ref)
			}
			for _, n := range ref.Interfaces {
				if n == "" || len(n) > maxIfNameLen || strings.ContainsAny(n, "/: \t\n") {
					t.Fatalf("accepted interface name %q", n)
				}
			}
		}
		// Whatever the names and the filter, csharg's editor removes
		// all of our SHB comment.
		var tgs []capture.TargetInfo
		for i, ref := range req.Targets {
			tgs = append(tgs, capture.TargetInfo{Name: ref.name(uint64(4026532000 + i)), NetNS: uint64(4026532000 + i)})
		}
		if c := targetComment(req, tgs, "node"); cshargEdit(c, "") != "" {
			t.Fatalf("csharg leaves part of our SHB comment:\n%s", c)
		}
	})
}

func Test_httpStatusLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want int
	}{
		{"too many interfaces", &capture.LimitError{Err: capture.ErrTooManyInterfaces, Want: 42, Max: 16}, 400},
		{"session ring memory", &capture.LimitError{Err: capture.ErrSessionRingMemory, Want: 2, Max: 1}, 400},
		{"ring memory", &capture.OpError{Op: capture.OpOpenRing, Err: &capture.LimitError{Err: capture.ErrRingMemory, Want: 2, Max: 1}}, 503},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := httpStatus(tc.err); got != tc.want {
				t.Fatalf("httpStatus = %d, want %d", got, tc.want)
			}
		})
	}
}
