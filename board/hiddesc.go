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

// hidItem is one short item of a report descriptor.
type hidItem struct {
	prefix byte
	typ    byte // 0 main, 1 global, 2 local, 3 reserved
	tag    byte
	size   int    // data bytes: 0, 1, 2 or 4
	data   uint32 // little-endian, zero-extended
	signed int32  // data sign-extended from size bytes
	at     int    // byte offset, for messages
}

// readItem decodes the item at d[i]; next is the offset after it. A long
// item (none is defined) comes back with skip set.
func readItem(d []byte, i int) (it hidItem, next int, skip bool, err error) {
	prefix := d[i]
	if prefix == 0xfe { // long item: size, tag, data
		if i+2 >= len(d) || i+3+int(d[i+1]) > len(d) {
			return hidItem{}, 0, false, fmt.Errorf("report descriptor: long item at byte %d truncated", i)
		}
		return hidItem{}, i + 3 + int(d[i+1]), true, nil
	}
	size := [4]int{0, 1, 2, 4}[prefix&3]
	if i+1+size > len(d) {
		return hidItem{}, 0, false, fmt.Errorf("report descriptor: item 0x%02x at byte %d truncated (%d data bytes, %d left)", prefix, i, size, len(d)-i-1)
	}
	it = hidItem{prefix: prefix, typ: (prefix >> 2) & 3, tag: prefix >> 4, size: size, at: i}
	for k := 0; k < size; k++ {
		it.data |= uint32(d[i+1+k]) << (8 * k)
	}
	switch size {
	case 1:
		it.signed = int32(int8(it.data))
	case 2:
		it.signed = int32(int16(it.data))
	default:
		it.signed = int32(it.data)
	}
	return it, i + 1 + size, false, nil
}

// hidParser is the state of one walk over a descriptor: the global state
// and its Push stack, the local usages waiting for a main item, and where
// each report's next field starts.
type hidParser struct {
	l       *hidLayout
	g       hidGlobals
	stack   []hidGlobals
	usages  []uint32 // resolved at the main item with the page in force
	pending []hidUsageItem
	umin    *hidUsageItem
	depth   int
	inBits  map[uint8]int
	sawMain bool
	sawIDs  bool
}

// parseReportDescriptor lays out the telephony and LED usages of d.
func parseReportDescriptor(d []byte) (*hidLayout, error) {
	if len(d) == 0 {
		return nil, errors.New("empty report descriptor")
	}
	p := &hidParser{
		l:      &hidLayout{In: map[uint32]hidField{}, Out: map[uint32]hidField{}, OutBits: map[uint8]int{}},
		inBits: map[uint8]int{},
	}
	for i := 0; i < len(d); {
		it, next, skip, err := readItem(d, i)
		if err != nil {
			return nil, err
		}
		i = next
		if skip {
			continue
		}
		if err := p.item(it); err != nil {
			return nil, err
		}
		if len(p.pending) > maxUsages {
			return nil, fmt.Errorf("report descriptor: more than %d usages before byte %d", maxUsages, i)
		}
	}
	if p.depth != 0 {
		return nil, fmt.Errorf("report descriptor: %d collection(s) not closed", p.depth)
	}
	return p.l, nil
}

func (p *hidParser) item(it hidItem) error {
	switch it.typ {
	case 0:
		return p.mainItem(it)
	case 1:
		return p.globalItem(it)
	case 2:
		p.localItem(it)
		return nil
	}
	return fmt.Errorf("report descriptor: reserved item 0x%02x at byte %d", it.prefix, it.at)
}

// mainItem lays out an Input or Output field and tracks collections; every
// main item ends the local state.
func (p *hidParser) mainItem(it hidItem) error {
	p.sawMain = true
	switch it.tag {
	case 0x8, 0x9: // Input, Output
		if err := p.field(it); err != nil {
			return err
		}
	case 0xa: // Collection
		p.depth++
		if p.depth > 64 {
			return errors.New("report descriptor: collections nested too deep")
		}
	case 0xc: // End Collection
		if p.depth == 0 {
			return fmt.Errorf("report descriptor: End Collection at byte %d without a Collection", it.at)
		}
		p.depth--
	case 0xb: // Feature: not used here
	default:
		return fmt.Errorf("report descriptor: unknown main item 0x%02x at byte %d", it.prefix, it.at)
	}
	p.pending, p.usages, p.umin = p.pending[:0], p.usages[:0], nil
	return nil
}

