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
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// gatedProject is a project with one gated environment on cluster east.
type gatedProject struct {
	ns, env string
}

func setupGated(t *testing.T, gate *ferryv1.ApprovalPolicy) gatedProject {
	t.Helper()
	startTargets(t)
	c := testutil.CurrentHub(t).Client
	g := gatedProject{ns: testutil.Namespace(t, c), env: releasetest.Unique("qa")}
	releasetest.CreateCleanly(t, c, releasetest.Environment(g.env, gate, "east"))
	if err := c.Create(context.Background(), releasetest.Project(g.ns, "shop", g.env)); err != nil {
		t.Fatal(err)
	}
	releasetest.BindReleaseManagers(t, c, g.ns, nil, []string{"release-managers"})
	return g
}

// createRelease creates a Build and a Release of it, as user ann.
func createRelease(t *testing.T, ns, name, seed string, deploy *ferryv1.DeploySpec, mutate func(*ferryv1.Release)) *ferryv1.Release {
	t.Helper()
	hub := testutil.CurrentHub(t)
	b := releasetest.CreateBuild(t, hub.Client, ns, name, "shop", "refs/heads/main", releasetest.Image(seed), "dave", deploy)
	rel := releasetest.Release(ns, name, "shop", b)
	if mutate != nil {
		mutate(rel)
	}
	if err := hub.Client.Create(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

// TestRejection: one eligible rejection closes the gate and stops the Release there, with who and
// why; nothing is deployed.
func TestRejection(t *testing.T) {
	g := setupGated(t, releasetest.Gate(2, nil, []string{"release-managers"}))
	hub := testutil.CurrentHub(t)
	c := hub.Client
	startManager(t)
	rejectedBefore := metricValue(t, "ferry_releases_total", map[string]string{"result": "rejected"})
	createRelease(t, g.ns, "r1", "r1", releasetest.Deploy(1, nil), nil)
	waitEnv(t, c, g.ns, "r1", g.env, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)

	approve(t, hub.UserClient(t, "bob", "release-managers"), g.ns, "r1", g.env, 0)
	carol := hub.UserClient(t, "carol", "release-managers")
	if err := carol.Create(context.Background(), releasetest.Approval(g.ns, "r1", g.env, ferryv1.DecisionReject, "error budget exhausted")); err != nil {
		t.Fatal(err)
	}
	rel := waitRelease(t, c, g.ns, "r1", metav1.ConditionFalse, ferryv1.RejectedReason)
	ready := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition)
	if ready.Message != g.env+": rejected by carol: error budget exhausted" {
		t.Errorf("Ready message = %q", ready.Message)
	}
	if !meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) || rel.Status.CompletionTime == nil {
		t.Errorf("conditions = %+v, completion %v; want Stalled and finished", rel.Status.Conditions, rel.Status.CompletionTime)
	}
	if gate := envOf(rel, g.env).Gate; len(gate.Approvals) != 2 {
		t.Errorf("gate records = %+v, want bob's approval and carol's rejection", gate.Approvals)
	}
	if d := startTargets(t)["east"].deployment(t, "shop-"+g.env, "shop"); d != nil {
		t.Error("a rejected Release was deployed")
	}
	if v := metricValue(t, "ferry_releases_total", map[string]string{"result": "rejected"}); v != rejectedBefore+1 {
		t.Errorf("ferry_releases_total{result=rejected} = %v, want %v", v, rejectedBefore+1)
	}
	// A finished Release takes no more decisions.
	err := hub.UserClient(t, "erin", "release-managers").Create(context.Background(), releasetest.Approval(g.ns, "r1", g.env, ferryv1.DecisionApprove, ""))
	if err == nil || !strings.Contains(err.Error(), "has finished") {
		t.Errorf("approval of a rejected Release: %v", err)
	}
}

