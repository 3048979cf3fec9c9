package release_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestFailedRolloutRollsBack: a release whose pods never become ready fails at the progress
// deadline and the environment goes back to the previous digest on every cluster; the Release
// stops there with a message naming the cluster and the reason.
func TestFailedRolloutRollsBack(t *testing.T) {
	tg := startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("live"), nil, "east", "west")
	env.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 4 * time.Second}
	// The simulated clusters keep pods that carry this annotation unready.
	env.Spec.AllowedPodAnnotations = []string{"sim.ferry.dev/*"}
	releasetest.CreateCleanly(t, c, env)
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east", "west")
	rolledBackBefore := metricValue(t, "ferry_releases_total", map[string]string{"result": "rolled_back"})

	createRelease(t, ns, "good", "v1", releasetest.Deploy(2, nil), nil)
	waitRelease(t, c, ns, "good", metav1.ConditionTrue, ferryv1.SucceededReason)

	createRelease(t, ns, "broken", "v2", releasetest.UnreadyDeploy(2), nil)
	// While it rolls out, the broken image reaches the clusters.
	within(t, rolloutTimeout, "the broken image applied on east", func() (bool, error) {
		d := tg["east"].deployment(t, target, "shop")
		return d != nil && d.Spec.Template.Spec.Containers[0].Image == releasetest.Image("v2"), nil
	})
	rel := waitRelease(t, c, ns, "broken", metav1.ConditionFalse, ferryv1.RolledBackReason)
	msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message
	for _, want := range []string{env.Name + ": cluster ", "not healthy after 4s (progress deadline)", "0 of them available", "rolled back to " + rollout.ShortImage(releasetest.Image("v1"))} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if !strings.Contains(msg, "cluster east:") && !strings.Contains(msg, "cluster west:") {
		t.Errorf("Ready message %q names no cluster", msg)
	}
	if !meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) || rel.Status.CompletionTime == nil {
		t.Errorf("conditions %+v; want Stalled and finished", rel.Status.Conditions)
	}
	es := envOf(rel, env.Name)
	if es.PreviousImage != releasetest.Image("v1") {
		t.Errorf("previousImage = %s", es.PreviousImage)
	}
	for _, cs := range es.Clusters {
		cond := meta.FindStatusCondition(cs.Conditions, ferryv1.RolledOutCondition)
		if cond.Reason != ferryv1.RolledBackReason || cs.Image != releasetest.Image("v1") || cs.CompletionTime == nil {
			t.Errorf("cluster %s: %+v image %s", cs.Cluster, cond, cs.Image)
		}
	}
	// Both clusters run the previous digest again, with the previous settings (no unready pods).
	for _, name := range []string{"east", "west"} {
		d := tg[name].waitAvailable(t, target, "shop", releasetest.Image("v1"), 2)
		if _, ok := d.Spec.Template.Annotations[controlplane.UnreadyAnnotation]; ok {
			t.Errorf("%s: the rollback kept the broken release's pod annotations", name)
		}
	}
	// The Project still records the good release.
	p := &ferryv1.Project{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "shop"}, p); err != nil {
		t.Fatal(err)
	}
	if len(p.Status.Environments) != 1 || p.Status.Environments[0].Image != releasetest.Image("v1") || p.Status.Environments[0].Release != "good" {
		t.Errorf("project status = %+v", p.Status.Environments)
	}
	if v := metricValue(t, "ferry_releases_total", map[string]string{"result": "rolled_back"}); v != rolledBackBefore+1 {
		t.Errorf("ferry_releases_total{result=rolled_back} = %v, want %v", v, rolledBackBefore+1)
	}
}

// batchEnvironment rolls out in two batches with an Approval between them.
func batchEnvironment(t *testing.T, clusters ...string) *ferryv1.Environment {
	t.Helper()
	env := releasetest.Environment(releasetest.Unique("canary"), nil, clusters...)
	env.Spec.Rollout = ferryv1.RolloutStrategy{
		Type:             ferryv1.BatchStrategy,
		Batch:            &ferryv1.BatchRollout{Batches: 2, Between: ferryv1.BatchGateApproval},
		ProgressDeadline: &metav1.Duration{Duration: 5 * time.Minute},
	}
	releasetest.CreateCleanly(t, testutil.CurrentHub(t).Client, env)
	return env
}

// clusterCondition is the RolledOut condition of one cluster of a Release environment.
func clusterCondition(rel *ferryv1.Release, env, cluster string) (*ferryv1.ClusterRolloutStatus, *metav1.Condition) {
	es := envOf(rel, env)
	if es == nil {
		return nil, nil
	}
	for i := range es.Clusters {
		if es.Clusters[i].Cluster == cluster {
			return &es.Clusters[i], meta.FindStatusCondition(es.Clusters[i].Conditions, ferryv1.RolledOutCondition)
		}
	}
	return nil, nil
}

