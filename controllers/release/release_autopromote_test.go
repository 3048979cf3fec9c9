package release

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestAutoPromotionUnit: an Environment with autoPromote and a gate lets a Release through
// without a decision once its digest passed verification in the previous environment and soaked
// there, recording it like a decision (status, Approved condition, one event); a digest not
// verified there, or whose verification was taken back by a failed re-verification, waits for
// approvals; without autoPromote the gate waits.
func TestAutoPromotionUnit(t *testing.T) {
	ctx := context.Background()
	verifiedStaging := func(rel *ferryv1.Release, passed bool) {
		staging := envStatus(rel, "staging")
		staging.Verification = &ferryv1.VerificationStatus{Run: 2, Image: unitImage, StartTime: &now, CompletionTime: &now}
		status, reason := metav1.ConditionFalse, ferryv1.VerificationFailedReason
		if passed {
			staging.Verification.VerifiedImage = unitImage
			status, reason = metav1.ConditionTrue, ferryv1.VerifiedReason
		}
		meta.SetStatusCondition(&staging.Conditions, metav1.Condition{Type: ferryv1.VerifiedCondition, Status: status, Reason: reason, LastTransitionTime: now})
	}

	r, rel, p, env, rec := soakFixture(t)
	env.Spec.AutoPromote = true
	env.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"rita"}, MinApprovals: 1}
	verifiedStaging(rel, true)
	prod := envStatus(rel, "prod")
	// Soaking first: no gate decision yet.
	if st, err := r.beforeRollout(ctx, rel, p, env, prod, at(10*time.Minute)); err != nil || kindOf(st) != "wait 50m0s" || prod.AutoPromotion != nil {
		t.Fatalf("while soaking: %s (%v), %+v", kindOf(st), err, prod.AutoPromotion)
	}
	st, err := r.beforeRollout(ctx, rel, p, env, prod, at(time.Hour))
	if err != nil || !st.proceeds() {
		t.Fatalf("after the soak: %s (%v), want the rollout to start", kindOf(st), err)
	}
	c := meta.FindStatusCondition(prod.Conditions, ferryv1.ApprovedCondition)
	if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ferryv1.AutoPromotedReason ||
		!strings.Contains(c.Message, "promoted automatically: registry.example.com/team/shop@sha256:111111111111 passed verification in staging (run 2) and soaked there for 1h0m0s") {
		t.Errorf("Approved = %+v", c)
	}
	if a := prod.AutoPromotion; a == nil || a.PreviousEnvironment != "staging" || a.VerifiedRun != 2 || a.Soak.Duration != time.Hour || prod.Gate != nil || len(prod.Clusters) != 1 {
		t.Errorf("autoPromotion = %+v, gate %+v, clusters %v", a, prod.Gate, prod.Clusters)
	}
	if evs := drain(rec); strings.Count(evs, "Normal AutoPromoted Environment prod: promoted automatically") != 1 {
		t.Errorf("events = %q", evs)
	}

	for _, tc := range []struct {
		name   string
		mutate func(*ferryv1.Release, *ferryv1.Environment)
	}{
		{"a digest not verified in staging", func(*ferryv1.Release, *ferryv1.Environment) {}},
		{"a verification taken back", func(rel *ferryv1.Release, _ *ferryv1.Environment) { verifiedStaging(rel, false) }},
		{"no autoPromote", func(rel *ferryv1.Release, env *ferryv1.Environment) {
			verifiedStaging(rel, true)
			env.Spec.AutoPromote = false
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, rel, p, env, _ := soakFixture(t)
			env.Spec.AutoPromote = true
			env.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"rita"}, MinApprovals: 1}
			tc.mutate(rel, env)
			prod := envStatus(rel, "prod")
			st, err := r.beforeRollout(ctx, rel, p, env, prod, at(time.Hour))
			if err != nil || st.proceeds() || prod.AutoPromotion != nil {
				t.Fatalf("%s (%v), autoPromotion %+v; want the gate to wait", kindOf(st), err, prod.AutoPromotion)
			}
			if c := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition); c.Reason != ferryv1.WaitingForApprovalReason {
				t.Errorf("Ready = %+v", c)
			}
		})
	}
}