// TestExpiry: a gate that waits past its expiry shows Expired, takes no decisions, and can be
// re-requested; a decision in the new window opens it.
func TestExpiry(t *testing.T) {
	gate := releasetest.Gate(1, nil, []string{"release-managers"})
	gate.Expiry = &metav1.Duration{Duration: 2 * time.Second}
	g := setupGated(t, gate)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	startManager(t)
	createRelease(t, g.ns, "r1", "r1", releasetest.Deploy(1, nil), nil)

	rel := waitEnv(t, c, g.ns, "r1", g.env, ferryv1.ApprovedCondition, metav1.ConditionFalse, ferryv1.ExpiredReason)
	cond := envCondition(rel, g.env, ferryv1.ApprovedCondition)
	for _, want := range []string{"the gate expired at", "with 0 of 1 approvals", "ferry approve r1 --env " + g.env + " --rerequest"} {
		if !strings.Contains(cond.Message, want) {
			t.Errorf("Expired message %q does not say %q", cond.Message, want)
		}
	}
	if !meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) || rel.Status.CompletionTime != nil {
		t.Errorf("an expired gate: conditions %+v, completion %v; want Stalled and not finished", rel.Status.Conditions, rel.Status.CompletionTime)
	}
	bob := hub.UserClient(t, "bob", "release-managers")
	if err := bob.Create(ctx, releasetest.Approval(g.ns, "r1", g.env, ferryv1.DecisionApprove, "")); err == nil || !strings.Contains(err.Error(), "the gate expired") {
		t.Fatalf("approval of an expired gate: %v", err)
	}
	firstWindow := envOf(rel, g.env).Gate.WaitingSince

	// The platform team gives the gate more time, and a release manager re-requests it.
	env := &ferryv1.Environment{}
	if err := c.Get(ctx, client.ObjectKey{Name: g.env}, env); err != nil {
		t.Fatal(err)
	}
	env.Spec.Approval.Expiry = &metav1.Duration{Duration: time.Hour}
	if err := c.Update(ctx, env); err != nil {
		t.Fatal(err)
	}
	patch := client.RawPatch("application/merge-patch+json", []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, ferryv1.ReRequestAnnotation, g.env)))
	if err := bob.Patch(ctx, &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "r1"}}, patch); err != nil {
		t.Fatalf("re-request as a release manager: %v", err)
	}
	rel = waitEnv(t, c, g.ns, "r1", g.env, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	gs := envOf(rel, g.env).Gate
	if !gs.WaitingSince.After(firstWindow.Time) || gs.ExpiresAt.Sub(gs.WaitingSince.Time) != time.Hour {
		t.Errorf("new window %v – %v, first window started %v", gs.WaitingSince, gs.ExpiresAt, firstWindow)
	}
	testutil.Eventually(t, "the re-request annotation consumed", func() (bool, error) {
		rel = getRelease(t, c, g.ns, "r1")
		_, ok := rel.Annotations[ferryv1.ReRequestAnnotation]
		return !ok, fmt.Errorf("annotations %v", rel.Annotations)
	})
	if meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) {
		t.Errorf("still Stalled after the re-request: %+v", rel.Status.Conditions)
	}
	approve(t, bob, g.ns, "r1", g.env, 0)
	waitRelease(t, c, g.ns, "r1", metav1.ConditionTrue, ferryv1.SucceededReason)
	startTargets(t)["east"].waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("r1"), 1)
}