func waitCluster(t *testing.T, ns, release, env, cluster, reason string) *ferryv1.Release {
	t.Helper()
	c := testutil.CurrentHub(t).Client
	var rel *ferryv1.Release
	within(t, rolloutTimeout, fmt.Sprintf("cluster %s of %s/%s: %s", cluster, release, env, reason), func() (bool, error) {
		rel = getRelease(t, c, ns, release)
		_, cond := clusterCondition(rel, env, cluster)
		if cond == nil {
			return false, fmt.Errorf("no RolledOut condition")
		}
		return cond.Reason == reason, fmt.Errorf("%s: %s", cond.Reason, cond.Message)
	})
	return rel
}

// TestClusterStoppedMidRolloutResumes: a target cluster that stops in the middle of a rollout
// holds only its own rollout, with a clear condition; the other cluster finishes and is not
// written to again; once the cluster is back the rollout resumes where it was.
func TestClusterStoppedMidRolloutResumes(t *testing.T) {
	tg := startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := batchEnvironment(t, "west", "north")
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "west", "north")
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})
	bob := hub.UserClient(t, "bob", "release-managers")

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(4, nil), nil)
	waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	createRelease(t, ns, "v2", "v2", releasetest.Deploy(4, nil), nil)
	waitCluster(t, ns, "v2", env.Name, "west", ferryv1.WaitingForApprovalReason)
	waitCluster(t, ns, "v2", env.Name, "north", ferryv1.WaitingForApprovalReason)
	if d := tg["north"].deployment(t, target, "shop-canary"); d == nil || *d.Spec.Replicas != 2 {
		t.Fatalf("north canary after batch 1: %+v", d)
	}

	// north goes down in the middle of the rollout.
	if err := tg["north"].Halt(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg["north"].Restart(context.Background()) })
	approve(t, bob, ns, "v2", env.Name, 2)

	waitCluster(t, ns, "v2", env.Name, "west", ferryv1.HealthyReason)
	rel := waitCluster(t, ns, "v2", env.Name, "north", ferryv1.ClusterUnreachableReason)
	_, cond := clusterCondition(rel, env.Name, "north")
	if !strings.Contains(cond.Message, "cluster north cannot be reached") || !strings.Contains(cond.Message, "connection refused") {
		t.Errorf("north condition = %q", cond.Message)
	}
	if ready := envCondition(rel, env.Name, ferryv1.ReadyCondition); ready.Status != metav1.ConditionUnknown || !strings.Contains(ready.Message, "north: ClusterUnreachable") {
		t.Errorf("environment Ready = %+v", ready)
	}
	tg["west"].waitAvailable(t, target, "shop", releasetest.Image("v2"), 4)
	westApplies := tg["west"].applies(t, "deployments", target, "shop") + tg["west"].applies(t, "deployments", target, "shop-canary")

	// north comes back with its data and address: the rollout resumes there.
	if err := tg["north"].Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitRelease(t, c, ns, "v2", metav1.ConditionTrue, ferryv1.SucceededReason)
	tg["north"].waitAvailable(t, target, "shop", releasetest.Image("v2"), 4)
	if d := tg["north"].deployment(t, target, "shop-canary"); d != nil && d.DeletionTimestamp == nil {
		t.Errorf("north still runs the canary")
	}
	// The cluster that had succeeded was not written to again.
	if got := tg["west"].applies(t, "deployments", target, "shop") + tg["west"].applies(t, "deployments", target, "shop-canary"); got != westApplies {
		t.Errorf("west received %d applies after it had succeeded", got-westApplies)
	}
}

