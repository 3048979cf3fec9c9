package admission_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// approvalFixture is a Release of a Build triggered by dave and created by ann, on a path whose
// prod gate needs two approvals from alice or the group release-managers, self-approval forbidden.
type approvalFixture struct {
	ns, prod, dev, batched, release string
	image                           string
}

func setupApprovalFixture(t *testing.T) approvalFixture {
	t.Helper()
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	f := approvalFixture{ns: testutil.Namespace(t, c), prod: releasetest.Unique("prod"), dev: releasetest.Unique("dev"), batched: releasetest.Unique("canary")}
	releasetest.CreateCleanly(t, c, releasetest.Environment(f.dev, nil, "cluster-a"))
	releasetest.CreateCleanly(t, c, releasetest.Environment(f.prod, releasetest.Gate(2, []string{"alice"}, []string{"release-managers"}), "cluster-a"))
	batched := releasetest.Environment(f.batched, nil, "cluster-a")
	batched.Spec.Rollout = ferryv1.RolloutStrategy{Type: ferryv1.BatchStrategy, Batch: &ferryv1.BatchRollout{Batches: 3, Between: ferryv1.BatchGateApproval}}
	releasetest.CreateCleanly(t, c, batched)
	if err := c.Create(ctx, releasetest.Project(f.ns, "shop", f.dev, f.batched, f.prod)); err != nil {
		t.Fatal(err)
	}
	f.image = releasetest.Image("v2")
	b := releasetest.CreateBuild(t, c, f.ns, "shop-main-1", "shop", "refs/heads/main", f.image, "dave", releasetest.Deploy(2, nil))
	releasetest.BindReleaseManagers(t, c, f.ns, []string{"alice", "eve", "ann", "dave", "bob", "carol"}, nil)
	ann := hub.UserClient(t, "ann", "developers", "release-managers")
	rel := releasetest.Release(f.ns, "shop-v2", "shop", b)
	if err := ann.Create(ctx, rel); err != nil {
		t.Fatal(err)
	}
	f.release = rel.Name
	return f
}

func createApproval(t *testing.T, c client.Client, a *ferryv1.Approval) error {
	t.Helper()
	return c.Create(context.Background(), a)
}

func wantRefused(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the webhook accepted the request, want a refusal mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("refusal %q does not mention %q", err.Error(), p)
		}
	}
}

