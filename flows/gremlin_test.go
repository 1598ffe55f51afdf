package flows_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/packetflix/packetflix/flows"
)

var testNodes = []flows.Node{
	{ID: "n1", Host: "host1", Metadata: flows.NodeMetadata{Name: "web", Type: "netns", Path: "/var/run/netns/web", TID: "tid-web"}},
	{ID: "n2", Host: "host1", Metadata: flows.NodeMetadata{Name: "db", Type: "netns", Path: "/proc/42/ns/net", TID: "tid-db"}},
	{ID: "n3", Host: "host1", Metadata: flows.NodeMetadata{Name: "host", Type: "host", TID: "tid-host"}},
}

var testFlows = []flows.Flow{
	{
		UUID: "u1", TrackingID: "t1", NodeTID: "tid-web", LayersPath: "Ethernet/IPv4/UDP", Application: "UDP", Interface: "eth0",
		Link:      &flows.Layer{Protocol: "ETHERNET", A: "02:00:00:00:00:01", B: "02:00:00:00:00:02"},
		Network:   &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.18.0.53"},
		Transport: &flows.TransportLayer{Protocol: "UDP", A: 40000, B: 53},
		Metric:    flows.Metric{ABPackets: 3, ABBytes: 300, BAPackets: 3, BABytes: 600, Start: 100, Last: 102},
		Start:     100000, Last: 102000,
	},
	{
		UUID: "u2", TrackingID: "t2", NodeTID: "tid-web", LayersPath: "Ethernet/IPv4/TCP", Application: "TCP", Interface: "eth0",
		Link:             &flows.Layer{Protocol: "ETHERNET", A: "02:00:00:00:00:01", B: "02:00:00:00:00:02"},
		Network:          &flows.Layer{Protocol: "IPV4", A: "198.18.0.1", B: "198.18.0.2"},
		Transport:        &flows.TransportLayer{Protocol: "TCP", A: 51000, B: 443},
		Metric:           flows.Metric{ABPackets: 10, ABBytes: 1000, BAPackets: 8, BABytes: 9000, Start: 100, Last: 110},
		LastUpdateMetric: flows.Metric{ABPackets: 1, ABBytes: 100, Start: 110, Last: 110},
	},
	{
		UUID: "u3", TrackingID: "t3", NodeTID: "tid-db", LayersPath: "Ethernet/IPv4/ICMPv4", Application: "ICMPv4",
		Network: &flows.Layer{Protocol: "IPV4", A: "198.18.0.2", B: "198.18.0.1"},
		ICMP:    &flows.ICMPLayer{Type: "ECHO", Code: 0, ID: 4660},
		Metric:  flows.Metric{ABPackets: 1, ABBytes: 98, BAPackets: 1, BABytes: 98},
	},
	{
		UUID: "u4", TrackingID: "t4", NodeTID: "tid-db", LayersPath: "IPv6/UDP", Application: "UDP",
		Network:   &flows.Layer{Protocol: "IPV6", A: "2001:db8::1", B: "2001:db8::53"},
		Transport: &flows.TransportLayer{Protocol: "UDP", A: 5353, B: 53},
	},
}

func nodeIDs(ns []flows.Node) []string {
	var ids []string
	for _, n := range ns {
		ids = append(ids, n.ID)
	}
	return ids
}

func flowIDs(fs []flows.Flow) []string {
	var ids []string
	for _, f := range fs {
		ids = append(ids, f.UUID)
	}
	return ids
}

