package main

import (
	"os"
	"testing"

	"github.com/packetflix/packetflix/capture"
)

// TestMain lets this test binary be the filter compiler child that the
// in-process service of the integration tests starts through
// /proc/self/exe.
func TestMain(m *testing.M) {
	capture.MaybeRunFilterCompiler()
	os.Exit(m.Run())
}
