// Command pfcat is the command-line client of packetflix: it lists the
// capture targets of a node and captures from one of them, writing the
// pcapng stream to stdout (for tshark, Wireshark or a pipe) or to files,
// one or a dumpcap-style ring of them.
//
//	pfcat [--addr HOST:PORT] [--token-file F] list [-o json]
//	pfcat [--addr HOST:PORT] [--token-file F] capture TARGET|--netns N [-i IF/IF] [-f FILTER] [--chaste]
//	      [-c COUNT] [-a duration:S] [-w FILE [-b filesize:KB,files:N]]
//
// # Stopping
//
// A capture ends when the service ends it (count, duration, target gone:
// exit 0; refused or failed: the reason on stderr, exit 1) or when pfcat
// is told to stop: SIGINT, SIGTERM or SIGHUP, end of file on stdin when
// stdin is a pipe or socket, or a broken pipe on stdout. Then pfcat sends
// the service a close frame and keeps reading until the service answers
// it, so the stream ends with what was captured up to then and the
// interface statistics (ISBs), and exits 0; a second signal stops it
// without waiting for the service. This is what Wireshark's
// sshdump needs of a remote capture command: it reads the command's
// stdout and stops it by closing the SSH channel.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	flag "github.com/spf13/pflag"
)

func main() {
	// A write to a closed stdout must come back as EPIPE, not kill the
	// process (Go's default for fd 1 and 2, os/signal "SIGPIPE"): pfcat
	// then still ends the capture with a close frame.
	signal.Ignore(syscall.SIGPIPE)
	e := &env{
		stdin:  os.Stdin,
		stdout: os.Stdout,
		stderr: os.Stderr,
		notify: func() (<-chan os.Signal, func()) {
			ch := make(chan os.Signal, 2)
			signal.Notify(ch, stopSignals...)
			return ch, func() { signal.Stop(ch) }
		},
	}
	if err := run(os.Args[1:], e); err != nil {
		fmt.Fprintln(os.Stderr, "pfcat:", err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// stopSignals end a capture cleanly: Ctrl-C, kill, a closed terminal.
var stopSignals = []os.Signal{os.Interrupt, syscall.SIGTERM, syscall.SIGHUP}

// env is what one run of pfcat sees of its process. main passes the real
// one; tests pass pipes and a signal channel of their own, so that run
// never touches process-wide state.
type env struct {
	// stdin is watched for end of file while capturing, when it is a pipe
	// or a socket (see watchStdin); nil: not watched.
	stdin  *os.File
	stdout io.Writer
	stderr io.Writer
	// notify subscribes to stopSignals until the returned func is called.
	notify func() (<-chan os.Signal, func())
	// closeWait bounds the wait for the service's answer to our close
	// frame; 0 means defaultCloseWait.
	closeWait time.Duration
	// now names ring files; nil means time.Now.
	now func() time.Time
}

// usageError is a command line pfcat cannot make sense of (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

const usageText = `pfcat is the command-line client of a packetflix service.

Usage:
  pfcat [global flags] list [-o json]
  pfcat [global flags] capture TARGET|--netns N [capture flags]

Commands:
  list      the capture targets of the service's node, as a table or JSON
  capture   a live capture, as pcapng on stdout or into files

Run 'pfcat COMMAND --help' for a command's flags.

Global flags (also accepted after the command):
`

// globals are the flags every command takes.
type globals struct {
	addr      string
	tokenFile string
}

// defaultAddr is the service as make run starts it.
const defaultAddr = "127.0.0.1:5001"

// register adds the global flags to fs. A command's flag set gets them
// too, with what was given before the command as the default, so that
// either place works.
func (g *globals) register(fs *flag.FlagSet) {
	if g.addr == "" {
		g.addr = defaultAddr
	}
	fs.StringVar(&g.addr, "addr", g.addr, "the packetflix service: HOST:PORT, HOST (port 5001), or an http:// or https:// URL")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "file holding the service's token, sent as \"Authorization: Bearer <token>\"")
}

// service returns the service the flags name.
func (g *globals) service() (*service, error) {
	base, err := serviceURL(g.addr)
	if err != nil {
		return nil, usagef("--addr: %v", err)
	}
	s := &service{base: base}
	if g.tokenFile != "" {
		b, err := os.ReadFile(g.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token: %w", err)
		}
		s.token = strings.TrimSpace(string(b))
		if s.token == "" {
			return nil, fmt.Errorf("read token: %s is empty", g.tokenFile)
		}
	}
	return s, nil
}

// legacyFlags are the Go-style flags of the first pfcat, which had no
// commands; they get a hint instead of pflag's puzzling shorthand error.
var legacyFlags = []string{"-netns", "-nif", "-filter", "-chaste", "-count", "-duration", "-addr"}

// legacyFlag returns the first legacy flag before the command, if any.
func legacyFlag(args []string) string {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch name, _, hasValue := strings.Cut(a, "="); {
		case !strings.HasPrefix(a, "-"):
			return "" // the command
		case slices.Contains(legacyFlags, name):
			return name
		case (name == "--addr" || name == "--token-file") && !hasValue:
			i++ // its value
		}
	}
	return ""
}

func run(args []string, e *env) error {
	var g globals
	fs := flag.NewFlagSet("pfcat", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	// The command's own flags come after it.
	fs.SetInterspersed(false)
	g.register(fs)
	fs.Usage = func() {
		fmt.Fprint(e.stderr, usageText)
		fs.PrintDefaults()
	}
	if name := legacyFlag(args); name != "" {
		return usagef("%s: pfcat now takes a command, e.g. pfcat capture --netns N -i eth0 -f udp (see pfcat --help)", name)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return usagef("no command given")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	switch cmd {
	case "list":
		return runList(rest, &g, e)
	case "capture":
		return runCapture(rest, &g, e)
	case "help":
		fs.Usage()
		return nil
	default:
		return usagef("unknown command %q: pfcat knows list and capture", cmd)
	}
}

// parseCommand parses a command's flags, the global ones included.
func parseCommand(fs *flag.FlagSet, args []string, g *globals, e *env, synopsis string) (help bool, err error) {
	g.register(fs)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "Usage:\n  %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return true, nil
		}
		return false, usageError{err.Error()}
	}
	return false, nil
}