// TestApprovalWebhook: the approver comes from the request, and every decision that must not
// count is refused with its reason.
func TestApprovalWebhook(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupApprovalFixture(t)
	ctx := context.Background()
	bob := hub.UserClient(t, "bob", "release-managers")
	alice := hub.UserClient(t, "alice")

	t.Run("forged approver", func(t *testing.T) {
		a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		a.Spec.Approver = &ferryv1.Approver{Username: "alice"}
		wantRefused(t, createApproval(t, bob, a), `spec.approver names "alice" but the request was made by "bob"`)
		a = releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		a.Spec.Approver = &ferryv1.Approver{Username: "bob", Groups: []string{"release-managers", "admins"}}
		wantRefused(t, createApproval(t, bob, a), "spec.approver.groups", "are not the groups the request was authenticated with")
	})
	t.Run("another owner", func(t *testing.T) {
		a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		a.OwnerReferences = []metav1.OwnerReference{{APIVersion: "ferry.dev/v1alpha1", Kind: "Project", Name: "shop", UID: "0b9e4a5c-0000-4000-8000-000000000000"}}
		wantRefused(t, createApproval(t, bob, a), "metadata.ownerReferences names Project shop: an Approval belongs to its Release only")
	})
	t.Run("ineligible user", func(t *testing.T) {
		eve := hub.UserClient(t, "eve", "developers")
		err := createApproval(t, eve, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, ""))
		wantRefused(t, err, `user "eve" (groups developers)`, "is not eligible to decide for environment "+f.prod, "admits users alice and members of groups release-managers")
	})
	t.Run("self-approval by the Release's creator", func(t *testing.T) {
		ann := hub.UserClient(t, "ann", "developers", "release-managers")
		wantRefused(t, createApproval(t, ann, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")),
			`user "ann" created this Release`, "forbids self-approval")
	})
	t.Run("self-approval by the Build's trigger user", func(t *testing.T) {
		dave := hub.UserClient(t, "dave", "release-managers")
		wantRefused(t, createApproval(t, dave, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")),
			`user "dave" triggered the Build of this Release`, "forbids self-approval")
	})
	t.Run("wrong digest", func(t *testing.T) {
		a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		a.Spec.Image = releasetest.Image("v1")
		wantRefused(t, createApproval(t, bob, a), "must be bound to the Release's image "+f.image)
	})
	t.Run("environment without a gate or off the path", func(t *testing.T) {
		wantRefused(t, createApproval(t, bob, releasetest.Approval(f.ns, f.release, f.dev, ferryv1.DecisionApprove, "")), "has no approval gate")
		wantRefused(t, createApproval(t, bob, releasetest.Approval(f.ns, f.release, "elsewhere", ferryv1.DecisionApprove, "")), "does not go through environment elsewhere")
		wantRefused(t, createApproval(t, bob, releasetest.Approval(f.ns, "no-such-release", f.prod, ferryv1.DecisionApprove, "")), "release no-such-release not found")
	})

	var recorded *ferryv1.Approval
	t.Run("an eligible approval is recorded with the identity and digest", func(t *testing.T) {
		a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "load test passed")
		if err := createApproval(t, bob, a); err != nil {
			t.Fatal(err)
		}
		if a.Spec.Approver == nil || a.Spec.Approver.Username != "bob" || !contains(a.Spec.Approver.Groups, "release-managers") {
			t.Errorf("approver = %+v, want bob in release-managers", a.Spec.Approver)
		}
		if a.Spec.Image != f.image {
			t.Errorf("image = %q, want %q", a.Spec.Image, f.image)
		}
		if a.Labels[ferryv1.ReleaseLabel] != f.release || a.Labels[ferryv1.EnvironmentLabel] != f.prod || a.Labels[ferryv1.ProjectLabel] != "shop" {
			t.Errorf("labels = %v", a.Labels)
		}
		// Sending one's own identity is accepted.
		own := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		own.Spec.Approver = &ferryv1.Approver{Username: "alice"}
		if err := createApproval(t, alice, own); err != nil {
			t.Errorf("alice naming herself: %v", err)
		}
		recorded = a
	})
	t.Run("a second decision by the same person", func(t *testing.T) {
		wantRefused(t, createApproval(t, bob, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionReject, "changed my mind")),
			`user "bob" already decided on environment `+f.prod, "one decision per person")
	})
	t.Run("an update", func(t *testing.T) {
		if recorded == nil {
			t.Skip("no recorded approval")
		}
		a := recorded.DeepCopy()
		a.Labels["sneaky"] = "true"
		wantRefused(t, hub.Client.Update(ctx, a), "immutable record", "its labels")
		a = recorded.DeepCopy()
		a.Annotations = map[string]string{"note": "x"}
		wantRefused(t, hub.Client.Update(ctx, a), "immutable record", "its annotations")
		a = recorded.DeepCopy()
		a.Spec.Comment = "edited"
		wantRefused(t, hub.Client.Update(ctx, a), "immutable")
	})
}

// TestApprovalWebhookClosedGates: a gate closed by a rejection, an expired gate and a finished
// Release take no more decisions.
func TestApprovalWebhookClosedGates(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupApprovalFixture(t)
	ctx := context.Background()
	bob := hub.UserClient(t, "bob", "release-managers")
	rel := &ferryv1.Release{}
	if err := hub.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
		t.Fatal(err)
	}
	setGate := func(cond *metav1.Condition, expiresAt time.Time, done bool) {
		t.Helper()
		if err := hub.Client.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
			t.Fatal(err)
		}
		es := ferryv1.ReleaseEnvironmentStatus{Name: f.prod, Gate: &ferryv1.GateStatus{RequiredApprovals: 2, ExpiresAt: &metav1.Time{Time: expiresAt}}}
		if cond != nil {
			meta.SetStatusCondition(&es.Conditions, *cond)
		}
		rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
		rel.Status.CompletionTime = nil
		if done {
			now := metav1.Now()
			rel.Status.CompletionTime = &now
			meta.SetStatusCondition(&rel.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.SupersededReason, Message: "superseded by shop-v3"})
		}
		if err := hub.Client.Status().Update(ctx, rel); err != nil {
			t.Fatal(err)
		}
	}
	approve := func() error {
		return createApproval(t, bob, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, ""))
	}

	setGate(&metav1.Condition{Type: ferryv1.ApprovedCondition, Status: metav1.ConditionFalse, Reason: ferryv1.RejectedReason, Message: "rejected by carol: error budget exhausted"}, time.Now().Add(time.Hour), false)
	wantRefused(t, approve(), "the gate is closed: rejected by carol: error budget exhausted")

	setGate(nil, time.Now().Add(-time.Minute), false)
	wantRefused(t, approve(), "the gate expired at", "ferry approve "+f.release+" --env "+f.prod+" --rerequest")

	setGate(nil, time.Now().Add(time.Hour), true)
	wantRefused(t, approve(), "has finished (Superseded: superseded by shop-v3)")

	setGate(nil, time.Now().Add(time.Hour), false)
	if err := approve(); err != nil {
		t.Errorf("an open gate refused the approval: %v", err)
	}
}

