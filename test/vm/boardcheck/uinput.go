//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// uinput (linux/uinput.h): an input device made from user space, as a
// headset's keys appear on evdev.
const (
	uiDevCreate  = 0x5501     // _IO('U', 1)
	uiDevDestroy = 0x5502     // _IO('U', 2)
	uiDevSetup   = 0x405c5503 // _IOW('U', 3, struct uinput_setup), 92 bytes
	uiSetEvBit   = 0x40045564 // _IOW('U', 100, int)
	uiSetKeyBit  = 0x40045565 // _IOW('U', 101, int)

	evSyn = 0x00
	evKey = 0x01

	keyVolumeDown = 114
	keyVolumeUp   = 115
	keyPhone      = 169
	keyMicMute    = 248
)

type uinputDevice struct{ f *os.File }

func ioctlInt(fd uintptr, req uint, arg int) error { return unix.IoctlSetInt(int(fd), req, arg) }

// newUinput creates a keyboard-like device with the given keys.
func newUinput(name string, vendor, product uint16, keys ...int) (*uinputDevice, error) {
	f, err := os.OpenFile("/dev/uinput", os.O_WRONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("uinput: %w", err)
	}
	fd := f.Fd()
	fail := func(what string, err error) (*uinputDevice, error) {
		_ = f.Close()
		return nil, fmt.Errorf("uinput %s: %w", what, err)
	}
	if err := ioctlInt(fd, uiSetEvBit, evKey); err != nil {
		return fail("UI_SET_EVBIT", err)
	}
	for _, k := range keys {
		if err := ioctlInt(fd, uiSetKeyBit, k); err != nil {
			return fail("UI_SET_KEYBIT", err)
		}
	}
	// struct uinput_setup { struct input_id id; char name[80]; __u32 ff_effects_max; }
	var setup [92]byte
	binary.LittleEndian.PutUint16(setup[0:], busUSB)
	binary.LittleEndian.PutUint16(setup[2:], vendor)
	binary.LittleEndian.PutUint16(setup[4:], product)
	binary.LittleEndian.PutUint16(setup[6:], 1)
	copy(setup[8:87], name)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, fd, uiDevSetup, uintptr(unsafe.Pointer(&setup[0]))); e != 0 {
		return fail("UI_DEV_SETUP", e)
	}
	if err := ioctlInt(fd, uiDevCreate, 0); err != nil {
		return fail("UI_DEV_CREATE", err)
	}
	return &uinputDevice{f: f}, nil
}

// event writes one struct input_event (timeval, type, code, value); the
// kernel stamps the time itself.
func (u *uinputDevice) event(typ, code uint16, value int32) error {
	var tv unix.Timeval
	buf := make([]byte, int(unsafe.Sizeof(tv))+8)
	off := len(buf) - 8
	binary.LittleEndian.PutUint16(buf[off:], typ)
	binary.LittleEndian.PutUint16(buf[off+2:], code)
	binary.LittleEndian.PutUint32(buf[off+4:], uint32(value))
	_, err := u.f.Write(buf)
	return err
}

// tap presses and releases a key, each followed by a SYN_REPORT.
func (u *uinputDevice) tap(key int) error {
	for _, v := range []int32{1, 0} {
		if err := u.event(evKey, uint16(key), v); err != nil {
			return fmt.Errorf("uinput key %d: %w", key, err)
		}
		if err := u.event(evSyn, 0, 0); err != nil {
			return fmt.Errorf("uinput sync: %w", err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	return nil
}

func (u *uinputDevice) destroy() error {
	err := ioctlInt(u.f.Fd(), uiDevDestroy, 0)
	if cerr := u.f.Close(); err == nil {
		err = cerr
	}
	return err
}
