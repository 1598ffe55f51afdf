package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/packetflix/packetflix/capture"
	"github.com/packetflix/packetflix/discovery"
	"github.com/packetflix/packetflix/netns"
)

// handlePlain streams the same pcapng as /capture over plain chunked HTTP,
// so `curl -N URL | wireshark -k -i -` and `curl URL > file.pcapng` work
// without a WebSocket client. The capture ends when the client disconnects
// or after duration= / count=, with the ISBs written; why it ended is in
// the Packetflix-End-Reason trailer.
func (s *Server) handlePlain(w http.ResponseWriter, r *http.Request) {
	req, perr := parseCaptureRequest(r)
	rc := http.NewResponseController(w)
	// A capture outlives the server's Read/WriteTimeout; the connection's
	// TCP settings watch the client instead.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	// At the hard stop of a shutdown, a write blocked on a client that
	// does not read fails at once. The mutex keeps the deadline off the
	// connection once this handler returned (it may serve the next
	// request of a keep-alive client).
	var mu sync.Mutex
	done := false
	stop := context.AfterFunc(s.hard, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			_ = rc.SetWriteDeadline(time.Now())
		}
	})
	defer func() {
		stop()
		mu.Lock()
		done = true
		mu.Unlock()
	}()
	s.session(r.Context(), &httpTransport{w: w, rc: rc}, req, perr, r.RemoteAddr)
}

// httpTransport writes a session as a chunked HTTP response.
type httpTransport struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool // only the capture's reader writes, and end runs after it
}

const endReasonTrailer = "Packetflix-End-Reason"

func (t *httpTransport) name() string { return "http" }

func (t *httpTransport) write(b []byte) error {
	if !t.started {
		t.started = true
		h := t.w.Header()
		h.Set("Content-Type", "application/x-pcapng")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Trailer", endReasonTrailer)
		t.w.WriteHeader(http.StatusOK)
	}
	if _, err := t.w.Write(b); err != nil {
		return err
	}
	return t.rc.Flush()
}

func (t *httpTransport) abort() { _ = t.rc.SetWriteDeadline(time.Now()) }

// ping: an HTTP response has no ping; TCP keepalive and TCP_USER_TIMEOUT
// (Server.connContext) notice a vanished client.
func (t *httpTransport) ping() error { return nil }

// closing: a plain HTTP client just disconnects.
func (t *httpTransport) closing() <-chan struct{} { return nil }

func (t *httpTransport) refuse(err error) {
	http.Error(t.w, reasonOf(err), httpStatus(err))
}

func (t *httpTransport) end(err error, clientGone bool) {
	if !t.started {
		// Nothing was sent (a client gone before the header): nothing to end.
		return
	}
	t.w.Header().Set(endReasonTrailer, reasonOf(err))
}

// httpStatus maps why a capture could not start to an HTTP status, by the
// same sentinels as closeFor.
func httpStatus(err error) int {
	var (
		rerr requestError
		lerr *lookupError
	)
	switch {
	case errors.Is(err, errShutdown), errors.Is(err, errTooMany), errors.Is(err, capture.ErrRingMemory):
		// ErrRingMemory: the service is full now; it frees up as
		// sessions end.
		return http.StatusServiceUnavailable
	case errors.Is(err, capture.ErrTooManyInterfaces), errors.Is(err, capture.ErrSessionRingMemory):
		// Never fits, whatever else runs: the request must change.
		return http.StatusBadRequest
	case errors.Is(err, errTooManyClient):
		return http.StatusTooManyRequests
	case errors.Is(err, errHostNetNS):
		return http.StatusForbidden
	case errors.As(err, &lerr):
		switch {
		case errors.Is(err, discovery.ErrDiscoveryUnavailable), errors.Is(err, discovery.ErrDiscoveryMalformed):
			return http.StatusBadGateway
		case errors.Is(err, discovery.ErrAmbiguous):
			return http.StatusBadRequest
		case errors.Is(err, netns.ErrNotFound), errors.Is(err, netns.ErrStale):
			return http.StatusNotFound
		}
		return http.StatusBadGateway
	case errors.As(err, &rerr), errors.Is(err, capture.ErrBadFilter), errors.Is(err, capture.ErrFilterTooComplex), errors.Is(err, netns.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, netns.ErrNotFound), errors.Is(err, netns.ErrStale), errors.Is(err, capture.ErrNoSuchInterface):
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}
