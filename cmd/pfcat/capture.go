package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	flag "github.com/spf13/pflag"
)

// defaultCloseWait is how long pfcat waits for the service to answer its
// close frame, as csharg does (docs/close-handshake.md): the service
// sends the rest of the capture and its ISBs first.
const defaultCloseWait = 10 * time.Second

// stopReason is our close frame's reason; the service echoes it.
const stopReason = "capture stopped by pfcat"

func runCapture(args []string, g *globals, e *env) error {
	fs := flag.NewFlagSet("pfcat capture", flag.ContinueOnError)
	var o captureOptions
	netns := fs.Uint64("netns", 0, "capture in the network namespace with this inode (stat -L -c %i /proc/PID/ns/net) instead of a TARGET")
	ifaces := fs.StringArrayP("interface", "i", nil, "interfaces to capture, /-separated or repeated (default: the target's, else every one that is up)")
	fs.StringVarP(&o.filter, "filter", "f", "", "capture filter, in tcpdump's syntax")
	fs.BoolVarP(&o.chaste, "chaste", "p", false, "do not put interfaces into promiscuous mode")
	fs.Int64VarP(&o.count, "count", "c", 0, "stop after this many packets")
	autostop := fs.StringArrayP("autostop", "a", nil, "stop after duration:SECONDS or packets:N, as dumpcap's -a")
	fs.StringVarP(&o.write, "write", "w", "-", "write the capture to this file; - is stdout")
	ring := fs.StringArrayP("ring-buffer", "b", nil, "with -w FILE: a ring of files, filesize:KB,files:N, as dumpcap's -b (kB of 1000 bytes; files: how many are kept)")
	fs.IntVarP(&o.snaplen, "snaplen", "s", 0, "bytes kept of each packet (default: the service's, 262144)")
	fs.IntVarP(&o.buffer, "buffer-size", "B", 0, "kernel ring per interface in MiB (default: the service's)")
	fs.BoolVar(&o.onEOF, "stop-on-eof", true, "stop when stdin, if a pipe or socket, reaches end of file (sshdump closing its channel)")
	synopsis := "pfcat [global flags] capture TARGET|--netns N [-i IF/IF] [-f FILTER] [--chaste] [-c COUNT] [-a duration:S] [-w FILE [-b filesize:KB,files:N]]"
	if help, err := parseCommand(fs, args, g, e, synopsis); help || err != nil {
		return err
	}
	if err := o.complete(fs, *netns, *ifaces, *autostop, *ring); err != nil {
		return err
	}
	s, err := g.service()
	if err != nil {
		return err
	}
	return captureStream(s, &o, e)
}

// complete checks the command line and fills in what flags imply.
func (o *captureOptions) complete(fs *flag.FlagSet, netns uint64, ifaces, autostop, ring []string) error {
	switch {
	case fs.NArg() > 1:
		return usagef("capture takes one TARGET, got %q", fs.Args())
	case fs.NArg() == 1 && fs.Changed("netns"):
		return usagef("capture takes a TARGET or --netns, not both")
	case fs.NArg() == 1:
		if o.target = fs.Arg(0); o.target == "" {
			return usagef("empty TARGET")
		}
	case !fs.Changed("netns"):
		return usagef("capture needs a TARGET (see pfcat list) or --netns N")
	case netns == 0:
		return usagef("--netns 0 is no network namespace inode")
	default:
		o.netns = netns
	}
	for _, v := range ifaces {
		for _, name := range strings.Split(v, "/") {
			if name != "" {
				o.ifaces = append(o.ifaces, name)
			}
		}
	}
	if o.count < 0 || o.snaplen < 0 || o.buffer < 0 {
		return usagef("-c, -s and -B take positive numbers")
	}
	dur, packets, err := parseAutostop(autostop)
	if err != nil {
		return err
	}
	o.dur = dur
	if packets > 0 && (o.count == 0 || packets < o.count) {
		o.count = packets // whichever comes first
	}
	if o.ring, err = parseRing(ring); err != nil {
		return err
	}
	if o.ring.fileSize > 0 && (o.write == "" || o.write == "-") {
		return usagef("-b needs -w FILE: a ring is a series of files")
	}
	return nil
}

