package main

import "testing"

func Test_parseSize(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"256MiB", 256 << 20, true},
		{"256 MiB", 256 << 20, true},
		{"1GiB", 1 << 30, true},
		{"512k", 512 << 10, true},
		{"4096", 4096, true},
		{"0", 0, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1MiB", 0, false},
		{"1.5GiB", 0, false},
		{"1TiB", 0, false},
		{"9999999999999GiB", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// Test_ringOptions: --ring-size in whole blocks of at least 1 MiB.
func Test_ringOptions(t *testing.T) {
	for _, tc := range []struct {
		in     string
		blocks int
		ok     bool
	}{
		{"8MiB", 32, true},
		{"1MiB", 4, true},
		{"1280KiB", 5, true},
		{"64M", 256, true},
		{"512KiB", 0, false},  // under 1 MiB
		{"1000KiB", 0, false}, // not whole blocks
		{"lots", 0, false},
	} {
		o, err := ringOptions(tc.in)
		if (err == nil) != tc.ok || (tc.ok && (o.NumBlocks != tc.blocks || o.BlockSize != 256<<10)) {
			t.Errorf("ringOptions(%q) = %+v, %v; want %d blocks of 256 KiB, ok %v", tc.in, o, err, tc.blocks, tc.ok)
		}
	}
}
