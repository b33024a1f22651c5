//go:build !linux

package audio

func routeALSA() bool { return false }
