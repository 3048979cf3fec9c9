package release

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/conditions"
)

// ensureEnvironments gives every environment of the path a status entry, in path order, so that
// the whole path is visible from the start. Entries of environments no longer on the path stay.
func ensureEnvironments(rel *ferryv1.Release, path []string, now metav1.Time) {
	for i, name := range path {
		if envStatus(rel, name) != nil {
			continue
		}
		es := ferryv1.ReleaseEnvironmentStatus{Name: name}
		if i > 0 {
			conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.WaitingForPreviousEnvironmentReason,
				fmt.Sprintf("waiting for environment %s", path[i-1]), rel.Generation, now)
		}
		rel.Status.Environments = append(rel.Status.Environments, es)
	}
}

// envStatus returns the status entry of an environment, nil when there is none.
func envStatus(rel *ferryv1.Release, name string) *ferryv1.ReleaseEnvironmentStatus {
	for i := range rel.Status.Environments {
		if rel.Status.Environments[i].Name == name {
			return &rel.Status.Environments[i]
		}
	}
	return nil
}

// envSucceeded: the Release rolled out in the environment.
func envSucceeded(es *ferryv1.ReleaseEnvironmentStatus) bool {
	return meta.IsStatusConditionTrue(es.Conditions, ferryv1.ReadyCondition)
}

// rolloutStarted: the gate opened and the rollout (or its rollback) began.
func rolloutStarted(es *ferryv1.ReleaseEnvironmentStatus) bool {
	return meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition) != nil
}

// rollingBack: a rollout failed and the previous image is being restored.
func rollingBack(es *ferryv1.ReleaseEnvironmentStatus) bool {
	c := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ferryv1.RollingBackReason
}

// holdsLock: the Release is writing into the environment's clusters, forward or back.
func holdsLock(es *ferryv1.ReleaseEnvironmentStatus) bool {
	c := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition)
	return c != nil && es.CompletionTime == nil && (c.Status == metav1.ConditionUnknown || c.Reason == ferryv1.RollingBackReason)
}

// setEnvWaiting: the environment cannot start yet (lock, missing Environment).
func setEnvWaiting(es *ferryv1.ReleaseEnvironmentStatus, reason, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionUnknown, reason, message, gen, now)
}

// setGateWaiting: the gate needs more approvals.
func setGateWaiting(es *ferryv1.ReleaseEnvironmentStatus, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason, message, gen, now)
}

// setGateOpen: the gate opened (Approved) or there is none (NoGate).
func setGateOpen(es *ferryv1.ReleaseEnvironmentStatus, reason, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.ApprovedCondition, metav1.ConditionTrue, reason, message, gen, now)
}

// setGateClosed: rejected (the Release stops) or expired (it waits to be re-requested).
func setGateClosed(es *ferryv1.ReleaseEnvironmentStatus, reason, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.ApprovedCondition, metav1.ConditionFalse, reason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionFalse, reason, message, gen, now)
	if reason != ferryv1.ExpiredReason {
		es.CompletionTime = &now
	}
}

// setEnvRollingOut: the workload is being applied and is not healthy everywhere yet.
func setEnvRollingOut(es *ferryv1.ReleaseEnvironmentStatus, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.RollingOutReason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.RollingOutReason, message, gen, now)
}

// setEnvRollingBack: a rollout failed; message says where and why.
func setEnvRollingBack(es *ferryv1.ReleaseEnvironmentStatus, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.RolledOutCondition, metav1.ConditionFalse, ferryv1.RollingBackReason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.RollingBackReason, message, gen, now)
}

// setEnvSucceeded: healthy on every cluster.
func setEnvSucceeded(es *ferryv1.ReleaseEnvironmentStatus, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.RolledOutCondition, metav1.ConditionTrue, ferryv1.HealthyReason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason, message, gen, now)
	es.CompletionTime = &now
}

