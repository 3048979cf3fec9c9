// Package standing says where a Release stands in one environment of its path, from the
// conditions the Release controller writes there. It is the one reading of those conditions:
// `ferry get releases`, ferry dev's activity log and the UI each render a Standing in their own
// words, and none of them reads the conditions itself.
package standing

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// State is where a Release stands in an environment.
type State int

const (
	// Pending means the Release has not reached the environment.
	Pending State = iota
	// WaitingForPreviousEnvironment means the environment before this one on the path has not
	// succeeded yet.
	WaitingForPreviousEnvironment
	// WaitingForApproval means the environment's gate waits for decisions.
	WaitingForApproval
	// WaitingBetweenBatches means that under the Batch strategy the next batch waits for an approval.
	WaitingBetweenBatches
	// Locked means the environment, or a namespace the Release deploys to, is locked.
	Locked
	// RollingOut means the workload is being applied and is not healthy everywhere yet.
	RollingOut
	// RollingBack means a rollout failed and is being taken back.
	RollingBack
	// RolledOut means the Release is healthy on every cluster of the environment.
	RolledOut
	// RolledBack means a rollout failed and was taken back; the Release stops here.
	RolledBack
	// RolloutFailed means a rollout failed and could not be taken back; the Release stops here.
	RolloutFailed
	// Rejected means an approver rejected the Release for the environment.
	Rejected
	// Expired means the gate expired before it had enough approvals; it can be re-requested.
	Expired
	// Superseded means a newer Release of the project reached the environment first.
	Superseded
	// Paused means the rollout pauses between steps.
	Paused
	// WaitingForWindow means the environment's deploy windows do not let the rollout start yet.
	WaitingForWindow
	// Frozen means a freeze keeps the rollout from starting.
	Frozen
	// Other is any other reason, which Standing.Reason names.
	Other
)

// Standing is where a Release stands in one environment, and why.
type Standing struct {
	// State is where it stands.
	State State
	// Reason is the reason of the condition that decided the State; "" when there is none.
	Reason string
	// Message is that condition's message.
	Message string
	// Stopped says that condition is False: the Release does not go on here by itself.
	Stopped bool
	// Gate is the environment's gate, which counts the approvals given and needed; it is set for
	// WaitingForApproval, and may be nil then too.
	Gate *ferryv1.GateStatus
	// OpensAt is when the environment's windows and freezes next let the rollout start; set for
	// WaitingForWindow, Frozen and Locked when it is known.
	OpensAt *metav1.Time
}

// byReason is the State of the other reasons of a condition that is not True.
var byReason = map[string]State{
	ferryv1.WaitingForPreviousEnvironmentReason: WaitingForPreviousEnvironment,
	ferryv1.WaitingForApprovalReason:            WaitingForApproval,
	ferryv1.EnvironmentLockedReason:             Locked,
	ferryv1.RollingOutReason:                    RollingOut,
	ferryv1.RollingBackReason:                   RollingBack,
	ferryv1.RolledBackReason:                    RolledBack,
	ferryv1.RolloutFailedReason:                 RolloutFailed,
	ferryv1.RejectedReason:                      Rejected,
	ferryv1.ExpiredReason:                       Expired,
	ferryv1.SupersededReason:                    Superseded,
	ferryv1.PausedReason:                        Paused,
	ferryv1.WaitingForWindowReason:              WaitingForWindow,
	ferryv1.FrozenReason:                        Frozen,
}

// Of says where the Release whose environment status es is stands in that environment. The
// environment's Ready condition decides, since the controller sets it at every step; a status
// without one is read from its Approved and RolledOut conditions.
func Of(es *ferryv1.ReleaseEnvironmentStatus) Standing {
	if ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); ready != nil {
		return from(ready, es)
	}
	approved := meta.FindStatusCondition(es.Conditions, ferryv1.ApprovedCondition)
	rolled := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition)
	switch {
	case approved != nil && approved.Status == metav1.ConditionFalse:
		return from(approved, es)
	case approved != nil && approved.Status == metav1.ConditionUnknown && rolled == nil:
		return from(approved, es)
	case rolled != nil && rolled.Status == metav1.ConditionUnknown && rolled.Reason != ferryv1.WaitingForApprovalReason:
		// A rollout in progress, whatever step it is at.
		return Standing{State: RollingOut, Reason: rolled.Reason, Message: rolled.Message}
	case rolled != nil && rolled.Status != metav1.ConditionTrue:
		return from(rolled, es)
	}
	return Standing{State: Pending}
}

// from is the Standing that condition c of es decides.
func from(c *metav1.Condition, es *ferryv1.ReleaseEnvironmentStatus) Standing {
	s := Standing{State: Other, Reason: c.Reason, Message: c.Message, Stopped: c.Status == metav1.ConditionFalse}
	switch state, ok := byReason[c.Reason]; {
	case c.Status == metav1.ConditionTrue:
		s.State = RolledOut
	case c.Type == ferryv1.RolledOutCondition && c.Reason == ferryv1.WaitingForApprovalReason:
		s.State = WaitingBetweenBatches
	case ok:
		s.State = state
	}
	switch s.State {
	case WaitingForApproval:
		s.Gate = es.Gate
	case WaitingForWindow, Frozen, Locked:
		s.OpensAt = es.WindowOpensAt
	}
	return s
}
