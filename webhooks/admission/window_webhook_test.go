package admission_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// webhooksOnly runs the manager's admission webhooks and no controller.
func webhooksOnly(t *testing.T) {
	t.Helper()
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster", "-build", "-buildreport", "-release"}})
}

func windowOf(name string, kind ferryv1.WindowKind, schedule, zone string) ferryv1.DeployWindow {
	return ferryv1.DeployWindow{Name: name, Kind: kind, Schedule: schedule, Duration: metav1.Duration{Duration: time.Hour}, TimeZone: zone}
}

// TestWindowWebhook: a schedule or a time zone that only a parser can judge is refused at
// admission, on create and on update, with the field path of the window named.
func TestWindowWebhook(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	webhooksOnly(t)

	env := releasetest.Environment(releasetest.Unique("prod"), nil, "cluster-a")
	env.Spec.Windows = []ferryv1.DeployWindow{windowOf("office", ferryv1.AllowWindow, "0 9 * * MON-FRI", "Europe/Berlin")}
	releasetest.CreateCleanly(t, c, env)

	for _, tc := range []struct {
		name    string
		windows []ferryv1.DeployWindow
		want    []string
	}{
		{name: "a minute out of range", windows: []ferryv1.DeployWindow{windowOf("bad", ferryv1.AllowWindow, "61 9 * * *", "")},
			want: []string{"spec.windows[0].schedule", "61 9 * * *", "not a five-field cron expression"}},
		{name: "a zero step", windows: []ferryv1.DeployWindow{windowOf("bad", ferryv1.DenyWindow, "*/0 * * * *", "")},
			want: []string{"spec.windows[0].schedule"}},
		{name: "a reversed range", windows: []ferryv1.DeployWindow{windowOf("bad", ferryv1.DenyWindow, "0 17-9 * * *", "")},
			want: []string{"spec.windows[0].schedule"}},
		{name: "an unknown month name", windows: []ferryv1.DeployWindow{windowOf("bad", ferryv1.DenyWindow, "0 9 * SMARCH *", "")},
			want: []string{"spec.windows[0].schedule"}},
		{name: "an unknown time zone, second window", windows: []ferryv1.DeployWindow{windowOf("ok", ferryv1.AllowWindow, "0 9 * * *", "UTC"), windowOf("bad", ferryv1.AllowWindow, "0 9 * * *", "Mars/Olympus_Mons")},
			want: []string{"spec.windows[1].timeZone", "unknown time zone \"Mars/Olympus_Mons\""}},
		{name: "the manager's local time zone", windows: []ferryv1.DeployWindow{windowOf("bad", ferryv1.AllowWindow, "0 9 * * *", "Local")},
			want: []string{"spec.windows[0].timeZone", "not an IANA time zone"}},
		{name: "both at once", windows: []ferryv1.DeployWindow{windowOf("a", ferryv1.AllowWindow, "0 25 * * *", ""), windowOf("b", ferryv1.AllowWindow, "0 9 * * *", "Europe/Berlinn")},
			want: []string{"spec.windows[0].schedule", "spec.windows[1].timeZone"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := releasetest.Environment(releasetest.Unique("bad"), nil, "cluster-a")
			bad.Spec.Windows = tc.windows
			err := c.Create(ctx, bad)
			if err == nil {
				_ = c.Delete(ctx, bad)
			}
			wantRefused(t, err, tc.want...)

			update := &ferryv1.Environment{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(env), update); err != nil {
				t.Fatal(err)
			}
			update.Spec.Windows = tc.windows
			wantRefused(t, c.Update(ctx, update), tc.want...)
		})
	}
}

