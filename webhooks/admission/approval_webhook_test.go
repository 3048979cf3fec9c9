package admission_test

import (
	"context"
	"strings"
	"testing"
	"time"

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
		t.Fatalf("the webhook accepted the Approval, want a refusal mentioning %q", parts)
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
	t.Run("batch approvals", func(t *testing.T) {
		wantRefused(t, createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.batched, ferryv1.DecisionApprove, ""), 5)), "rolls out in 3 batches", "batch 2 to 3, not 5")
		wantRefused(t, createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, ""), 2)), "does not wait for approvals between batches")
		if err := createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.batched, ferryv1.DecisionApprove, "canary looks fine"), 2)); err != nil {
			t.Errorf("batch 2 approval: %v", err)
		}
		// One decision per person and batch.
		wantRefused(t, createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.batched, ferryv1.DecisionApprove, ""), 2)), "already decided on batch 2")
		if err := createApproval(t, bob, withBatch(releasetest.Approval(f.ns, f.release, f.batched, ferryv1.DecisionApprove, ""), 3)); err != nil {
			t.Errorf("batch 3 approval: %v", err)
		}
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