func TestGremlin(t *testing.T) {
	for _, tc := range []struct {
		query string
		want  any // []string of IDs/UUIDs, or an int
	}{
		// Nodes.
		{"G.V()", []string{"n1", "n2", "n3"}},
		{"g.V()", []string{"n1", "n2", "n3"}},
		{" G . V ( ) ", []string{"n1", "n2", "n3"}},
		{"G.V().Has('Name', 'db')", []string{"n2"}},
		{`G.V().Has("Name", "db")`, []string{"n2"}},
		{"G.V().Has('TID', 'tid-web')", []string{"n1"}},
		{"G.V().Has('Type', 'netns')", []string{"n1", "n2"}},
		{"G.V().Has('Metadata.Type', 'netns')", []string{"n1", "n2"}},
		{"G.V().Has('Type', 'netns', 'Name', 'web')", []string{"n1"}},
		{"G.V().Has('Type', 'netns').Has('Name', 'web')", []string{"n1"}},
		{"G.V().Has('Path')", []string{"n1", "n2"}},
		{"G.V().Has('Host', 'host1').Has('ID', 'n3')", []string{"n3"}},
		{"G.V().Has('Name', 'nope')", []string{}},
		{"G.V().Count()", 3},
		{"G.V().Has('Type', 'netns').Count()", 2},
		{"G.V().Limit(1)", []string{"n1"}},
		{"G.V().has('Name', 'db').limit(5).count()", 1},
		{`G.V().Has('Name', 'it\'s')`, []string{}},

		// Flows.
		{"G.Flows()", []string{"u1", "u2", "u3", "u4"}},
		{"g.Flows().Limit(1)", []string{"u1"}},
		{"G.Flows().Limit(0)", []string{}},
		{"G.Flows().Limit(10)", []string{"u1", "u2", "u3", "u4"}},
		{"G.Flows().Has('Network.A', '198.18.0.1')", []string{"u1", "u2"}},
		{"G.Flows().Has('Network.B', '198.18.0.1')", []string{"u3"}},
		{"G.Flows().Has('Network', '198.18.0.1')", []string{"u1", "u2", "u3"}},
		{"G.Flows().Has('Transport.B', 53)", []string{"u1", "u4"}},
		{"G.Flows().Has('Transport.B', '53')", []string{"u1", "u4"}},
		{"G.Flows().Has('Transport.B', 53.0)", []string{"u1", "u4"}},
		{"G.Flows().Has('Transport', 443)", []string{"u2"}},
		{"G.Flows().Has('Transport.Protocol', 'UDP').Has('Network.Protocol', 'IPV6')", []string{"u4"}},
		{"G.Flows().Has('Transport.Protocol', 'UDP', 'Network.Protocol', 'IPV4')", []string{"u1"}},
		{"G.Flows().Has('LayersPath', 'Ethernet/IPv4/ICMPv4')", []string{"u3"}},
		{"G.Flows().Has('Link.A', '02:00:00:00:00:01')", []string{"u1", "u2"}},
		{"G.Flows().Has('Metric.ABPackets', 10)", []string{"u2"}},
		{"G.Flows().Has('Network.B', '2001:DB8:0::53')", []string{"u4"}},
		{"G.Flows().Has('Link.B', '02-00-00-00-00-02')", []string{"u1", "u2"}},
		{"G.Flows().Has('LastUpdateMetric.ABBytes', 100)", []string{"u2"}},
		{"G.Flows().Has('NodeTID', 'tid-db')", []string{"u3", "u4"}},
		{"G.Flows().Has('TrackingID', 't2')", []string{"u2"}},
		{"G.Flows().Has('UUID', 'u4')", []string{"u4"}},
		{"G.Flows().Has('ICMP.Type', 'ECHO')", []string{"u3"}},
		{"G.Flows().Has('ICMP.ID', 4660)", []string{"u3"}},
		{"G.Flows().Has('ICMP.Code', 0)", []string{"u3"}},
		{"G.Flows().Has('ICMP')", nil}, // not a key: see errors
		{"G.Flows().Has('Transport')", []string{"u1", "u2", "u4"}},
		{"G.Flows().Has('Interface', 'eth0')", []string{"u1", "u2"}},
		{"G.Flows().Has('Application', 'UDP')", []string{"u1", "u4"}},
		{"G.Flows().Has('Start', 100000)", []string{"u1"}},
		{"G.Flows().Has('Network.A', 198)", []string{}},
		{"G.Flows().Has('Transport.A', 'abc')", []string{}},
		{"G.Flows().Has('Network.A', '198.18.0.1').Limit(1)", []string{"u1"}},
		{"G.Flows().Limit(1).Has('Network.A', '198.18.0.2')", []string{}},
		{"G.Flows().Has('Network.A', '198.18.0.1').Count()", 2},
		{"G.Flows().Count()", 4},
		{"G.Flows().Limit(3).Count()", 3},
	} {
		t.Run(tc.query, func(t *testing.T) {
			if tc.want == nil {
				return
			}
			got, err := flows.Evaluate(tc.query, func() []flows.Node { return testNodes }, func() []flows.Flow { return testFlows })
			if err != nil {
				t.Fatalf("error %v", err)
			}
			switch g := got.(type) {
			case int:
				if g != tc.want {
					t.Errorf("count %d, want %v", g, tc.want)
				}
			case []flows.Node:
				if ids := nodeIDs(g); !slices.Equal(ids, tc.want.([]string)) || g == nil {
					t.Errorf("nodes %v, want %v", ids, tc.want)
				}
			case []flows.Flow:
				if ids := flowIDs(g); !slices.Equal(ids, tc.want.([]string)) || g == nil {
					t.Errorf("flows %v, want %v", ids, tc.want)
				}
			default:
				t.Fatalf("result %T", got)
			}
		})
	}
}

