// Command pfcat is a minimal packetflix client: it opens a /capture
// WebSocket and writes the pcapng stream to stdout, for tshark, Wireshark
// (wireshark -k -i -) or a file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/packetflix/packetflix/pcapng"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pfcat:", err)
		os.Exit(1)
	}
}

func run() error {
	addr := flag.String("addr", "127.0.0.1:5001", "packetflix service address")
	netns := flag.String("netns", "", "network namespace inode")
	nif := flag.String("nif", "", "interfaces, slash-separated (default all)")
	filter := flag.String("filter", "", "tcpdump capture filter")
	chaste := flag.Bool("chaste", false, "do not enable promiscuous mode")
	count := flag.Int("count", 0, "stop after this many packets (0: never)")
	dur := flag.Duration("duration", 0, "stop after this long (0: never)")
	flag.Parse()
	if *netns == "" {
		return errors.New("-netns is required")
	}
	q := url.Values{"netns": {*netns}}
	if *nif != "" {
		q.Set("nif", *nif)
	}
	if *filter != "" {
		q.Set("filter", *filter)
	}
	if *chaste {
		q.Set("chaste", "")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *dur > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *dur)
		defer cancel()
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(dctx, "ws://"+*addr+"/capture?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(16 << 20)

	// Count packets by parsing a copy of the stream as it passes.
	pr, pw := io.Pipe()
	enough := make(chan struct{})
	go func() {
		r := pcapng.NewReader(pr)
		n := 0
		for {
			b, err := r.Next()
			if err != nil {
				_, _ = io.Copy(io.Discard, pr)
				return
			}
			if b.Type == pcapng.BlockTypeEPB {
				if n++; *count > 0 && n == *count {
					close(enough)
				}
			}
		}
	}()
	defer pw.Close()

	msgs := make(chan []byte)
	errc := make(chan error, 1)
	go func() {
		for {
			_, b, err := c.Read(context.Background())
			if err != nil {
				errc <- err
				return
			}
			msgs <- b
		}
	}()
	for {
		select {
		case b := <-msgs:
			if _, err := os.Stdout.Write(b); err != nil {
				return err
			}
			_, _ = pw.Write(b)
		case err := <-errc:
			if s := websocket.CloseStatus(err); s == websocket.StatusNormalClosure || s == websocket.StatusGoingAway {
				var ce websocket.CloseError
				errors.As(err, &ce)
				fmt.Fprintln(os.Stderr, "pfcat: capture ended:", ce.Reason)
				return nil
			}
			return err
		case <-enough:
			return c.Close(websocket.StatusNormalClosure, "enough packets")
		case <-ctx.Done():
			return c.Close(websocket.StatusNormalClosure, "done")
		}
	}
}
