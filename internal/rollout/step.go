package rollout

import (
	"context"
	"fmt"
	"math"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/conditions"
)

// GateAnswer is the state of the Approval gate before a batch.
type GateAnswer struct {
	// Approved lets the batch start.
	Approved bool
	// Rejected, when not empty, says who rejected the batch and why: the rollout fails.
	Rejected string
}

// Input is what a Step needs besides the cluster.
type Input struct {
	// Cluster names the cluster in messages.
	Cluster string
	// Workload is the Release's workload.
	Workload *Workload
	// Previous is what the environment ran before the Release, the target of a rollback; nil when
	// it ran nothing.
	Previous *Workload
	// Strategy is the Environment's strategy.
	Strategy Strategy
	// Rollback asks for the previous version instead of the Release's.
	Rollback bool
	// Namespaces say which namespaces besides the Project's own may be written into.
	Namespaces NamespaceRules
	// BatchGate answers whether a batch (2 or more) may start when Strategy.Between is Approval.
	BatchGate func(batch int32) GateAnswer
	// Now is the current time.
	Now time.Time
}

// Result is what one Step did.
type Result struct {
	// Writes is the number of write requests sent to the cluster.
	Writes int
}

// Failed reports whether a forward rollout on the cluster failed (unhealthy, rejected, or its
// namespace refused): the environment must roll back or stop.
func Failed(st *ferryv1.ClusterRolloutStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition)
	if c == nil || c.Status != metav1.ConditionFalse || st.CompletionTime != nil {
		return false
	}
	switch c.Reason {
	case ferryv1.RolloutFailedReason, ferryv1.RejectedReason, ferryv1.NamespaceNotOwnedReason, ferryv1.NamespaceReservedReason:
		return true
	}
	return false
}

// Refused reports whether the cluster's namespace was refused (NamespaceNotOwned or
// NamespaceReserved): nothing is written there, not even a rollback.
func Refused(st *ferryv1.ClusterRolloutStatus) bool {
	c := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition)
	return c != nil && c.Status == metav1.ConditionFalse &&
		(c.Reason == ferryv1.NamespaceNotOwnedReason || c.Reason == ferryv1.NamespaceReservedReason)
}

// Succeeded reports whether the Release's workload is healthy on the cluster. A cluster that
// succeeded is never written to again by a forward rollout.
func Succeeded(st *ferryv1.ClusterRolloutStatus) bool {
	return meta.IsStatusConditionTrue(st.Conditions, ferryv1.RolledOutCondition)
}

// Step advances the rollout on one cluster as far as it can without waiting, and records where it
// stands in st. A forward rollout ends with RolledOut=True (Healthy) or RolledOut=False
// (RolloutFailed or Rejected, without a completion time: the caller then rolls the environment
// back). A rollback ends with a completion time and RolledBack, or RolloutFailed when there was
// nothing to roll back to or the rollback did not become healthy. An error means the cluster could
// not be reached or answered unexpectedly; st then holds what was done before it.
func Step(ctx context.Context, c client.Client, in Input, st *ferryv1.ClusterRolloutStatus) (Result, error) {
	s := &stepper{a: &applier{c: c, cluster: in.Cluster, rules: in.Namespaces}, in: in, st: st, now: metav1.NewTime(in.Now)}
	var err error
	if in.Rollback {
		err = s.rollback(ctx)
	} else {
		err = s.forward(ctx)
	}
	return Result{Writes: s.a.writes}, err
}

type stepper struct {
	a   *applier
	in  Input
	st  *ferryv1.ClusterRolloutStatus
	now metav1.Time
}

func (s *stepper) deadlineSeconds() int32 {
	seconds := min(max(s.in.Strategy.ProgressDeadline/time.Second, 1), math.MaxInt32)
	return int32(seconds)
}

// pastDeadline reports whether the current batch has had its progress deadline.
func (s *stepper) pastDeadline() bool {
	return s.st.BatchStartTime != nil && s.in.Now.Sub(s.st.BatchStartTime.Time) > s.in.Strategy.ProgressDeadline
}

func (s *stepper) forward(ctx context.Context) error {
	if Succeeded(s.st) || Failed(s.st) {
		return nil
	}
	w := s.in.Workload
	if s.st.StartTime == nil {
		s.st.StartTime = &s.now
		s.st.Replicas = w.Replicas()
		if s.in.Strategy.Type == ferryv1.BatchStrategy {
			stable, err := s.a.getDeployment(ctx, w, StableTrack)
			if err != nil {
				return err
			}
			s.st.Batches = s.in.Strategy.Batches
			s.st.Batch = 1
			if stable == nil || containerImage(stable) == w.Image || w.Replicas() == 0 {
				// Nothing runs yet (or it already runs this image): there is nothing to canary against.
				s.st.Batch = s.st.Batches
			}
		}
	}
	s.st.Image = w.Image
	if s.in.Strategy.Type != ferryv1.BatchStrategy || s.st.Batch >= s.st.Batches {
		return s.final(ctx)
	}
	for s.st.Batch < s.st.Batches {
		advanced, err := s.canaryBatch(ctx)
		if err != nil || !advanced {
			return err
		}
	}
	return s.final(ctx)
}

