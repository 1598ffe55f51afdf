package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/pcapng"
)

// hosts: a (eth0 198.18.1.1) <-> b (eth0 198.18.1.2); a also has eth1
// (198.18.2.1) <-> c (eth0 198.18.2.2).
type hosts struct{ a, b, c *testns.NS }

func newHosts(t *testing.T, withC bool) hosts {
	h := hosts{a: testns.New(t), b: testns.New(t)}
	testns.Veth(t, h.a, "eth0", "198.18.1.1/24", h.b, "eth0", "198.18.1.2/24")
	if withC {
		h.c = testns.New(t)
		testns.Veth(t, h.a, "eth1", "198.18.2.1/24", h.c, "eth0", "198.18.2.2/24")
	}
	return h
}

func q(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Set(kv[i], kv[i+1])
	}
	return v
}

func ino(n *testns.NS) string { return fmt.Sprint(n.Inode) }

func TestIntegrationCaptureBothDirections(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0"), nil)
	cl.waitLive()

	ua, ub := h.a.UDP("198.18.1.1:4000"), h.b.UDP("198.18.1.2:4000")
	const n = 100
	send(t, ua, "198.18.1.2:4000", 'A', n)
	send(t, ub, "198.18.1.1:4000", 'B', n)
	cl.waitPackets(2 * n)
	cl.stop()
	s := parse(t, cl.bytes())

	if len(s.ifaces) != 1 || s.ifaces[0].Name != "eth0" || s.ifaces[0].LinkType != pcapng.LinkTypeEthernet || s.ifaces[0].TSResol != 9 {
		t.Fatalf("IDBs = %+v", s.ifaces)
	}
	if s.section == nil || s.section.UserAppl != "packetflix 1.2.3-test" ||
		s.section.Comment != fmt.Sprintf("---\n# capture target information\ncontainer-name: netns:%d\ncontainer-type: netns\nnode-name: testnode\n", h.a.Inode) {
		t.Fatalf("SHB = %+v", s.section)
	}
	if want := fmt.Sprintf("netns %d", h.a.Inode); s.ifaces[0].Description != want {
		t.Fatalf("if_description %q, want %q", s.ifaces[0].Description, want)
	}
	m := s.ours(t)
	if len(m) != 2*n {
		t.Fatalf("%d test packets, want %d", len(m), 2*n)
	}
	for i := 0; i < n; i++ {
		for _, tc := range []struct {
			tag byte
			dir pcapng.Direction
		}{{'A', pcapng.DirectionOutbound}, {'B', pcapng.DirectionInbound}} {
			b := m[string(payload(tc.tag, i))]
			if b == nil {
				t.Fatalf("packet %c%d missing", tc.tag, i)
			}
			if b.Packet.Direction != tc.dir || b.InterfaceID != 0 || int(b.Packet.OrigLen) != len(b.Data) || len(b.Data) != 14+20+8+40 {
				t.Fatalf("packet %c%d: dir %d iface %d len %d/%d", tc.tag, i, b.Packet.Direction, b.InterfaceID, len(b.Data), b.Packet.OrigLen)
			}
		}
	}
	// Nanosecond timestamps, never going backwards on an interface.
	var last int64
	for _, b := range s.pkts {
		if b.Timestamp < last {
			t.Fatalf("timestamp went backwards: %d after %d", b.Timestamp, last)
		}
		last = b.Timestamp
	}
	if d := time.Since(time.Unix(0, last)); d < 0 || d > time.Minute {
		t.Fatalf("last timestamp is %v away from now", d)
	}
}