// TestApprovalWebhookBatches: an approval of batch N between batches is taken only once the
// environment's rollout has made batch N-1 healthy on every cluster and waits for it: not ahead of
// time, and not once the batch has started.
func TestApprovalWebhookBatches(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupApprovalFixture(t)
	ctx := context.Background()
	bob := hub.UserClient(t, "bob", "release-managers")
	carol := hub.UserClient(t, "carol", "release-managers")
	batch := func(c client.Client, n int32) error {
		return createApproval(t, c, withBatch(releasetest.Approval(f.ns, f.release, f.batched, ferryv1.DecisionApprove, "canary looks fine"), n))
	}
	// setBatch writes the rollout's progress on two clusters as the Release controller would.
	setBatch := func(east, west int32, westHealthy bool) {
		t.Helper()
		rel := &ferryv1.Release{}
		if err := hub.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		var westTime *metav1.Time
		if westHealthy {
			westTime = &now
		}
		rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: f.batched, StartTime: &now, Clusters: []ferryv1.ClusterRolloutStatus{
			{Cluster: "east", Batch: east, Batches: 3, BatchHealthyTime: &now},
			{Cluster: "west", Batch: west, Batches: 3, BatchHealthyTime: westTime},
		}}}
		if err := hub.Client.Status().Update(ctx, rel); err != nil {
			t.Fatal(err)
		}
	}

	wantRefused(t, batch(bob, 5), "rolls out in 3 batches", "batch 2 to 3, not 5")
	wantRefused(t, createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, ""), 2)), "does not wait for approvals between batches")
	// Ahead of time: the rollout has not reached the environment.
	wantRefused(t, batch(bob, 2), "batch 2 of environment "+f.batched, "the rollout in environment "+f.batched+" has not started", "an approval of batch 2 is taken once batch 1 is healthy on every cluster")
	// Batch 1 is healthy on east, still rolling out on west.
	setBatch(1, 1, false)
	wantRefused(t, batch(bob, 2), "cluster west is rolling out batch 1 of 3, which is not healthy yet")
	setBatch(1, 1, true)
	wantRefused(t, batch(bob, 3), "cluster east is at batch 1 of 3: an approval of batch 3 is taken once batch 2 is healthy")
	if err := batch(bob, 2); err != nil {
		t.Fatalf("batch 2 once batch 1 is healthy everywhere: %v", err)
	}
	// One decision per person and batch.
	wantRefused(t, batch(bob, 2), "already decided on batch 2")
	// Batch 2 has started: its approval comes too late.
	setBatch(2, 2, true)
	wantRefused(t, batch(carol, 2), "cluster east is past batch 1 already (at batch 2 of 3)")
	if err := batch(bob, 3); err != nil {
		t.Errorf("batch 3 once batch 2 is healthy everywhere: %v", err)
	}
}

// TestReleaseManagerRoleIsNotAggregated: the right to approve is never granted by edit or admin.
func TestReleaseManagerRoleIsNotAggregated(t *testing.T) {
	role := releasetest.ReleaseManagerRole(t)
	for k := range role.Labels {
		if strings.HasPrefix(k, "rbac.authorization.k8s.io/aggregate-to-") {
			t.Errorf("the release-manager role carries %s", k)
		}
	}
	if role.AggregationRule != nil {
		t.Errorf("the release-manager role aggregates other roles")
	}
	canCreateApprovals := false
	for _, r := range role.Rules {
		if contains(r.Resources, "approvals") && contains(r.Verbs, "create") {
			canCreateApprovals = true
		}
		if contains(r.Verbs, "*") || contains(r.Resources, "*") || contains(r.Verbs, "update") || contains(r.Verbs, "delete") {
			t.Errorf("rule %+v grants more than a release manager needs", r)
		}
	}
	if !canCreateApprovals {
		t.Error("the release-manager role cannot create Approvals")
	}
}

