package build_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkBuildsToPipelineRuns creates 500 Builds at once against the real API server and
// reports how long it takes until every one has its PipelineRun, and how many reconciles each
// Build cost until the controller went idle (goal ≤ 5; Tekton's own tests allow 20).
func BenchmarkBuildsToPipelineRuns(b *testing.B) {
	const builds = 500
	for range b.N {
		b.StopTimer()
		e := newEnv(b)
		sha := e.commit(okFile)
		startManager(b)
		reconcilesBefore := metric(b, "controller_runtime_reconcile_total", map[string]string{"controller": "build"})
		// A client without client-side throttling: the Builds arrive as fast as the API server
		// takes them.
		cfg := rest.CopyConfig(testutil.CurrentHub(b).Config)
		cfg.QPS = -1
		c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		b.StartTimer()
		start := time.Now()

		var wg sync.WaitGroup
		names := make(chan string)
		for range 16 {
			wg.Go(func() {
				for name := range names {
					build := &ferryv1.Build{
						ObjectMeta: metav1ObjectMeta(e.ns, name),
						Spec:       ferryv1.BuildSpec{Project: e.project.Name, Revision: sha, Ref: "refs/heads/main"},
					}
					if err := c.Create(ctx, build); err != nil {
						b.Error(err)
					}
				}
			})
		}
		for i := range builds {
			names <- fmt.Sprintf("bench-%03d", i)
		}
		close(names)
		wg.Wait()
		created := time.Since(start)

		testutil.EventuallyWithin(b, 10*time.Minute, "every PipelineRun", func() (bool, error) {
			list := &pipelinev1.PipelineRunList{}
			if err := e.c.List(ctx, list, client.InNamespace(e.ns)); err != nil {
				return false, err
			}
			return len(list.Items) == builds, fmt.Errorf("%d PipelineRuns", len(list.Items))
		})
		toPipelineRuns := time.Since(start)
		b.StopTimer()

		// Every Build records its run, and the controller goes idle: what it cost is then final.
		testutil.EventuallyWithin(b, 10*time.Minute, "every Build running and the controller idle", func() (bool, error) {
			list := &ferryv1.BuildList{}
			if err := e.c.List(ctx, list, client.InNamespace(e.ns)); err != nil {
				return false, err
			}
			recorded := 0
			for _, bd := range list.Items {
				if bd.Status.PipelineRunRef != nil {
					recorded++
				}
			}
			depth := metric(b, "workqueue_depth", map[string]string{"name": "build"})
			active := metric(b, "controller_runtime_active_workers", map[string]string{"controller": "build"})
			return recorded == builds && depth == 0 && active == 0, fmt.Errorf("%d recorded, queue %v, active %v", recorded, depth, active)
		})
		reconciles := metric(b, "controller_runtime_reconcile_total", map[string]string{"controller": "build"}) - reconcilesBefore
		b.ReportMetric(toPipelineRuns.Seconds(), "s_to_all_pipelineruns")
		b.ReportMetric(created.Seconds(), "s_to_create_builds")
		b.ReportMetric(reconciles/builds, "reconciles_per_build")
		b.ReportMetric(float64(builds)/toPipelineRuns.Seconds(), "pipelineruns_per_s")
	}
}
