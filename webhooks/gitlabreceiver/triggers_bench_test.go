package gitlabreceiver_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkReceiverVsTriggers compares Ferry's GitLab receiver with Tekton Triggers v0.36's
// EventListener on the same API server (etcd and kube-apiserver with Ferry's CRDs and admission
// webhooks, and Tekton's and Triggers' CRDs), with the same real Push Hook (every delivery a new
// commit and a new delivery): Ferry's manager serving its receiver and admission webhooks as it
// does in a cluster, against Triggers' sink and core interceptors as processes of this machine, the
// GitLab interceptor checking the token and the event type and a TriggerTemplate creating a
// PipelineRun. A delivery's latency runs from sending it until its object (Ferry's Build, Triggers'
// PipelineRun) is seen through a watch on the API server, not until the HTTP answer: Triggers
// answers 202 before it creates anything. The two alternate in chunks so that load from elsewhere
// on the machine falls on both alike.
//
// Figures at concurrency 1 and 50: ferry_p50_ms, ferry_p99_ms, triggers_p50_ms and
// triggers_p99_ms; ferry_per_s and triggers_per_s (deliveries whose object was seen, per second);
// ratio_p50_goal_le_1 and ratio_p99_goal_le_1, Ferry's over Triggers' (goal ≤ 1.0), and
// ratio_per_s_goal_ge_1, Ferry's throughput over Triggers'. Triggers runs with its client-side
// rate limit lifted (Knative's -kube-api-qps); triggers_default_limits_per_s is its throughput with
// client-go's default limit (5 requests/s: it makes two requests per delivery, a discovery and the
// create), which is how Triggers runs unless told otherwise.
//
// Skipped where Triggers is not built (make triggers).
func BenchmarkReceiverVsTriggers(b *testing.B) {
	if _, err := controlplane.TriggersAssets(); err != nil {
		b.Skipf("Ferry is compared with Tekton Triggers here, whose binaries are not built: %v", err)
	}
	e, api := comparedEnv(b)
	token := e.comparedProject()
	triggers := startTriggers(b, api, e.c, e.ns, token)
	sinkURL := triggers.sink(controlplane.Unthrottled)
	builds := watchCreated(b, api.Config, buildsGVR, e.ns, buildSHA)
	runs := watchCreated(b, api.Config, pipelineRunsGVR, e.ns, pipelineRunSHA)
	pushes := newComparedPushes(b, token)
	httpClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	var seq atomic.Int64

	// deliverTo sends a new delivery to url, wants status, and returns the time until w sees its
	// object created.
	deliverTo := func(url string, status int, w *createdWatch) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			d := pushes.delivery(fmt.Sprintf("%040x", seq.Add(1)))
			seen := w.expect(d.sha)
			start := time.Now()
			got, err := d.send(httpClient, url)
			if err != nil {
				return 0, err
			}
			if got != status {
				return 0, fmt.Errorf("%s answered %d, want %d", url, got, status)
			}
			select {
			case at := <-seen:
				return at.Sub(start), nil
			case <-time.After(30 * time.Second):
				return 0, fmt.Errorf("no object of %s seen within 30s of its delivery to %s", d.sha, url)
			}
		}
	}
	ferry := deliverTo(e.r.url, http.StatusCreated, builds)
	tekton := deliverTo(sinkURL, http.StatusAccepted, runs)

	// Triggers is ready when a delivery makes a PipelineRun (its informers have synced).
	testutil.EventuallyWithin(b, 60*time.Second, "Triggers to create a PipelineRun", func() (bool, error) {
		_, err := tekton()
		return err == nil, err
	})

	for _, c := range []struct{ concurrency, total, chunks int }{{1, 1000, 50}, {50, 3000, 10}} {
		b.Run(fmt.Sprintf("concurrency=%d", c.concurrency), func(b *testing.B) {
			// Warm up both (connections, caches, the API server's CEL programs).
			for _, fn := range []func() (time.Duration, error){ferry, tekton} {
				if _, _, err := runTimed(c.concurrency, 2*c.concurrency, fn); err != nil {
					b.Fatal(err)
				}
			}
			var viaFerry, viaTriggers []time.Duration
			var ferryWall, triggersWall time.Duration
			for i := range c.chunks {
				// Alternate which goes first, so that neither always follows the other's load.
				order := []bool{true, false}
				if i%2 == 1 {
					order = []bool{false, true}
				}
				for _, isFerry := range order {
					fn := tekton
					if isFerry {
						fn = ferry
					}
					lat, wall, err := runTimed(c.concurrency, c.total/c.chunks, fn)
					if err != nil {
						b.Fatal(err)
					}
					if isFerry {
						viaFerry, ferryWall = append(viaFerry, lat...), ferryWall+wall
					} else {
						viaTriggers, triggersWall = append(viaTriggers, lat...), triggersWall+wall
					}
				}
			}
			fp50, fp99 := percentile(viaFerry, 50), percentile(viaFerry, 99)
			tp50, tp99 := percentile(viaTriggers, 50), percentile(viaTriggers, 99)
			fRate, tRate := float64(len(viaFerry))/ferryWall.Seconds(), float64(len(viaTriggers))/triggersWall.Seconds()
			b.ReportMetric(ms(fp50), "ferry_p50_ms")
			b.ReportMetric(ms(fp99), "ferry_p99_ms")
			b.ReportMetric(ms(tp50), "triggers_p50_ms")
			b.ReportMetric(ms(tp99), "triggers_p99_ms")
			b.ReportMetric(float64(fp50)/float64(tp50), "ratio_p50_goal_le_1")
			b.ReportMetric(float64(fp99)/float64(tp99), "ratio_p99_goal_le_1")
			b.ReportMetric(fRate, "ferry_per_s")
			b.ReportMetric(tRate, "triggers_per_s")
			b.ReportMetric(fRate/tRate, "ratio_per_s_goal_ge_1")
		})
	}

	// Triggers as it runs unless told otherwise: client-go's default limit of 5 requests/s.
	b.Run("triggers_default_limits", func(b *testing.B) {
		throttled := deliverTo(triggers.sink(0), http.StatusAccepted, runs)
		_, wall, err := runTimed(50, 50, throttled)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(50/wall.Seconds(), "triggers_default_limits_per_s")
	})
}