func withBatch(a *ferryv1.Approval, batch int32) *ferryv1.Approval {
	a.Spec.Batch = batch
	return a
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestApprovalDecisionsAreNeverDeleted: deleting a rejection would reopen the gate it closed, so
// nobody, an admin included, deletes a decision while its Release exists. The decisions go with
// their Release, whichever way the garbage collector deletes it, and with their namespace.
func TestApprovalDecisionsAreNeverDeleted(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	startGarbageCollector(t)
	f := setupApprovalFixture(t)
	ann := hub.UserClient(t, "ann", "developers", "release-managers")
	bob := hub.UserClient(t, "bob", "release-managers")
	carol := hub.UserClient(t, "carol", "release-managers")
	// RBAC lets carol delete Approvals: the webhook still says no.
	grant(t, c, f.ns, "approval-deleter", []rbacv1.PolicyRule{ferryRule([]string{"approvals"}, "delete")}, "carol")
	build := &ferryv1.Build{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: "shop-main-1"}, build); err != nil {
		t.Fatal(err)
	}
	release := func(name string) *ferryv1.Release {
		t.Helper()
		rel := releasetest.Release(f.ns, name, "shop", build)
		if err := ann.Create(ctx, rel); err != nil {
			t.Fatal(err)
		}
		return rel
	}
	decide := func(rel *ferryv1.Release) (approved, rejected *ferryv1.Approval) {
		t.Helper()
		approved = releasetest.Approval(f.ns, rel.Name, f.prod, ferryv1.DecisionApprove, "")
		rejected = releasetest.Approval(f.ns, rel.Name, f.prod, ferryv1.DecisionReject, "error budget exhausted")
		if err := createApproval(t, bob, approved); err != nil {
			t.Fatal(err)
		}
		if err := createApproval(t, carol, rejected); err != nil {
			t.Fatal(err)
		}
		return approved, rejected
	}
	gone := func(what string, objs ...client.Object) {
		t.Helper()
		testutil.Eventually(t, what, func() (bool, error) {
			for _, o := range objs {
				switch err := c.Get(ctx, client.ObjectKeyFromObject(o), o); {
				case err == nil:
					return false, fmt.Errorf("%T %s still exists", o, o.GetName())
				case !apierrors.IsNotFound(err):
					return false, err
				}
			}
			return true, nil
		})
	}

	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
		t.Fatal(err)
	}
	approved, rejected := decide(rel)
	if refs := rejected.OwnerReferences; len(refs) != 1 || refs[0].Kind != "Release" || refs[0].Name != rel.Name || refs[0].UID != rel.UID {
		t.Errorf("owner references = %+v, want the Release", refs)
	}
	wantRefused(t, carol.Delete(ctx, rejected), "approval "+rejected.Name+` records "carol"'s decision (Reject) on environment `+f.prod+" of Release "+f.release+", which still exists",
		"decisions are never deleted while their Release exists; delete the Release to remove them")
	wantRefused(t, c.Delete(ctx, approved), "decisions are never deleted while their Release exists")

	// The Release goes, then the garbage collector deletes its decisions.
	if err := c.Delete(ctx, rel); err != nil {
		t.Fatal(err)
	}
	gone("the Release and its decisions deleted in the background", rel, approved, rejected)

	// In the foreground, the decisions go while the Release waits for them.
	rel = release("shop-v2-foreground")
	approved, rejected = decide(rel)
	if err := c.Delete(ctx, rel, client.PropagationPolicy(metav1.DeletePropagationForeground)); err != nil {
		t.Fatal(err)
	}
	gone("the Release and its decisions deleted in the foreground", rel, approved, rejected)

	// Orphaned, the decisions stay without their owner reference (the one change they take), and
	// may be deleted once the Release is gone.
	rel = release("shop-v2-orphan")
	approved, _ = decide(rel)
	if err := c.Delete(ctx, rel, client.PropagationPolicy(metav1.DeletePropagationOrphan)); err != nil {
		t.Fatal(err)
	}
	gone("the orphaning Release deleted", rel)
	testutil.Eventually(t, "the orphaned decision without its owner", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(approved), approved); err != nil {
			return false, err
		}
		return len(approved.OwnerReferences) == 0, fmt.Errorf("owners %+v", approved.OwnerReferences)
	})
	if err := c.Delete(ctx, approved); err != nil {
		t.Errorf("deleting a decision whose Release is gone: %v", err)
	}

	// A namespace being deleted takes its decisions along, whatever the order.
	rel = release("shop-v2-namespace")
	approved, rejected = decide(rel)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: f.ns}}
	if err := c.Delete(ctx, ns); err != nil {
		t.Fatal(err)
	}
	gone("the namespace and its decisions deleted", approved, rejected, ns)
}
