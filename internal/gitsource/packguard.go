package gitsource

import (
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// objectOverhead is what each object of a pack is charged besides its inflated size: go-git's
// index and storage maps hold a few hundred bytes per object, so a pack of millions of tiny
// objects is as costly as a few large ones.
const objectOverhead = 512

// checksumSize is the length of a pack's trailing SHA-1.
const checksumSize = 20

// packGuard passes a pack stream through to go-git while it checks, before go-git sees an object,
// what the object will cost: the size its header declares (or, for a delta, the size of the
// object it makes), against a total budget for the whole pack. A compressed pack can inflate a
// thousandfold; go-git would allocate what a header declares and hold what it inflates, so the
// check has to come first.
//
// Every object is inflated once here (and discarded) to find where the next one starts; only
// bytes the guard has consumed, that is, bytes of objects whose header passed, reach go-git.
type packGuard struct {
	src       *spool
	out       []byte
	budget    int64 // what the objects may still inflate to
	limit     int64 // the budget at the start, for messages
	host      string
	remaining uint32 // objects not yet read
	state     guardState

	z        io.ReadCloser
	delta    bool
	declared int64
	inflated int64
	// deltaHdr collects a delta's first bytes until its two sizes are complete (deltaSizes).
	deltaHdr   []byte
	deltaSizes bool
	scratch    []byte
	err        error
	// done, when set, is called once the pack's checksum has passed.
	done    func()
	trailer int // bytes of the checksum passed
}

type guardState int

const (
	guardHeader guardState = iota
	guardObjectHeader
	guardObjectData
	guardTrailer
)

func newPackGuard(r io.Reader, host string, budget int64) *packGuard {
	return &packGuard{src: &spool{rd: r, buf: make([]byte, 0, 64<<10)}, budget: budget, limit: budget, host: host, scratch: make([]byte, 32<<10)}
}

// tooLarge is the error of a pack over the budget.
func (g *packGuard) tooLarge(what string) error {
	return limitErrorf(ErrTooLarge, "the pack from the git server %s %s; the limit is %s inflated", g.host, what, formatBytes(g.limit))
}

func (g *packGuard) Read(p []byte) (int, error) {
	for len(g.out) == 0 {
		if g.err != nil {
			return 0, g.err
		}
		err := g.step()
		if err != nil && !errors.Is(err, io.EOF) {
			// Nothing of an object that failed its check reaches go-git.
			g.err = err
			return 0, err
		}
		g.out = g.src.take()
		if err != nil {
			g.err = err
		}
	}
	n := copy(p, g.out)
	g.out = g.out[n:]
	return n, nil
}

// step reads one piece of the pack: its header, an object's header, or some of an object's data.
func (g *packGuard) step() error {
	switch g.state {
	case guardHeader:
		var h [12]byte
		if _, err := io.ReadFull(g.src, h[:]); err != nil {
			return notAPack(err)
		}
		if string(h[:4]) != "PACK" {
			return errors.New("the server did not send a pack")
		}
		if v := binary.BigEndian.Uint32(h[4:8]); v != 2 && v != 3 {
			return fmt.Errorf("the server sent a pack of version %d", v)
		}
		g.remaining = binary.BigEndian.Uint32(h[8:12])
		if int64(g.remaining)*objectOverhead > g.budget {
			return g.tooLarge(fmt.Sprintf("has %d objects", g.remaining))
		}
		g.state = guardObjectHeader
		if g.remaining == 0 {
			g.state = guardTrailer
		}
		return nil
	case guardObjectHeader:
		return g.objectHeader()
	case guardObjectData:
		return g.objectData()
	default:
		// The checksum, and anything after it: go-git reads what it needs.
		n, err := g.src.Read(g.scratch)
		if g.trailer < checksumSize && g.trailer+n >= checksumSize && g.done != nil {
			g.done()
		}
		g.trailer += n
		if n > 0 {
			return nil
		}
		return err
	}
}

func notAPack(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errors.New("the pack ends early")
	}
	return err
}