// TestDeployLockSupersessionAndOlderImages: a locked environment holds every Release; a newer
// Release supersedes an older one still waiting; a Release of an older build never replaces a
// newer image, unless it is a rollback.
func TestDeployLockSupersessionAndOlderImages(t *testing.T) {
	g := setupGated(t, releasetest.Gate(1, nil, []string{"release-managers"}))
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	east := startTargets(t)["east"]
	bob := hub.UserClient(t, "bob", "release-managers")
	startManager(t)

	// An old build, made before the others: its Release comes later.
	old := releasetest.CreateBuild(t, c, g.ns, "b0", "shop", "refs/heads/main", releasetest.Image("v0"), "dave", releasetest.Deploy(1, nil))

	// Deploy freeze.
	env := &ferryv1.Environment{}
	if err := c.Get(ctx, client.ObjectKey{Name: g.env}, env); err != nil {
		t.Fatal(err)
	}
	env.Spec.Locked, env.Spec.LockReason = true, "end-of-quarter freeze"
	if err := c.Update(ctx, env); err != nil {
		t.Fatal(err)
	}
	createRelease(t, g.ns, "r1", "v1", releasetest.Deploy(1, nil), nil)
	rel := waitEnv(t, c, g.ns, "r1", g.env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentLockedReason)
	if msg := envCondition(rel, g.env, ferryv1.ReadyCondition).Message; msg != "environment "+g.env+" is locked: end-of-quarter freeze" {
		t.Errorf("locked message = %q", msg)
	}
	// r2 is newer and reaches the environment too: r1, still waiting, is superseded. (Its Build
	// must be younger than b0 by at least a second, the resolution of creation times.)
	testutil.Eventually(t, "a second after b0", func() (bool, error) {
		return time.Now().Truncate(time.Second).After(old.CreationTimestamp.Time), nil
	})
	createRelease(t, g.ns, "r2", "v2", releasetest.Deploy(1, nil), nil)
	rel = waitRelease(t, c, g.ns, "r1", metav1.ConditionFalse, ferryv1.SupersededReason)
	if !strings.Contains(meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message, "superseded by the newer Release r2") {
		t.Errorf("r1 Ready = %+v", rel.Status.Conditions)
	}
	if meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) {
		t.Error("a superseded Release is not stalled: nobody has to fix anything")
	}
	waitEnv(t, c, g.ns, "r2", g.env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentLockedReason)

	// Unlock: r2 waits for its gate, is approved and rolls out.
	if err := c.Get(ctx, client.ObjectKey{Name: g.env}, env); err != nil {
		t.Fatal(err)
	}
	env.Spec.Locked = false
	if err := c.Update(ctx, env); err != nil {
		t.Fatal(err)
	}
	waitEnv(t, c, g.ns, "r2", g.env, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	approve(t, bob, g.ns, "r2", g.env, 0)
	waitRelease(t, c, g.ns, "r2", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("v2"), 1)

	// A Release of the older build, created after r2, may not replace r2's newer image.
	r3 := releasetest.Release(g.ns, "r3", "shop", old)
	if err := c.Create(ctx, r3); err != nil {
		t.Fatal(err)
	}
	rel = waitRelease(t, c, g.ns, "r3", metav1.ConditionFalse, ferryv1.NewerImageDeployedReason)
	if msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "only a rollback Release may replace a newer image") {
		t.Errorf("r3 Ready message = %q", msg)
	}
	// Nor may a Release that names no Build, created after r2 for b0's older image: the image's
	// age is that of the Build that made it, not the Release's.
	byHand := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: g.ns, Name: "r3-by-hand"},
		Spec:       ferryv1.ReleaseSpec{Project: "shop", Image: releasetest.Image("v0"), Deploy: releasetest.Deploy(1, nil)},
	}
	if err := c.Create(ctx, byHand); err != nil {
		t.Fatal(err)
	}
	rel = waitRelease(t, c, g.ns, byHand.Name, metav1.ConditionFalse, ferryv1.NewerImageDeployedReason)
	if msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "(Release r2), built ") || !strings.Contains(msg, "only a rollback Release may replace a newer image") {
		t.Errorf("%s Ready message = %q", byHand.Name, msg)
	}
	// An image no Build is known to have made cannot be compared: only a rollback replaces r2's.
	unknown := byHand.DeepCopy()
	unknown.ObjectMeta = metav1.ObjectMeta{Namespace: g.ns, Name: "r3-unknown"}
	unknown.Spec.Image = releasetest.Image("made-elsewhere")
	if err := c.Create(ctx, unknown); err != nil {
		t.Fatal(err)
	}
	rel = waitRelease(t, c, g.ns, unknown.Name, metav1.ConditionFalse, ferryv1.NewerImageDeployedReason)
	if msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "no Build of project shop is known to have made this Release's image") {
		t.Errorf("%s Ready message = %q", unknown.Name, msg)
	}
	// As an explicit rollback it may, through the gate like any Release.
	r4 := releasetest.Release(g.ns, "r4", "shop", old)
	r4.Spec.Rollback = true
	if err := c.Create(ctx, r4); err != nil {
		t.Fatal(err)
	}
	waitEnv(t, c, g.ns, "r4", g.env, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	approve(t, bob, g.ns, "r4", g.env, 0)
	rel = waitRelease(t, c, g.ns, "r4", metav1.ConditionTrue, ferryv1.SucceededReason)
	if prev := envOf(rel, g.env).PreviousImage; prev != releasetest.Image("v2") {
		t.Errorf("previousImage = %s, want v2's", prev)
	}
	east.waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("v0"), 1)

	// Deleting a finished Release leaves the environment as it is.
	if err := c.Delete(ctx, rel); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "r4 deleted", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(rel), &ferryv1.Release{})
		return apierrors.IsNotFound(err), err
	})
	east.waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("v0"), 1)
}

