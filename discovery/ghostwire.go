package discovery

import (
	"github.com/packetflix/packetflix/netns"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors of an external discovery service, each a different thing for the
// user to fix.
var (
	// ErrDiscoveryUnavailable: the service did not answer, or answered
	// with an HTTP error.
	ErrDiscoveryUnavailable = errors.New("discovery service unavailable")
	// ErrDiscoveryMalformed: the service answered something that is not a
	// target list.
	ErrDiscoveryMalformed = errors.New("discovery service sent a malformed answer")
)

// maxDiscoveryAnswer bounds what we read from a discovery service.
const maxDiscoveryAnswer = 16 << 20

// GhostWire asks an external GhostWire service (GET /mobyshark) for the
// capture targets of its host. Safe for concurrent use.
type GhostWire struct {
	// URL is the service's base URL, e.g. http://ghostwire:5000.
	URL string
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// Timeout bounds one listing; 0 means DefaultEngineTimeout.
	Timeout time.Duration
}

// List returns the service's targets.
func (g *GhostWire) List(ctx context.Context) ([]Target, error) {
	timeout := g.Timeout
	if timeout <= 0 {
		timeout = DefaultEngineTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	u := strings.TrimSuffix(g.URL, "/") + "/mobyshark"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %w", ErrDiscoveryUnavailable, err))
	}
	c := g.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within %v", timeout)
		}
		return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %s: %w", ErrDiscoveryUnavailable, g.URL, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %s answered %s", ErrDiscoveryUnavailable, g.URL, resp.Status))
	}
	var answer struct {
		Containers *[]Target `json:"containers"`
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxDiscoveryAnswer))
	if err := dec.Decode(&answer); err != nil {
		if ctx.Err() != nil {
			return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %s: answer not complete within %v", ErrDiscoveryUnavailable, g.URL, timeout))
		}
		return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %s: %w", ErrDiscoveryMalformed, g.URL, err))
	}
	if answer.Containers == nil {
		return nil, opErr(OpDiscover, 0, fmt.Errorf("%w: %s: no \"containers\" list", ErrDiscoveryMalformed, g.URL))
	}
	return *answer.Containers, nil
}

// Lookup finds the target named name with prefix prefix.
func (g *GhostWire) Lookup(ctx context.Context, name, prefix string) (Target, error) {
	ts, err := g.List(ctx)
	if err != nil {
		return Target{}, err
	}
	t, err := lookupTarget(ts, name, prefix)
	if err != nil {
		return Target{}, opErr(netns.OpLookup, 0, err)
	}
	return t, nil
}

// lookupTarget finds the one target with this name and prefix in a list
// from a service we do not control, which may hold duplicates.
func lookupTarget(ts []Target, name, prefix string) (Target, error) {
	var same []Target
	for _, t := range ts {
		if t.Name == name && t.Prefix == prefix {
			same = append(same, t)
		}
	}
	switch len(same) {
	case 0:
		return Target{}, fmt.Errorf("%w: no target named %q", netns.ErrNotFound, name)
	case 1:
		return same[0], nil
	}
	inodes := make([]string, len(same))
	for i, t := range same {
		inodes[i] = strconv.FormatUint(t.NetNS, 10)
	}
	return Target{}, fmt.Errorf("%w: %d targets named %q (netns %s)", ErrAmbiguous, len(same), name, strings.Join(inodes, ", "))
}
