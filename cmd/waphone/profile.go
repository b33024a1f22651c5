package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"

	"github.com/waphone/waphone/config"
)

// startProfiles starts a CPU profile into cpuFile and arranges a heap
// profile into memFile and the goroutines into memFile.goroutines (either
// "" for none); the returned stop writes them. It is for measuring the daemon in a real call (docs/build.md).
func startProfiles(cpuFile, memFile string, log *slog.Logger) (stop func(), err error) {
	var cpu *os.File
	if cpuFile != "" {
		if cpu, err = os.Create(cpuFile); err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			_ = cpu.Close()
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
	}
	return func() {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				log.Warn("writing the cpu profile failed", "file", cpuFile, "err", err)
			}
		}
		if memFile == "" {
			return
		}
		f, err := os.Create(memFile)
		if err == nil {
			runtime.GC() // up-to-date live heap
			err = pprof.Lookup("heap").WriteTo(f, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			log.Warn("writing the heap profile failed", "file", memFile, "err", err)
		}
	}, nil
}

// writeGoroutines writes what runs now (at the stop signal: a call, if
// one is up) next to the heap profile, as memFile.goroutines.
func writeGoroutines(memFile string, log *slog.Logger) {
	if memFile == "" {
		return
	}
	g, err := os.Create(memFile + ".goroutines")
	if err == nil {
		err = pprof.Lookup("goroutine").WriteTo(g, 1)
		if cerr := g.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		log.Warn("writing the goroutines failed", "file", memFile+".goroutines", "err", err)
	}
}

// applyRuntime sets the Go runtime's soft memory limit and GC target
// from [runtime], unless GOMEMLIMIT or GOGC is set (the operator's word
// wins).
func applyRuntime(cfg config.Runtime, log *slog.Logger) {
	if os.Getenv("GOGC") == "" && cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
		log.Debug("go gc percent set", "percent", cfg.GCPercent)
	}
	if os.Getenv("GOMEMLIMIT") != "" || cfg.MemoryLimitMiB <= 0 {
		return
	}
	debug.SetMemoryLimit(int64(cfg.MemoryLimitMiB) << 20)
	log.Debug("go memory limit set", "mib", cfg.MemoryLimitMiB)
}
