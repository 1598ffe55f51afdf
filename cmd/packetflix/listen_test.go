package main

import "testing"

func Test_listenAddress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		listen  string
		port    int
		portSet bool
		want    string
		ok      bool
	}{
		{"default: all addresses", "", 5001, false, ":5001", true},
		{"default with --port", "", 6000, true, ":6000", true},
		{"address", "127.0.0.1", 5001, false, "127.0.0.1:5001", true},
		{"address with --port", "127.0.0.1", 6000, true, "127.0.0.1:6000", true},
		{"address and port", "127.0.0.1:6000", 5001, false, "127.0.0.1:6000", true},
		{"port only", ":6000", 5001, false, ":6000", true},
		{"same port twice", "127.0.0.1:6000", 6000, true, "127.0.0.1:6000", true},
		{"ports disagree", "127.0.0.1:6000", 7000, true, "", false},
		{"IPv6", "::1", 5001, false, "[::1]:5001", true},
		{"IPv6 in brackets", "[::1]", 5001, false, "[::1]:5001", true},
		{"IPv6 and port", "[::1]:6000", 5001, false, "[::1]:6000", true},
		{"host name", "localhost", 5001, false, "localhost:5001", true},
		{"bad port", "127.0.0.1:http", 5001, false, "", false},
		{"port out of range", "127.0.0.1:70000", 5001, false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := listenAddress(tt.listen, tt.port, tt.portSet)
			if (err == nil) != tt.ok {
				t.Fatalf("listenAddress(%q, %d, %v) error %v, want ok %v", tt.listen, tt.port, tt.portSet, err, tt.ok)
			}
			if got != tt.want {
				t.Fatalf("listenAddress(%q, %d, %v) = %q, want %q", tt.listen, tt.port, tt.portSet, got, tt.want)
			}
		})
	}
}