// comparedEnv starts an API server of its own with Ferry's admission webhooks (the package's hub
// has none) and Ferry's manager serving its GitLab receiver and those webhooks, as in a cluster.
func comparedEnv(b *testing.B) (*env, *controlplane.APIServer) {
	b.Helper()
	ctx := context.Background()
	api, err := controlplane.StartAPIServer(ctx, controlplane.APIServerOptions{Name: "compared", FerryCRDs: true, TektonCRDs: true, FerryWebhooks: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := api.Stop(); err != nil {
			b.Errorf("failed to stop the API server: %v", err)
		}
	})
	c, err := client.New(api.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{testutil.FerryNamespace, "compared"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			b.Fatal(err)
		}
	}
	host, port, certDir := api.WebhookOptions()
	m, err := manager.New(api.Config, manager.Options{
		Namespace:            testutil.FerryNamespace,
		MetricsAddr:          "0",
		ProbeAddr:            "0",
		Controllers:          []string{"-*"},
		ReceiverAddr:         "127.0.0.1:0",
		ReceiverMaxBodyBytes: testMaxBody,
		WebhookHost:          host,
		WebhookPort:          port,
		WebhookCertDir:       certDir,
	})
	if err != nil {
		b.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Start(mctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("the manager stopped with: %v", err)
		}
	})
	testutil.EventuallyWithin(b, 30*time.Second, "the receiver and the webhooks to serve", func() (bool, error) {
		if err := m.GetWebhookServer().StartedChecker()(nil); err != nil {
			return false, err
		}
		return m.Receiver.Addr() != "", nil
	})
	return &env{t: b, c: c, ns: "compared", r: &receiver{url: "http://" + m.Receiver.Addr() + "/hooks/gitlab", stop: func() {}}}, api
}

// runTimed does total calls of fn from concurrency goroutines and returns the latency each
// reports and the wall time.
func runTimed(concurrency, total int, fn func() (time.Duration, error)) ([]time.Duration, time.Duration, error) {
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
				d, err := fn()
				lat[i] = d
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