func TestIntegrationNifSelectsInterfaces(t *testing.T) {
	h := newHosts(t, true)
	_, ts := startServer(t)
	ua := h.a.UDP("198.18.1.1:4000")
	uc := h.c.UDP("198.18.2.2:4000")

	for _, tc := range []struct {
		name   string
		q      url.Values
		hdr    http.Header
		ifaces []string
	}{
		{"one", q("netns", ino(h.a), "nif", "eth1"), nil, []string{"eth1"}},
		{"two", q("netns", ino(h.a), "nif", "eth1/eth0"), nil, []string{"eth1", "eth0"}},
		{"all", q("netns", ino(h.a), "nif", "all"), nil, []string{"lo", "eth0", "eth1"}},
		{"any", q("netns", ino(h.a), "nif", "any"), nil, []string{"lo", "eth0", "eth1"}},
		{"absent", q("netns", ino(h.a)), nil, []string{"lo", "eth0", "eth1"}},
		{"header wins", q("netns", ino(h.a), "nif", "eth0"), http.Header{"Clustershark-Nif": {"eth1"}}, []string{"eth1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, ts, tc.q, tc.hdr)
			cl.waitLive()
			send(t, ua, "198.18.1.2:4000", 'A', 5)
			send(t, uc, "198.18.2.1:4000", 'C', 5)
			want := 0
			for _, n := range tc.ifaces {
				if n == "eth0" || n == "eth1" {
					want += 5
				}
			}
			cl.waitPackets(want)
			time.Sleep(20 * time.Millisecond)
			cl.stop()
			s := parse(t, cl.bytes())
			var names []string
			for _, f := range s.ifaces {
				names = append(names, f.Name)
			}
			if strings.Join(names, ",") != strings.Join(tc.ifaces, ",") {
				t.Fatalf("interfaces %v, want %v", names, tc.ifaces)
			}
			m := s.ours(t)
			if len(m) != want {
				t.Fatalf("%d test packets, want %d", len(m), want)
			}
			for pl, b := range m {
				wantIf := map[byte]string{'A': "eth0", 'C': "eth1"}[pl[6]]
				if got := s.ifaces[b.InterfaceID].Name; got != wantIf {
					t.Fatalf("packet %c on %s, want %s", pl[6], got, wantIf)
				}
			}
		})
	}
}

func TestIntegrationFilter(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	ua := h.a.UDP("198.18.1.1:4000")
	h.b.UDP("198.18.1.2:4001")
	for _, tc := range []struct {
		name string
		q    url.Values
		hdr  http.Header
	}{
		{"query", q("netns", ino(h.a), "nif", "eth0", "filter", "udp dst port 4001"), nil},
		{"header wins", q("netns", ino(h.a), "nif", "eth0", "filter", "udp"), http.Header{"Clustershark-Filter": {"udp dst port 4001"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, ts, tc.q, tc.hdr)
			cl.waitLive()
			send(t, ua, "198.18.1.2:4000", 'X', 20)
			send(t, ua, "198.18.1.2:4001", 'Y', 20)
			cl.waitPackets(20)
			time.Sleep(20 * time.Millisecond)
			cl.stop()
			s := parse(t, cl.bytes())
			if len(s.pkts) != 20 {
				t.Fatalf("%d packets passed the filter, want the 20 to port 4001", len(s.pkts))
			}
			for pl := range s.ours(t) {
				if pl[6] != 'Y' {
					t.Fatalf("packet %c passed a filter for port 4001", pl[6])
				}
			}
			if s.ifaces[0].Filter != "udp dst port 4001" {
				t.Fatalf("if_filter = %q", s.ifaces[0].Filter)
			}
		})
	}
}

func TestIntegrationChaste(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	before := h.a.Promiscuity("eth0")
	for _, tc := range []struct {
		name  string
		q     url.Values
		hdr   http.Header
		delta int
	}{
		{"promiscuous", q("netns", ino(h.a), "nif", "eth0"), nil, 1},
		{"chaste query", q("netns", ino(h.a), "nif", "eth0", "chaste", ""), nil, 0},
		{"chaste header", q("netns", ino(h.a), "nif", "eth0"), http.Header{"Clustershark-Chaste": {""}}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, ts, tc.q, tc.hdr)
			cl.waitLive()
			if got := h.a.Promiscuity("eth0"); got != before+tc.delta {
				t.Fatalf("promiscuity %d while capturing, want %d", got, before+tc.delta)
			}
			cl.stop()
			waitUntil(t, "promiscuity restored", func() bool { return h.a.Promiscuity("eth0") == before })
		})
	}
}

// waitLimit bounds how long a test waits for a condition that normally
// holds within milliseconds: generous, so that a 2-core machine loaded by
// other processes (and -race) does not fail a correct build.
const waitLimit = 20 * time.Second

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIntegrationLoopback(t *testing.T) {
	a := testns.New(t)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(a), "nif", "lo"), nil)
	cl.waitLive()
	u := a.UDP("127.0.0.1:4000")
	send(t, u, "127.0.0.1:4000", 'L', 30)
	cl.waitPackets(30)
	time.Sleep(50 * time.Millisecond)
	cl.stop()
	s := parse(t, cl.bytes())
	if m := s.ours(t); len(m) != 30 { // ours fails on duplicates
		t.Fatalf("%d loopback packets, want 30", len(m))
	}
	if s.ifaces[0].LinkType != pcapng.LinkTypeEthernet {
		t.Fatalf("lo link type %d", s.ifaces[0].LinkType)
	}
}

