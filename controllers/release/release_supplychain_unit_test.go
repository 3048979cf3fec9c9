package release

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/tools/events"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestSupplyChainGatePassesOnceUnit: a pass recorded for the Release's digest is not checked again
// while the Release waits after the gate — with a key that no longer exists the gate still
// proceeds, asking nothing — but another digest is checked (and here cannot be).
func TestSupplyChainGatePassesOnceUnit(t *testing.T) {
	r := unitReconciler(t)
	p := unitPlan()
	env := unitEnv(func(e *ferryv1.Environment) {
		e.Spec.SupplyChain = &ferryv1.SupplyChainPolicy{RequireSignature: true,
			Keys: []ferryv1.PublicKeySource{{ConfigMapRef: &ferryv1.SecretKeyReference{Name: "gone"}}}}
	})
	rel := unitRelease("r1", 0)
	es := &rel.Status.Environments[0]
	es.SupplyChain = &ferryv1.SupplyChainResult{Digest: p.image, Result: ferryv1.SupplyChainPassed, CheckedAt: now}
	if st, err := r.supplyChainGate(context.Background(), rel, p, env, es, now); err != nil || kindOf(st) != "proceed" {
		t.Fatalf("a recorded pass: %s, %v; want proceed without a check", kindOf(st), err)
	}
	if rec := r.Recorder.(*events.FakeRecorder); len(rec.Events) != 0 {
		t.Errorf("a recorded pass sent an event: %s", <-rec.Events)
	}
	es.SupplyChain.Digest = "registry.example.com/other@sha256:" + strings.Repeat("9", 64)
	st, err := r.supplyChainGate(context.Background(), rel, p, env, es, now)
	if err != nil || kindOf(st) == "proceed" || !strings.Contains(cond(es.Conditions, ferryv1.ReadyCondition), SupplyChainUnverifiedReason) {
		t.Fatalf("a pass of another digest: %s, %v, Ready %s; want a check that waits on the missing key", kindOf(st), err, cond(es.Conditions, ferryv1.ReadyCondition))
	}
}
