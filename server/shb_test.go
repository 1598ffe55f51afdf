package server

import (
	"bytes"
	"errors"
	"io"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/pcapng"
)

// shbCase is a request as csharg sends it and the stream header we must
// answer with.
type shbCase struct {
	name    string
	query   string
	comment string // the SHB comment, byte for byte
	desc    string // every IDB's if_description
}

// shbCases pin the SHB comment. The YAML is what csharg's own editor
// writes for the same target (yaml.v3, its field order and omitempty
// rules, 4-space indentation), so a client that keeps our comment sees
// what a csharg user's file holds.
var shbCases = []shbCase{
	{
		name: "proc target",
		query: "nif=eth0&container=" + url.QueryEscape(`{"netns":4026532999,"pid":1234,"starttime":98765,`+
			`"name":"sleep(1234)","type":"proc","network-interfaces":["eth0"],"prefix":"","node-name":"worker-1"}`),
		comment: "---\n# capture target information\n" +
			"container-name: sleep(1234)\n" +
			"container-type: proc\n" +
			"node-name: worker-1\n",
		desc: "netns 4026532999, target sleep(1234)",
	},
	{
		name: "bindmount target, node name of the service",
		query: "container=" + url.QueryEscape(`{"netns":4026533001,"name":"blue","type":"bindmount",`+
			`"network-interfaces":["lo","veth0"],"prefix":""}`),
		comment: "---\n# capture target information\n" +
			"container-name: blue\n" +
			"container-type: bindmount\n" +
			"node-name: node-7\n",
		desc: "netns 4026532999, target blue",
	},
	{
		name: "filtered chaste capture in a cluster",
		query: "chaste=&filter=" + url.QueryEscape("tcp port 80") + "&container=" + url.QueryEscape(
			`{"name":"default/web-0","type":"pod","node-name":"kind-worker",`+
				`"cluster":{"context":"kind-kind","uid":"7d8c2e51-0f3a-4b6e-9a1c-2b3d4e5f6a7b"},"captureport":5001}`),
		comment: "---\n# capture target information\n" +
			"container-name: default/web-0\n" +
			"container-type: pod\n" +
			"node-name: kind-worker\n" +
			"cluster:\n" +
			"    uid: 7d8c2e51-0f3a-4b6e-9a1c-2b3d4e5f6a7b\n" +
			"capture-filter: tcp port 80\n" +
			"no-promiscuous-mode: true\n",
		desc: "netns 4026532999, target default/web-0",
	},
	{
		name:  "cluster without uid",
		query: "container=" + url.QueryEscape(`{"name":"web","type":"docker","cluster":{"context":"prod"}}`),
		comment: "---\n# capture target information\n" +
			"container-name: web\n" +
			"container-type: docker\n" +
			"node-name: node-7\n" +
			"cluster: {}\n",
		desc: "netns 4026532999, target web",
	},
	{
		name:  "cluster as a string is ignored",
		query: "container=" + url.QueryEscape(`{"name":"web","type":"docker","cluster":"c1"}`),
		comment: "---\n# capture target information\n" +
			"container-name: web\n" +
			"container-type: docker\n" +
			"node-name: node-7\n",
		desc: "netns 4026532999, target web",
	},
	{
		name:  "netns only, filtered",
		query: "netns=4026532999&filter=" + url.QueryEscape("udp and not port 53"),
		comment: "---\n# capture target information\n" +
			"container-name: netns:4026532999\n" +
			"container-type: netns\n" +
			"node-name: node-7\n" +
			"capture-filter: udp and not port 53\n",
		desc: "netns 4026532999",
	},
	{
		name: "values YAML must quote",
		query: "chaste=&filter=" + url.QueryEscape("port 53 and ip[0] & 0xf != 5") + "&container=" +
			url.QueryEscape(`{"name":"yes","type":"123","node-name":"- n"}`),
		comment: "---\n# capture target information\n" +
			"container-name: \"yes\"\n" +
			"container-type: \"123\"\n" +
			"node-name: '- n'\n" +
			"capture-filter: port 53 and ip[0] & 0xf != 5\n" +
			"no-promiscuous-mode: true\n",
		desc: "netns 4026532999, target yes",
	},
}