// TestIntegrationTunRawIP: an interface without link-layer header is
// written as LINKTYPE_RAW and its packets start with the IP header.
func TestIntegrationTunRawIP(t *testing.T) {
	a := testns.New(t)
	a.Tun("tun0") // a reader gives the tun carrier, so packets go out
	a.IP("addr", "add", "198.18.3.1/24", "dev", "tun0")
	a.IP("link", "set", "tun0", "up")
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(a), "nif", "tun0"), nil)
	cl.waitLive()
	u := a.UDP("198.18.3.1:4000")
	send(t, u, "198.18.3.2:4000", 'T', 5) // routed out of tun0, no reader: fine
	deadline := time.Now().Add(waitLimit)
	for len(parse(t, cl.bytes()).pkts) < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cl.stop()
	s := parse(t, cl.bytes())
	if s.ifaces[0].LinkType != pcapng.LinkTypeRaw {
		t.Fatalf("tun link type %d, want RAW", s.ifaces[0].LinkType)
	}
	k := 0
	for _, b := range s.pkts {
		if len(b.Data) >= 28 && b.Data[0]>>4 == 4 && b.Data[9] == 17 && strings.HasPrefix(string(b.Data[28:]), "PFTEST") {
			k++
		}
	}
	if k != 5 {
		t.Fatalf("%d raw IPv4 test packets on tun0, want 5", k)
	}
}

// TestIntegrationEndsWithISBs: when the capture ends on its own, the
// client gets the ISBs, then a 1000 close naming what ended it, and the
// stream reads cleanly in tshark and capinfos.
func TestIntegrationEndsWithISBs(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	cl := dial(t, ts, q("netns", ino(h.a), "nif", "eth0", "filter", "udp"), nil)
	cl.waitLive()
	ua := h.a.UDP("198.18.1.1:4000")
	send(t, ua, "198.18.1.2:4000", 'A', 10)
	cl.waitPackets(10)
	h.b.IP("link", "del", "eth0")
	code, why := cl.closeStatus()
	if code != websocket.StatusNormalClosure || !strings.Contains(why, `"eth0"`) || !strings.Contains(why, "vanished from netns") {
		t.Fatalf("close %d %q", code, why)
	}
	s := parse(t, cl.bytes())
	if len(s.isbs) != 1 {
		t.Fatalf("%d ISBs, want 1", len(s.isbs))
	}
	st := s.isbs[0].Stats
	if !st.HasReceived || !st.HasDropped || st.Received != 10 || st.Dropped != 0 || st.Delivered != 10 {
		t.Fatalf("ISB %+v", st)
	}
	checkWireshark(t, cl.bytes(), []string{"eth0"}, 10)
}

