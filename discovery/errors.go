package discovery

import (
	"errors"

	"github.com/packetflix/packetflix/netns"
)

// OpDiscover names a failed listing in a netns.OpError.
const OpDiscover = "discover"

// ErrAmbiguous: a target name that several targets share (see Discoverer's
// "Unique names").
var ErrAmbiguous = errors.New("ambiguous target name")

// opErr wraps err as the netns package does, so callers test one error type
// for both namespace and discovery failures.
func opErr(op string, ino uint64, err error) error {
	if err == nil {
		return nil
	}
	return &netns.OpError{Op: op, NetNS: ino, Err: err}
}
