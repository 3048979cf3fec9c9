package build_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkBurstToOneBranch: 2,000 pushes' Builds to one branch of one Project (supersede on,
// the default history limit of 20) created over one minute against the real API server, with the
// Build controller of a manager whose every API request is counted. Tekton's part is played by
// this benchmark: a PipelineRun asked to cancel is reported Cancelled at once (its pods would
// stop). Steady state: every Build older than the burst's last second cancelled and finished, the
// history pruned to its limit, the controller idle.
//
// Builds created in one second do not supersede each other (creation times have a resolution of
// a second), so those of the burst's last second all run.
//
// Figures: s_to_steady_state (after the last Build was created; goal ≤ 60), api_requests_per_build
// (the manager's requests of every kind, over the Builds created; goal bounded and independent of
// the Project's Build count), s_creating (the burst itself), process_cpu_s (this process: the
// manager, the creators and the simulated Tekton; the API server and etcd are not in it).
func BenchmarkBurstToOneBranch(b *testing.B) {
	const builds, over = 2000, time.Minute
	for range b.N {
		b.StopTimer()
		e := newEnv(b, func(p *ferryv1.Project) { p.Spec.Triggers.Supersede = true })
		sha := e.commit(okFile)
		var requests atomic.Int64
		startCountingManager(b, &requests)
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		go playTekton(ctx, e.c, e.ns)

		cfg := rest.CopyConfig(testutil.CurrentHub(b).Config)
		cfg.QPS = -1
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			b.Fatal(err)
		}
		cpuBefore := processCPU()
		b.StartTimer()
		start := time.Now()
		tick := time.NewTicker(over / builds)
		var wg sync.WaitGroup
		for i := range builds {
			<-tick.C
			wg.Go(func() {
				build := &ferryv1.Build{
					ObjectMeta: metav1ObjectMeta(e.ns, fmt.Sprintf("burst-%04d", i)),
					Spec:       ferryv1.BuildSpec{Project: e.project.Name, Revision: sha, Ref: "refs/heads/main"},
				}
				if err := c.Create(ctx, build); err != nil {
					b.Error(err)
				}
			})
		}
		tick.Stop()
		wg.Wait()
		created := time.Since(start)
		last := time.Now()

		var state string
		lastRunning := 0
		testutil.EventuallyWithin(b, 15*time.Minute, "the burst to settle", func() (bool, error) {
			list := &ferryv1.BuildList{}
			if err := e.c.List(ctx, list, client.InNamespace(e.ns)); err != nil {
				return false, err
			}
			// Builds created in the same second do not supersede each other: those of the
			// burst's last second all run.
			var newest metav1.Time
			for _, bd := range list.Items {
				if newest.Before(&bd.CreationTimestamp) {
					newest = bd.CreationTimestamp
				}
			}
			running, stray, finished := 0, 0, 0
			for _, bd := range list.Items {
				switch {
				case bd.Status.CompletionTime != nil:
					finished++
				case bd.CreationTimestamp.Equal(&newest):
					running++
				default:
					stray++
				}
			}
			depth := metric(b, "workqueue_depth", map[string]string{"name": "build"})
			active := metric(b, "controller_runtime_active_workers", map[string]string{"controller": "build"})
			lastRunning = running
			state = fmt.Sprintf("%d Builds: %d finished, %d of the last second running, %d older unfinished; queue %v, active %v", len(list.Items), finished, running, stray, depth, active)
			return finished <= 20 && stray == 0 && depth == 0 && active == 0, fmt.Errorf("%s", state)
		})
		settled := time.Since(last)
		b.StopTimer()
		b.Logf("settled: %s", state)
		b.ReportMetric(settled.Seconds(), "s_to_steady_state")
		b.ReportMetric(float64(requests.Load())/builds, "api_requests_per_build")
		b.ReportMetric(created.Seconds(), "s_creating")
		b.ReportMetric(processCPU()-cpuBefore, "process_cpu_s")
		b.ReportMetric(float64(lastRunning), "builds_of_the_last_second_running")
	}
}

// startCountingManager starts a manager with the Build controller whose API requests are counted.
func startCountingManager(b *testing.B, requests *atomic.Int64) {
	b.Helper()
	h := testutil.CurrentHub(b)
	cfg := rest.CopyConfig(h.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			requests.Add(1)
			return rt.RoundTrip(r)
		})
	})
	m, err := manager.New(cfg, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage, Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			b.Errorf("manager stopped with an error: %v", err)
		}
	})
	// The requests of the start (discovery, the caches' lists and watches) are not the burst's.
	testutil.EventuallyWithin(b, time.Minute, "the manager's caches", func() (bool, error) {
		return m.GetCache().WaitForCacheSync(ctx), nil
	})
	requests.Store(0)
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// playTekton reports every PipelineRun asked to cancel as Cancelled, as Tekton would once its pods
// stopped, until ctx ends.
func playTekton(ctx context.Context, c client.Client, ns string) {
	for ctx.Err() == nil {
		list := &pipelinev1.PipelineRunList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err == nil {
			for i := range list.Items {
				pr := &list.Items[i]
				if pr.Spec.Status != pipelinev1.PipelineRunSpecStatusCancelled || pr.Status.CompletionTime != nil {
					continue
				}
				now := metav1.Now()
				pr.Status.StartTime, pr.Status.CompletionTime = &now, &now
				pr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: corev1.ConditionFalse, Reason: pipelinev1.PipelineRunReasonCancelled.String(), LastTransitionTime: apis.VolatileTime{Inner: now}}}
				_ = c.Status().Update(ctx, pr)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// processCPU is this process's user and system CPU time so far, in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
