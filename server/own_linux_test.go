package server_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/packetflix/packetflix/internal/testns"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/server"
	"go.uber.org/zap/zaptest"
)

// serveIn runs the service on a wildcard listener made inside ns: that is
// then the netns its own connections live in. It returns the port.
func serveIn(t *testing.T, ns *netns.NetNS) int {
	t.Helper()
	var ln net.Listener
	if err := netns.Do(ns, func() (err error) {
		ln, err = net.Listen("tcp4", "0.0.0.0:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	srv := server.New(server.Config{Log: zaptest.NewLogger(t), Version: "1.2.3-test", NodeName: "testnode", OS: "Linux"})
	if err := srv.Listening(ln); err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{}
	srv.Configure(hs)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("server shutdown: %v", err)
		}
		_ = hs.Close()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// clientIn is an HTTP client whose connections start in ns, each a new
// one (no keep-alive: every request is a connection that begins and ends).
func clientIn(ns *netns.NetNS) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			// The socket is made on Do's thread, in ns; connecting to an
			// address (no DNS) is all that happens there.
			err = netns.Do(ns, func() (err error) {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
}

// tcpOn counts the TCP segments from or to port in s, and the test
// datagrams.
func tcpOn(t *testing.T, data []byte, port int) (tcp, udp int) {
	t.Helper()
	s := parse(t, data)
	for _, b := range s.pkts {
		p := gopacket.NewPacket(b.Data, layers.LayerTypeEthernet, gopacket.NoCopy)
		if l, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP); ok && (int(l.SrcPort) == port || int(l.DstPort) == port) {
			tcp++
		}
	}
	return tcp, len(s.ours(t))
}

// A capture of the netns the service's connections live in leaves them
// out, from the first SYN of a client that connects meanwhile, though
// the user's filter asks for them; everything else is there; own=include
// keeps them. On lo (client and service in one netns) and on an interface
// (the client in another netns, across a veth), also for the very first
// client ever on an address (the service listens on all of them: it knows
// them from Listening, not from an earlier client).
func TestIntegrationOwnTraffic(t *testing.T) {
	a, b := testns.New(t), testns.New(t)
	testns.Veth(t, a, "eth0", "198.18.0.1/24", b, "eth0", "198.18.0.2/24")
	aNS, bNS := a.Open(), b.Open()
	port := serveIn(t, aNS)
	a.UDP("0.0.0.0:4000") // the other traffic's receiver: no ICMP

	// A client's netns and the service address it uses.
	type via struct {
		ns   *netns.NetNS
		host string
	}
	lo, veth := via{aNS, "127.0.0.1"}, via{bNS, "198.18.0.1"}
	for _, tc := range []struct {
		name   string
		nif    string
		client via          // the capture's
		mid    via          // the second client's, mid-capture
		udp    *net.UDPConn // sends the other traffic
		dst    string
	}{
		{"eth0 first client there", "eth0", lo, veth, b.UDP("198.18.0.2:4002"), "198.18.0.1:4000"},
		{"lo", "lo", lo, lo, a.UDP("127.0.0.1:4001"), "127.0.0.1:4000"},
		{"eth0", "eth0", veth, veth, b.UDP("198.18.0.2:4001"), "198.18.0.1:4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := fmt.Sprintf("http://%s:%d", tc.client.host, port)
			hc := clientIn(tc.client.ns)
			q := url.Values{"netns": {fmt.Sprint(a.Inode)}, "nif": {tc.nif}, "filter": {fmt.Sprintf("tcp port %d or udp port 4000", port)}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/capture?"+q.Encode(), &websocket.DialOptions{HTTPClient: hc})
			if err != nil {
				t.Fatal(err)
			}
			c.SetReadLimit(4 << 20)
			cl := collect(t, c)
			cl.waitLive()
			send(t, tc.udp, tc.dst, 'O', 20)
			cl.waitPackets(20)
			// A second client mid-capture: a connection that begins and
			// ends.
			resp, err := clientIn(tc.mid.ns).Get(fmt.Sprintf("http://%s:%d/version", tc.mid.host, port))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Datagrams after it: once they are in, so is all before.
			send(t, tc.udp, tc.dst, 'P', 20)
			cl.waitPackets(40)
			cl.stop()
			data := cl.bytes()
			tcp, udp := tcpOn(t, data, port)
			if tcp != 0 || udp != 40 {
				t.Fatalf("%d segments of our own connections, %d test datagrams; want 0 and 40", tcp, udp)
			}
			if ifc := parse(t, data).ifaces[0]; !strings.Contains(ifc.Comment, "leaves out its own connections here: TCP to and from ") ||
				!strings.Contains(ifc.Comment, fmt.Sprintf("%s:%d", tc.mid.host, port)) ||
				ifc.Filter != q.Get("filter") {
				t.Errorf("IDB comment %q, filter %q", ifc.Comment, ifc.Filter)
			}
			checkWireshark(t, data, []string{tc.nif}, 40)

			// The plain-HTTP stream too; and own=include keeps them.
			for _, own := range []string{"exclude", "include"} {
				q := url.Values{"netns": {fmt.Sprint(a.Inode)}, "nif": {tc.nif}, "filter": {fmt.Sprintf("tcp port %d or udp port 4000", port)}, "own": {own}, "count": {"10"}}
				// Through the interface captured: with include, the stream's
				// own segments fill the count.
				resp, err := clientIn(tc.mid.ns).Get(fmt.Sprintf("http://%s:%d/capture.pcapng?%s", tc.mid.host, port, q.Encode()))
				if err != nil {
					t.Fatal(err)
				}
				if own == "exclude" {
					send(t, tc.udp, tc.dst, 'Q', 10)
				}
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					t.Fatal(err)
				}
				tcp, udp := tcpOn(t, data, port)
				switch {
				case own == "exclude" && (tcp != 0 || udp != 10):
					t.Errorf("/capture.pcapng: %d own segments, %d datagrams; want 0 and 10", tcp, udp)
				case own == "include" && tcp == 0:
					t.Errorf("/capture.pcapng own=include: no segment of our own connections")
				}
			}
		})
	}
}
