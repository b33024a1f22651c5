//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// gpioSim is a gpio-sim chip made through configfs, with a Pi's line
// names: the button on GPIO17, the LED on GPIO27 (offsets 17 and 27 of a
// 28-line bank, as on a Pi's header chip).
type gpioSim struct {
	cfg      string // /sys/kernel/config/gpio-sim/<name>
	ChipName string // "gpiochipN": what board.chip must say
	DevName  string // "gpio-sim.N"
	sysfs    string // /sys/devices/platform/gpio-sim.N/gpiochipN
}

const configfsSim = "/sys/kernel/config/gpio-sim"

func writeFile(path, value string) error {
	if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
		return fmt.Errorf("writing %q to %s: %w", value, path, err)
	}
	return nil
}

func readTrim(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func newGPIOSim(name string) (*gpioSim, error) {
	g := &gpioSim{cfg: filepath.Join(configfsSim, name)}
	bank := filepath.Join(g.cfg, "bank0")
	steps := []func() error{
		func() error { return os.Mkdir(g.cfg, 0o755) },
		func() error { return os.Mkdir(bank, 0o755) },
		func() error { return writeFile(filepath.Join(bank, "num_lines"), "28") },
		func() error { return writeFile(filepath.Join(bank, "label"), "pinctrl-waphone-sim") },
		func() error { return os.Mkdir(filepath.Join(bank, "line17"), 0o755) },
		func() error { return writeFile(filepath.Join(bank, "line17", "name"), "GPIO17") },
		func() error { return os.Mkdir(filepath.Join(bank, "line27"), 0o755) },
		func() error { return writeFile(filepath.Join(bank, "line27", "name"), "GPIO27") },
		func() error { return writeFile(filepath.Join(g.cfg, "live"), "1") },
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, fmt.Errorf("gpio-sim: %w", err)
		}
	}
	var err error
	if g.DevName, err = readTrim(filepath.Join(g.cfg, "dev_name")); err != nil {
		return nil, fmt.Errorf("gpio-sim dev_name: %w", err)
	}
	if g.ChipName, err = readTrim(filepath.Join(bank, "chip_name")); err != nil {
		return nil, fmt.Errorf("gpio-sim chip_name: %w", err)
	}
	g.sysfs = filepath.Join("/sys/devices/platform", g.DevName, g.ChipName)
	if _, err := os.Stat(filepath.Join(g.sysfs, "sim_gpio17", "pull")); err != nil {
		return nil, fmt.Errorf("gpio-sim: %w", err)
	}
	return g, nil
}

// pull sets the simulated pull of an input line: "pull-down" grounds the
// button's line (a press: the button is active low), "pull-up" lets go.
func (g *gpioSim) pull(offset int, p string) error {
	return writeFile(filepath.Join(g.sysfs, fmt.Sprintf("sim_gpio%d", offset), "pull"), p)
}

// value is a line's level as the chip sees it: for an output (the LED),
// what the consumer set.
func (g *gpioSim) value(offset int) (int, error) {
	s, err := readTrim(filepath.Join(g.sysfs, fmt.Sprintf("sim_gpio%d", offset), "value"))
	if err != nil {
		return 0, err
	}
	if s == "1" {
		return 1, nil
	}
	return 0, nil
}

// press holds the button for d. bounce adds contact chatter: several edges
// within a few milliseconds at both ends of the press.
func (g *gpioSim) press(offset int, d time.Duration, bounce bool) error {
	seq := []string{"pull-down"}
	if bounce {
		seq = []string{"pull-down", "pull-up", "pull-down", "pull-up", "pull-down", "pull-up", "pull-down"}
	}
	for _, p := range seq {
		if err := g.pull(offset, p); err != nil {
			return err
		}
		if bounce {
			time.Sleep(500 * time.Microsecond)
		}
	}
	time.Sleep(d)
	seq = []string{"pull-up"}
	if bounce {
		seq = []string{"pull-up", "pull-down", "pull-up", "pull-down", "pull-up"}
	}
	for _, p := range seq {
		if err := g.pull(offset, p); err != nil {
			return err
		}
		if bounce {
			time.Sleep(500 * time.Microsecond)
		}
	}
	return nil
}

// sampleLED reads the LED line every 25 ms for d: how many samples were on
// and off, and how often it changed.
func (g *gpioSim) sampleLED(offset int, d time.Duration) (on, off, changes int, err error) {
	last := -1
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(25 * time.Millisecond) {
		v, err := g.value(offset)
		if err != nil {
			return on, off, changes, err
		}
		if v == 1 {
			on++
		} else {
			off++
		}
		if last >= 0 && v != last {
			changes++
		}
		last = v
	}
	return on, off, changes, nil
}
