package release_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkReleaseAcrossClusters measures one Release through three environments (no gates) when
// each environment has three clusters, against the same Release when each has one. The clusters
// of an environment roll out in parallel, so the ratio should stay near 1 (goal: ≤ 1.3).
func BenchmarkReleaseAcrossClusters(b *testing.B) {
	startTargets(b)
	hub := testutil.CurrentHub(b)
	c := hub.Client
	ctx := context.Background()
	startManager(b)
	ns := testutil.Namespace(b, c)
	prefix := releasetest.Unique("b")
	var wide, narrow []string
	for i := range 3 {
		w := releasetest.Environment(fmt.Sprintf("%s-w%d", prefix, i+1), nil, clusterNames...)
		n := releasetest.Environment(fmt.Sprintf("%s-n%d", prefix, i+1), nil, clusterNames[i])
		releasetest.CreateCleanly(b, c, w)
		releasetest.CreateCleanly(b, c, n)
		wide, narrow = append(wide, w.Name), append(narrow, n.Name)
	}

	run := func(project string, path []string) time.Duration {
		if err := c.Create(ctx, releasetest.Project(ns, project, path...)); err != nil {
			b.Fatal(err)
		}
		rel := &ferryv1.Release{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: project},
			Spec:       ferryv1.ReleaseSpec{Project: project, Image: releasetest.Image(project), Deploy: releasetest.Deploy(2, nil)},
		}
		start := time.Now()
		if err := c.Create(ctx, rel); err != nil {
			b.Fatal(err)
		}
		testutil.EventuallyWithin(b, 5*time.Minute, "release "+project+" ready", func() (bool, error) {
			got := &ferryv1.Release{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(rel), got); err != nil {
				return false, err
			}
			ready := meta.FindStatusCondition(got.Status.Conditions, ferryv1.ReadyCondition)
			if ready != nil && ready.Status == metav1.ConditionFalse {
				return false, fmt.Errorf("release failed: %s", ready.Message)
			}
			return ready != nil && ready.Status == metav1.ConditionTrue, nil
		})
		return time.Since(start)
	}

	var wideTotal, narrowTotal time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Two pairs per iteration, alternating which goes first, to even out a busy machine.
		narrowTotal += run(fmt.Sprintf("n%d-a", i), narrow)
		wideTotal += run(fmt.Sprintf("w%d-a", i), wide)
		wideTotal += run(fmt.Sprintf("w%d-b", i), wide)
		narrowTotal += run(fmt.Sprintf("n%d-b", i), narrow)
	}
	b.StopTimer()
	runs := float64(2 * b.N)
	b.ReportMetric(wideTotal.Seconds()/runs, "s/release_3envx3clusters")
	b.ReportMetric(narrowTotal.Seconds()/runs, "s/release_3envx1cluster")
	b.ReportMetric(wideTotal.Seconds()/narrowTotal.Seconds(), "ratio_3x3_to_3x1")
}
