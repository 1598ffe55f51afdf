package netns

import (
	"errors"
	"fmt"
)

// Operations named in an OpError.
const (
	OpLookup       = "lookup"
	OpOpen         = "open"
	OpSetns        = "setns"
	OpRestoreNetns = "restore-netns"
)

// Sentinel errors a caller can test with errors.Is and turn into a message a
// user can act on.
var (
	// ErrNotFound: no process or bind mount leads to the requested netns.
	ErrNotFound = errors.New("no such network namespace")
	// ErrStale: the path or process found no longer leads to the same netns.
	ErrStale = errors.New("network namespace reference is stale")
	// ErrInvalid: the identifier can never name a netns (zero, out of range).
	ErrInvalid = errors.New("invalid network namespace identifier")
)

// OpError says which operation on which netns failed.
type OpError struct {
	Op    string
	NetNS uint64 // inode; 0 when unknown
	Err   error
}

func (e *OpError) Error() string {
	if e.NetNS == 0 {
		return fmt.Sprintf("netns %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("netns %s %d: %v", e.Op, e.NetNS, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

func opErr(op string, ino uint64, err error) error {
	if err == nil {
		return nil
	}
	return &OpError{Op: op, NetNS: ino, Err: err}
}