// TestFreezeWebhook: a Freeze whose selector cannot be read, or is too large to evaluate cheaply
// on every waiting Release, is refused with the field named; an empty selector ("stop the line")
// is accepted.
func TestFreezeWebhook(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	webhooksOnly(t)
	start := metav1.NewTime(time.Now().Add(24 * time.Hour).Truncate(time.Second))
	freeze := func(sel metav1.LabelSelector, ns *metav1.LabelSelector) *ferryv1.Freeze {
		return &ferryv1.Freeze{ObjectMeta: metav1.ObjectMeta{Name: releasetest.Unique("incident")},
			// It starts tomorrow and selects nothing of the other tests' on this hub.
			Spec: ferryv1.FreezeSpec{Start: start, Reason: "INC-1: test", EnvironmentSelector: sel, NamespaceSelector: ns}}
	}
	many := map[string]string{}
	for i := range 100 {
		many[fmt.Sprintf("k%d", i)] = "v"
	}
	for _, tc := range []struct {
		name string
		f    *ferryv1.Freeze
		want []string
	}{
		{name: "stop the line", f: freeze(metav1.LabelSelector{}, nil)},
		{name: "one team's namespaces", f: freeze(metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod"}}, &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}})},
		{name: "an unknown operator", f: freeze(metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: "Sometimes", Values: []string{"prod"}}}}, nil),
			want: []string{"spec.environmentSelector", "Sometimes"}},
		{name: "an invalid label value", f: freeze(metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod and staging"}}, nil),
			want: []string{"spec.environmentSelector"}},
		{name: "a bad namespace selector", f: freeze(metav1.LabelSelector{}, &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: metav1.LabelSelectorOpIn}}}),
			want: []string{"spec.namespaceSelector"}},
		{name: "a hundred labels", f: freeze(metav1.LabelSelector{MatchLabels: many}, nil),
			want: []string{"spec.environmentSelector.matchLabels", "Too many"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Create(ctx, tc.f)
			if err == nil {
				t.Cleanup(func() { _ = c.Delete(ctx, tc.f) })
			}
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantRefused(t, err, tc.want...)
		})
	}
}

// TestBreakGlassWebhook: a break-glass decision needs a person the Environment's policy names
// (its approval policy when it has no break-glass policy); a refusal is recorded as an event on
// the Release. A break-glass is a decision apart from a vote on the gate, one per person, and is
// taken while a rollout is in flight.
func TestBreakGlassWebhook(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	webhooksOnly(t)
	f := setupApprovalFixture(t)
	bob := hub.UserClient(t, "bob", "release-managers")
	breakGlass := func(env, comment string) *ferryv1.Approval {
		a := releasetest.Approval(f.ns, f.release, env, ferryv1.DecisionApprove, comment)
		a.Spec.BreakGlass = true
		return a
	}

	t.Run("by someone the policy does not name", func(t *testing.T) {
		eve := hub.UserClient(t, "eve", "developers")
		wantRefused(t, createApproval(t, eve, breakGlass(f.prod, "I need this out")), `user "eve" (groups developers) may not break glass in environment `+f.prod, "it admits users alice and members of groups release-managers")
		testutil.Eventually(t, "the refusal recorded on the Release", func() (bool, error) {
			list := &corev1.EventList{}
			if err := c.List(ctx, list, client.InNamespace(f.ns)); err != nil {
				return false, err
			}
			return slices.ContainsFunc(list.Items, func(e corev1.Event) bool {
				return e.InvolvedObject.Name == f.release && e.Reason == ferryv1.BreakGlassRefusedReason
			}), fmt.Errorf("%d events, none BreakGlassRefused", len(list.Items))
		})
	})
	t.Run("in an environment that names nobody", func(t *testing.T) {
		wantRefused(t, createApproval(t, bob, breakGlass(f.dev, "hotfix")), "names nobody who may break glass")
	})
	t.Run("without a reason", func(t *testing.T) {
		wantRefused(t, createApproval(t, bob, breakGlass(f.prod, "")), "a break-glass decision needs a comment")
	})
	t.Run("after a vote on the gate, by a person the policy names", func(t *testing.T) {
		if err := createApproval(t, bob, releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")); err != nil {
			t.Fatal(err)
		}
		a := breakGlass(f.prod, "INC-7: the fix must go out during the freeze")
		if err := createApproval(t, bob, a); err != nil {
			t.Fatalf("break-glass refused: %v", err)
		}
		if a.Spec.Approver == nil || a.Spec.Approver.Username != "bob" || a.Spec.Image != f.image {
			t.Errorf("approver %+v, image %s", a.Spec.Approver, a.Spec.Image)
		}
		wantRefused(t, createApproval(t, bob, breakGlass(f.prod, "again")), `user "bob" already decided on break-glass on environment `+f.prod)
	})
	t.Run("while a rollout is in flight", func(t *testing.T) {
		rel := &ferryv1.Release{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: f.prod, StartTime: &now,
			Clusters: []ferryv1.ClusterRolloutStatus{{Cluster: "cluster-a", Namespace: "shop-" + f.prod}}}}
		meta.SetStatusCondition(&rel.Status.Environments[0].Conditions, metav1.Condition{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.RollingOutReason, Message: "rolling out"})
		if err := c.Status().Update(ctx, rel); err != nil {
			t.Fatal(err)
		}
		carol := hub.UserClient(t, "carol", "release-managers")
		if err := createApproval(t, carol, breakGlass(f.prod, "the next one must go out too")); err != nil {
			t.Fatalf("break-glass during a rollout refused: %v", err)
		}
	})
}
