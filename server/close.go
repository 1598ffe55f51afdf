package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/netns"
	"github.com/packetflix/packetflix/session"
)

// maxReason is the most bytes a close reason may have (125-byte control
// frame payload minus the 2-byte code). A longer one makes coder/websocket
// send no close frame at all.
const maxReason = 123

// Reasons a session ends that the server itself decides.
var (
	errShutdown   = errors.New("service shutting down")
	errTooMany    = errors.New("too many capture sessions")
	errHostNetNS  = errors.New("capturing the service's own network namespace is not allowed (--deny-host-netns)")
	errNetNSGone  = errors.New("network namespace vanished")
	errClientGone = session.ErrClientGone
	errOperator   = errors.New("stopped by operator")
	// errClientClosing: the client sent a close frame; it gets the ISBs,
	// then the answer to its close.
	errClientClosing = errors.New("client closed")
	errLimit         = session.ErrLimit
	// errTooManyClient is wrapped with the limit.
	errTooManyClient = errors.New("too many capture sessions from this client address")
)

// closeFor maps why a session ended to a close code and a reason a person
// can act on. Only 1000, 1001, 1008 and 1011 are used: codes every strict
// client accepts (docs/close-handshake.md). It relies on errors.Is/As only.
func closeFor(err error) (websocket.StatusCode, string) {
	var (
		cerr *capture.OpError
		nerr *netns.OpError
		rerr requestError
		lerr *lookupError
		lim  *capture.LimitError
	)
	switch {
	case err == nil:
		return websocket.StatusNormalClosure, "capture ended"
	case errors.As(err, &lim):
		return websocket.StatusPolicyViolation, truncateUTF8(limitReason(lim), maxReason)
	case errors.Is(err, errShutdown):
		return websocket.StatusGoingAway, "service shutting down"
	case errors.Is(err, errClientClosing):
		return websocket.StatusNormalClosure, "capture ended"
	case errors.Is(err, errOperator):
		return websocket.StatusNormalClosure, "stopped by operator"
	case errors.Is(err, errTooMany):
		return websocket.StatusPolicyViolation, "too many capture sessions, try again later"
	case errors.Is(err, errTooManyClient):
		return websocket.StatusPolicyViolation, truncateUTF8(err.Error()+", try again later", maxReason)
	case errors.Is(err, errHostNetNS):
		return websocket.StatusPolicyViolation, errHostNetNS.Error()
	case errors.Is(err, errNetNSGone):
		return websocket.StatusNormalClosure, truncateUTF8("capture ended: "+err.Error(), maxReason)
	case errors.As(err, &lerr):
		return lookupClose(lerr)
	case errors.As(err, &rerr):
		return websocket.StatusPolicyViolation, truncateUTF8(string(rerr), maxReason)
	case errors.Is(err, netns.ErrInvalid) && errors.As(err, &nerr):
		return websocket.StatusPolicyViolation, truncateUTF8(fmt.Sprintf("%d is not a valid network namespace inode", nerr.NetNS), maxReason)
	case errors.Is(err, netns.ErrNotFound) && errors.As(err, &nerr):
		return websocket.StatusPolicyViolation, truncateUTF8(fmt.Sprintf("no network namespace with inode %d", nerr.NetNS), maxReason)
	case errors.Is(err, netns.ErrStale) && errors.As(err, &nerr):
		return websocket.StatusPolicyViolation, truncateUTF8("stale container reference: "+strings.TrimPrefix(nerr.Err.Error(), netns.ErrStale.Error()+": "), maxReason)
	case errors.Is(err, capture.ErrBadFilter):
		return websocket.StatusPolicyViolation, truncateUTF8(innermost(err, capture.ErrBadFilter), maxReason)
	case errors.Is(err, capture.ErrFilterTooComplex):
		// e.g. "capture filter too complex: compiling it takes more than
		// 1s of CPU time".
		return websocket.StatusPolicyViolation, truncateUTF8(innermost(err, capture.ErrFilterTooComplex), maxReason)
	case errors.Is(err, capture.ErrNoSuchInterface) && errors.As(err, &cerr):
		return websocket.StatusPolicyViolation, truncateUTF8(fmt.Sprintf("no network interface %q in netns %d", cerr.Interface, cerr.NetNS), maxReason)
	case errors.Is(err, capture.ErrInterfaceGone) && errors.As(err, &cerr):
		// The capture ran and ended on its own: a normal end, with what
		// ended it.
		return websocket.StatusNormalClosure, truncateUTF8(fmt.Sprintf("capture ended: interface %q vanished from netns %d", cerr.Interface, cerr.NetNS), maxReason)
	default:
		return websocket.StatusInternalError, truncateUTF8("capture failed: "+err.Error(), maxReason)
	}
}

// limitReason names the cap that refused a capture, by its flag, and what
// the client can do about it.
func limitReason(e *capture.LimitError) string {
	switch {
	case errors.Is(e.Err, capture.ErrTooManyInterfaces):
		return fmt.Sprintf("capture of %d interfaces is over --max-interfaces-per-session %d: choose fewer with nif", e.Want, e.Max)
	case errors.Is(e.Err, capture.ErrSessionRingMemory):
		return fmt.Sprintf("capture needs %s of rings, over --max-session-ring-memory %s: use fewer interfaces (nif) or a smaller buffer", mib(e.Want), mib(e.Max))
	default: // capture.ErrRingMemory
		return fmt.Sprintf("ring memory full: %s of --max-ring-memory %s in use, capture needs %s; try again later", mib(e.InUse), mib(e.Max), mib(e.Want))
	}
}

// mib formats a byte count in MiB, as the flags are given.
func mib(n int64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// lookupClose explains a failed lookup by name: not found and ambiguous are
// the request's problem (1008), an unreachable or confused discovery
// service the server's (1011).
func lookupClose(e *lookupError) (websocket.StatusCode, string) {
	name := strconv.Quote(clip(e.Name, 40))
	var why string
	code := websocket.StatusPolicyViolation
	switch {
	case errors.Is(e.Err, discovery.ErrAmbiguous):
		why = "container name " + name + " is ambiguous: " + opText(e.Err)
	case errors.Is(e.Err, discovery.ErrDiscoveryUnavailable), errors.Is(e.Err, discovery.ErrDiscoveryMalformed):
		code, why = websocket.StatusInternalError, "cannot look up "+name+": "+opText(e.Err)
	case errors.Is(e.Err, context.DeadlineExceeded):
		code, why = websocket.StatusInternalError, "cannot look up "+name+": discovery did not answer in time"
	case errors.Is(e.Err, netns.ErrStale):
		why = "container " + name + " vanished while it was being looked up"
	case errors.Is(e.Err, netns.ErrNotFound):
		why = "no container named " + name + " found by discovery"
	default:
		code, why = websocket.StatusInternalError, "cannot look up "+name+": "+e.Err.Error()
	}
	return code, truncateUTF8(why, maxReason)
}

// opText is an error's text without the netns operation prefix.
func opText(err error) string {
	var nerr *netns.OpError
	if errors.As(err, &nerr) {
		return nerr.Err.Error()
	}
	return err.Error()
}

// innermost returns the text of err from the layer that wraps sentinel,
// e.g. "invalid capture filter: syntax error" without the operation
// prefixes above it.
func innermost(err, sentinel error) string {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if u := errors.Unwrap(e); u == sentinel {
			return e.Error()
		}
	}
	return sentinel.Error()
}

// truncateUTF8 cuts s to at most n bytes without splitting a UTF-8
// sequence.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
