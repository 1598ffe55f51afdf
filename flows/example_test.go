package flows_test

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/flows"
)

func ExampleTable() {
	tb, err := flows.New(flows.Config{MaxFlows: 1024, NodeTID: "7daa39fe-92f7-5f9b-51b1-1dddcd41785c"})
	if err != nil {
		panic(err)
	}
	// A DNS query and its answer on a tun interface (raw IPv4), as a
	// capture hands them over.
	query := []byte{
		0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 53, // IPv4
		0x9c, 0x40, 0, 53, 0, 8, 0, 0, // UDP 40000 → 53
	}
	answer := []byte{
		0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 198, 18, 0, 53, 198, 18, 0, 1,
		0, 53, 0x9c, 0x40, 0, 8, 0, 0,
	}
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano()
	tb.Packet(0, flows.LinkTypeRaw, query, start, 70)
	tb.Packet(0, flows.LinkTypeRaw, answer, start+int64(time.Millisecond), 130)

	for _, f := range tb.Flows() {
		enc := json.NewEncoder(os.Stdout)
		_ = enc.Encode(struct {
			LayersPath string
			Network    *flows.Layer
			Transport  *flows.TransportLayer
			Metric     flows.Metric
		}{f.LayersPath, f.Network, f.Transport, f.Metric})
	}
	fmt.Printf("%+v\n", tb.Stats())
	// Output:
	// {"LayersPath":"IPv4/UDP","Network":{"Protocol":"IPV4","A":"198.18.0.1","B":"198.18.0.53"},"Transport":{"Protocol":"UDP","A":40000,"B":53},"Metric":{"ABPackets":1,"ABBytes":70,"BAPackets":1,"BABytes":130,"Start":1772366400,"Last":1772366400}}
	// {Tracked:1 Created:1 Evicted:0 Expired:0 Packets:2 Undecoded:0}
}

func ExampleEvaluate() {
	nodes := func() []flows.Node {
		return []flows.Node{
			{ID: "n1", Host: "h1", Metadata: flows.NodeMetadata{Name: "web", Type: "netns", TID: "t1"}},
			{ID: "n2", Host: "h1", Metadata: flows.NodeMetadata{Name: "host", Type: "host", TID: "t2"}},
		}
	}
	n, err := flows.Evaluate("G.V().Has('Type', 'netns').Count()", nodes, nil)
	fmt.Println(n, err)
	_, err = flows.Evaluate("G.V().Has('Name', 'web').Out()", nodes, nil)
	fmt.Println(err)
	// Output:
	// 1 <nil>
	// unsupported step "Out" at 25
}

// A capture session's sink that sends the pcapng stream and counts flows:
// the flow side never fails nor refuses a packet.
func ExampleTee() {
	var stream capture.Sink = nopSink{} // the session's pcapng stream
	var ifaces []capture.Interface      // capture.Session.Interfaces()
	tb, _ := flows.New(flows.Config{NodeTID: "t1"})
	sink := flows.Tee(stream, flows.NewSink(ifaces, tb))
	_ = sink // to capture.Session.Run(ctx, sink)
}
