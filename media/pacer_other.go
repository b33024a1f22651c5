//go:build !linux

package media

import "context"

func newPacer(context.Context) pacer { return newTimerPacer() }
