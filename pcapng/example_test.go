package pcapng_test

import (
	"bytes"
	"fmt"
	"io"
	"log"

	"github.com/packetflix/packetflix/pcapng"
)

// Example writes a tiny stream with Writer and reads it back.
func Example() {
	var stream bytes.Buffer
	w, err := pcapng.NewWriter(&stream, pcapng.SectionInfo{UserAppl: "example"})
	if err != nil {
		log.Fatal(err)
	}
	id, err := w.AddInterface(pcapng.Interface{LinkType: pcapng.LinkTypeEthernet, Name: "eth0"})
	if err != nil {
		log.Fatal(err)
	}
	frame := make([]byte, 60)
	for i := range 3 {
		p := pcapng.Packet{InterfaceID: id, Timestamp: int64(i) * 1e6, OrigLen: 60, Direction: pcapng.DirectionInbound}
		if err := w.WritePacket(&p, frame); err != nil {
			log.Fatal(err)
		}
	}

	r := pcapng.NewReader(&stream)
	packets := 0
	for {
		b, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		if b.Type == pcapng.BlockTypeEPB {
			packets++
		}
	}
	fmt.Println(r.Interfaces()[0].Name, packets)
	// Output: eth0 3
}

// ExampleAppendEPB batches packets into a message buffer, checking with
// EPBSize whether the next one still fits.
func ExampleAppendEPB() {
	const maxMessage = 512
	msg := make([]byte, 0, maxMessage)
	msg = pcapng.AppendSHB(msg, pcapng.SectionInfo{})
	msg = pcapng.AppendIDB(msg, pcapng.Interface{LinkType: pcapng.LinkTypeEthernet})

	frame := make([]byte, 60)
	p := pcapng.Packet{OrigLen: 60, Direction: pcapng.DirectionOutbound}
	for range 5 {
		if len(msg)+pcapng.EPBSize(&p, len(frame)) > maxMessage {
			fmt.Println("send", len(msg), "bytes")
			msg = msg[:0]
		}
		msg = pcapng.AppendEPB(msg, &p, frame)
	}
	fmt.Println("send", len(msg), "bytes")
	// Output:
	// send 476 bytes
	// send 104 bytes
}