// field places the usages we want of one Input (tag 8) or Output (tag 9)
// item and advances its report's bit offset.
func (p *hidParser) field(it hidItem) error {
	g := p.g
	if g.reportSize > 256 || g.reportCount > maxReportBits {
		return fmt.Errorf("report descriptor: field at byte %d is %d×%d bits", it.at, g.reportCount, g.reportSize)
	}
	bits := int(g.reportSize) * int(g.reportCount)
	offs, want, fields := p.inBits, hidInputUsages, p.l.In
	if it.tag == 0x9 {
		offs, want, fields = p.l.OutBits, hidOutputUsages, p.l.Out
	}
	off := offs[g.reportID]
	if off+bits > maxReportBits {
		return fmt.Errorf("report descriptor: report %d longer than %d bits", g.reportID, maxReportBits)
	}
	for _, u := range p.pending {
		p.usages = append(p.usages, resolveUsage(u, g.page))
	}
	constant, variable, relative := it.data&1 != 0, it.data&2 != 0, it.data&4 != 0
	if !constant && len(p.usages) > 0 && g.reportSize >= 1 && g.reportSize <= 32 {
		place := func(u uint32, f hidField) {
			if _, dup := fields[u]; want[u] && !dup {
				fields[u] = f
			}
		}
		size := int(g.reportSize)
		if variable {
			for k := 0; k < int(g.reportCount); k++ {
				u := p.usages[len(p.usages)-1] // the last usage repeats
				if k < len(p.usages) {
					u = p.usages[k]
				}
				place(u, hidField{Usage: u, ReportID: g.reportID, Offset: off + k*size, Size: size, Relative: relative})
			}
		} else if g.reportCount > 0 {
			for k, u := range p.usages {
				place(u, hidField{Usage: u, ReportID: g.reportID, Offset: off, Size: size, Relative: relative,
					Array: true, Index: g.logMin + int32(k), Count: int(g.reportCount)})
			}
		}
	}
	offs[g.reportID] = off + bits
	return nil
}

func (p *hidParser) globalItem(it hidItem) error {
	switch it.tag {
	case 0x0:
		p.g.page = it.data & 0xffff
	case 0x1:
		p.g.logMin = it.signed
	case 0x7:
		p.g.reportSize = it.data
	case 0x8:
		if it.data == 0 || it.data > 255 {
			return fmt.Errorf("report descriptor: Report ID %d at byte %d", it.data, it.at)
		}
		if p.sawMain && !p.sawIDs && (len(p.inBits) > 0 || len(p.l.OutBits) > 0) {
			return fmt.Errorf("report descriptor: Report ID at byte %d after fields without one", it.at)
		}
		p.g.reportID, p.sawIDs, p.l.ReportIDs = uint8(it.data), true, true
	case 0x9:
		p.g.reportCount = it.data
	case 0xa: // Push
		if len(p.stack) >= maxPushDepth {
			return errors.New("report descriptor: Push nested too deep")
		}
		p.stack = append(p.stack, p.g)
	case 0xb: // Pop
		if len(p.stack) == 0 {
			return fmt.Errorf("report descriptor: Pop at byte %d without a Push", it.at)
		}
		p.g, p.stack = p.stack[len(p.stack)-1], p.stack[:len(p.stack)-1]
	}
	return nil
}

// localItem collects usages; a Usage Minimum..Maximum range is expanded
// (up to maxUsages) with the page in force at the maximum.
func (p *hidParser) localItem(it hidItem) {
	item := hidUsageItem{value: it.data, extended: it.size == 4}
	switch it.tag {
	case 0x0: // Usage
		p.pending = append(p.pending, item)
	case 0x1: // Usage Minimum
		p.umin = &item
	case 0x2: // Usage Maximum
		if p.umin == nil {
			return // a maximum without a minimum: ignored, as Linux does
		}
		lo, hi := resolveUsage(*p.umin, p.g.page), resolveUsage(item, p.g.page)
		for u := lo; u <= hi && len(p.pending) < maxUsages; u++ {
			p.pending = append(p.pending, hidUsageItem{value: u, extended: true})
			if u == hi { // hi may be 0xffffffff
				break
			}
		}
		p.umin = nil
	}
}

// resolveUsage gives a usage its page: its own when it carried one (a
// 4-byte usage), else the global page.
func resolveUsage(u hidUsageItem, page uint32) uint32 {
	if u.extended {
		return u.value
	}
	return page<<16 | u.value&0xffff
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
