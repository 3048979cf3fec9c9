package release_test

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// notBefore fails the test unless every cluster of later started no earlier than every cluster of
// earlier became healthy (status times, to the second).
func notBefore(t *testing.T, es *ferryv1.ReleaseEnvironmentStatus, earlier, later []string) {
	t.Helper()
	byName := map[string]ferryv1.ClusterRolloutStatus{}
	for _, st := range es.Clusters {
		byName[st.Cluster] = st
	}
	for _, l := range later {
		for _, e := range earlier {
			if byName[e].CompletionTime == nil || byName[l].StartTime == nil {
				t.Fatalf("cluster %s or %s has no times: %+v", e, l, es.Clusters)
			}
			if byName[l].StartTime.Before(byName[e].CompletionTime) {
				t.Errorf("cluster %s started at %s, before cluster %s of an earlier wave was healthy at %s", l, byName[l].StartTime, e, byName[e].CompletionTime)
			}
		}
	}
}

func wavesOf(es *ferryv1.ReleaseEnvironmentStatus) map[string]int32 {
	w := map[string]int32{}
	for _, st := range es.Clusters {
		w[st.Cluster] = st.Wave
	}
	return w
}

// TestWavesRollOutInOrderAndResume: an environment with waves [east] then [west, north] writes
// nothing to the second wave while the first is not healthy (here: held by a batch approval), a
// manager restart in the middle of the first wave changes nothing, and the second wave starts
// once the first is healthy.
func TestWavesRollOutInOrderAndResume(t *testing.T) {
	tg := startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("waves"), nil, "east", "west", "north")
	env.Spec.Rollout = ferryv1.RolloutStrategy{
		Type:             ferryv1.BatchStrategy,
		Batch:            &ferryv1.BatchRollout{Batches: 2, Between: ferryv1.BatchGateApproval},
		ProgressDeadline: &metav1.Duration{Duration: 5 * time.Minute},
		Waves:            []ferryv1.RolloutWave{{Clusters: []string{"east"}}, {Clusters: []string{"west", "north"}}},
	}
	releasetest.CreateCleanly(t, c, env)
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east", "west", "north")
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})
	bob := hub.UserClient(t, "bob", "release-managers")

	ctx, stop := context.WithCancel(context.Background())
	first, err := manager.New(hub.Config, testManagerOptions(hub))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- first.Start(ctx) }()
	testutil.EventuallyWithin(t, 30*time.Second, "the first manager's webhook server", func() (bool, error) {
		err := first.GetWebhookServer().StartedChecker()(nil)
		return err == nil, err
	})
	stopFirst := func() {
		if stop != nil {
			stop()
			if err := <-done; err != nil {
				t.Errorf("first manager: %v", err)
			}
			stop = nil
		}
	}
	t.Cleanup(stopFirst)

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(2, nil), nil)
	rel := waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	es := envOf(rel, env.Name)
	if got := wavesOf(es); got["east"] != 1 || got["west"] != 2 || got["north"] != 2 || es.Waves != 2 || es.Wave != 2 {
		t.Errorf("v1: waves %v, wave %d of %d; want east 1, west and north 2, wave 2 of 2", got, es.Wave, es.Waves)
	}
	notBefore(t, es, []string{"east"}, []string{"west", "north"})
	westApplies, northApplies := tg["west"].applies(t, "deployments", target, "shop"), tg["north"].applies(t, "deployments", target, "shop")

	createRelease(t, ns, "v2", "v2", releasetest.Deploy(2, nil), nil)
	before := waitCluster(t, ns, "v2", env.Name, "east", ferryv1.WaitingForApprovalReason)
	checkHeld := func(rel *ferryv1.Release, when string) {
		t.Helper()
		es := envOf(rel, env.Name)
		if es.Wave != 1 || es.Waves != 2 {
			t.Errorf("%s: wave %d of %d, want 1 of 2", when, es.Wave, es.Waves)
		}
		if msg := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition).Message; !strings.Contains(msg, "wave 1 of 2 (east)") {
			t.Errorf("%s: environment message %q does not name the wave", when, msg)
		}
		for _, name := range []string{"west", "north"} {
			if st, cond := clusterCondition(rel, env.Name, name); st.StartTime != nil || cond != nil {
				t.Errorf("%s: cluster %s of wave 2 started while wave 1 is not healthy: %+v", when, name, st)
			}
			if d := tg[name].deployment(t, target, "shop"); d.Spec.Template.Spec.Containers[0].Image != releasetest.Image("v1") {
				t.Errorf("%s: %s runs %s", when, name, d.Spec.Template.Spec.Containers[0].Image)
			}
		}
		if w, n := tg["west"].applies(t, "deployments", target, "shop"), tg["north"].applies(t, "deployments", target, "shop"); w != westApplies || n != northApplies {
			t.Errorf("%s: wave 2 received applies (west %d→%d, north %d→%d)", when, westApplies, w, northApplies, n)
		}
	}
	checkHeld(before, "before the restart")

	// The manager stops in the middle of wave 1; a new one takes over.
	stopFirst()
	reconciles := metricValue(t, "controller_runtime_reconcile_total", map[string]string{"controller": "release"})
	testutil.StartManager(t, testManagerOptions(hub))
	testutil.Eventually(t, "the new manager reconciled the Releases", func() (bool, error) {
		got := metricValue(t, "controller_runtime_reconcile_total", map[string]string{"controller": "release"})
		return got >= reconciles+2, nil
	})
	after := waitCluster(t, ns, "v2", env.Name, "east", ferryv1.WaitingForApprovalReason)
	checkHeld(after, "after the restart")
	bs, _ := clusterCondition(before, env.Name, "east")
	as, _ := clusterCondition(after, env.Name, "east")
	if !as.StartTime.Equal(bs.StartTime) || as.Batch != bs.Batch {
		t.Errorf("east's rollout started over after the restart: before %+v, after %+v", bs, as)
	}

	approve(t, bob, ns, "v2", env.Name, 2)
	rel = waitRelease(t, c, ns, "v2", metav1.ConditionTrue, ferryv1.SucceededReason)
	es = envOf(rel, env.Name)
	if es.Wave != 2 {
		t.Errorf("wave %d after the rollout, want 2", es.Wave)
	}
	notBefore(t, es, []string{"east"}, []string{"west", "north"})
	for _, name := range []string{"east", "west", "north"} {
		tg[name].waitAvailable(t, target, "shop", releasetest.Image("v2"), 2)
	}
}

