// Package session turns a capture into the pcapng message stream a client
// receives: the encoder that is the capture's Sink, its one message
// buffer, and the writes to the client through a Sender, which transports
// (WebSocket, chunked HTTP) provide. It knows no HTTP.
package session
