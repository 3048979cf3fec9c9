package build_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkBurstToOneBranch: 2,000 pushes to one branch of one Project (supersede on, the default
// history limit of 20) over one minute, each a GitLab Push Hook of a new commit that the GitLab
// simulator delivers to the receiver of a manager running the Build controller, against the real
// API server, with the manager's every API request counted. Tekton's part is played by this
// benchmark: a PipelineRun asked to cancel is reported Cancelled at once (its pods would stop).
// The simulated Tekton is not throttled on the client and it and the benchmark watch rather than
// poll, so that the API server's load is Ferry's. Steady state: every Build older than the
// burst's last second cancelled and finished, the history pruned to its limit, the controller
// idle.
//
// Builds created in one second do not supersede each other (creation times have a resolution of
// a second), so those of the burst's last second all run.
//
// Figures: s_to_steady_state (after the last delivery was answered; goal ≤ 60),
// api_requests_per_build (the manager's requests of every kind — the receiver's creates, the
// controller's reads and writes — over the Builds; goal bounded and independent of the Project's
// Build count), receiver_p50_ms and receiver_p99_ms (a delivery's answer, during the burst),
// deliveries_failed (any answer but 201), other_project_start_quiet_s and
// other_project_start_during_burst_s (from a Build's creation until its PipelineRun, for a Build
// of another Project of the namespace, before the burst and in its middle: a burst must not
// delay another Project's Build beyond its share), s_pushing (the burst itself), process_cpu_s (this
// process: the manager, the GitLab simulator and the simulated Tekton), apiserver_etcd_cpu_s (the
// API server's and etcd's). The manager's requests by verb and resource are logged.
func BenchmarkBurstToOneBranch(b *testing.B) {
	const pushes, over = 2000, time.Minute
	for range b.N {
		b.StopTimer()
		gl := gitlabsim.New()
		b.Cleanup(gl.Close)
		e := newEnv(b, func(p *ferryv1.Project) {
			p.Spec.Triggers.Supersede = true
			p.Spec.GitLab.URL = gl.URL
		})
		token := "burst-" + e.ns
		if err := e.c.Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: e.project.Spec.GitLab.WebhookSecretRef.Name},
			Data:       map[string][]byte{"token": []byte(token)},
		}); err != nil {
			b.Fatal(err)
		}
		// Every push is of a new commit, in the git server (the Builds that start read their
		// pipeline file there) and in GitLab.
		pid := gl.AddProject(gitlabsim.Project{PathWithNamespace: e.repo})
		shas, err := e.git.CommitSeries(e.repo, "main", pushes, func(i int) map[string]string {
			return map[string]string{".ferry.yaml": okFile, "main.go": fmt.Sprintf("package main // %d\n", i)}
		})
		if err != nil {
			b.Fatal(err)
		}
		for i, sha := range shas {
			c := gitlabsim.Commit{ID: sha, Message: fmt.Sprintf("Commit %d", i+1)}
			if i > 0 {
				c.ParentIDs = []string{shas[i-1]}
			}
			if _, err := gl.AddCommit(pid, c); err != nil {
				b.Fatal(err)
			}
		}
		var requests requestCounter
		receiver := startCountingManager(b, &requests)
		if err := gl.AddHook(pid, gitlabsim.Hook{URL: receiver, Token: token, PushEvents: true}); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		b.Cleanup(cancel)
		cfg := rest.CopyConfig(testutil.CurrentHub(b).Config)
		cfg.QPS = -1
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			b.Fatal(err)
		}
		seen := watchingCache(ctx, b, e.ns)
		go playTekton(ctx, seen, c)
		// Another Project of the namespace, whose Builds must not wait behind the burst.
		other := e.project.DeepCopy()
		other.ObjectMeta = metav1.ObjectMeta{Namespace: e.ns, Name: "other"}
		other.Spec.GitLab.ProjectPath = "team/other"
		if err := c.Create(ctx, other); err != nil {
			b.Fatal(err)
		}
		otherStart := func(name string) time.Duration {
			began := time.Now()
			if err := c.Create(ctx, &ferryv1.Build{ObjectMeta: metav1ObjectMeta(e.ns, name), Spec: ferryv1.BuildSpec{Project: other.Name, Revision: shas[0], Ref: "refs/heads/main"}}); err != nil {
				b.Error(err)
				return 0
			}
			// Called from the pushing goroutines too: no t.Fatal here.
			if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
				bd := &ferryv1.Build{}
				err := seen.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, bd)
				return err == nil && bd.Status.PipelineRunRef != nil, nil
			}); err != nil {
				b.Errorf("Build %s of another Project did not start: %v", name, err)
			}
			return time.Since(began)
		}
		quiet := otherStart("other-quiet")
		var duringBurst time.Duration

		cpuBefore, serverCPUBefore := processCPU(), childrenCPU()
		b.StartTimer()
		start := time.Now()
		tick := time.NewTicker(over / pushes)
		var wg sync.WaitGroup
		latencies := make([]time.Duration, pushes)
		var failed atomic.Int64
		for i, sha := range shas {
			<-tick.C
			if i == pushes/2 {
				wg.Go(func() { duringBurst = otherStart("other-during-burst") })
			}
			wg.Go(func() {
				began := time.Now()
				ds, err := gl.Push(ctx, pid, gitlabsim.PushSpec{Branch: "main", To: sha, User: "alice"})
				latencies[i] = time.Since(began)
				if err != nil || len(ds) != 1 || ds[0].Status != http.StatusCreated {
					if failed.Add(1) <= 3 {
						b.Logf("push %d: %v %+v", i, err, ds)
					}
				}
			})
		}
		tick.Stop()
		wg.Wait()
		created := time.Since(start)
		last := time.Now()

		var state string
		lastRunning := 0
		nextTrace := time.Now()
		testutil.EventuallyWithin(b, 15*time.Minute, "the burst to settle", func() (bool, error) {
			list := &ferryv1.BuildList{}
			if err := seen.List(ctx, list, client.InNamespace(e.ns)); err != nil {
				return false, err
			}
			// Builds created in the same second do not supersede each other: those of the
			// burst's last second all run.
			list.Items = slices.DeleteFunc(list.Items, func(bd ferryv1.Build) bool { return bd.Spec.Project != e.project.Name })
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
			if time.Now().After(nextTrace) {
				// Progress while it settles (b.Logf would show only the first lines, at the end).
				fmt.Fprintf(os.Stderr, "%5.1f s after the last push: %s\n", time.Since(last).Seconds(), state)
				nextTrace = time.Now().Add(5 * time.Second)
			}
			return finished <= 20 && stray == 0 && depth == 0 && active == 0, fmt.Errorf("%s", state)
		})
		settled := time.Since(last)
		b.StopTimer()
		b.Logf("settled: %s", state)
		b.Logf("the manager's requests: %s", requests.summary())
		b.ReportMetric(settled.Seconds(), "s_to_steady_state")
		b.ReportMetric(float64(requests.total.Load())/pushes, "api_requests_per_build")
		slices.Sort(latencies)
		b.ReportMetric(float64(latencies[pushes/2].Microseconds())/1000, "receiver_p50_ms")
		b.ReportMetric(float64(latencies[pushes*99/100].Microseconds())/1000, "receiver_p99_ms")
		b.ReportMetric(float64(failed.Load()), "deliveries_failed")
		b.ReportMetric(quiet.Seconds(), "other_project_start_quiet_s")
		b.ReportMetric(duringBurst.Seconds(), "other_project_start_during_burst_s")
		b.ReportMetric(created.Seconds(), "s_pushing")
		b.ReportMetric(processCPU()-cpuBefore, "process_cpu_s")
		b.ReportMetric(childrenCPU()-serverCPUBefore, "apiserver_etcd_cpu_s")
		b.ReportMetric(float64(lastRunning), "builds_of_the_last_second_running")
	}
}