// checkWireshark reads the stream with tshark and capinfos.
func checkWireshark(t *testing.T, data []byte, ifaces []string, packets int) {
	t.Helper()
	for _, tool := range []string{"tshark", "capinfos"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is not installed, and CI=true forbids skipping (make test installs it)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	file := writeFile(t, data)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Output, not CombinedOutput: tshark warns on stderr when run as root.
	out, err := exec.CommandContext(ctx, "tshark", "-r", file, "-T", "fields", "-e", "frame.interface_name", "-e", "frame.packet_flags_direction").Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != packets {
		t.Fatalf("tshark read %d packets, want %d:\n%s", len(lines), packets, out)
	}
	for _, l := range lines {
		f := strings.Split(l, "\t")
		if !slices.Contains(ifaces, f[0]) || len(f) < 2 || f[1] == "" {
			t.Fatalf("tshark line %q: unknown interface or no direction", l)
		}
	}
	out, err = exec.CommandContext(ctx, "capinfos", "-M", file).Output()
	if err != nil {
		t.Fatalf("capinfos: %v\n%s", err, out)
	}
	info := string(out)
	for _, want := range []string{
		fmt.Sprintf("Number of packets:   %d", packets),
		"Capture application: packetflix 1.2.3-test",
		"# capture target information",
		"Description = netns ",
		"Number of interfaces in file: " + fmt.Sprint(len(ifaces)),
	} {
		if !strings.Contains(info, want) {
			t.Fatalf("capinfos output lacks %q:\n%s", want, info)
		}
	}
}

func TestIntegrationConcurrentSessions(t *testing.T) {
	_, ts := startServer(t)
	const k = 4
	type pairT struct {
		a, b *testns.NS
		cl   *client
	}
	pairs := make([]pairT, k)
	for i := range pairs {
		a, b := testns.New(t), testns.New(t)
		testns.Veth(t, a, "eth0", fmt.Sprintf("198.18.%d.1/24", 10+i), b, "eth0", fmt.Sprintf("198.18.%d.2/24", 10+i))
		pairs[i] = pairT{a: a, b: b}
	}
	for i := range pairs {
		pairs[i].cl = dial(t, ts, q("netns", ino(pairs[i].a)), nil)
	}
	for i := range pairs {
		pairs[i].cl.waitLive()
	}
	var wg sync.WaitGroup
	for i := range pairs {
		u := pairs[i].a.UDP(fmt.Sprintf("198.18.%d.1:4000", 10+i))
		wg.Go(func() { send(t, u, fmt.Sprintf("198.18.%d.2:4000", 10+i), byte('0'+i), 200) })
	}
	wg.Wait()
	for i := range pairs {
		pairs[i].cl.waitPackets(200)
	}
	// Ending one session leaves the others running.
	pairs[0].cl.stop()
	for i := 1; i < k; i++ {
		u := pairs[i].b.UDP(fmt.Sprintf("198.18.%d.2:4001", 10+i))
		send(t, u, fmt.Sprintf("198.18.%d.1:4000", 10+i), 'Z', 10)
	}
	for i := 1; i < k; i++ {
		pairs[i].cl.waitPackets(210)
		pairs[i].cl.stop()
		for pl := range parse(t, pairs[i].cl.bytes()).ours(t) {
			if pl[6] != byte('0'+i) && pl[6] != 'Z' {
				t.Fatalf("session %d saw packet of session %c", i, pl[6])
			}
		}
	}
}

func TestIntegrationBadInput(t *testing.T) {
	h := newHosts(t, false)
	_, ts := startServer(t)
	pidOK := fmt.Sprint(os.Getpid())
	for _, tc := range []struct {
		name   string
		q      url.Values
		hdr    http.Header
		reason string
	}{
		{"nothing", q(), nil, "missing netns or container parameter"},
		{"netns not a number", q("netns", "abc"), nil, `netns must be a network namespace inode number, got "abc"`},
		{"netns zero", q("netns", "0"), nil, "netns 0 is not a valid network namespace inode"},
		{"netns huge", q("netns", "99999999999"), nil, "netns 99999999999 is not a valid network namespace inode"},
		{"netns path", q("netns", "../../etc/passwd"), nil, "netns must be a network namespace inode number"},
		{"no such netns", q("netns", "4294967295"), nil, "no network namespace with inode 4294967295"},
		{"both", q("netns", ino(h.a), "container", `{"netns":1}`), nil, "give either netns or container, not both"},
		{"bad json", q("container", `{"netns":`), nil, "container is not valid JSON"},
		{"json type", q("container", `{"netns":"x"}`), nil, `container is not valid JSON: field "netns" must be uint64`},
		{"bad json header", q(), http.Header{"Clustershark-Container": {`[1,2]`}}, "container 1 of the list is not a JSON object"},
		{"no such interface", q("netns", ino(h.a), "nif", "eth9"), nil, fmt.Sprintf(`no network interface "eth9" in netns %s`, ino(h.a))},
		{"bad interface name", q("netns", ino(h.a), "nif", "a b"), nil, `"a b" is not a valid network interface name`},
		{"bad filter", q("netns", ino(h.a), "filter", "udp prot 53"), nil, "invalid capture filter: syntax error"},
		{"bad snaplen", q("netns", ino(h.a), "snaplen", "0"), nil, "snaplen must be a number from 1 to 262144"},
		{"stale pid", q("container", fmt.Sprintf(`{"netns":%s,"pid":%s,"starttime":1}`, ino(h.a), pidOK)), nil, "stale container reference"},
		{"name not found", q("container", `{"name":"no-such-container-xyz"}`), nil, `no container named "no-such-container-xyz" found by discovery`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := dial(t, ts, tc.q, tc.hdr)
			code, why := cl.closeStatus()
			if code != websocket.StatusPolicyViolation || !strings.HasPrefix(why, tc.reason) || len(why) > 123 {
				t.Fatalf("close %d %q, want 1008 %q...", code, why, tc.reason)
			}
			if len(cl.bytes()) != 0 {
				t.Fatalf("refused session sent %d bytes of stream", len(cl.bytes()))
			}
		})
	}
}