// TestMaxClustersAtOnce: at most two clusters at a time, in the order of spec.clusters.
func TestMaxClustersAtOnce(t *testing.T) {
	tg := startTargets(t)
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("atonce"), nil, "north", "east", "west")
	env.Spec.Rollout.MaxClustersAtOnce = ptr.To[int32](2)
	releasetest.CreateCleanly(t, c, env)
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east", "west", "north")

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(2, nil), nil)
	rel := waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	es := envOf(rel, env.Name)
	if got := wavesOf(es); got["north"] != 1 || got["east"] != 1 || got["west"] != 2 || es.Waves != 2 {
		t.Errorf("waves %v of %d; want north and east 1, west 2, of 2", got, es.Waves)
	}
	notBefore(t, es, []string{"north", "east"}, []string{"west"})
	for _, name := range []string{"east", "west", "north"} {
		tg[name].waitAvailable(t, target, "shop", releasetest.Image("v1"), 2)
	}
}

// TestFailedWaveRollsBackAndStops: waves [east], [west], [north]; the new version cannot start a
// pod on west (a ResourceQuota of zero pods in its namespace), so wave 2 fails at the progress
// deadline: east (wave 1, already healthy) and west roll back to the previous digest, and north
// (wave 3) is never written to.
func TestFailedWaveRollsBackAndStops(t *testing.T) {
	tg := startTargets(t)
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("wavefail"), nil, "east", "west", "north")
	env.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 4 * time.Second}
	env.Spec.Rollout.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east"}}, {Clusters: []string{"west"}}, {Clusters: []string{"north"}}}
	releasetest.CreateCleanly(t, c, env)
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east", "west", "north")

	createRelease(t, ns, "good", "v1", releasetest.Deploy(2, nil), nil)
	waitRelease(t, c, ns, "good", metav1.ConditionTrue, ferryv1.SucceededReason)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: target, Name: "no-new-pods"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("2")}},
	}
	if err := tg["west"].client.Create(context.Background(), quota); err != nil {
		t.Fatal(err)
	}
	northApplies := tg["north"].applies(t, "deployments", target, "shop")

	createRelease(t, ns, "next", "v2", releasetest.Deploy(2, nil), nil)
	rel := waitRelease(t, c, ns, "next", metav1.ConditionFalse, ferryv1.RolledBackReason)
	msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message
	if !strings.Contains(msg, "cluster west:") || !strings.Contains(msg, "progress deadline") {
		t.Errorf("Ready message %q does not name west's failure", msg)
	}
	es := envOf(rel, env.Name)
	if es.Wave != 2 || es.Waves != 3 {
		t.Errorf("wave %d of %d, want 2 of 3", es.Wave, es.Waves)
	}
	for _, name := range []string{"east", "west"} {
		st, cond := clusterCondition(rel, env.Name, name)
		if cond.Reason != ferryv1.RolledBackReason || st.Image != releasetest.Image("v1") {
			t.Errorf("cluster %s: %+v image %s; want rolled back to v1", name, cond, st.Image)
		}
		tg[name].waitAvailable(t, target, "shop", releasetest.Image("v1"), 2)
	}
	st, cond := clusterCondition(rel, env.Name, "north")
	if cond.Reason != ferryv1.WaveNotStartedReason || st.StartTime != nil || !strings.Contains(cond.Message, "cluster west of wave 2 failed") {
		t.Errorf("north: %+v %+v; want WaveNotStarted naming west", cond, st)
	}
	if n := tg["north"].applies(t, "deployments", target, "shop"); n != northApplies {
		t.Errorf("north (wave 3) received %d applies", n-northApplies)
	}
	if d := tg["north"].deployment(t, target, "shop"); d.Spec.Template.Spec.Containers[0].Image != releasetest.Image("v1") {
		t.Errorf("north runs %s", d.Spec.Template.Spec.Containers[0].Image)
	}
}