// shbServer is a Server with just the settings the stream header uses.
func shbServer() *Server {
	return &Server{cfg: Config{Version: "1.2.3-test", NodeName: "node-7", OS: "Linux"}}
}

// readHeader writes the stream header of req as a session does and reads
// it back.
func readHeader(t *testing.T, req *captureRequest, ifaces []capture.Interface) (*pcapng.SectionInfo, []pcapng.Interface) {
	t.Helper()
	const ino = 4026532999
	tgs := []capture.TargetInfo{{Name: req.Targets[0].name(ino), NetNS: ino}}
	ifaces = slices.Clone(ifaces)
	for i := range ifaces {
		ifaces[i].NetNS = ino
	}
	hdr := shbServer().header(req, tgs, ifaces, describer(req, tgs, nil))
	r := pcapng.NewReader(bytes.NewReader(hdr))
	var section *pcapng.SectionInfo
	var idbs []pcapng.Interface
	for {
		b, err := r.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch b.Type {
		case pcapng.BlockTypeSHB:
			section = b.Section
		case pcapng.BlockTypeIDB:
			idbs = append(idbs, *b.Interface)
		default:
			t.Fatalf("unexpected block %#x", b.Type)
		}
	}
	if section == nil {
		t.Fatal("no SHB")
	}
	return section, idbs
}

var shbIfaces = []capture.Interface{
	{Name: "lo", LinkType: pcapng.LinkTypeEthernet, Snaplen: 262144},
	{Name: "eth0", LinkType: pcapng.LinkTypeEthernet, Snaplen: 262144, Filter: "tcp port 80"},
}

// Test_targetComment pins the SHB comment and the IDB descriptions of the
// stream header, from the request as parsed.
func Test_targetComment(t *testing.T) {
	for _, tc := range shbCases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := parseCaptureRequest(request(tc.query, nil))
			if err != nil {
				t.Fatal(err)
			}
			section, idbs := readHeader(t, req, shbIfaces)
			if section.Comment != tc.comment {
				t.Errorf("SHB comment\ngot  %q\nwant %q", section.Comment, tc.comment)
			}
			if section.UserAppl != "packetflix 1.2.3-test" || section.OS != "Linux" {
				t.Errorf("SHB = %+v", section)
			}
			if len(idbs) != len(shbIfaces) {
				t.Fatalf("%d IDBs, want %d", len(idbs), len(shbIfaces))
			}
			for i, ifc := range idbs {
				if ifc.Name != shbIfaces[i].Name || ifc.Description != tc.desc || ifc.Filter != shbIfaces[i].Filter {
					t.Errorf("IDB %d = %+v, want if_name %q, if_description %q", i, ifc, shbIfaces[i].Name, tc.desc)
				}
			}
		})
	}
}

// cshargTargetEnd is csharg's end of a target block, as docs/pcapng.md
// ("Why") and its editor describe it: the next "---" line.
var cshargTargetEnd = regexp.MustCompile(`\n---($|\n)`)

// cshargEdit applies csharg's rule for the first SHB comment: remove the
// block from the marker (at the start or after a newline) to the next
// "\n---" line or the end, then append its own block on a line of its
// own.
func cshargEdit(comment, block string) string {
	start := -1
	if strings.HasPrefix(comment, targetMarker) {
		start = 0
	} else if i := strings.Index(comment, "\n"+targetMarker); i >= 0 {
		start = i + 1
	}
	if start >= 0 {
		rest := comment[start+len(targetMarker):]
		if loc := cshargTargetEnd.FindStringIndex(rest); loc != nil {
			comment = comment[:start] + rest[loc[0]:]
		} else {
			comment = comment[:start]
		}
	}
	if comment != "" && !strings.HasSuffix(comment, "\n") {
		comment += "\n"
	}
	return comment + block
}

