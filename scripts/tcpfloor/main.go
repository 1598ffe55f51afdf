// Command tcpfloor measures what writing a stream to a local TCP client
// costs a Go process on this machine: the floor under the service's CPU
// (docs/capture-engine.md). A writer sends -chunk bytes every -every for
// -dur to a reader process it starts, and prints its own CPU per second.
// Not part of the product: go run ./scripts/tcpfloor -chunk 46000 -every 2ms
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	reader := flag.String("reader", "", "internal: read from this address and discard")
	chunk := flag.Int("chunk", 46000, "bytes per write")
	every := flag.Duration("every", 2*time.Millisecond, "one write per this long")
	dur := flag.Duration("dur", 5*time.Second, "how long to write")
	flag.Parse()
	if *reader != "" {
		c, err := net.Dial("tcp", *reader)
		if err != nil {
			log.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, c)
		return
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-reader", ln.Addr().String())
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	buf := make([]byte, *chunk)
	var r0, r1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	n := 0
	for next := start; time.Since(start) < *dur; {
		if _, err := c.Write(buf); err != nil {
			log.Fatal(err)
		}
		n += len(buf)
		next = next.Add(*every)
		time.Sleep(time.Until(next))
	}
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	el := time.Since(start).Seconds()
	cpu := time.Duration(r1.Utime.Nano() + r1.Stime.Nano() - r0.Utime.Nano() - r0.Stime.Nano())
	fmt.Printf("%d bytes every %v: %.1f MB/s, writer CPU %.1f ms/s\n", *chunk, *every, float64(n)/el/1e6, float64(cpu.Microseconds())/1e3/el)
	_ = c.Close()
	_ = cmd.Wait()
}