// startCountingManager starts a manager with the Build controller and the GitLab receiver, whose
// API requests are counted, and returns the receiver's URL.
func startCountingManager(b *testing.B, requests *requestCounter) string {
	b.Helper()
	h := testutil.CurrentHub(b)
	cfg := rest.CopyConfig(h.Config)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			requests.add(r)
			return rt.RoundTrip(r)
		})
	})
	addr := testutil.FreeAddr(b)
	m, err := manager.New(cfg, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage, Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", ReceiverAddr: addr})
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
	requests.reset()
	return "http://" + addr + "/hooks/gitlab"
}

// requestCounter counts API requests, in total and by verb and resource.
type requestCounter struct {
	total atomic.Int64
	mu    sync.Mutex
	kinds map[string]int
}

func (c *requestCounter) add(r *http.Request) {
	c.total.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kinds == nil {
		c.kinds = map[string]int{}
	}
	c.kinds[r.Method+" "+resourceOf(r.URL.Path)]++
}

func (c *requestCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total.Store(0)
	c.kinds = nil
}

// summary lists the kinds of requests, the most frequent first.
func (c *requestCounter) summary() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	kinds := make([]string, 0, len(c.kinds))
	for k := range c.kinds {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool { return c.kinds[kinds[i]] > c.kinds[kinds[j]] })
	parts := make([]string, 0, len(kinds))
	for _, k := range kinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, c.kinds[k]))
	}
	return strings.Join(parts, ", ")
}

