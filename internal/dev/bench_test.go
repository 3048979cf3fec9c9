package dev

import (
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkFerryDev measures what a person waits for with `make run`: the first start of ferry dev
// on a new data directory (the control-plane binaries already built), a push of the Go example
// until its image is in the registry and until its Release runs in dev, the stop, and a later
// start on the same data directory. Figures in seconds; they vary with the machine's load.
func BenchmarkFerryDev(b *testing.B) {
	for range b.N {
		dir := filepath.Join(b.TempDir(), "data")
		first := runDev(b, dir)
		res, err := Push(context.Background(), PushOptions{DataDir: dir, Project: "go-hello", Out: io.Discard, Wait: true, Timeout: 5 * time.Minute})
		if err != nil {
			first.stop(b)
			b.Fatal(err)
		}
		stopTook := first.stop(b)
		later := runDev(b, dir)
		later.stop(b)
		b.ReportMetric(first.endpoints.StartSeconds, "first_start_s")
		b.ReportMetric(later.endpoints.StartSeconds, "later_start_s")
		b.ReportMetric(res.BuildDuration.Seconds(), "push_to_image_s")
		b.ReportMetric(res.DevDuration.Seconds(), "push_to_dev_rollout_s")
		b.ReportMetric(stopTook.Seconds(), "stop_s")
	}
}

// running is ferry dev running in this process.
type running struct {
	cancel    context.CancelFunc
	done      chan error
	endpoints *Endpoints
}

func runDev(b *testing.B, dir string) *running {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan *Endpoints, 1)
	go func() {
		r.done <- Run(ctx, Options{DataDir: dir, Out: io.Discard, Ready: func(ep *Endpoints) { ready <- ep }})
	}()
	select {
	case r.endpoints = <-ready:
		return r
	case err := <-r.done:
		cancel()
		b.Fatalf("ferry dev stopped before it was ready: %v", err)
	case <-time.After(5 * time.Minute):
		cancel()
		<-r.done
		b.Fatal("ferry dev was not ready within 5 minutes")
	}
	return nil
}

func (r *running) stop(b *testing.B) time.Duration {
	b.Helper()
	begin := time.Now()
	r.cancel()
	if err := <-r.done; err != nil {
		b.Fatalf("ferry dev stopped with an error: %v", err)
	}
	return time.Since(begin)
}