func (g *packGuard) objectHeader() error {
	b, err := g.src.ReadByte()
	if err != nil {
		return notAPack(err)
	}
	typ := (b >> 4) & 7
	size := int64(b & 15)
	for shift := uint(4); b&0x80 != 0; shift += 7 {
		if b, err = g.src.ReadByte(); err != nil {
			return notAPack(err)
		}
		if shift > 56 {
			return errors.New("the pack has an object of impossible size")
		}
		size |= int64(b&0x7f) << shift
	}
	switch typ {
	case 1, 2, 3, 4: // commit, tree, blob, tag
		g.delta = false
	case 6: // offset delta: a variable-length offset
		g.delta = true
		for i := 0; ; i++ {
			if b, err = g.src.ReadByte(); err != nil {
				return notAPack(err)
			}
			if b&0x80 == 0 {
				break
			}
			if i > 9 {
				return errors.New("the pack has a delta with an impossible offset")
			}
		}
	case 7: // reference delta: the base object's SHA-1
		g.delta = true
		var base [20]byte
		if _, err := io.ReadFull(g.src, base[:]); err != nil {
			return notAPack(err)
		}
	default:
		return fmt.Errorf("the pack has an object of unknown type %d", typ)
	}
	if err := g.charge(size, "has an object of %d bytes"); err != nil {
		return err
	}
	if g.z == nil {
		g.z, err = zlib.NewReader(g.src)
	} else {
		err = g.z.(zlib.Resetter).Reset(g.src, nil)
	}
	if err != nil {
		return notAPack(err)
	}
	g.declared, g.inflated, g.deltaHdr, g.deltaSizes = size, 0, g.deltaHdr[:0], !g.delta
	g.state = guardObjectData
	return nil
}

// charge takes an object's size and overhead from the budget.
func (g *packGuard) charge(size int64, what string) error {
	if size > g.budget-objectOverhead {
		return g.tooLarge(fmt.Sprintf(what, size))
	}
	g.budget -= size + objectOverhead
	return nil
}

func (g *packGuard) objectData() error {
	n, err := g.z.Read(g.scratch)
	if g.inflated += int64(n); g.inflated > g.declared {
		return errors.New("the pack has an object larger than its header says")
	}
	if !g.deltaSizes && n > 0 {
		if derr := g.deltaTarget(g.scratch[:n]); derr != nil {
			return derr
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		if g.inflated != g.declared {
			return errors.New("the pack has an object smaller than its header says")
		}
		if !g.deltaSizes {
			return errors.New("the pack has a delta too short to say its sizes")
		}
		g.remaining--
		g.state = guardObjectHeader
		if g.remaining == 0 {
			g.state = guardTrailer
		}
		return nil
	case err != nil:
		return notAPack(err)
	}
	return nil
}

// deltaTarget reads a delta's two sizes, the base's and the result's, and charges the result.
func (g *packGuard) deltaTarget(data []byte) error {
	g.deltaHdr = append(g.deltaHdr, data[:min(len(data), 20)]...)
	pos := 0
	var sizes [2]int64
	for i := range sizes {
		var shift uint
		for {
			if pos >= len(g.deltaHdr) {
				if len(g.deltaHdr) >= 20 {
					return errors.New("the pack has a delta with an impossible size")
				}
				return nil // more to come
			}
			b := g.deltaHdr[pos]
			pos++
			if shift > 56 {
				return errors.New("the pack has a delta with an impossible size")
			}
			sizes[i] |= int64(b&0x7f) << shift
			shift += 7
			if b&0x80 == 0 {
				break
			}
		}
	}
	g.deltaSizes = true
	return g.charge(sizes[1], "has a delta that makes an object of %d bytes")
}

// spool reads ahead from the server and remembers what its reader consumed until take returns
// it. It is an io.ByteReader, so the zlib reader consumes exactly one object's stream.
type spool struct {
	rd    io.Reader
	buf   []byte
	start int // buf[start:r] was consumed and not yet taken
	r     int // buf[r:] was read ahead
	err   error
}

func (s *spool) fill() error {
	if s.r < len(s.buf) {
		return nil
	}
	if s.err != nil {
		return s.err
	}
	if s.start > 0 {
		n := copy(s.buf[:cap(s.buf)], s.buf[s.start:])
		s.buf, s.r, s.start = s.buf[:n], s.r-s.start, 0
	}
	if len(s.buf) == cap(s.buf) {
		s.buf = append(s.buf, make([]byte, cap(s.buf))...)[:len(s.buf)]
	}
	for {
		n, err := s.rd.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.err = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func (s *spool) ReadByte() (byte, error) {
	if err := s.fill(); err != nil {
		return 0, err
	}
	b := s.buf[s.r]
	s.r++
	return b, nil
}

func (s *spool) Read(p []byte) (int, error) {
	if err := s.fill(); err != nil {
		return 0, err
	}
	n := copy(p, s.buf[s.r:])
	s.r += n
	return n, nil
}

// take returns what was consumed since the last take; it stays valid until the next read.
func (s *spool) take() []byte {
	b := s.buf[s.start:s.r]
	s.start = s.r
	return b
}
