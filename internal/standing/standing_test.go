package standing

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func cond(typ string, status metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: typ + " " + reason}
}

func TestOf(t *testing.T) {
	const (
		ready, approved, rolled = ferryv1.ReadyCondition, ferryv1.ApprovedCondition, ferryv1.RolledOutCondition
		yes, no, unknown        = metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionUnknown
	)
	gate := &ferryv1.GateStatus{RequiredApprovals: 2}
	cases := []struct {
		name    string
		conds   []metav1.Condition
		state   State
		reason  string
		stopped bool
	}{
		{name: "not reached", state: Pending},
		{name: "after the previous environment", conds: []metav1.Condition{cond(ready, unknown, ferryv1.WaitingForPreviousEnvironmentReason)}, state: WaitingForPreviousEnvironment, reason: ferryv1.WaitingForPreviousEnvironmentReason},
		{name: "gate waits", conds: []metav1.Condition{cond(approved, unknown, ferryv1.WaitingForApprovalReason), cond(ready, unknown, ferryv1.WaitingForApprovalReason)}, state: WaitingForApproval, reason: ferryv1.WaitingForApprovalReason},
		{name: "locked after the gate opened", conds: []metav1.Condition{cond(approved, yes, ferryv1.ApprovedReason), cond(ready, unknown, ferryv1.EnvironmentLockedReason)}, state: Locked, reason: ferryv1.EnvironmentLockedReason},
		// Ready decides when the gate's condition is left from before: the Release stopped or the
		// environment was locked while the gate waited.
		{name: "superseded while the gate waited", conds: []metav1.Condition{cond(approved, unknown, ferryv1.WaitingForApprovalReason), cond(ready, no, ferryv1.SupersededReason)}, state: Superseded, reason: ferryv1.SupersededReason, stopped: true},
		{name: "locked while the gate waited", conds: []metav1.Condition{cond(approved, unknown, ferryv1.WaitingForApprovalReason), cond(ready, unknown, ferryv1.EnvironmentLockedReason)}, state: Locked, reason: ferryv1.EnvironmentLockedReason},
		{name: "rolling out", conds: []metav1.Condition{cond(approved, yes, ferryv1.NoGateReason), cond(rolled, unknown, ferryv1.RollingOutReason), cond(ready, unknown, ferryv1.RollingOutReason)}, state: RollingOut, reason: ferryv1.RollingOutReason},
		{name: "rolling back", conds: []metav1.Condition{cond(rolled, no, ferryv1.RollingBackReason), cond(ready, no, ferryv1.RollingBackReason)}, state: RollingBack, reason: ferryv1.RollingBackReason, stopped: true},
		{name: "rolled out", conds: []metav1.Condition{cond(rolled, yes, ferryv1.HealthyReason), cond(ready, yes, ferryv1.SucceededReason)}, state: RolledOut, reason: ferryv1.SucceededReason},
		{name: "rolled back", conds: []metav1.Condition{cond(rolled, no, ferryv1.RolledBackReason), cond(ready, no, ferryv1.RolledBackReason)}, state: RolledBack, reason: ferryv1.RolledBackReason, stopped: true},
		{name: "rollout failed", conds: []metav1.Condition{cond(rolled, no, ferryv1.RolloutFailedReason), cond(ready, no, ferryv1.RolloutFailedReason)}, state: RolloutFailed, reason: ferryv1.RolloutFailedReason, stopped: true},
		{name: "rejected", conds: []metav1.Condition{cond(approved, no, ferryv1.RejectedReason), cond(ready, no, ferryv1.RejectedReason)}, state: Rejected, reason: ferryv1.RejectedReason, stopped: true},
		{name: "expired", conds: []metav1.Condition{cond(approved, no, ferryv1.ExpiredReason), cond(ready, no, ferryv1.ExpiredReason)}, state: Expired, reason: ferryv1.ExpiredReason, stopped: true},
		{name: "newer image deployed", conds: []metav1.Condition{cond(ready, no, ferryv1.NewerImageDeployedReason)}, state: Other, reason: ferryv1.NewerImageDeployedReason, stopped: true},
		{name: "environment not found", conds: []metav1.Condition{cond(ready, unknown, ferryv1.EnvironmentNotFoundReason)}, state: Other, reason: ferryv1.EnvironmentNotFoundReason},
		// Without Ready, the gate and rollout conditions say it.
		{name: "gate only", conds: []metav1.Condition{cond(approved, unknown, ferryv1.WaitingForApprovalReason)}, state: WaitingForApproval, reason: ferryv1.WaitingForApprovalReason},
		{name: "rejected, gate only", conds: []metav1.Condition{cond(approved, no, ferryv1.RejectedReason)}, state: Rejected, reason: ferryv1.RejectedReason, stopped: true},
		{name: "gate opened, nothing else yet", conds: []metav1.Condition{cond(approved, yes, ferryv1.ApprovedReason)}, state: Pending},
		{name: "rollout only", conds: []metav1.Condition{cond(approved, yes, ferryv1.ApprovedReason), cond(rolled, unknown, ferryv1.RollingOutReason)}, state: RollingOut, reason: ferryv1.RollingOutReason},
		{name: "between batches", conds: []metav1.Condition{cond(approved, yes, ferryv1.ApprovedReason), cond(rolled, unknown, ferryv1.WaitingForApprovalReason)}, state: WaitingBetweenBatches, reason: ferryv1.WaitingForApprovalReason},
		{name: "rolled back, rollout only", conds: []metav1.Condition{cond(rolled, no, ferryv1.RolledBackReason)}, state: RolledBack, reason: ferryv1.RolledBackReason, stopped: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Of(&ferryv1.ReleaseEnvironmentStatus{Conditions: tc.conds, Gate: gate})
			if got.State != tc.state || got.Reason != tc.reason || got.Stopped != tc.stopped {
				t.Errorf("Of = %+v, want state %d, reason %q, stopped %t", got, tc.state, tc.reason, tc.stopped)
			}
			if tc.reason != "" && got.Message == "" {
				t.Errorf("Of = %+v without the deciding condition's message", got)
			}
			if (got.Gate != nil) != (got.State == WaitingForApproval) {
				t.Errorf("Of = %+v: the gate belongs to WaitingForApproval and nothing else", got)
			}
		})
	}
}