// resourceOf is the resource (and subresource) a request's path names:
// /apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME[/SUBRESOURCE]].
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	for i := 0; i+1 < len(parts); i++ {
		if parts[i] != "namespaces" || i+2 >= len(parts) {
			continue
		}
		rest := parts[i+2:]
		if len(rest) >= 3 {
			return rest[0] + "/" + rest[2]
		}
		return rest[0]
	}
	return path
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// watchingCache is a cache of the namespace's Builds and PipelineRuns, filled by watches, until
// ctx ends.
func watchingCache(ctx context.Context, b *testing.B, ns string) cache.Cache {
	b.Helper()
	c, err := cache.New(testutil.CurrentHub(b).Config, cache.Options{Scheme: manager.Scheme(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, o := range []client.Object{&ferryv1.Build{}, &pipelinev1.PipelineRun{}} {
		if _, err := c.GetInformer(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	go func() { _ = c.Start(ctx) }()
	if !c.WaitForCacheSync(ctx) {
		b.Fatal("the benchmark's cache did not sync")
	}
	return c
}

// playTekton reports every PipelineRun asked to cancel as Cancelled, as Tekton would once its pods
// stopped, until ctx ends.
func playTekton(ctx context.Context, seen client.Reader, c client.Client) {
	reported := map[types.UID]bool{}
	for ctx.Err() == nil {
		list := &pipelinev1.PipelineRunList{}
		if err := seen.List(ctx, list); err == nil {
			for i := range list.Items {
				pr := &list.Items[i]
				if pr.Spec.Status != pipelinev1.PipelineRunSpecStatusCancelled || pr.Status.CompletionTime != nil || reported[pr.UID] {
					continue
				}
				now := metav1.Now()
				pr.Status.StartTime, pr.Status.CompletionTime = &now, &now
				pr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: corev1.ConditionFalse, Reason: pipelinev1.PipelineRunReasonCancelled.String(), LastTransitionTime: apis.VolatileTime{Inner: now}}}
				if c.Status().Update(ctx, pr) == nil {
					reported[pr.UID] = true
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// childrenCPU is the CPU time so far, in seconds, of this process's children: the API server and
// etcd the benchmark started.
func childrenCPU() float64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	ticks := 0.0
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime(14) stime(15): comm may hold spaces, so count after ')'.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 13 {
			continue
		}
		if ppid, _ := strconv.Atoi(fields[1]); ppid != self {
			continue
		}
		utime, _ := strconv.ParseFloat(fields[11], 64)
		stime, _ := strconv.ParseFloat(fields[12], 64)
		ticks += utime + stime
	}
	return ticks / 100 // USER_HZ
}

// processCPU is this process's user and system CPU time so far, in seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
