package board

import (
	"errors"
	"fmt"
)

// A minimal HID report descriptor parser (HID 1.11, §6.2.2), written by
// hand: the Go module proxy serves no small pure-Go parser. It walks the
// items (main, global, local; long items are skipped), keeps the global
// state with Push/Pop, and lays out every Input and Output field bit by
// bit per report ID, which is all that is needed to find a headset's
// telephony controls and LEDs. Feature reports are ignored.

// HID usages: page<<16 | id (HID Usage Tables).
const (
	usageHookSwitch = 0x000B0020 // Telephony: the call button (OOC)
	usageFlash      = 0x000B0021
	usageRedial     = 0x000B0024
	usagePhoneMute  = 0x000B002F
	usageLEDMute    = 0x00080009
	usageLEDOffHook = 0x00080017
	usageLEDRing    = 0x00080018
)

var (
	hidInputUsages  = map[uint32]bool{usageHookSwitch: true, usageFlash: true, usageRedial: true, usagePhoneMute: true}
	hidOutputUsages = map[uint32]bool{usageLEDMute: true, usageLEDOffHook: true, usageLEDRing: true}
)

// hidField is where one usage lives in a report.
type hidField struct {
	Usage    uint32
	ReportID uint8 // 0: the descriptor has no report IDs
	Offset   int   // in bits, from the first data byte (after the report ID)
	Size     int   // in bits, 1..32
	Relative bool  // a momentary button rather than an on/off state
	// An array field holds the indexes of the usages that are on: the
	// usage is on when one of Count slots holds Index.
	Array bool
	Index int32
	Count int
}

// hidLayout is what a report descriptor says about the usages we use.
type hidLayout struct {
	ReportIDs bool
	In        map[uint32]hidField
	Out       map[uint32]hidField
	OutBits   map[uint8]int // the data length of each output report, in bits
}

// telephony reports whether the device has a call button or a mute key.
func (l *hidLayout) telephony() bool {
	_, hook := l.In[usageHookSwitch]
	_, mute := l.In[usagePhoneMute]
	return hook || mute
}

// Limits that keep a hostile or broken descriptor from costing much.
const (
	maxReportBits = 8 * 4096
	maxPushDepth  = 16
	maxUsages     = 1024
)

type hidGlobals struct {
	page        uint32
	logMin      int32
	reportSize  uint32
	reportCount uint32
	reportID    uint8
}

type hidUsageItem struct {
	value    uint32
	extended bool // a 4-byte usage carries its own page
}

