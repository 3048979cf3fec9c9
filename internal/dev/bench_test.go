package dev

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferryci/ferry/internal/controlplane"
)

// BenchmarkFerryDev measures what a person waits for with `make run`, with real nodes (where the
// machine has them) and with simulated ones: the first start of ferry dev on a new data directory
// (the control-plane binaries already built), a push of the Go example until its image is in the
// registry, until its Release runs in dev and — with real nodes — until the new version answers
// HTTP in dev, the memory of everything ferry dev runs, the stop, and a later start on the same
// data directory. Figures in seconds and MiB; they vary with the machine's load.
func BenchmarkFerryDev(b *testing.B) {
	modes := []string{NodesSimulated}
	if err := controlplane.RealNodesAvailable(); err == nil {
		modes = append([]string{NodesReal}, modes...)
	} else {
		b.Logf("real nodes are not measured: %v", err)
	}
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				benchFerryDev(b, mode)
			}
		})
	}
}

func benchFerryDev(b *testing.B, mode string) {
	dir := filepath.Join(b.TempDir(), "data")
	first := runDev(b, dir, mode)
	idleMiB := treeRSSMiB(os.Getpid())
	res, err := Push(context.Background(), PushOptions{DataDir: dir, Project: "go-hello", Out: io.Discard, Wait: true, Timeout: 5 * time.Minute})
	if err != nil {
		first.stop(b)
		b.Fatal(err)
	}
	answering := time.Duration(0)
	if mode == NodesReal {
		answering, err = waitAnswer(first.endpoints.Projects["go-hello"].AppURLs["dev"], res.Revision[:8], res.Pushed)
		if err != nil {
			first.stop(b)
			b.Fatal(err)
		}
	}
	busyMiB := treeRSSMiB(os.Getpid())
	stopTook := first.stop(b)
	later := runDev(b, dir, mode)
	later.stop(b)
	b.ReportMetric(first.endpoints.StartSeconds, "first_start_s")
	b.ReportMetric(later.endpoints.StartSeconds, "later_start_s")
	b.ReportMetric(res.BuildDuration.Seconds(), "push_to_image_s")
	b.ReportMetric(res.DevDuration.Seconds(), "push_to_dev_available_s")
	if mode == NodesReal {
		b.ReportMetric(answering.Seconds(), "push_to_app_answering_in_dev_s")
	}
	b.ReportMetric(idleMiB, "memory_idle_MiB")
	b.ReportMetric(busyMiB, "memory_after_push_MiB")
	b.ReportMetric(stopTook.Seconds(), "stop_s")
}

// waitAnswer polls an app URL (PROJECT.ENVIRONMENT.localhost:PORT) until it answers with want in
// its body, and returns how long that took after since.
func waitAnswer(appURL, want string, since time.Time) (time.Duration, error) {
	deadline := time.Now().Add(2 * time.Minute)
	var last string
	for time.Now().Before(deadline) {
		body, err := getApp(context.Background(), appURL)
		if err == nil && strings.Contains(body, want) {
			return time.Since(since), nil
		}
		last = fmt.Sprint(body, err)
		time.Sleep(100 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s did not answer with %q within 2 minutes (last: %s)", appURL, want, last)
}

// getApp GETs an app URL of ferry dev: its host name PROJECT.ENVIRONMENT.localhost is sent as
// the Host header to loopback, so no resolver needs to know *.localhost.
func getApp(ctx context.Context, appURL string) (string, error) {
	u, err := url.Parse(appURL)
	if err != nil {
		return "", err
	}
	dialer := &net.Dialer{}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", u.Port()))
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, appURL, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("%s answered %s", appURL, resp.Status)
	}
	return string(body), err
}

// treeRSSMiB is the resident memory of a process and all its descendants, in MiB: ferry dev's
// control planes, nodes, containers and the manager.
func treeRSSMiB(root int) float64 {
	children := map[int][]int{}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		data, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may contain spaces and parentheses.
		text := string(data)
		end := strings.LastIndexByte(text, ')')
		if end < 0 {
			continue
		}
		fields := strings.Fields(text[end+1:])
		pid, err1 := strconv.Atoi(strings.Fields(text)[0])
		if len(fields) < 2 || err1 != nil {
			continue
		}
		ppid, err := strconv.Atoi(fields[1])
		if err == nil {
			children[ppid] = append(children[ppid], pid)
		}
	}
	var kib int64
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = append(queue[1:], children[pid]...)
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				kib += n
			}
		}
	}
	return float64(kib) / 1024
}

// running is ferry dev running in this process.
type running struct {
	cancel    context.CancelFunc
	done      chan error
	endpoints *Endpoints
}

func runDev(b *testing.B, dir, nodes string) *running {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1)}
	ready := make(chan *Endpoints, 1)
	go func() {
		r.done <- Run(ctx, Options{DataDir: dir, ImageCache: imageCache(b), Out: io.Discard, Nodes: nodes, Ready: func(ep *Endpoints) { ready <- ep }})
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

// imageCache is the checkout's cache of the real base images, which `make run` and the e2e test
// share: a first start measured here is a first start on a machine that built them once
// (internal/baseimage's benchmark measures that build).
func imageCache(b *testing.B) string {
	b.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	return filepath.Join(root, ".cache", "baseimage")
}
