// Package pcapng writes the pcapng stream that a capture session sends to
// its client, and reads such streams back for tests, fuzzing and clients.
//
// The format is the one in draft-ietf-opsawg-pcapng. The writer emits
// only what a live capture needs: one Section Header Block (SHB), one
// Interface Description Block (IDB) per captured interface, an Enhanced
// Packet Block (EPB) per packet and Interface Statistics Blocks (ISB) for
// drop counters.
//
// # Block layout
//
// Every block is
//
//	type (4) | total length (4) | body | options | total length (4)
//
// and everything is padded to 32 bits. Options are code (2), length (2)
// and a value padded to 32 bits; a list that has any option ends with
// opt_endofopt. The writer always uses little-endian byte order, so one
// stream can be produced without knowing the client's machine.
//
// Every IDB carries if_tsresol = 9, so EPB and ISB timestamps are Unix
// nanoseconds split into a high and a low 32-bit word. Negative (pre-1970)
// timestamps are written as their two's complement and read back exactly.
//
// Option values longer than 65535 bytes cannot be represented; strings are
// cut at the last UTF-8 boundary that fits.
//
// # Hot path
//
// [AppendEPB] appends to a caller-owned []byte, normally the message that
// is about to be sent, and never allocates unless that slice must grow.
// [EPBSize] tells the caller beforehand whether a packet still fits.
// [Writer] wraps the same functions around an [io.Writer] for callers that
// do not batch.
//
// # Reading
//
// [Reader] accepts both byte orders and several sections, checks every
// length before using it and never panics, so it can be fed untrusted
// input. Blocks larger than 16 MiB are rejected rather than buffered.
// if_tsoffset is not applied.
package pcapng
