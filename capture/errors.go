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

// Caps on what one capture may lock (Config.MaxInterfaces,
// Config.MaxRingMemory, Config.Budget). A capture refused by one fails
// with a *LimitError wrapping one of these, before any ring is opened.
var (
	// ErrTooManyInterfaces: the capture names (or, capturing every
	// interface, the netns has) more interfaces than Config.MaxInterfaces.
	ErrTooManyInterfaces = errors.New("too many interfaces for one capture")
	// ErrSessionRingMemory: the capture's rings would lock more memory
	// than Config.MaxRingMemory.
	ErrSessionRingMemory = errors.New("capture needs more ring memory than one capture may have")
	// ErrRingMemory: the service-wide Budget has not enough left, even
	// after closing every idle ring of the Pool; it may have later.
	ErrRingMemory = errors.New("ring memory budget exhausted")
)

// LimitError says which cap refused a capture, and by how much. Err is
// ErrTooManyInterfaces, ErrSessionRingMemory or ErrRingMemory.
type LimitError struct {
	Err   error
	Want  int64 // interfaces, or bytes of ring memory, the capture needs
	Max   int64 // the cap, in the same unit
	InUse int64 // ErrRingMemory: bytes the service's rings lock now
}

func (e *LimitError) Error() string {
	if errors.Is(e.Err, ErrTooManyInterfaces) {
		return fmt.Sprintf("%v: %d interfaces, at most %d", e.Err, e.Want, e.Max)
	}
	if errors.Is(e.Err, ErrRingMemory) {
		return fmt.Sprintf("%v: needs %d bytes, %d of %d in use", e.Err, e.Want, e.InUse, e.Max)
	}
	return fmt.Sprintf("%v: needs %d bytes, at most %d", e.Err, e.Want, e.Max)
}

func (e *LimitError) Unwrap() error { return e.Err }
