package gitlab_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkReceiver measures the time from a GitLab push delivery to the receiver's 2xx, with the
// Build persisted in a real API server (etcd + kube-apiserver with Ferry's CRDs and CEL rules), at
// 1 and at 50 concurrent deliveries, against a bare create of the same Build object through the
// same API server in the same run. Deliveries and bare creates alternate in chunks so that load
// from other processes on the machine falls on both alike.
//
// Figures: p50_ms and p99_ms for both, ratio_p99 (receiver p99 / bare p99; goal ≤ 1.5, and p99 never
// above 1 s), deliveries_per_s (goal ≥ 200 on 2 cores, at concurrency 50), and
// noise_bare_vs_bare_p99, the p99 ratio between two halves of the bare creates, which shows how far
// the machine's own noise moves a p99 ratio.
func BenchmarkReceiver(b *testing.B) {
	e := newEnv(b)
	token := e.project("bench", "bench/app", projectOptions{})
	project := &ferryv1.Project{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "bench"}, project); err != nil {
		b.Fatal(err)
	}
	// The bare creates use a client like the receiver's: no client-side rate limit.
	cfg := rest.CopyConfig(testutil.CurrentHub(b).Config)
	cfg.QPS = -1
	bare, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	var seq atomic.Int64

	deliver := func() error {
		n := seq.Add(1)
		body := pushBody("bench/app", "main", fmt.Sprintf("%040x", n))
		req, _ := http.NewRequest(http.MethodPost, e.r.url, bytes.NewReader(body))
		req.Header = hdr("Push Hook", token)
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	create := func() error {
		n := seq.Add(1)
		sha := fmt.Sprintf("%040x", n)
		return bare.Create(context.Background(), &ferryv1.Build{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: e.ns,
				Name:      fmt.Sprintf("bench-bare-%07d", n),
				Labels: map[string]string{
					ferryv1.ProjectLabel: "bench", ferryv1.TriggerKindLabel: "Push", ferryv1.ManagedByLabel: ferryv1.ManagedByValue,
				},
				OwnerReferences: []metav1.OwnerReference{{
					APIVersion: ferryv1.GroupVersion.String(), Kind: "Project", Name: "bench", UID: project.UID, Controller: ptr.To(false),
				}},
			},
			Spec: ferryv1.BuildSpec{
				Project: "bench", Revision: sha, Ref: "refs/heads/main",
				Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, DeliveryID: newUUID(), User: "alice"},
			},
		})
	}

	for _, c := range []struct{ concurrency, total, chunks int }{{1, 2000, 200}, {50, 3000, 20}} {
		b.Run(fmt.Sprintf("concurrency=%d", c.concurrency), func(b *testing.B) {
			// Warm up both paths (connections, caches, the API server's CEL programs).
			if _, _, err := run(c.concurrency, 2*c.concurrency, deliver); err != nil {
				b.Fatal(err)
			}
			if _, _, err := run(c.concurrency, 2*c.concurrency, create); err != nil {
				b.Fatal(err)
			}
			var viaReceiver, viaBare, bareOdd, bareEven []time.Duration
			var receiverTime time.Duration
			for i := range c.chunks {
				lat, _, err := run(c.concurrency, c.total/c.chunks, create)
				if err != nil {
					b.Fatal(err)
				}
				viaBare = append(viaBare, lat...)
				if i%2 == 0 {
					bareEven = append(bareEven, lat...)
				} else {
					bareOdd = append(bareOdd, lat...)
				}
				lat, wall, err := run(c.concurrency, c.total/c.chunks, deliver)
				if err != nil {
					b.Fatal(err)
				}
				viaReceiver = append(viaReceiver, lat...)
				receiverTime += wall
			}
			rp50, rp99 := percentile(viaReceiver, 50), percentile(viaReceiver, 99)
			bp50, bp99 := percentile(viaBare, 50), percentile(viaBare, 99)
			b.ReportMetric(ms(rp50), "receiver_p50_ms")
			b.ReportMetric(ms(rp99), "receiver_p99_ms")
			b.ReportMetric(ms(bp50), "bare_create_p50_ms")
			b.ReportMetric(ms(bp99), "bare_create_p99_ms")
			b.ReportMetric(float64(rp50)/float64(bp50), "ratio_p50")
			b.ReportMetric(float64(rp99)/float64(bp99), "ratio_p99")
			b.ReportMetric(float64(len(viaReceiver))/receiverTime.Seconds(), "deliveries_per_s")
			// The same figure between two halves of the bare creates themselves: how much the
			// machine's noise alone moves a p99 ratio in this run.
			b.ReportMetric(float64(percentile(bareOdd, 99))/float64(percentile(bareEven, 99)), "noise_bare_vs_bare_p99")
		})
	}
	// Every 201 was a persisted Build.
	var list ferryv1.BuildList
	if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
		b.Fatal(err)
	}
	if int64(len(list.Items)) != seq.Load() {
		b.Fatalf("%d Builds for %d deliveries and creates", len(list.Items), seq.Load())
	}
}

// run does total calls of fn from concurrency goroutines and returns each call's latency and the
// wall time.
func run(concurrency, total int, fn func() error) ([]time.Duration, time.Duration, error) {
	var next atomic.Int64
	lat := make([]time.Duration, total)
	var firstErr error
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(total) {
					return
				}
				t0 := time.Now()
				err := fn()
				lat[i] = time.Since(t0)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return lat, time.Since(start), firstErr
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(i, len(s))-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
