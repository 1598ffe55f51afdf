package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// targetsDoc is a /mobyshark answer: a container, a bind mount, a process,
// and one name an external GhostWire lists under two prefixes.
const targetsDoc = `{"containers":[
 {"name":"web","type":"docker","netns":4026532389,"network-interfaces":["eth0","eth1"],"pid":4242,"starttime":123456,"prefix":""},
 {"name":"web-db","type":"docker","netns":4026532390,"network-interfaces":["eth0"],"pid":4300,"starttime":123999,"prefix":""},
 {"name":"blue","type":"bindmount","netns":4026532500,"network-interfaces":["lo","veth0"],"pid":0,"starttime":0,"prefix":""},
 {"name":"sshd(812)","type":"proc","netns":4026531840,"network-interfaces":["lo","enp1s0"],"pid":812,"starttime":99,"prefix":""},
 {"name":"twin","type":"docker","netns":4026532600,"network-interfaces":[],"pid":5000,"starttime":1,"prefix":""},
 {"name":"twin","type":"docker","netns":4026532601,"network-interfaces":[],"pid":5001,"starttime":2,"prefix":"dind-1"}
]}`

func TestListTable(t *testing.T) {
	f := newFakeService(t, targetsDoc, nil)
	r, err := runPfcat(t, "--addr", f.addr(), "list")
	if err != nil {
		t.Fatalf("list: %v; stderr: %s", err, r.stderr)
	}
	want := `NAME       TYPE       NETNS       PID   INTERFACES
web        docker     4026532389  4242  eth0/eth1
web-db     docker     4026532390  4300  eth0
blue       bindmount  4026532500  -     lo/veth0
sshd(812)  proc       4026531840  812   lo/enp1s0
twin       docker     4026532600  5000  
twin       docker     4026532601  5001  
`
	if got := r.stdout.String(); got != want {
		t.Fatalf("table:\n%s\nwant:\n%s", got, want)
	}
	if rs := f.requests(); len(rs) != 1 || rs[0].URL.Path != "/mobyshark" || rs[0].Header.Get("Authorization") != "" {
		t.Fatalf("requests: %v", rs)
	}
}

func TestListJSON(t *testing.T) {
	f := newFakeService(t, targetsDoc, nil)
	// Global flags after the command work too.
	r, err := runPfcat(t, "list", "-o", "json", "--addr", f.addr())
	if err != nil {
		t.Fatalf("list -o json: %v; stderr: %s", err, r.stderr)
	}
	var got, want []map[string]any
	if err := json.Unmarshal(r.stdout.Bytes(), &got); err != nil {
		t.Fatalf("output is not a JSON array: %v\n%s", err, r.stdout)
	}
	var doc struct{ Containers []map[string]any }
	if err := json.Unmarshal([]byte(targetsDoc), &doc); err != nil {
		t.Fatal(err)
	}
	want = doc.Containers
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("JSON list:\n%v\nwant\n%v", got, want)
	}
}

func TestListErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
		code int // 2: a usage error
	}{
		{"bad format", []string{"list", "-o", "yaml"}, "-o yaml: want table or json", 2},
		{"argument", []string{"list", "web"}, "list takes no arguments", 2},
		{"no command", nil, "no command given", 2},
		{"unknown command", []string{"dump"}, `unknown command "dump"`, 2},
		{"old flags", []string{"-netns", "4026532389"}, "pfcat now takes a command", 2},
		{"missing token file", []string{"--token-file", "/nonexistent/token", "list"}, "read token", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeService(t, targetsDoc, nil)
			_, err := runPfcat(t, append([]string{"--addr", f.addr()}, tc.args...)...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			var ue usageError
			if isUsage := errors.As(err, &ue); isUsage != (tc.code == 2) {
				t.Fatalf("usage error: %v, want %v", isUsage, tc.code == 2)
			}
		})
	}
}