// canaryBatch rolls out batch st.Batch (< Batches) as the canary Deployment and reports whether
// the next batch may start.
func (s *stepper) canaryBatch(ctx context.Context) (bool, error) {
	w, k, n := s.in.Workload, s.st.Batch, s.st.Batches
	want := canaryReplicas(w.Replicas(), k, n)
	d, applied, err := s.a.applyDeployment(ctx, w, CanaryTrack, want, s.deadlineSeconds())
	if err != nil {
		return false, s.refused(err)
	}
	if applied || s.st.BatchStartTime == nil {
		s.st.BatchStartTime = &s.now
	}
	p, err := s.observe(ctx, d, w.Image)
	if err != nil {
		return false, err
	}
	s.st.UpdatedReplicas, s.st.AvailableReplicas = p.Updated, min(p.Available, p.Replicas)
	where := fmt.Sprintf("batch %d of %d (%d canary replicas)", k, n, want)
	if !p.Healthy {
		if s.st.BatchHealthyTime != nil {
			// The batch was healthy and is not any more: it gets a new progress deadline to
			// recover, and a Pause starts again once it has.
			s.st.BatchHealthyTime = nil
			s.st.BatchStartTime = &s.now
			s.set(metav1.ConditionUnknown, ferryv1.RollingOutReason, where+" was healthy and is not any more: "+p.Message)
			return false, nil
		}
		switch {
		case s.pastDeadline():
			s.fail(ferryv1.RolloutFailedReason, fmt.Sprintf("%s not healthy after %s (progress deadline): %s", where, s.in.Strategy.ProgressDeadline, p.Message))
		default:
			s.set(metav1.ConditionUnknown, ferryv1.RollingOutReason, where+": "+p.Message)
		}
		return false, nil
	}
	if s.st.BatchHealthyTime == nil {
		s.st.BatchHealthyTime = &s.now
	}
	switch s.in.Strategy.Between {
	case ferryv1.BatchGatePause:
		until := s.st.BatchHealthyTime.Add(s.in.Strategy.Pause)
		if s.in.Now.Before(until) {
			s.set(metav1.ConditionUnknown, ferryv1.PausedReason, fmt.Sprintf("%s healthy; pausing until %s", where, until.UTC().Format(time.RFC3339)))
			return false, nil
		}
	case ferryv1.BatchGateApproval:
		answer := GateAnswer{}
		if s.in.BatchGate != nil {
			answer = s.in.BatchGate(k + 1)
		}
		if answer.Rejected != "" {
			s.fail(ferryv1.RejectedReason, fmt.Sprintf("batch %d of %d rejected: %s", k+1, n, answer.Rejected))
			return false, nil
		}
		if !answer.Approved {
			s.set(metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason, fmt.Sprintf("%s healthy; waiting for an Approval of batch %d", where, k+1))
			return false, nil
		}
	}
	s.st.Batch++
	s.st.BatchStartTime, s.st.BatchHealthyTime = nil, nil
	return true, nil
}

// final applies the Release's version to the stable Deployment with every replica: the whole
// rollout under Rolling, the last batch under Batch (after which the canary goes).
func (s *stepper) final(ctx context.Context) error {
	w := s.in.Workload
	d, applied, err := s.a.applyDeployment(ctx, w, StableTrack, w.Replicas(), s.deadlineSeconds())
	if err != nil {
		return s.refused(err)
	}
	if applied || s.st.BatchStartTime == nil {
		s.st.BatchStartTime = &s.now
	}
	p, err := s.observe(ctx, d, w.Image)
	if err != nil {
		return err
	}
	s.st.Replicas, s.st.UpdatedReplicas, s.st.AvailableReplicas = p.Replicas, p.Updated, min(p.Available, p.Replicas)
	where := ""
	if s.st.Batches > 0 {
		where = fmt.Sprintf("batch %d of %d: ", s.st.Batch, s.st.Batches)
	}
	switch {
	case p.Healthy:
		if err := s.a.deleteCanary(ctx, w); err != nil {
			return s.refused(err)
		}
		s.set(metav1.ConditionTrue, ferryv1.HealthyReason, fmt.Sprintf("%d of %d replicas updated and available with %s", p.Updated, p.Replicas, ShortImage(w.Image)))
		s.st.CompletionTime = &s.now
	case s.pastDeadline():
		s.fail(ferryv1.RolloutFailedReason, fmt.Sprintf("%snot healthy after %s (progress deadline): %s", where, s.in.Strategy.ProgressDeadline, p.Message))
	default:
		s.set(metav1.ConditionUnknown, ferryv1.RollingOutReason, where+p.Message)
	}
	return nil
}

