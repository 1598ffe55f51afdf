package capture

import (
	"errors"
	"fmt"
)

// Operations named in an OpError.
const (
	OpListInterfaces = "list-interfaces"
	OpOpenRing       = "open-ring"
	OpSetFilter      = "set-filter"
	OpPromisc        = "set-promisc"
	OpRead           = "read"
	OpStats          = "stats"
)

// Sentinel errors for problems a user can fix or should know about; test
// with errors.Is.
var (
	// ErrNoSuchInterface: a requested interface does not exist in the netns.
	ErrNoSuchInterface = errors.New("no such network interface")
	// ErrBadFilter: the capture filter does not compile.
	ErrBadFilter = errors.New("invalid capture filter")
	// ErrInterfaceGone: an interface was removed from the netns (deleted
	// or moved to another one) while capturing.
	ErrInterfaceGone = errors.New("network interface vanished")
)

// OpError says which operation failed, in which netns and on which
// interface.
type OpError struct {
	Op        string
	NetNS     uint64
	Interface string
	Err       error
}

func (e *OpError) Error() string {
	if e.Interface == "" {
		return fmt.Sprintf("capture %s netns=%d: %v", e.Op, e.NetNS, e.Err)
	}
	return fmt.Sprintf("capture %s netns=%d if=%s: %v", e.Op, e.NetNS, e.Interface, e.Err)
}

func (e *OpError) Unwrap() error { return e.Err }

// ErrFilterTooComplex: compiling the capture filter exceeded its budget
// (FilterCPUBudget, FilterMemoryBudget or FilterCompileTimeout); the
// error's text says which. Not an ErrBadFilter: the filter is valid, but
// the service will not spend more on it.
var ErrFilterTooComplex = errors.New("capture filter too complex")