func TestTokenSent(t *testing.T) {
	s := newStream(2, 40)
	f := newFakeService(t, targetsDoc, sendAll([][]byte{s.header, s.pkts[0], s.pkts[1], s.tail}, websocket.StatusNormalClosure, "capture ended"))
	f.token = "s3cret-token"
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("  s3cret-token\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("without", func(t *testing.T) {
		_, err := runPfcat(t, "--addr", f.addr(), "list")
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized: unauthorized: send the service's token") {
			t.Fatalf("list without token: %v", err)
		}
		_, err = runPfcat(t, "--addr", f.addr(), "capture", "--netns", "4026532389")
		if err == nil || !strings.Contains(err.Error(), "401 Unauthorized") {
			t.Fatalf("capture without token: %v", err)
		}
	})
	t.Run("with", func(t *testing.T) {
		if r, err := runPfcat(t, "--addr", f.addr(), "--token-file", tokenFile, "list"); err != nil {
			t.Fatalf("list: %v; stderr %s", err, r.stderr)
		}
		r, err := runPfcat(t, "--addr", f.addr(), "--token-file", tokenFile, "capture", "web")
		if err != nil {
			t.Fatalf("capture: %v; stderr %s", err, r.stderr)
		}
		if string(r.stdout.Bytes()) != string(s.all()) {
			t.Fatal("capture output differs from the stream")
		}
		// list, then capture's own lookup, then /capture: every one with
		// the token.
		rs := f.requests()
		var n int
		for _, req := range rs {
			if req.Header.Get("Authorization") == "Bearer s3cret-token" {
				n++
			}
		}
		if n != 3 {
			t.Fatalf("%d requests with the token, want 3 (list, lookup, capture)", n)
		}
	})
}

func Test_findTarget(t *testing.T) {
	var doc struct{ Containers []json.RawMessage }
	if err := json.Unmarshal([]byte(targetsDoc), &doc); err != nil {
		t.Fatal(err)
	}
	var ts []target
	for _, raw := range doc.Containers {
		var x target
		if err := json.Unmarshal(raw, &x); err != nil {
			t.Fatal(err)
		}
		x.Raw = raw
		ts = append(ts, x)
	}
	for _, tc := range []struct {
		name    string
		netns   uint64
		wantErr string
	}{
		{"web", 4026532389, ""},
		{"sshd(812)", 4026531840, ""},
		{"wbe", 0, `no capture target "wbe"; did you mean web?`},
		{"WEB", 0, `no capture target "WEB"; did you mean web, web-db?`},
		{"db", 0, `no capture target "db"; did you mean web-db?`},
		{"blu", 0, `did you mean blue?`},
		{"sshd", 0, `did you mean sshd(812)?`},
		{"nothing-like-it", 0, `no capture target "nothing-like-it" among the 6 that pfcat list shows`},
		{"twin", 0, `capture target "twin" is ambiguous: 2 targets have that name (docker netns 4026532600; docker netns 4026532601 prefix dind-1); capture one with --netns`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findTarget(ts, tc.name)
			if tc.wantErr == "" {
				if err != nil || got.NetNS != tc.netns {
					t.Fatalf("got %+v, %v; want netns %d", got, err, tc.netns)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func Test_editDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		d    int
	}{
		{"", "", 0}, {"web", "web", 0}, {"web", "wbe", 1}, {"ab", "ba", 1}, {"abc", "ca", 3}, {"web", "webs", 1}, {"kitten", "sitting", 3}, {"", "abc", 3}, {"äb", "ab", 1},
	} {
		if d := editDistance(tc.a, tc.b); d != tc.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, d, tc.d)
		}
	}
}

func Test_serviceURL(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.1:5001", "http://127.0.0.1:5001", true},
		{"node1", "http://node1:5001", true},
		{"node1:6000", "http://node1:6000", true},
		{"::1", "http://[::1]:5001", true},
		{"[::1]:6000", "http://[::1]:6000", true},
		{"https://pf.example/packetflix/", "https://pf.example/packetflix", true},
		{"ws://node1:5001", "http://node1:5001", true},
		{"ftp://node1", "", false},
		{"http://", "", false},
		{"http://node1/?x=1", "", false},
		{"", "", false},
		{":5001", "", false},
	} {
		u, err := serviceURL(tc.in)
		if (err == nil) != tc.ok || tc.ok && u.String() != tc.want {
			t.Errorf("serviceURL(%q) = %v, %v; want %q (ok %v)", tc.in, u, err, tc.want, tc.ok)
		}
	}
}
