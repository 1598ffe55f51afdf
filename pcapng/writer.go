package pcapng

import (
	"errors"
	"fmt"
	"io"
)

// ErrUnknownInterface is returned for a packet or statistics block that
// names an interface no IDB has described yet.
var ErrUnknownInterface = errors.New("pcapng: unknown interface")

// Writer writes a pcapng stream to an io.Writer, one Write per block. It
// is not safe for concurrent use.
//
// After a write fails, the stream may end inside a block, so every later
// call returns the same error instead of writing more.
type Writer struct {
	w   io.Writer
	buf []byte // scratch for one block, reused so WritePacket does not allocate
	n   uint32 // interfaces written so far
	err error
}

// NewWriter writes a Section Header Block to w and returns a Writer for
// the rest of the section.
func NewWriter(w io.Writer, s SectionInfo) (*Writer, error) {
	wr := &Writer{w: w, buf: make([]byte, 0, 2048)}
	wr.buf = AppendSHB(wr.buf[:0], s)
	if err := wr.flush(); err != nil {
		return nil, err
	}
	return wr, nil
}

// AddInterface writes an Interface Description Block and returns its ID,
// which counts up from 0 in the order interfaces are added.
func (w *Writer) AddInterface(ifc Interface) (uint32, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.buf = AppendIDB(w.buf[:0], ifc)
	if err := w.flush(); err != nil {
		return 0, err
	}
	id := w.n
	w.n++
	return id, nil
}

// WritePacket writes an Enhanced Packet Block. It does not allocate once
// the scratch buffer has grown to the largest packet seen.
func (w *Writer) WritePacket(p *Packet, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if p.InterfaceID >= w.n {
		return fmt.Errorf("%w: packet for interface %d, have %d", ErrUnknownInterface, p.InterfaceID, w.n)
	}
	w.buf = AppendEPB(w.buf[:0], p, data)
	return w.flush()
}

// WriteStats writes an Interface Statistics Block for interface id at
// time ts (Unix ns).
func (w *Writer) WriteStats(id uint32, ts int64, s Stats) error {
	if w.err != nil {
		return w.err
	}
	if id >= w.n {
		return fmt.Errorf("%w: statistics for interface %d, have %d", ErrUnknownInterface, id, w.n)
	}
	w.buf = AppendISB(w.buf[:0], id, ts, s)
	return w.flush()
}

func (w *Writer) flush() error {
	if _, err := w.w.Write(w.buf); err != nil {
		w.err = fmt.Errorf("pcapng: write: %w", err)
		return w.err
	}
	return nil
}