// TestWavesValidation: admission refuses waves that name another cluster, leave a cluster out or
// name it twice, a maxClustersAtOnce below 1, and both at once, naming the field.
func TestWavesValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	cases := []struct {
		name   string
		mutate func(*ferryv1.RolloutStrategy)
		want   []string
	}{
		{"unknown cluster", func(r *ferryv1.RolloutStrategy) {
			r.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east"}}, {Clusters: []string{"west", "south"}}}
		}, []string{"spec.rollout.waves", "a wave may name only clusters of spec.clusters"}},
		{"cluster left out", func(r *ferryv1.RolloutStrategy) {
			r.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east"}}}
		}, []string{"spec.rollout.waves", "every cluster of spec.clusters must be in exactly one wave"}},
		{"cluster twice", func(r *ferryv1.RolloutStrategy) {
			r.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east", "west"}}, {Clusters: []string{"west"}}}
		}, []string{"spec.rollout.waves", "every cluster of spec.clusters must be in exactly one wave"}},
		{"empty wave", func(r *ferryv1.RolloutStrategy) {
			r.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east", "west"}}, {Clusters: []string{}}}
		}, []string{"spec.rollout.waves[1].clusters"}},
		{"zero at once", func(r *ferryv1.RolloutStrategy) {
			r.MaxClustersAtOnce = ptr.To[int32](0)
		}, []string{"spec.rollout.maxClustersAtOnce", "greater than or equal to 1"}},
		{"both", func(r *ferryv1.RolloutStrategy) {
			r.MaxClustersAtOnce = ptr.To[int32](1)
			r.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east", "west"}}}
		}, []string{"spec.rollout.waves", "waves and maxClustersAtOnce are mutually exclusive"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := releasetest.Environment(releasetest.Unique("badwaves"), nil, "east", "west")
			tc.mutate(&env.Spec.Rollout)
			err := c.Create(context.Background(), env)
			if err == nil {
				_ = c.Delete(context.Background(), env)
				t.Fatal("the Environment was accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	// The valid forms are accepted.
	for _, r := range []ferryv1.RolloutStrategy{
		{Waves: []ferryv1.RolloutWave{{Clusters: []string{"west"}}, {Clusters: []string{"east"}}}},
		{MaxClustersAtOnce: ptr.To[int32](1)},
	} {
		env := releasetest.Environment(releasetest.Unique("goodwaves"), nil, "east", "west")
		env.Spec.Rollout = r
		releasetest.CreateCleanly(t, c, env)
	}
}
