package capture_test

import (
	"os"
	"testing"

	"github.com/packetflix/packetflix/capture"
)

// TestMain lets this test binary be the filter compiler child that the
// capture package starts through /proc/self/exe.
func TestMain(m *testing.M) {
	capture.MaybeRunFilterCompiler()
	os.Exit(m.Run())
}
