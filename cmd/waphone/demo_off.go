//go:build nodemo

package main

import (
	"context"
	"errors"
	"io"
)

// demoBuilt: this build has no demo.
const demoBuilt = false

// cmdDemo: board builds (scripts/cross.sh, the Buildroot package) leave
// the demo, metasim and the test PKI out (the nodemo tag) to stay small.
func cmdDemo(context.Context, []string, io.Writer, io.Writer) error {
	return errors.New("the demo is not in this build (built with -tags nodemo); a development build (make build) has it")
}