func TestGremlinErrors(t *testing.T) {
	for _, tc := range []struct {
		query string
		msg   string // the whole Error()
		step  string
	}{
		{"G.V().Out()", `unsupported step "Out" at 6`, "Out"},
		{"G.V().Has('Name', 'x').Out().Count()", `unsupported step "Out" at 23`, "Out"},
		{"G.Flows().Dedup()", `unsupported step "Dedup" at 10`, "Dedup"},
		{"G.Flows().Sort()", `unsupported step "Sort" at 10`, "Sort"},
		{"G.E()", `unsupported step "E" at 2: a query starts with V() or Flows()`, "E"},
		{"G.At('-1m').Flows()", `unsupported step "At" at 2: a query starts with V() or Flows()`, "At"},
		{"G.V('n1')", `unsupported step "V" at 2: with arguments`, "V"},
		{"G.V().Count().Limit(1)", `unsupported step "Limit" at 14: after Count`, "Limit"},
		{"G.Flows().Has('Transport.B', Gt(1000))", `unsupported step "Gt" at 29: predicates are not supported`, "Gt"},
		{"G.V().Has('Name', Within('a', 'b'))", `unsupported step "Within" at 18: predicates are not supported`, "Within"},
		{"G.V().Has('Name', Regex('w.*'))", `unsupported step "Regex" at 18: predicates are not supported`, "Regex"},

		{"", `gremlin: expected G, got end of query at 0`, ""},
		{"   ", `gremlin: expected G, got end of query at 3`, ""},
		{"G", `gremlin: expected ".", got end of query at 1`, ""},
		{"X.V()", `gremlin: query must start with G, not "X" at 0`, ""},
		{"G.", `gremlin: expected a step, got end of query at 2`, ""},
		{"G.V", `gremlin: expected "(", got end of query at 3`, ""},
		{"G.V(", `gremlin: expected a string or a number, got end of query at 4`, ""},
		{"G.V().", `gremlin: expected a step, got end of query at 6`, ""},
		{"G.V()Has('a')", `gremlin: expected ".", got "Has" at 5`, ""},
		{"G.V().Has('Name' 'x')", `gremlin: expected "," or ")", got string at 17`, ""},
		{"G.V().Has('Name',)", `gremlin: expected a string or a number, got ")" at 17`, ""},
		{"G.V().Has(,)", `gremlin: expected a string or a number, got "," at 10`, ""},
		{"G.V().Has('Name', 'x'", `gremlin: expected "," or ")", got end of query at 21`, ""},
		{"G.V().Has('Name', 'x", `gremlin: unterminated string at 18`, ""},
		{"G.V().Has('Name', x)", `gremlin: expected a string or a number, got "x" at 18`, ""},
		{"G.V().Has()", `gremlin: Has needs a key at 6`, ""},
		{"G.V().Has('Name', 'x', 'Type')", `gremlin: Has needs key, value pairs at 23`, ""},
		{"G.V().Has(1, 'x')", `gremlin: a key must be a string at 10`, ""},
		{"G.V().Has('Nmae', 'x')", `gremlin: unknown key "Nmae" at 10`, ""},
		{"G.V().Has('Network.A', 'x')", `gremlin: unknown key "Network.A" at 10`, ""},
		{"G.Flows().Has('Name', 'x')", `gremlin: unknown key "Name" at 14`, ""},
		{"G.Flows().Has('ICMP')", `gremlin: unknown key "ICMP" at 14`, ""},
		{"G.Flows().Limit()", `gremlin: Limit needs one number at 10`, ""},
		{"G.Flows().Limit('1')", `gremlin: Limit needs one number at 10`, ""},
		{"G.Flows().Limit(1, 2)", `gremlin: Limit needs one number at 10`, ""},
		{"G.Flows().Limit(-1)", `gremlin: bad limit -1 at 16`, ""},
		{"G.Flows().Limit(1.5)", `gremlin: bad limit 1.5 at 16`, ""},
		{"G.Flows().Limit(1e300)", `gremlin: bad limit 1e300 at 16`, ""},
		{"G.Flows().Limit(1e999)", `gremlin: bad number "1e999" at 16`, ""},
		{"G.Flows().Limit(1-2)", `gremlin: expected "," or ")", got number -2 at 17`, ""},
		{"G.Flows().Limit(--1)", `gremlin: bad number "-" at 16`, ""},
		{"G.Flows().Count(1)", `gremlin: Count takes no arguments at 10`, ""},
		{"G.Flows() x", `gremlin: expected ".", got "x" at 10`, ""},
		{"G.Flows();", `gremlin: unexpected ';' at 9`, ""},
		{"G.Flows().Has('a' + 'b')", `gremlin: bad number "+" at 18`, ""},
		{"G.V().Has('Name', 'é'", `gremlin: expected "," or ")", got end of query at 22`, ""},
		{"G.Flows().Has('Network.A', '1'))", `gremlin: expected ".", got ")" at 31`, ""},
	} {
		t.Run(tc.query, func(t *testing.T) {
			got, err := flows.Evaluate(tc.query, nil, nil)
			var qe *flows.QueryError
			if !errors.As(err, &qe) {
				t.Fatalf("got %v, %v; want a *QueryError", got, err)
			}
			if err.Error() != tc.msg {
				t.Errorf("error %q\n  want %q", err.Error(), tc.msg)
			}
			if qe.Step != tc.step {
				t.Errorf("Step %q, want %q", qe.Step, tc.step)
			}
		})
	}
}