func TestIntegrationPlainHTTP(t *testing.T) {
	_, ts := startServer(t)
	resp, err := http.Get(ts.URL + "/capture?netns=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	if resp.StatusCode != http.StatusUpgradeRequired || !strings.Contains(string(body[:n]), "WebSocket") {
		t.Fatalf("status %d body %q", resp.StatusCode, body[:n])
	}
}

// TestIntegrationSeveralTargets: one stream for a line of three
// namespaces, named in a container= array (bind-mount names, each with its
// own interfaces), as a lab tool would ask for a topology: every datagram
// sent from the first to the last appears once on each interface it
// crossed, the IDBs are named TARGET/IFNAME, timestamps never decrease,
// the SHB comment lists the targets, and tshark reads it all.
func TestIntegrationSeveralTargets(t *testing.T) {
	line := testns.Line(t, 3)
	_, ts := startServer(t)
	refs := fmt.Sprintf(`[{"name":%q,"network-interfaces":["eth1"]},{"name":%q,"network-interfaces":["eth0","eth1"]},{"name":%q,"network-interfaces":["eth0"]}]`,
		line[0].Name, line[1].Name, line[2].Name)
	const n = 50
	data := pcapngGet(t, ts.URL, url.Values{"container": {refs}, "filter": {"udp"}, "count": {fmt.Sprint(4 * n)}}.Encode(), func() {
		u := line[0].UDP("198.18.1.1:4000")
		for i := range n {
			if _, err := u.WriteToUDP(payload('T', i), &net.UDPAddr{IP: net.IPv4(198, 18, 2, 2), Port: 4000}); err != nil {
				t.Fatal(err)
			}
		}
	})
	s := parse(t, data)
	want := []string{line[0].Name + "/eth1", line[1].Name + "/eth0", line[1].Name + "/eth1", line[2].Name + "/eth0"}
	var names []string
	for i, f := range s.ifaces {
		names = append(names, f.Name)
		if tg := line[[]int{0, 1, 1, 2}[min(i, 3)]]; !strings.Contains(f.Description, fmt.Sprintf("netns %d, target %s", tg.Inode, tg.Name)) {
			t.Errorf("IDB %d description %q", i, f.Description)
		}
	}
	if !slices.Equal(names, want) {
		t.Fatalf("IDB names %q, want %q", names, want)
	}
	per := map[uint32]int{}
	for i, b := range s.pkts {
		per[b.Packet.InterfaceID]++
		if i > 0 && b.Packet.Timestamp < s.pkts[i-1].Packet.Timestamp {
			t.Fatalf("packet %d older than packet %d", i, i-1)
		}
	}
	for id := range want {
		if per[uint32(id)] != n {
			t.Fatalf("packets per interface %v, want %d on each of %d", per, n, len(want))
		}
	}
	if c := s.section.Comment; !strings.Contains(c, "container-name: "+line[0].Name+", "+line[1].Name+", "+line[2].Name) {
		t.Fatalf("SHB comment does not list the targets:\n%s", c)
	}
	checkWireshark(t, data, want, 4*n)
}