// TestControllerRestartMidRollout: the manager stops in the middle of a batch rollout and a new
// one takes over: nothing is applied twice (counted in the cluster's audit log and in the
// Deployments' generations), and nothing recorded is lost.
func TestControllerRestartMidRollout(t *testing.T) {
	east := startTargets(t)["east"]
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ns := testutil.Namespace(t, c)
	env := batchEnvironment(t, "east")
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east")
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

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(4, nil), nil)
	waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	createRelease(t, ns, "v2", "v2", releasetest.Deploy(4, nil), nil)
	before := waitCluster(t, ns, "v2", env.Name, "east", ferryv1.WaitingForApprovalReason)
	stable, canary := east.deployment(t, target, "shop"), east.deployment(t, target, "shop-canary")
	counts := func() (int, int, int, int) {
		return east.applies(t, "deployments", target, "shop"), east.applies(t, "deployments", target, "shop-canary"),
			east.applies(t, "services", target, "shop"), east.applies(t, "namespaces", "", target)
	}
	s0, c0, svc0, ns0 := counts()
	if s0 != 1 || c0 != 1 || svc0 != 1 || ns0 != 1 {
		t.Errorf("before the restart: %d applies of the stable Deployment, %d of the canary, %d of the Service, %d of the namespace; want 1 each", s0, c0, svc0, ns0)
	}

	// The manager stops mid-rollout; a new one starts.
	stopFirst()
	reconciles := metricValue(t, "controller_runtime_reconcile_total", map[string]string{"controller": "release"})
	testutil.StartManager(t, testManagerOptions(hub))
	testutil.Eventually(t, "the new manager reconciled the Releases", func() (bool, error) {
		got := metricValue(t, "controller_runtime_reconcile_total", map[string]string{"controller": "release"})
		return got >= reconciles+4, fmt.Errorf("%v reconciles since the restart", got-reconciles)
	})
	after := waitCluster(t, ns, "v2", env.Name, "east", ferryv1.WaitingForApprovalReason)
	if s, cn, svc, n := counts(); s != s0 || cn != c0 || svc != svc0 || n != ns0 {
		t.Errorf("after the restart: applies stable %d→%d, canary %d→%d, service %d→%d, namespace %d→%d; want no change", s0, s, c0, cn, svc0, svc, ns0, n)
	}
	bs, _ := clusterCondition(before, env.Name, "east")
	as, _ := clusterCondition(after, env.Name, "east")
	if as.Batch != 1 || !as.StartTime.Equal(bs.StartTime) || !as.BatchStartTime.Equal(bs.BatchStartTime) || !as.BatchHealthyTime.Equal(bs.BatchHealthyTime) {
		t.Errorf("cluster status changed over the restart: before %+v, after %+v", bs, as)
	}
	if d := east.deployment(t, target, "shop-canary"); d.Generation != canary.Generation || east.deployment(t, target, "shop").Generation != stable.Generation {
		t.Errorf("a Deployment changed over the restart")
	}

	approve(t, bob, ns, "v2", env.Name, 2)
	rel := waitRelease(t, c, ns, "v2", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, target, "shop", releasetest.Image("v2"), 4)
	// v1 applied the stable Deployment once, v2 once more for its last batch; the canary was
	// applied once and is gone.
	if s, cn, svc, n := counts(); s != 2 || cn != 1 || svc != 1 || n != 1 {
		t.Errorf("in all: %d applies of the stable Deployment (want 2), %d of the canary (want 1), %d of the Service (want 1), %d of the namespace (want 1)", s, cn, svc, n)
	}
	if g := east.deployment(t, target, "shop").Generation; g != stable.Generation+1 {
		t.Errorf("stable Deployment generation %d, want %d", g, stable.Generation+1)
	}
	if cs, _ := clusterCondition(rel, env.Name, "east"); cs.Batch != 2 || cs.Batches != 2 || cs.CompletionTime == nil {
		t.Errorf("cluster status = %+v", cs)
	}
}

func testManagerOptions(hub *testutil.Hub) manager.Options {
	host, port, dir := hub.WebhookOptions()
	return manager.Options{
		Controllers: []string{"release"}, Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0",
		WebhookHost: host, WebhookPort: port, WebhookCertDir: dir,
	}
}

// TestDeletingAReleaseMidRollout: a Release deleted in the middle of a batch rollout takes its
// canary back before it goes; the environment keeps running what it ran, and the next Release
// can take the deploy lock.
func TestDeletingAReleaseMidRollout(t *testing.T) {
	east := startTargets(t)["east"]
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := batchEnvironment(t, "east")
	if err := c.Create(ctx, releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east")
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(2, nil), nil)
	waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	v2 := createRelease(t, ns, "v2", "v2", releasetest.Deploy(2, nil), nil)
	waitCluster(t, ns, "v2", env.Name, "east", ferryv1.WaitingForApprovalReason)
	if east.deployment(t, target, "shop-canary") == nil {
		t.Fatal("no canary")
	}
	if err := c.Delete(ctx, v2); err != nil {
		t.Fatal(err)
	}
	within(t, rolloutTimeout, "v2 gone", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(v2), &ferryv1.Release{})
		return apierrors.IsNotFound(err), err
	})
	within(t, rolloutTimeout, "the canary gone", func() (bool, error) {
		d := east.deployment(t, target, "shop-canary")
		return d == nil || d.DeletionTimestamp != nil, nil
	})
	east.waitAvailable(t, target, "shop", releasetest.Image("v1"), 2)
	// The lock is free: v3 goes straight through its first batch.
	createRelease(t, ns, "v3", "v3", releasetest.Deploy(2, nil), nil)
	waitCluster(t, ns, "v3", env.Name, "east", ferryv1.WaitingForApprovalReason)
}
