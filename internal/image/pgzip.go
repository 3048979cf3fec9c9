package image

import (
	"bytes"
	"encoding/binary"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// pgzipBlock is how much uncompressed data each compression job gets. The output depends on it,
// never on how many workers there are, so a layer's digest is the same on every machine.
const pgzipBlock = 1 << 20

// pgzipDict is how much of the previous block primes each block's compressor (deflate's window).
const pgzipDict = 32 << 10

// parallelGzip writes one gzip member whose deflate stream is compressed in independent blocks
// by several goroutines: each block is primed with the end of the previous one and ends with a
// sync flush (the last one with the final block), so the blocks concatenate into one valid
// stream that any gunzip reads. The header has no name and no timestamp.
type parallelGzip struct {
	out   io.Writer
	level int
	crc   hash.Hash32
	size  uint32
	cur   *[]byte
	prev  []byte

	jobs   chan *pgzipJob
	order  chan *pgzipJob
	done   chan struct{}
	werr   error
	wg     sync.WaitGroup
	closed bool
}

type pgzipJob struct {
	in    *[]byte
	dict  []byte
	final bool
	out   *bytes.Buffer
	err   error
	ready chan struct{}
}

// Blocks and their compressed output are recycled: a fresh process pays for every new page.
var (
	pgzipIn  = sync.Pool{New: func() any { b := make([]byte, 0, pgzipBlock); return &b }}
	pgzipOut = sync.Pool{New: func() any { return bytes.NewBuffer(make([]byte, 0, pgzipBlock+pgzipBlock/16)) }}
)

// newParallelGzip starts workers goroutines (at least one) compressing at level.
func newParallelGzip(out io.Writer, level, workers int) (*parallelGzip, error) {
	// Check the level once, up front.
	if _, err := flate.NewWriter(io.Discard, level); err != nil {
		return nil, err
	}
	workers = max(workers, 1)
	z := &parallelGzip{
		out:   out,
		level: level,
		crc:   crc32.NewIEEE(),
		jobs:  make(chan *pgzipJob, workers),
		order: make(chan *pgzipJob, 2*workers),
		done:  make(chan struct{}),
	}
	header := []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255}
	if _, err := out.Write(header); err != nil {
		return nil, err
	}
	for range workers {
		z.wg.Add(1)
		go z.work()
	}
	go z.writeInOrder()
	return z, nil
}

func (z *parallelGzip) work() {
	defer z.wg.Done()
	var fw *flate.Writer
	for j := range z.jobs {
		if fw == nil {
			fw, j.err = flate.NewWriterDict(j.out, z.level, j.dict)
		} else {
			fw.ResetDict(j.out, j.dict)
		}
		if j.err == nil {
			_, j.err = fw.Write(*j.in)
		}
		if j.err == nil {
			if j.final {
				j.err = fw.Close()
			} else {
				j.err = fw.Flush()
			}
		}
		close(j.ready)
	}
}

// writeInOrder writes the compressed blocks in the order they were submitted.
func (z *parallelGzip) writeInOrder() {
	defer close(z.done)
	for j := range z.order {
		<-j.ready
		switch {
		case z.werr != nil:
		case j.err != nil:
			z.werr = j.err
		default:
			if _, err := z.out.Write(j.out.Bytes()); err != nil {
				z.werr = err
			}
		}
		*j.in = (*j.in)[:0]
		pgzipIn.Put(j.in)
		j.out.Reset()
		pgzipOut.Put(j.out)
	}
}

func (z *parallelGzip) Write(p []byte) (int, error) {
	n := len(p)
	_, _ = z.crc.Write(p)
	z.size += uint32(len(p)) //nolint:gosec // ISIZE is the input size modulo 2^32 (RFC 1952)
	for len(p) > 0 {
		if z.cur == nil {
			z.cur = pgzipIn.Get().(*[]byte)
		}
		k := min(len(p), pgzipBlock-len(*z.cur))
		*z.cur = append(*z.cur, p[:k]...)
		p = p[k:]
		if len(*z.cur) == pgzipBlock {
			z.submit(false)
		}
	}
	return n, nil
}

// submit hands the current block to the workers, with a copy of the window before it (blocks are
// recycled as soon as they are written out).
func (z *parallelGzip) submit(final bool) {
	if z.cur == nil {
		z.cur = pgzipIn.Get().(*[]byte)
	}
	j := &pgzipJob{in: z.cur, dict: z.prev, final: final, out: pgzipOut.Get().(*bytes.Buffer), ready: make(chan struct{})}
	in := *z.cur
	next := make([]byte, 0, pgzipDict)
	if len(in) < pgzipDict {
		next = append(next, z.prev[max(0, len(z.prev)+len(in)-pgzipDict):]...)
	}
	z.prev = append(next, in[max(0, len(in)-pgzipDict):]...)
	z.cur = nil
	z.order <- j
	z.jobs <- j
}

// Close compresses what is left, waits for the workers and writes the trailer.
func (z *parallelGzip) Close() error {
	if z.closed {
		return nil
	}
	z.closed = true
	z.submit(true)
	close(z.jobs)
	close(z.order)
	z.wg.Wait()
	<-z.done
	if z.werr != nil {
		return z.werr
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], z.crc.Sum32())
	binary.LittleEndian.PutUint32(trailer[4:], z.size)
	_, err := z.out.Write(trailer[:])
	return err
}

// abort stops the workers without writing a trailer.
func (z *parallelGzip) abort() {
	if z.closed {
		return
	}
	z.closed = true
	close(z.jobs)
	close(z.order)
	z.wg.Wait()
	<-z.done
}
