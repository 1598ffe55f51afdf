package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/server"
	"go.uber.org/zap/zaptest"
)

// countingDiscovery counts full listings; a probe must not cause one each.
type countingDiscovery struct {
	lists atomic.Int64
	err   error
}

func (d *countingDiscovery) List(ctx context.Context) ([]discovery.Target, error) {
	d.lists.Add(1)
	if d.err != nil {
		return nil, d.err
	}
	return []discovery.Target{{Name: "x", Type: discovery.TypeProc, NetNS: 4026531840, PID: 1, StartTime: 1}}, nil
}

func (d *countingDiscovery) Lookup(ctx context.Context, name, prefix string) (discovery.Target, error) {
	return discovery.Target{}, errors.New("not used")
}

func readyServer(t *testing.T, d server.Discovery, age time.Duration) *httptest.Server {
	t.Helper()
	srv := server.New(server.Config{Log: zaptest.NewLogger(t), Discovery: d, ReadyCacheAge: age})
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		ts.Close()
	})
	return ts
}

// discoveryCheck returns /readyz's discovery check.
func discoveryCheck(t *testing.T, url string) server.Check {
	t.Helper()
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var h server.Health
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		t.Fatal(err)
	}
	return h.Checks["discovery"]
}

func TestReadyzReusesDiscovery(t *testing.T) {
	t.Run("probes share one listing", func(t *testing.T) {
		d := &countingDiscovery{}
		ts := readyServer(t, d, time.Hour)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if ck := discoveryCheck(t, ts.URL); !ck.OK || !strings.Contains(ck.Detail, "1 targets") {
					t.Errorf("discovery check %+v", ck)
				}
			})
		}
		wg.Wait()
		if n := d.lists.Load(); n != 1 {
			t.Errorf("20 probes ran %d listings, want 1", n)
		}
		// A client's listing counts as a fresh result too.
		resp, err := http.Get(ts.URL + "/discover/mobyshark")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		discoveryCheck(t, ts.URL)
		if n := d.lists.Load(); n != 2 {
			t.Errorf("after a client's listing and a probe: %d listings, want 2", n)
		}
	})
	t.Run("an old result is renewed", func(t *testing.T) {
		d := &countingDiscovery{}
		ts := readyServer(t, d, time.Nanosecond)
		discoveryCheck(t, ts.URL)
		discoveryCheck(t, ts.URL)
		if n := d.lists.Load(); n != 2 {
			t.Errorf("2 probes with a result that is at once too old: %d listings, want 2", n)
		}
	})
	t.Run("a failure is reported and kept only briefly", func(t *testing.T) {
		d := &countingDiscovery{err: errors.New("engine down")}
		ts := readyServer(t, d, time.Hour)
		start := time.Now()
		for range 3 {
			if ck := discoveryCheck(t, ts.URL); ck.OK || !strings.Contains(ck.Detail, "engine down") {
				t.Errorf("discovery check %+v, want the failure", ck)
			}
		}
		// A failure is kept for 5 s: quick probes list once. (A machine so
		// loaded that 3 local requests take 5 s may list again.)
		if n := d.lists.Load(); n != 1 && time.Since(start) < 5*time.Second {
			t.Errorf("3 probes within %v ran %d listings, want 1", time.Since(start), n)
		}
	})
}