// Test_cshargEditsOurComment: csharg's editor removes all of our SHB
// comment, so nothing of ours is left in the files its users save, and a
// comment that already holds a csharg block (or ours after other text)
// gets the new block in its place.
func Test_cshargEditsOurComment(t *testing.T) {
	hostile := []string{
		"nif=eth0&container=" + url.QueryEscape(`{"name":"a\n---\nb: c","type":"x\n---"}`),
		"netns=4026532999&filter=" + url.QueryEscape(strings.Repeat("tcp and not port 22 and --- ", 8)+"\n---\nudp"),
	}
	queries := make([]string, 0, len(shbCases)+len(hostile))
	for _, tc := range shbCases {
		queries = append(queries, tc.query)
	}
	queries = append(queries, hostile...)
	const theirs = "---\n# capture target information\ncontainer-name: web\ncontainer-type: docker\nnode-name: n1\n"
	for _, q := range queries {
		req, err := parseCaptureRequest(request(q, nil))
		if err != nil {
			t.Fatal(err)
		}
		section, _ := readHeader(t, req, shbIfaces)
		ours := section.Comment
		if got := cshargEdit(ours, ""); got != "" {
			t.Errorf("csharg leaves %q of our comment\n%s", got, ours)
		}
		if got := cshargEdit(ours, theirs); got != theirs {
			t.Errorf("csharg's block over ours = %q, want %q", got, theirs)
		}
		// Ours after someone else's text, and theirs replaced by ours.
		if got, want := cshargEdit("captured by X\n"+ours, theirs), "captured by X\n"+theirs; got != want {
			t.Errorf("after other text: %q, want %q", got, want)
		}
		if got := cshargEdit(theirs, ours); got != ours {
			t.Errorf("ours over csharg's block = %q, want %q", got, ours)
		}
	}
	// A block followed by another YAML document: only the block goes.
	if got, want := cshargEdit(theirs+"---\nmore: yaml\n", ""), "\n---\nmore: yaml\n"; got != want {
		t.Errorf("block before another document: %q, want %q", got, want)
	}
	// The rule catches the old comment, which ended in a "---" line.
	old := "---\n# capture target information\ncontainer-name: \"web\"\nno-promiscuous-mode: false\n---\n"
	if got := cshargEdit(old, ""); got == "" {
		t.Error("the rule found nothing wrong with a block that ends in ---")
	}
}

// Test_parseContainerCluster: csharg's cluster object is kept; a string
// or null cluster is ignored; a cluster with a mistyped uid is refused
// with the field named.
func Test_parseContainerCluster(t *testing.T) {
	for _, tc := range []struct {
		json string
		want *Cluster
		err  string
	}{
		{json: `{"name":"w","cluster":{"context":"kind-kind","uid":"u1"}}`, want: &Cluster{Context: "kind-kind", UID: "u1"}},
		{json: `{"name":"w","cluster":{"context":"kind-kind"}}`, want: &Cluster{Context: "kind-kind"}},
		{json: `{"name":"w","cluster":{}}`, want: &Cluster{}},
		{json: `{"name":"w","cluster": {"uid":"u2","extra":[1]}}`, want: &Cluster{UID: "u2"}},
		{json: `{"name":"w","cluster":"c1"}`},
		{json: `{"name":"w","cluster":null}`},
		{json: `{"name":"w","cluster":7}`},
		{json: `{"name":"w"}`},
		{json: `{"name":"w","cluster":{"uid":5}}`, err: `container is not valid JSON: field "cluster.uid" must be string, not number`},
		{json: `{"name":"w","cluster":{"uid":"u"}`, err: "container is not valid JSON: unexpected EOF"},
		{json: `[1,2]`, err: `container is not valid JSON: field "" must be server.Container, not array`},
		{json: `{"name":"w","network-interfaces":[1]}`, err: `container is not valid JSON: field "network-interfaces" must be string, not number`},
	} {
		c, err := parseContainer(tc.json)
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%s: err = %v, want %q", tc.json, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.json, err)
			continue
		}
		if !reflect.DeepEqual(c.Cluster, tc.want) || c.Name != "w" {
			t.Errorf("%s: name %q, cluster %+v, want %+v", tc.json, c.Name, c.Cluster, tc.want)
		}
	}
}
