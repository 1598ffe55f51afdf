package capture

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The filter compiler child is this same binary, re-executed through
// /proc/self/exe with filterCompilerArg0 as argv[0] and filterCompilerEnv
// set; MaybeRunFilterCompiler recognises it. Both must be present, so
// neither an inherited variable nor a renamed binary turns the service into
// a compiler by accident.
const (
	filterCompilerArg0 = "packetflix-filter-compiler"
	filterCompilerEnv  = "PACKETFLIX_FILTER_COMPILER"
)

// The pipe format, little-endian, version 1.
//
//	request:  "PFC" 1 | linkType u16 | snaplen u32 | cpuSeconds u32 |
//	          memBytes u64 | len u32 | expr
//	response: "PFC" 1 | status u8 | len u32 | then status OK: len
//	          instructions of code u16, jt u8, jf u8, k u32; else len
//	          bytes of message
//
// The version changes with any change of layout; parent and child are the
// same binary, so a mismatch means a broken installation.
const (
	wireMagic   = "PFC"
	wireVersion = 1

	statusOK          = 0
	statusBadFilter   = 1
	statusTooComplex  = 2
	maxWireMessage    = 1024
	maxWireResponse   = 8 + MaxFilterInstructions*8
	maxChildStderr    = 4096
	exitChildProtocol = 3
)

// MaybeRunFilterCompiler turns this process into a filter compiler child
// when it was started as one, and never returns then; otherwise it returns
// at once. Every binary whose code compiles filters must call it first
// thing in main, and every test binary that compiles filters first thing
// in TestMain: the capture package starts compiles by re-executing
// /proc/self/exe.
func MaybeRunFilterCompiler() {
	if len(os.Args) == 0 || os.Args[0] != filterCompilerArg0 || os.Getenv(filterCompilerEnv) != "1" {
		return
	}
	os.Exit(runFilterCompiler(os.Stdin, os.Stdout))
}

// runFilterCompiler is the child: it limits itself, then compiles one
// request. The limits are set before the filter is even read.
func runFilterCompiler(in io.Reader, out io.Writer) int {
	// Capabilities are per thread: drop them on the thread that runs
	// libpcap (cgo calls run on the calling goroutine's thread).
	runtime.LockOSThread()
	req, err := io.ReadAll(io.LimitReader(in, MaxFilterLen+64))
	if err != nil {
		fmt.Fprintln(os.Stderr, "filter compiler: read request:", err)
		return exitChildProtocol
	}
	k, cpu, mem, err := decodeRequest(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "filter compiler:", err)
		return exitChildProtocol
	}
	if err := limitSelf(cpu, mem); err != nil {
		fmt.Fprintln(os.Stderr, "filter compiler: limits:", err)
		return exitChildProtocol
	}
	prog, err := compileInProcess(k.linkType, k.snaplen, k.expr)
	status := byte(statusOK)
	var msg string
	if err != nil {
		status, msg = statusBadFilter, strings.TrimPrefix(err.Error(), ErrBadFilter.Error()+": ")
		// libpcap reports its allocator failing under RLIMIT_AS as an
		// ordinary error; it is the budget, not the syntax.
		if strings.Contains(msg, "out of memory") || strings.Contains(msg, "malloc") {
			status, msg = statusTooComplex, fmt.Sprintf("compiling it needs more than %d MiB of memory", mem>>20)
		}
	}
	if _, err := out.Write(encodeResponse(status, prog, msg)); err != nil {
		return exitChildProtocol
	}
	return 0
}