// captureStream runs one capture to its end and says how it ended.
func captureStream(s *service, o *captureOptions, e *env) error {
	// ctx ends at the first request to stop; it bounds the lookup and the
	// dial, never the stream, which ends with a close handshake instead.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := &stopper{stop: cancel, force: make(chan struct{})}
	sigs, unsubscribe := e.notify()
	defer unsubscribe()
	var eof <-chan struct{}
	if o.onEOF && e.stdin != nil {
		ch, stop, err := watchStdin(e.stdin)
		if err != nil {
			return fmt.Errorf("watch stdin: %w", err)
		}
		defer stop()
		eof = ch
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { st.watch(sigs, eof, done) })
	defer wg.Wait()
	defer close(done)

	var tgt []byte
	if o.target != "" {
		ts, err := s.targets(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("capture: list targets: %w", err)
		}
		t, err := findTarget(ts, o.target)
		if err != nil {
			return fmt.Errorf("capture: %w", err)
		}
		var b bytes.Buffer
		if err := json.Compact(&b, t.Raw); err != nil {
			return fmt.Errorf("capture: target %q: %w", t.Name, err)
		}
		tgt = b.Bytes()
	}
	cc, err := s.dialCapture(ctx, o.query(tgt))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before the capture began
		}
		return fmt.Errorf("capture: %w", err)
	}
	defer cc.ws.CloseNow()

	out := newOutput(o, e)
	res := make(chan pumpResult, 1)
	go func() { res <- pump(cc.ws, out, st) }()
	r := cc.wait(ctx.Done(), st.force, res, e.closeWait)
	return r.err(ctx.Err() != nil, out, e.stderr)
}

// err is the capture's outcome, stopped saying whether we asked for its
// end: nil when it ended normally or as asked. It closes out; words about
// a normal end go to stderr.
func (r pumpResult) err(stopped bool, out io.Closer, stderr io.Writer) error {
	var ce websocket.CloseError
	closed := errors.As(r.read, &ce)
	var err error
	switch {
	case r.write != nil && !brokenPipe(r.write):
		err = fmt.Errorf("capture: %w", r.write)
	case closed && ce.Code == websocket.StatusNormalClosure:
		// The plain end of a count or duration needs no words; an
		// interface that vanished or an operator's stop does.
		if !stopped && ce.Reason != "" && ce.Reason != "capture ended" {
			fmt.Fprintln(stderr, "pfcat:", ce.Reason)
		}
	case closed && stopped && ce.Code == websocket.StatusGoingAway:
		// The service shut down while we were stopping anyway.
	case closed:
		err = closeError(ce)
	case r.forced || stopped && brokenPipe(r.write):
		// Cut short as asked, or nobody is left to read the end.
	case r.timedOut > 0:
		err = fmt.Errorf("capture: the service did not answer the close within %v; the stream may lack its end", r.timedOut)
	default:
		err = fmt.Errorf("capture: connection lost: %w", r.read)
	}
	if cerr := out.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("capture: %w", cerr)
	}
	return err
}

// closeError words a close the service ended the capture with.
func closeError(ce websocket.CloseError) error {
	switch ce.Code {
	case websocket.StatusPolicyViolation:
		return fmt.Errorf("capture refused: %s", ce.Reason)
	case websocket.StatusGoingAway:
		return fmt.Errorf("capture ended early: %s", ce.Reason)
	case websocket.StatusInternalError:
		if strings.HasPrefix(ce.Reason, "capture failed") {
			return errors.New(ce.Reason)
		}
		return fmt.Errorf("capture failed: %s", ce.Reason)
	default:
		return fmt.Errorf("capture ended with close code %d: %s", ce.Code, ce.Reason)
	}
}
