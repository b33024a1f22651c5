//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// uhid (linux/uhid.h): a HID device made from user space. The kernel's
// hid-generic binds it and makes a real /dev/hidrawN (and input devices
// for what hid-input maps); what the host writes to the hidraw node comes
// back here as UHID_OUTPUT events.
const (
	uhidDestroy        = 1
	uhidStart          = 2
	uhidStop           = 3
	uhidOpen           = 4
	uhidClose          = 5
	uhidOutput         = 6
	uhidGetReport      = 9
	uhidGetReportReply = 10
	uhidCreate2        = 11
	uhidInput2         = 12
	uhidSetReport      = 13
	uhidSetReportReply = 14

	uhidEventSize = 4 + 4372 // type + the largest union member (uhid_create2_req), packed
	busUSB        = 0x03
)

// uhidDevice is one created device and what the host wrote to it.
type uhidDevice struct {
	f *os.File

	mu      sync.Mutex
	outputs map[byte]byte // report ID → first data byte of its last output report
	nOut    int           // output reports seen
	opened  bool          // the hidraw node (or input device) is open
	done    chan struct{}
}

// newUHID creates the device: name (HID_NAME, what waphone's discovery
// matches), USB vendor/product ids, and a report descriptor.
func newUHID(name string, vendor, product uint32, desc []byte) (*uhidDevice, error) {
	f, err := os.OpenFile("/dev/uhid", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("uhid: %w", err)
	}
	ev := make([]byte, uhidEventSize)
	binary.LittleEndian.PutUint32(ev[0:], uhidCreate2)
	p := ev[4:]
	copy(p[0:128], name)
	copy(p[128:192], "usb-0000:00:14.0-1/input3") // phys, as a USB headset's
	binary.LittleEndian.PutUint16(p[256:], uint16(len(desc)))
	binary.LittleEndian.PutUint16(p[258:], busUSB)
	binary.LittleEndian.PutUint32(p[260:], vendor)
	binary.LittleEndian.PutUint32(p[264:], product)
	binary.LittleEndian.PutUint32(p[268:], 0x0100)
	copy(p[276:], desc)
	if _, err := f.Write(ev); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("uhid create: %w", err)
	}
	d := &uhidDevice{f: f, outputs: map[byte]byte{}, done: make(chan struct{})}
	go d.read()
	return d, nil
}

// read answers the kernel's requests and records output reports until the
// device is destroyed.
func (d *uhidDevice) read() {
	defer close(d.done)
	buf := make([]byte, uhidEventSize)
	for {
		n, err := d.f.Read(buf)
		if err != nil {
			return
		}
		if n < 4 {
			continue
		}
		switch binary.LittleEndian.Uint32(buf[0:]) {
		case uhidOpen:
			d.mu.Lock()
			d.opened = true
			d.mu.Unlock()
		case uhidClose:
			d.mu.Lock()
			d.opened = false
			d.mu.Unlock()
		case uhidOutput:
			size := int(binary.LittleEndian.Uint16(buf[4+4096:]))
			if size >= 2 && size <= 4096 {
				d.mu.Lock()
				d.outputs[buf[4]] = buf[5]
				d.nOut++
				d.mu.Unlock()
			}
		case uhidGetReport:
			// Nothing to report: answer at once so that nobody waits for
			// the kernel's 5 s timeout.
			rep := make([]byte, uhidEventSize)
			binary.LittleEndian.PutUint32(rep[0:], uhidGetReportReply)
			copy(rep[4:8], buf[4:8])                  // id
			binary.LittleEndian.PutUint16(rep[8:], 5) // EIO
			_, _ = d.f.Write(rep)
		case uhidSetReport:
			rep := make([]byte, uhidEventSize)
			binary.LittleEndian.PutUint32(rep[0:], uhidSetReportReply)
			copy(rep[4:8], buf[4:8])
			_, _ = d.f.Write(rep)
		}
	}
}

// input sends one input report (report ID first when the descriptor has IDs).
func (d *uhidDevice) input(rep ...byte) error {
	ev := make([]byte, uhidEventSize)
	binary.LittleEndian.PutUint32(ev[0:], uhidInput2)
	binary.LittleEndian.PutUint16(ev[4:], uint16(len(rep)))
	copy(ev[6:], rep)
	if _, err := d.f.Write(ev); err != nil {
		return fmt.Errorf("uhid input: %w", err)
	}
	return nil
}

// output is the first data byte of the last output report with this ID.
func (d *uhidDevice) output(id byte) (v byte, seen bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v, seen = d.outputs[id]
	return v, seen
}

func (d *uhidDevice) outputCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.nOut
}

// waitOutput waits until the last output report id has bit 0 == on.
func (d *uhidDevice) waitOutput(id byte, on bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		v, seen := d.output(id)
		if seen && (v&1 == 1) == on {
			return nil
		}
		if time.Now().After(deadline) {
			if !seen {
				return fmt.Errorf("no output report 0x%02x written in %v", id, timeout)
			}
			return fmt.Errorf("output report 0x%02x is %02x after %v, want bit 0 = %v", id, v, timeout, on)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// destroy unplugs the device.
func (d *uhidDevice) destroy() error {
	ev := make([]byte, uhidEventSize)
	binary.LittleEndian.PutUint32(ev[0:], uhidDestroy)
	_, werr := d.f.Write(ev)
	cerr := d.f.Close()
	select {
	case <-d.done:
	case <-time.After(2 * time.Second):
	}
	return errors.Join(werr, cerr)
}