// peer=1 on one end of a veth captures its other end too, in the netns it
// lives in, named as discovery names that netns; a peer in the same netns
// joins the same target; a peer nobody can reach is an error naming the
// interface.
func TestIntegrationPeer(t *testing.T) {
	line := testns.Line(t, 3)
	_, ts := startServer(t)
	const n = 40
	q := url.Values{"netns": {fmt.Sprint(line[1].Inode)}, "nif": {"eth1"}, "peer": {"1"}, "filter": {"udp"}, "count": {fmt.Sprint(2 * n)}}
	data := pcapngGet(t, ts.URL, q.Encode(), func() {
		u := line[0].UDP("198.18.1.1:4000")
		for i := range n {
			if _, err := u.WriteToUDP(payload('P', i), &net.UDPAddr{IP: net.IPv4(198, 18, 2, 2), Port: 4000}); err != nil {
				t.Fatal(err)
			}
		}
	})
	s := parse(t, data)
	want := []string{fmt.Sprintf("netns:%d/eth1", line[1].Inode), line[2].Name + "/eth0"}
	var names []string
	for _, f := range s.ifaces {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("IDB names %q, want %q", names, want)
	}
	per := map[uint32]int{}
	for _, b := range s.pkts {
		per[b.Packet.InterfaceID]++
	}
	if per[0] != n || per[1] != n {
		t.Fatalf("packets per interface %v, want %d on both ends", per, n)
	}
	if c := s.section.Comment; !strings.Contains(c, line[2].Name) {
		t.Errorf("SHB comment does not list the peer's target:\n%s", c)
	}
	checkWireshark(t, data, want, 2*n)

	// Both ends in one netns: one target, plain names.
	one := testns.New(t)
	one.VethPairs(1)
	data = pcapngGet(t, ts.URL, url.Values{"netns": {fmt.Sprint(one.Inode)}, "nif": {"vb0"}, "peer": {"1"}, "duration": {"100ms"}}.Encode(), func() {})
	names = nil
	for _, f := range parse(t, data).ifaces {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, []string{"vb0", "va0"}) {
		t.Errorf("peer in the same netns: IDB names %q, want [vb0 va0]", names)
	}

	// A peer whose netns only an fd holds cannot be found.
	line[2].Open()
	line[2].Delete()
	resp, err := http.Get(ts.URL + "/capture.pcapng?" + url.Values{"netns": {fmt.Sprint(line[1].Inode)}, "nif": {"eth1"}, "peer": {"1"}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "eth1") || !strings.Contains(string(b), "peer") {
		t.Errorf("unreachable peer: %d %q, want 400 naming eth1's peer", resp.StatusCode, b)
	}
	t.Logf("unreachable peer: %d %s", resp.StatusCode, b)
}

// Ten netns= targets, all interfaces each, in one stream: a datagram from
// one end of the line to the other appears once on each of the 18
// interfaces it crosses, in timestamp order, under TARGET/IFNAME names
// that tshark shows.
func TestIntegrationTenTargets(t *testing.T) {
	const n, count = 10, 20
	line := testns.Line(t, n)
	// Resolve the neighbours along the line before the capture: a
	// datagram waiting for ARP at a hop is held, and beyond a small queue
	// dropped.
	sink := line[n-1].UDP(fmt.Sprintf("198.18.%d.2:4000", n-1))
	u := line[0].UDP("198.18.1.1:4000")
	dst := sink.LocalAddr().(*net.UDPAddr)
	if _, err := u.WriteToUDP(payload('W', 0), dst); err != nil {
		t.Fatal(err)
	}
	_ = sink.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, _, err := sink.ReadFromUDP(make([]byte, 2048)); err != nil {
		t.Fatalf("the first datagram did not cross the line: %v", err)
	}

	_, ts := startServer(t)
	q := url.Values{"filter": {"udp"}, "count": {fmt.Sprint(count * 2 * (n - 1))}}
	var want []string // IDB names: each target's interfaces in ifindex order
	for i, x := range line {
		q.Add("netns", fmt.Sprint(x.Inode))
		want = append(want, fmt.Sprintf("netns:%d/lo", x.Inode))
		if i > 0 {
			want = append(want, fmt.Sprintf("netns:%d/eth0", x.Inode))
		}
		if i < n-1 {
			want = append(want, fmt.Sprintf("netns:%d/eth1", x.Inode))
		}
	}
	data := pcapngGet(t, ts.URL, q.Encode(), func() {
		for i := range count {
			if _, err := u.WriteToUDP(payload('X', i), dst); err != nil {
				t.Fatal(err)
			}
		}
	})
	s := parse(t, data)
	var names []string
	for _, f := range s.ifaces {
		names = append(names, f.Name)
	}
	if !slices.Equal(names, want) {
		t.Fatalf("IDB names %q, want %q", names, want)
	}
	per := map[string]int{}
	for i, b := range s.pkts {
		per[names[b.Packet.InterfaceID]]++
		if i > 0 && b.Packet.Timestamp < s.pkts[i-1].Packet.Timestamp {
			t.Fatalf("packet %d older than packet %d", i, i-1)
		}
	}
	for _, name := range want {
		exp := count
		if strings.HasSuffix(name, "/lo") {
			exp = 0
		}
		if per[name] != exp {
			t.Fatalf("packets per interface %v, want %d on each eth", per, count)
		}
	}
	checkWireshark(t, data, want, count*2*(n-1))
}

// pcapngGet streams /capture.pcapng?q from base, runs during once the
// capture is live (the status arrives with the stream's header, after the
// rings are open), and returns the whole stream; the query must end it
// (count=, duration=).
func pcapngGet(t *testing.T, base, q string, during func()) []byte {
	t.Helper()
	resp, err := http.Get(base + "/capture.pcapng?" + q)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	during()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return data
}
