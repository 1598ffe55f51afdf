package capture

import (
	"testing"
	"time"
)

// Test_fitRing: rings shrink to share the session's ring memory, in whole
// blocks, never below MinFitBlocks, and never grow.
func Test_fitRing(t *testing.T) {
	o := RingOptions{BlockSize: 256 << 10, NumBlocks: 32, BlockTimeout: 2 * time.Millisecond} // 8 MiB
	for _, tc := range []struct {
		n     int
		limit int64
		want  int
	}{
		{1, 0, 32},                      // no limit
		{1, 128 << 20, 32},              // fits
		{16, 128 << 20, 32},             // exactly fits
		{17, 128 << 20, 30},             // 7.5 MiB each -> 30 blocks
		{64, 128 << 20, 8},              // 2 MiB each
		{1000, 128 << 20, MinFitBlocks}, // never below the floor (checkCaps refuses then)
	} {
		if got := fitRing(o, tc.n, tc.limit).NumBlocks; got != tc.want {
			t.Errorf("fitRing(8 MiB, %d rings, limit %d) = %d blocks, want %d", tc.n, tc.limit, got, tc.want)
		}
	}
	small := RingOptions{BlockSize: 64 << 10, NumBlocks: 2}
	if got := fitRing(small, 5, 512<<10).NumBlocks; got != 2 {
		t.Errorf("fitRing of a 2-block ring that does not fit = %d blocks, want 2 (never grown to the floor)", got)
	}
}