func TestGremlinSources(t *testing.T) {
	calls := ""
	nodes := func() []flows.Node { calls += "V"; return nil }
	fl := func() []flows.Flow { calls += "F"; return nil }
	for _, tc := range []struct {
		query, calls, json string
		src                flows.Source
	}{
		{"G.V()", "V", "[]", flows.SourceNodes},
		{"G.Flows()", "F", "[]", flows.SourceFlows},
		{"G.Flows().Count()", "F", "0", flows.SourceFlows},
	} {
		calls = ""
		q, err := flows.ParseQuery(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		if q.Source != tc.src {
			t.Errorf("%s: Source %d, want %d", tc.query, q.Source, tc.src)
		}
		b, _ := json.Marshal(q.Eval(nodes, fl))
		if calls != tc.calls || string(b) != tc.json {
			t.Errorf("%s: called %q, answered %s; want %q, %s", tc.query, calls, b, tc.calls, tc.json)
		}
		if b, _ := json.Marshal(q.Eval(nil, nil)); string(b) != tc.json {
			t.Errorf("%s without sources: %s", tc.query, b)
		}
	}
	// Matching does not change its input.
	q, _ := flows.ParseQuery("G.Flows().Has('NodeTID', 'tid-db')")
	in := slices.Clone(testFlows)
	if got := q.MatchFlows(in); len(got) != 2 || !slices.EqualFunc(in, testFlows, func(a, b flows.Flow) bool { return a.UUID == b.UUID }) {
		t.Errorf("MatchFlows changed its input or answered %v", flowIDs(got))
	}
	qn, _ := flows.ParseQuery("G.V().Has('Name', 'web')")
	if got := qn.MatchNodes(testNodes); len(got) != 1 || got[0].ID != "n1" {
		t.Errorf("MatchNodes: %v", nodeIDs(got))
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"G.V().Has('Name', 'x')", "G.Flows().Has('Transport.B', 53).Limit(2).Count()", "g.V(", "G.Flows().Has('a', Gt(1))"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := flows.ParseQuery(s)
		if err != nil {
			var qe *flows.QueryError
			if !errors.As(err, &qe) || qe.Pos < 0 || qe.Pos > len(s) {
				t.Fatalf("%q: error %v", s, err)
			}
			return
		}
		_ = q.Eval(func() []flows.Node { return testNodes }, func() []flows.Flow { return testFlows })
	})
}
