//go:build !unix

package main

import "os"

// watchStdin does not watch on this system: eof never fires.
func watchStdin(*os.File) (eof <-chan struct{}, stop func(), err error) {
	return nil, func() {}, nil
}