// limitSelf applies the compile budget to this process and gives up what
// privilege it can: no new privileges, no capabilities on this thread. The
// network namespace was made empty by the parent.
func limitSelf(cpu time.Duration, mem uint64) error {
	secs := uint64((cpu + time.Second - 1) / time.Second)
	// soft == hard: the kernel sends SIGKILL at the hard limit. SIGXCPU
	// at a lower soft limit would be ignored by the Go runtime anyway.
	if err := unix.Setrlimit(unix.RLIMIT_CPU, &unix.Rlimit{Cur: secs, Max: secs}); err != nil {
		return fmt.Errorf("RLIMIT_CPU: %w", err)
	}
	// RLIMIT_AS counts the Go runtime's reservations too (several hundred
	// MiB, more under -race), so the budget is on top of what is mapped now.
	base, err := vmSize()
	if err != nil {
		return err
	}
	as := base + mem
	if err := unix.Setrlimit(unix.RLIMIT_AS, &unix.Rlimit{Cur: as, Max: as}); err != nil {
		return fmt.Errorf("RLIMIT_AS: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var none [2]unix.CapUserData
	if err := unix.Capset(&hdr, &none[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

// vmSize is this process's mapped address space in bytes
// (/proc/self/statm, first field, in pages).
func vmSize() (uint64, error) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, err
	}
	f, _, _ := strings.Cut(string(b), " ")
	pages, err := strconv.ParseUint(f, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("statm: %w", err)
	}
	return pages * uint64(os.Getpagesize()), nil
}

func encodeRequest(k filterKey, cpu time.Duration, mem uint64) []byte {
	b := append([]byte(wireMagic), wireVersion)
	b = binary.LittleEndian.AppendUint16(b, k.linkType)
	b = binary.LittleEndian.AppendUint32(b, uint32(k.snaplen))
	b = binary.LittleEndian.AppendUint32(b, uint32((cpu+time.Second-1)/time.Second))
	b = binary.LittleEndian.AppendUint64(b, mem)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(k.expr)))
	return append(b, k.expr...)
}

func decodeRequest(b []byte) (k filterKey, cpu time.Duration, mem uint64, err error) {
	const hdr = 4 + 2 + 4 + 4 + 8 + 4
	if len(b) < hdr || string(b[:3]) != wireMagic || b[3] != wireVersion {
		return k, 0, 0, errors.New("bad request header")
	}
	le := binary.LittleEndian
	k.linkType = le.Uint16(b[4:])
	k.snaplen = int(le.Uint32(b[6:]))
	cpu = time.Duration(le.Uint32(b[10:])) * time.Second
	mem = le.Uint64(b[14:])
	n := int(le.Uint32(b[22:]))
	if n != len(b)-hdr || cpu <= 0 || mem == 0 {
		return k, 0, 0, errors.New("bad request")
	}
	k.expr = string(b[hdr:])
	return k, cpu, mem, nil
}

func encodeResponse(status byte, prog []unix.SockFilter, msg string) []byte {
	b := append([]byte(wireMagic), wireVersion, status)
	if status == statusOK {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(prog)))
		for _, in := range prog {
			b = binary.LittleEndian.AppendUint16(b, in.Code)
			b = append(b, in.Jt, in.Jf)
			b = binary.LittleEndian.AppendUint32(b, in.K)
		}
		return b
	}
	if len(msg) > maxWireMessage {
		msg = msg[:maxWireMessage]
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

// decodeResponse turns the child's answer into a result; every answer
// depends on the filter alone, so all are cached.
func decodeResponse(b []byte) (filterResult, error) {
	const hdr = 3 + 1 + 1 + 4
	if len(b) < hdr || string(b[:3]) != wireMagic || b[3] != wireVersion {
		return filterResult{}, errors.New("bad response header")
	}
	status, n := b[4], int(binary.LittleEndian.Uint32(b[5:]))
	b = b[hdr:]
	switch status {
	case statusOK:
		if n == 0 || n > MaxFilterInstructions || len(b) != n*8 {
			return filterResult{}, errors.New("bad program")
		}
		prog := make([]unix.SockFilter, n)
		for i := range prog {
			in := b[i*8:]
			prog[i] = unix.SockFilter{Code: binary.LittleEndian.Uint16(in), Jt: in[2], Jf: in[3], K: binary.LittleEndian.Uint32(in[4:])}
		}
		return filterResult{prog: prog, cache: true}, nil
	case statusBadFilter, statusTooComplex:
		if len(b) != n {
			return filterResult{}, errors.New("bad message")
		}
		sentinel := ErrBadFilter
		if status == statusTooComplex {
			sentinel = ErrFilterTooComplex
		}
		return filterResult{err: fmt.Errorf("%w: %s", sentinel, b), cache: true}, nil
	}
	return filterResult{}, fmt.Errorf("bad status %d", status)
}

// Isolation of the compiler child, decided by the first compile: a new,
// empty network namespace (lo down: a DNS query fails at once) when the
// service may create one (CAP_SYS_ADMIN, which it has to capture); else in
// a new user namespace too (unprivileged test runs); else none, and a name
// lookup is bounded by FilterCompileTimeout alone.
const (
	isolationUnknown int32 = iota
	isolationNetNS
	isolationUserNetNS
	isolationNone
)

var isolation atomic.Int32

// isolationMu serialises the first compiles until the mode is known.
var isolationMu sync.Mutex

func sysProcAttr(mode int32) *syscall.SysProcAttr {
	// Pdeathsig: the child dies with the thread that started it. A Go
	// thread exits only when a goroutine exits locked to it (netns.Do
	// after a failed restore), which would fail that one compile.
	a := &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if mode != isolationUserNetNS && os.Geteuid() == 0 {
		// The child runs as nobody: execve as non-root drops every
		// capability (and the spawning thread's NO_NEW_PRIVS keeps file
		// capabilities of our binary from coming back), so an exploit of
		// libpcap's parser gets no privilege, not even root's files.
		a.Credential = &syscall.Credential{Uid: childUID, Gid: childUID, Groups: []uint32{}}
	}
	switch mode {
	case isolationNetNS:
		a.Cloneflags = unix.CLONE_NEWNET
	case isolationUserNetNS:
		a.Cloneflags = unix.CLONE_NEWNET | unix.CLONE_NEWUSER
		a.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		a.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	return a
}

// childUID is the user (and group) the compiler child runs as: nobody.
const childUID = 65534

// childCmd is one compiler child, not yet started.
func childCmd(ctx context.Context, req []byte, stdout, stderr io.Writer, mode int32) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{filterCompilerArg0}
	// GOMAXPROCS=1: the child runs one cgo call; fewer threads, less
	// address space.
	// GORACE: a race-enabled binary (tests) would sleep 1 s at exit.
	cmd.Env = append(os.Environ(), filterCompilerEnv+"=1", "GOMAXPROCS=1",
		strings.TrimSpace("GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stdin = bytes.NewReader(req)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = time.Second
	cmd.SysProcAttr = sysProcAttr(mode)
	return cmd
}

// startChild starts a compiler child in the strongest isolation this
// process can use; the first call finds out which.
func startChild(ctx context.Context, req []byte, stdout, stderr io.Writer) (*exec.Cmd, error) {
	if m := isolation.Load(); m != isolationUnknown {
		cmd := childCmd(ctx, req, stdout, stderr, m)
		return cmd, cmd.Start()
	}
	isolationMu.Lock()
	defer isolationMu.Unlock()
	var err error
	for _, m := range []int32{isolationNetNS, isolationUserNetNS, isolationNone} {
		if l := isolation.Load(); l != isolationUnknown {
			m = l // found out while this call waited
		}
		cmd := childCmd(ctx, req, stdout, stderr, m)
		if err = cmd.Start(); err == nil {
			isolation.Store(m)
			return cmd, nil
		}
		if isolation.Load() != isolationUnknown || !(errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EACCES)) {
			return nil, err
		}
	}
	return nil, err
}

// runChild compiles k in a child process within the budget.
func (c *filterCompiler) runChild(ctx context.Context, k filterKey) filterResult {
	wctx, cancel := context.WithTimeout(ctx, c.wall)
	defer cancel()
	stdout := &cappedBuffer{max: maxWireResponse}
	stderr := &cappedBuffer{max: maxChildStderr}
	// The child is started from, and reaped on, a thread of its own with
	// PR_SET_NO_NEW_PRIVS set: the child inherits it, so executing our
	// binary cannot grant the file capabilities it carries in the image.
	// The attribute cannot be cleared, so the thread is never unlocked
	// and ends with its goroutine - after the child is reaped, because
	// Pdeathsig would kill the child when its starting thread exits.
	type started struct {
		cmd *exec.Cmd
		err error
	}
	startc, waitc := make(chan started, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			startc <- started{err: fmt.Errorf("no_new_privs: %w", err)}
			return
		}
		cmd, err := startChild(wctx, encodeRequest(k, c.cpu, c.mem), stdout, stderr)
		startc <- started{cmd, err}
		if err == nil {
			waitc <- cmd.Wait()
		}
	}()
	st0 := <-startc
	if st0.err != nil {
		return filterResult{err: fmt.Errorf("start filter compiler: %w", st0.err)}
	}
	cmd := st0.cmd
	c.started.Add(1)
	if c.onStart != nil {
		c.onStart(cmd.Process.Pid)
	}
	werr := <-waitc
	switch {
	case ctx.Err() != nil:
		return filterResult{err: ctx.Err()} // the last waiter left
	case wctx.Err() != nil:
		// Not cached: on a less busy moment it may fit.
		return filterResult{err: fmt.Errorf("%w: compiling it took longer than %v", ErrFilterTooComplex, c.wall)}
	case werr == nil:
		res, err := decodeResponse(stdout.Bytes())
		if err != nil {
			return filterResult{err: fmt.Errorf("filter compiler: %w", err)}
		}
		return res
	}
	st, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case st.Signaled() && (st.Signal() == syscall.SIGKILL || st.Signal() == syscall.SIGXCPU):
		// RLIMIT_CPU: nobody else kills it (the parent kills only on a
		// deadline or cancel, handled above; Pdeathsig cannot fire while
		// the starting thread waits for the child). The OOM killer could,
		// and the filter would then stay refused while it is among the
		// cached results. Comparing the child's rusage with the budget to
		// tell the two apart failed 1 run in 5 on a loaded machine (the
		// rusage came out below the budget), so it is not done.
		return filterResult{cache: true, err: fmt.Errorf("%w: compiling it takes more than %v of CPU time", ErrFilterTooComplex, c.cpu)}
	case bytes.Contains(stderr.Bytes(), []byte("out of memory")):
		// The Go runtime in the child hit RLIMIT_AS.
		return filterResult{cache: true, err: fmt.Errorf("%w: compiling it needs more than %d MiB of memory", ErrFilterTooComplex, c.mem>>20)}
	}
	line, _, _ := bytes.Cut(stderr.Bytes(), []byte("\n"))
	return filterResult{err: fmt.Errorf("filter compiler: %w: %s", werr, line)}
}

// cappedBuffer keeps the first max bytes written to it and discards the
// rest, so a misbehaving child cannot make the parent grow.
type cappedBuffer struct {
	bytes.Buffer
	max int
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
