package dev

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints what `ferry dev` is doing while it starts: one line when a step begins, one when
// it ends (with its duration and how far along the start is), and, for steps that take a while, a
// reminder every few seconds that they are still going.
type progress struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
	total int
	done  int
	every time.Duration
}

func newProgress(out io.Writer, total int) *progress {
	return &progress{out: out, start: time.Now(), total: total, every: 10 * time.Second}
}

// printf writes one line.
func (p *progress) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.out, format+"\n", args...)
}

// step runs fn as one numbered step of the start and reports it.
func (p *progress) step(what string, fn func() error) error {
	begin := time.Now()
	p.printf("  … %s", what)
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(p.every)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				p.printf("  … %s (still going, %s)", what, since(begin))
			}
		}
	}()
	err := fn()
	close(stop)
	p.mu.Lock()
	p.done++
	n := p.done
	p.mu.Unlock()
	if err != nil {
		p.printf("  ✗ %s failed after %s", what, since(begin))
		return err
	}
	p.printf("  ✓ [%d/%d] %s (%s)", n, p.total, what, since(begin))
	return nil
}

// elapsed is the time since the start began.
func (p *progress) elapsed() time.Duration { return time.Since(p.start) }

func since(t time.Time) string {
	return roundDuration(time.Since(t)).String()
}

func roundDuration(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