// parseReportDescriptor lays out the telephony and LED usages of d.
func parseReportDescriptor(d []byte) (*hidLayout, error) {
	if len(d) == 0 {
		return nil, errors.New("empty report descriptor")
	}
	l := &hidLayout{In: map[uint32]hidField{}, Out: map[uint32]hidField{}, OutBits: map[uint8]int{}}
	var (
		g        hidGlobals
		stack    []hidGlobals
		usages   []uint32 // resolved at the main item with the page in force
		pending  []hidUsageItem
		umin     *hidUsageItem
		depth    int
		inBits   = map[uint8]int{}
		sawMain  bool
		sawIDs   bool
		resolved = func(u hidUsageItem, page uint32) uint32 {
			if u.extended {
				return u.value
			}
			return page<<16 | u.value&0xffff
		}
	)
	resetLocals := func() { pending, usages, umin = pending[:0], usages[:0], nil }
	for i := 0; i < len(d); {
		prefix := d[i]
		if prefix == 0xfe { // long item: size, tag, data; none is defined
			if i+2 >= len(d) {
				return nil, fmt.Errorf("report descriptor: long item at byte %d truncated", i)
			}
			n := int(d[i+1])
			if i+3+n > len(d) {
				return nil, fmt.Errorf("report descriptor: long item at byte %d truncated", i)
			}
			i += 3 + n
			continue
		}
		size := [4]int{0, 1, 2, 4}[prefix&3]
		if i+1+size > len(d) {
			return nil, fmt.Errorf("report descriptor: item 0x%02x at byte %d truncated (%d data bytes, %d left)", prefix, i, size, len(d)-i-1)
		}
		var data uint32
		for k := 0; k < size; k++ {
			data |= uint32(d[i+1+k]) << (8 * k)
		}
		signed := int32(data)
		switch size {
		case 1:
			signed = int32(int8(data))
		case 2:
			signed = int32(int16(data))
		}
		at := i
		i += 1 + size
		typ, tag := (prefix>>2)&3, prefix>>4
		switch typ {
		case 0: // main
			sawMain = true
			switch tag {
			case 0x8, 0x9: // Input, Output
				if g.reportSize > 256 || g.reportCount > maxReportBits {
					return nil, fmt.Errorf("report descriptor: field at byte %d is %d×%d bits", at, g.reportCount, g.reportSize)
				}
				bits := int(g.reportSize) * int(g.reportCount)
				offs := inBits
				want := hidInputUsages
				fields := l.In
				if tag == 0x9 {
					offs, want, fields = l.OutBits, hidOutputUsages, l.Out
				}
				off := offs[g.reportID]
				if off+bits > maxReportBits {
					return nil, fmt.Errorf("report descriptor: report %d longer than %d bits", g.reportID, maxReportBits)
				}
				constant, variable, relative := data&1 != 0, data&2 != 0, data&4 != 0
				for _, u := range pending {
					usages = append(usages, resolved(u, g.page))
				}
				if !constant && len(usages) > 0 && g.reportSize >= 1 && g.reportSize <= 32 {
					if variable {
						for k := 0; k < int(g.reportCount); k++ {
							u := usages[len(usages)-1] // the last usage repeats
							if k < len(usages) {
								u = usages[k]
							}
							if _, dup := fields[u]; want[u] && !dup {
								fields[u] = hidField{Usage: u, ReportID: g.reportID, Offset: off + k*int(g.reportSize), Size: int(g.reportSize), Relative: relative}
							}
						}
					} else if g.reportCount > 0 {
						for k, u := range usages {
							if _, dup := fields[u]; want[u] && !dup {
								fields[u] = hidField{Usage: u, ReportID: g.reportID, Offset: off, Size: int(g.reportSize), Relative: relative,
									Array: true, Index: g.logMin + int32(k), Count: int(g.reportCount)}
							}
						}
					}
				}
				offs[g.reportID] = off + bits
			case 0xa: // Collection
				depth++
				if depth > 64 {
					return nil, errors.New("report descriptor: collections nested too deep")
				}
			case 0xc: // End Collection
				if depth == 0 {
					return nil, fmt.Errorf("report descriptor: End Collection at byte %d without a Collection", at)
				}
				depth--
			case 0xb: // Feature: not used here
			default:
				return nil, fmt.Errorf("report descriptor: unknown main item 0x%02x at byte %d", prefix, at)
			}
			resetLocals()
		case 1: // global
			switch tag {
			case 0x0:
				g.page = data & 0xffff
			case 0x1:
				g.logMin = signed
			case 0x7:
				g.reportSize = data
			case 0x8:
				if data == 0 || data > 255 {
					return nil, fmt.Errorf("report descriptor: Report ID %d at byte %d", data, at)
				}
				if sawMain && !sawIDs && (len(inBits) > 0 || len(l.OutBits) > 0) {
					return nil, fmt.Errorf("report descriptor: Report ID at byte %d after fields without one", at)
				}
				g.reportID, sawIDs, l.ReportIDs = uint8(data), true, true
			case 0x9:
				g.reportCount = data
			case 0xa: // Push
				if len(stack) >= maxPushDepth {
					return nil, errors.New("report descriptor: Push nested too deep")
				}
				stack = append(stack, g)
			case 0xb: // Pop
				if len(stack) == 0 {
					return nil, fmt.Errorf("report descriptor: Pop at byte %d without a Push", at)
				}
				g, stack = stack[len(stack)-1], stack[:len(stack)-1]
			}
		case 2: // local
			item := hidUsageItem{value: data, extended: size == 4}
			switch tag {
			case 0x0: // Usage
				pending = append(pending, item)
			case 0x1: // Usage Minimum
				umin = &item
			case 0x2: // Usage Maximum
				if umin == nil {
					continue // a maximum without a minimum: ignored, as Linux does
				}
				lo, hi := resolved(*umin, g.page), resolved(item, g.page)
				for u := lo; u <= hi && len(pending) < maxUsages; u++ {
					pending = append(pending, hidUsageItem{value: u, extended: true})
					if u == hi { // hi may be 0xffffffff
						break
					}
				}
				umin = nil
			}
		default: // reserved
			return nil, fmt.Errorf("report descriptor: reserved item 0x%02x at byte %d", prefix, at)
		}
		if len(pending) > maxUsages {
			return nil, fmt.Errorf("report descriptor: more than %d usages before byte %d", maxUsages, i)
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("report descriptor: %d collection(s) not closed", depth)
	}
	return l, nil
}

// value extracts a field's bits (little-endian, as HID packs them) from
// a report's data; ok is false when the report is too short.
func (f hidField) value(data []byte) (uint32, bool) {
	slots := 1
	if f.Array {
		slots = f.Count
	}
	end := f.Offset + f.Size*slots
	if end > len(data)*8 {
		return 0, false
	}
	for s := 0; s < slots; s++ {
		var v uint32
		start := f.Offset + s*f.Size
		for b := 0; b < f.Size; b++ {
			bit := start + b
			v |= uint32(data[bit/8]>>(bit%8)&1) << b
		}
		if !f.Array {
			return v, true
		}
		// Array slots hold signed indexes when the logical minimum is negative;
		// a match against Index is all that matters.
		if f.Size < 32 && f.Index < 0 && v&(1<<(f.Size-1)) != 0 {
			v |= ^uint32(0) << f.Size
		}
		if int32(v) == f.Index {
			return 1, true
		}
	}
	return 0, true
}

// outputReports builds the output reports that set the LED usages in
// on (others in the same reports are 0), keyed by report ID. The first
// byte of each is the report ID when the descriptor uses report IDs.
func (l *hidLayout) outputReports(on map[uint32]bool) map[uint8][]byte {
	out := map[uint8][]byte{}
	for u, f := range l.Out {
		if f.Array {
			continue // no headset seen declares its LEDs as an array
		}
		buf, ok := out[f.ReportID]
		if !ok {
			n := (l.OutBits[f.ReportID] + 7) / 8
			if l.ReportIDs {
				buf = make([]byte, 1+n)
				buf[0] = f.ReportID
			} else {
				buf = make([]byte, n)
			}
			out[f.ReportID] = buf
		}
		if !on[u] {
			continue
		}
		data := buf
		if l.ReportIDs {
			data = buf[1:]
		}
		// A 1-bit LED is set to 1; a wider one to its lowest "on" value, 1.
		if f.Offset/8 < len(data) {
			data[f.Offset/8] |= 1 << (f.Offset % 8)
		}
	}
	return out
}