// TestStalledReleases: what admission refuses never reaches the controller; what changes after a
// Release was admitted (its Build, its Project or its path) stalls it with the reason, and fixing
// it resumes it.
func TestStalledReleases(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Unique("nowhere")
	image := releasetest.Image("stalled")
	newRelease := func(name string, mutate func(*ferryv1.Release)) *ferryv1.Release {
		rel := &ferryv1.Release{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec:       ferryv1.ReleaseSpec{Project: "shop", Image: image, Deploy: releasetest.Deploy(1, nil), Environments: []string{env}},
		}
		if mutate != nil {
			mutate(rel)
		}
		return rel
	}
	create := func(name string, mutate func(*ferryv1.Release)) {
		t.Helper()
		if err := c.Create(ctx, newRelease(name, mutate)); err != nil {
			t.Fatal(err)
		}
	}
	refused := func(name string, mutate func(*ferryv1.Release), message string) {
		t.Helper()
		if err := c.Create(ctx, newRelease(name, mutate)); err == nil || !strings.Contains(err.Error(), message) {
			t.Errorf("%s: %v, want a refusal saying %q", name, err, message)
		}
	}
	wantStalled := func(name, reason, message string) {
		t.Helper()
		rel := waitRelease(t, c, ns, name, metav1.ConditionFalse, reason)
		if msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, message) {
			t.Errorf("%s: message %q does not say %q", name, msg, message)
		}
		if !meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) || rel.Status.CompletionTime != nil {
			t.Errorf("%s: conditions %+v, completion %v; want Stalled, not finished", name, rel.Status.Conditions, rel.Status.CompletionTime)
		}
	}
	// setPath changes the Project's path, which also makes the controller look at its Releases.
	setPath := func(path ...string) {
		t.Helper()
		p := &ferryv1.Project{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop"}, p); err != nil {
			t.Fatal(err)
		}
		p.Spec.Promotion.Environments = path
		if err := c.Update(ctx, p); err != nil {
			t.Fatal(err)
		}
	}

	refused("no-project", nil, "project shop not found in namespace "+ns)
	project := releasetest.Project(ns, "shop", env)
	if err := c.Create(ctx, project); err != nil {
		t.Fatal(err)
	}
	refused("off-path", func(r *ferryv1.Release) { r.Spec.Environments = []string{"elsewhere"} }, "environment elsewhere is not on the promotion path of project shop ("+env+")")
	refused("no-build", func(r *ferryv1.Release) { r.Spec.Build, r.Spec.Deploy = "gone", nil }, "build gone not found in namespace "+ns)

	// The Build goes (beyond the Project's history limit) while its Release waits: the Release has
	// no deploy settings left.
	b := releasetest.CreateBuild(t, c, ns, "b1", "shop", "refs/heads/main", image, "dave", releasetest.Deploy(1, nil))
	create("lost-build", func(r *ferryv1.Release) { r.Spec.Build, r.Spec.Deploy = b.Name, nil })
	waitEnv(t, c, ns, "lost-build", env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentNotFoundReason)
	if err := c.Delete(ctx, b); err != nil {
		t.Fatal(err)
	}
	setPath(env, releasetest.Unique("later"))
	wantStalled("lost-build", ferryv1.BuildNotFoundReason, "build b1 not found")

	// The Project's path no longer has the environment; put back, the Release moves on.
	create("moved", nil)
	waitEnv(t, c, ns, "moved", env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentNotFoundReason)
	setPath("elsewhere")
	wantStalled("moved", ferryv1.NotOnPromotionPathReason, "environment "+env+" is not on the promotion path of project shop (elsewhere)")
	setPath(env)
	waitEnv(t, c, ns, "moved", env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentNotFoundReason)

	// The Project goes; it comes back and the Release moves on.
	if err := c.Delete(ctx, project); err != nil {
		t.Fatal(err)
	}
	wantStalled("moved", ferryv1.ProjectNotFoundReason, "project shop not found in namespace "+ns)
	if err := c.Create(ctx, releasetest.Project(ns, "shop", env)); err != nil {
		t.Fatal(err)
	}
	waitEnv(t, c, ns, "moved", env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentNotFoundReason)
}
