package audio

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// WAV handling is hand-written: PCM16 RIFF is ~100 lines, and the Go WAV
// libraries on the proxy (go-audio/wav) allocate per buffer and pull in
// more than we need for a tone file.

// WAVSource plays a PCM16 48 kHz WAV file in a loop (stereo is downmixed).
type WAVSource struct {
	f        *os.File
	channels int
	start    int64 // offset of the data chunk
	size     int64
	pos      int64
	buf      []byte
}

// OpenWAVSource opens path; other sample rates are refused with a clear error.
func OpenWAVSource(path string) (*WAVSource, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("wav source: %w", err)
	}
	s, err := parseWAV(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("wav source %s: %w", path, err)
	}
	return s, nil
}

func parseWAV(f *os.File) (*WAVSource, error) {
	var hdr [12]byte
	if _, err := io.ReadFull(f, hdr[:]); err != nil {
		return nil, errors.New("not a WAV file (too short)")
	}
	if string(hdr[0:4]) != "RIFF" || string(hdr[8:12]) != "WAVE" {
		return nil, errors.New("not a RIFF/WAVE file")
	}
	var fmtSeen bool
	var channels, bits uint16
	var rate uint32
	off := int64(12)
	for {
		var ch [8]byte
		if _, err := f.ReadAt(ch[:], off); err != nil {
			return nil, errors.New("no data chunk")
		}
		id, n := string(ch[0:4]), int64(binary.LittleEndian.Uint32(ch[4:8]))
		off += 8
		switch id {
		case "fmt ":
			var b [16]byte
			if n < 16 {
				return nil, errors.New("short fmt chunk")
			}
			if _, err := f.ReadAt(b[:], off); err != nil {
				return nil, errors.New("short fmt chunk")
			}
			if tag := binary.LittleEndian.Uint16(b[0:2]); tag != 1 && tag != 0xFFFE {
				return nil, fmt.Errorf("format tag %d: only PCM is supported", tag)
			}
			channels = binary.LittleEndian.Uint16(b[2:4])
			rate = binary.LittleEndian.Uint32(b[4:8])
			bits = binary.LittleEndian.Uint16(b[14:16])
			fmtSeen = true
		case "data":
			if !fmtSeen {
				return nil, errors.New("data before fmt")
			}
			if bits != 16 {
				return nil, fmt.Errorf("%d-bit samples: only 16-bit PCM is supported", bits)
			}
			if channels != 1 && channels != 2 {
				return nil, fmt.Errorf("%d channels: only mono or stereo", channels)
			}
			if rate != SampleRate {
				return nil, fmt.Errorf("sample rate %d Hz: only 48000 Hz is supported for WAV sources (convert with: sox in.wav -r 48000 out.wav)", rate)
			}
			if fi, err := f.Stat(); err == nil && off+n > fi.Size() {
				n = fi.Size() - off // a file cut short (recorder killed) still plays
			}
			n -= n % int64(2*channels)
			if n <= 0 {
				return nil, errors.New("no audio in data chunk")
			}
			return &WAVSource{f: f, channels: int(channels), start: off, size: n,
				buf: make([]byte, FrameSamples*2*int(channels))}, nil
		}
		off += n + n%2
	}
}

// ReadFrame fills pcm from the file, looping at its end.
func (s *WAVSource) ReadFrame(pcm []int16) error {
	need := len(pcm) * 2 * s.channels
	if cap(s.buf) < need {
		s.buf = make([]byte, need)
	}
	b := s.buf[:need]
	for got := 0; got < need; {
		if s.pos >= s.size {
			s.pos = 0
		}
		n, err := s.f.ReadAt(b[got:min(need, got+int(s.size-s.pos))], s.start+s.pos)
		if n == 0 && err != nil {
			return fmt.Errorf("wav source: %w", err)
		}
		got += n
		s.pos += int64(n)
	}
	for i := range pcm {
		if s.channels == 1 {
			pcm[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
		} else {
			l := int32(int16(binary.LittleEndian.Uint16(b[4*i:])))
			r := int32(int16(binary.LittleEndian.Uint16(b[4*i+2:])))
			pcm[i] = int16((l + r) / 2)
		}
	}
	return nil
}

// Close closes the file.
func (s *WAVSource) Close() error { return s.f.Close() }

// WAVSink writes 48 kHz mono PCM16. The header's sizes are placeholders
// until Close fixes them; a reader copes with a file cut short.
type WAVSink struct {
	f   *os.File
	w   *bufio.Writer
	n   int64
	buf []byte
}

// CreateWAVSink creates (or truncates) path.
func CreateWAVSink(path string) (*WAVSink, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("wav sink: %w", err)
	}
	s := &WAVSink{f: f, w: bufio.NewWriter(f), buf: make([]byte, FrameSamples*2)}
	if _, err := s.w.Write(wavHeader(0xFFFFFFFF - 36)); err != nil {
		f.Close()
		return nil, fmt.Errorf("wav sink: %w", err)
	}
	return s, nil
}

func wavHeader(dataLen uint32) []byte {
	h := make([]byte, 44)
	copy(h[0:], "RIFF")
	binary.LittleEndian.PutUint32(h[4:], 36+dataLen)
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:], 1) // mono
	binary.LittleEndian.PutUint32(h[24:], SampleRate)
	binary.LittleEndian.PutUint32(h[28:], SampleRate*2)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], dataLen)
	return h
}

// WriteFrame appends pcm.
func (s *WAVSink) WriteFrame(pcm []int16) error {
	if cap(s.buf) < 2*len(pcm) {
		s.buf = make([]byte, 2*len(pcm))
	}
	b := s.buf[:2*len(pcm)]
	for i, v := range pcm {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
	}
	n, err := s.w.Write(b)
	s.n += int64(n)
	if err != nil {
		return fmt.Errorf("wav sink: %w", err)
	}
	return nil
}

// Close writes the real sizes into the header and closes the file.
func (s *WAVSink) Close() error {
	err := s.w.Flush()
	if err == nil {
		_, err = s.f.WriteAt(wavHeader(uint32(min(s.n, 0xFFFFFFFF-36))), 0)
	}
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("wav sink: %w", err)
	}
	return nil
}
