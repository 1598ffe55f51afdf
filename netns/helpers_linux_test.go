package netns_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/packetflix/packetflix/internal/testns"
)

// threadNetns returns the netns link of the calling goroutine's thread; the
// caller must hold the thread locked for the answer to mean anything.
func threadNetns(t testing.TB) string {
	t.Helper()
	l, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatalf("readlink /proc/thread-self/ns/net: %v", err)
	}
	return l
}

// selfNetns returns the netns link of this process's main thread.
func selfNetns(t testing.TB) string {
	t.Helper()
	l, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("readlink /proc/self/ns/net: %v", err)
	}
	return l
}

// checkThreadHome fails if thread tid of this process still exists and is
// not in the netns the process started in. A thread that is gone is fine:
// that is what Do does with a thread it cannot restore.
func checkThreadHome(t testing.TB, tid int) {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/self/task/%d/ns/net", tid))
	if err != nil {
		return
	}
	if want := testns.Home(t); l != want {
		t.Errorf("thread %d left in %s, want %s", tid, l, want)
	}
}