// rollback restores the previous version: the canary goes, the stable Deployment gets the
// previous image and settings back unless it still runs them.
func (s *stepper) rollback(ctx context.Context) error {
	if s.st.CompletionTime != nil {
		return nil
	}
	if err := s.a.deleteCanary(ctx, s.in.Workload); err != nil {
		return s.refused(err)
	}
	prev := s.in.Previous
	if prev == nil {
		s.set(metav1.ConditionFalse, ferryv1.RolloutFailedReason, "no previous image to roll back to: the workload was left as it is")
		s.st.CompletionTime = &s.now
		return nil
	}
	s.st.Image = prev.Image
	d, err := s.a.getDeployment(ctx, prev, StableTrack)
	if err != nil {
		return err
	}
	if d == nil || containerImage(d) != prev.Image {
		var applied bool
		if d, applied, err = s.a.applyDeployment(ctx, prev, StableTrack, prev.Replicas(), s.deadlineSeconds()); err != nil {
			return s.refused(err)
		}
		if applied {
			s.st.BatchStartTime = &s.now
		}
	}
	if s.st.BatchStartTime == nil {
		s.st.BatchStartTime = &s.now
	}
	p, err := s.observe(ctx, d, prev.Image)
	if err != nil {
		return err
	}
	s.st.Replicas, s.st.UpdatedReplicas, s.st.AvailableReplicas = p.Replicas, p.Updated, min(p.Available, p.Replicas)
	switch {
	case p.Healthy:
		s.set(metav1.ConditionFalse, ferryv1.RolledBackReason, "rolled back to "+ShortImage(prev.Image)+": "+p.Message)
		s.st.CompletionTime = &s.now
	case s.pastDeadline():
		s.set(metav1.ConditionFalse, ferryv1.RolloutFailedReason, fmt.Sprintf("the rollback to %s did not become healthy within %s: %s", ShortImage(prev.Image), s.in.Strategy.ProgressDeadline, p.Message))
		s.st.CompletionTime = &s.now
	default:
		s.set(metav1.ConditionFalse, ferryv1.RollingBackReason, "rolling back to "+ShortImage(prev.Image)+": "+p.Message)
	}
	return nil
}

// observe reads how far a Deployment's rollout to image is.
func (s *stepper) observe(ctx context.Context, d *appsv1.Deployment, image string) (Progress, error) {
	rs, err := s.a.newReplicaSet(ctx, d)
	if err != nil {
		return Progress{}, err
	}
	p := progressOf(d, image, rs)
	if !p.Healthy && d != nil && containerImage(d) == image {
		// Say why, in the kubelet's words: an image that cannot be pulled, a crash loop, a failing
		// probe. Not knowing is no reason to stop: the rollout goes on without it.
		if problems, err := s.a.podProblems(ctx, d, image); err == nil {
			if why := describePodProblems(problems); why != "" {
				p.Message += "; " + why
			}
		}
	}
	return p, nil
}

// refused turns an apply the API server rejected as invalid into a failed rollout, and a namespace
// that does not belong to the Project into a refusal (in a rollback too: nothing is written there);
// other errors (the cluster could not be reached, or refused the credentials) are returned to retry.
func (s *stepper) refused(err error) error {
	if ne, ok := IsNamespaceRefused(err); ok {
		s.set(metav1.ConditionFalse, ne.Reason, ne.Message)
		if s.in.Rollback {
			s.st.CompletionTime = &s.now
		}
		return nil
	}
	if apierrors.IsInvalid(err) || apierrors.IsBadRequest(err) {
		s.fail(ferryv1.RolloutFailedReason, "the cluster refused the workload: "+err.Error())
		return nil
	}
	return err
}

func (s *stepper) fail(reason, message string) {
	if s.in.Rollback {
		s.set(metav1.ConditionFalse, ferryv1.RolloutFailedReason, message)
		s.st.CompletionTime = &s.now
		return
	}
	s.set(metav1.ConditionFalse, reason, message)
}

func (s *stepper) set(status metav1.ConditionStatus, reason, message string) {
	SetClusterCondition(s.st, status, reason, message, s.now)
}

// SetClusterCondition sets the RolledOut condition of a cluster's rollout.
func SetClusterCondition(st *ferryv1.ClusterRolloutStatus, status metav1.ConditionStatus, reason, message string, now metav1.Time) {
	conditions.Set(&st.Conditions, ferryv1.RolledOutCondition, status, reason, message, 0, now)
}

// canaryReplicas is the size of the canary in batch k of n: ceil(replicas*k/n), at least one.
func canaryReplicas(replicas, k, n int32) int32 {
	return max((replicas*k+n-1)/n, 1)
}