// setEnvFailed: the rollout failed and was rolled back (RolledBack) or could not be
// (RolloutFailed); the Release stops here.
func setEnvFailed(es *ferryv1.ReleaseEnvironmentStatus, reason, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.RolledOutCondition, metav1.ConditionFalse, reason, message, gen, now)
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionFalse, reason, message, gen, now)
	es.CompletionTime = &now
}

// setEnvStopped: the Release stops before rolling out here (Superseded, NewerImageDeployed, an
// invalid namespace template).
func setEnvStopped(es *ferryv1.ReleaseEnvironmentStatus, reason, message string, gen int64, now metav1.Time) {
	conditions.Set(&es.Conditions, ferryv1.ReadyCondition, metav1.ConditionFalse, reason, message, gen, now)
	es.CompletionTime = &now
}

// summarize sets the Release's Ready, Reconciling and Stalled from its environments: Ready is
// True when every environment of the path succeeded; otherwise it carries the reason and message
// of the first environment that did not, prefixed with its name. A Release that stopped records
// its completion time.
func summarize(rel *ferryv1.Release, path []string, now metav1.Time) {
	gen := rel.Generation
	conds := &rel.Status.Conditions
	for _, name := range path {
		es := envStatus(rel, name)
		if es == nil {
			continue
		}
		if envSucceeded(es) {
			continue
		}
		ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
		if ready == nil {
			ready = &metav1.Condition{Status: metav1.ConditionUnknown, Reason: ferryv1.ProgressingReason, Message: "starting"}
		}
		message := name + ": " + ready.Message
		conditions.Set(conds, ferryv1.ReadyCondition, ready.Status, ready.Reason, message, gen, now)
		switch {
		case ready.Status == metav1.ConditionFalse && es.CompletionTime != nil:
			// The Release stopped here.
			rel.Status.CompletionTime = &now
			conditions.Set(conds, ferryv1.ReconcilingCondition, metav1.ConditionFalse, ready.Reason, message, gen, now)
			if ready.Reason == ferryv1.SupersededReason {
				conditions.Set(conds, ferryv1.StalledCondition, metav1.ConditionFalse, ready.Reason, message, gen, now)
			} else {
				conditions.Set(conds, ferryv1.StalledCondition, metav1.ConditionTrue, ready.Reason, message, gen, now)
			}
		case ready.Status == metav1.ConditionFalse && ready.Reason == ferryv1.ExpiredReason:
			// Waiting for a person to re-request the gate.
			conditions.Set(conds, ferryv1.ReconcilingCondition, metav1.ConditionFalse, ready.Reason, message, gen, now)
			conditions.Set(conds, ferryv1.StalledCondition, metav1.ConditionTrue, ready.Reason, message, gen, now)
		default:
			conditions.Set(conds, ferryv1.ReconcilingCondition, metav1.ConditionTrue, ready.Reason, message, gen, now)
			meta.RemoveStatusCondition(conds, ferryv1.StalledCondition)
		}
		return
	}
	message := "rolled out to " + strings.Join(path, ", ")
	conditions.Set(conds, ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason, message, gen, now)
	conditions.Set(conds, ferryv1.ReconcilingCondition, metav1.ConditionFalse, ferryv1.SucceededReason, message, gen, now)
	meta.RemoveStatusCondition(conds, ferryv1.StalledCondition)
	rel.Status.CompletionTime = &now
}

// setStalled records a problem only a person can fix before the Release can start (a missing
// Project, an environment off the path). The Release is not finished: fixing it resumes it.
func setStalled(rel *ferryv1.Release, reason, message string, now metav1.Time) {
	conditions.MarkStalled(&rel.Status.Conditions, reason, message, rel.Generation, now)
}

// clusterSummary says how far the rollout is on each cluster, for the environment's message.
func clusterSummary(es *ferryv1.ReleaseEnvironmentStatus) string {
	var parts []string
	for _, c := range es.Clusters {
		cond := meta.FindStatusCondition(c.Conditions, ferryv1.RolledOutCondition)
		if cond == nil {
			parts = append(parts, c.Cluster+": starting")
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s (%s)", c.Cluster, cond.Reason, cond.Message))
	}
	slices.Sort(parts)
	return strings.Join(parts, "; ")
}
