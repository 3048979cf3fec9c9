package release

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/patch"
	"github.com/ferryci/ferry/internal/rollout"
)

// rollOut advances the rollout (or its rollback) on every cluster of the environment in
// parallel. It proceeds once every cluster is healthy and the environment was recorded.
func (r *Reconciler) rollOut(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	if len(es.Clusters) == 0 {
		setEnvFailed(es, ferryv1.FailedReason, "environment "+es.Name+" names no cluster", gen, now)
		return stop(), nil
	}
	back := rollingBack(es)
	in := r.input(ctx, rel, p, env, es, back, now)
	if in.Strategy.Type == ferryv1.BatchStrategy && in.Strategy.Between == ferryv1.BatchGateApproval && !back {
		approvals, err := r.approvals(ctx, rel)
		if err != nil {
			return step{}, err
		}
		in.BatchGate = func(batch int32) rollout.GateAnswer {
			t := approval.Tally(env.Spec.Approval, approvals, rel.Name, env.Name, batch, rel.Spec.Image, p.subject, nil)
			if t.Rejection != nil {
				return rollout.GateAnswer{Rejected: fmt.Sprintf("rejected by %s: %s", t.Rejection.Spec.Approver.Username, t.Rejection.Spec.Comment)}
			}
			return rollout.GateAnswer{Approved: t.Approved()}
		}
	}
	unreachable := map[string]bool{}
	if !back {
		// Every cluster's namespace must belong to the Project before anything is written on
		// any of them.
		unreachable = r.claimNamespaces(ctx, es, in)
	}
	checks := checksOf(env, p)
	verifying := time.Duration(0)
	if firstFailed(es) == nil {
		verifying = r.advanceWaves(ctx, rel, p, es, in, checks, unreachable, now)
	}

	poll := r.pollInterval()
	if len(unreachable) > 0 {
		poll = r.unreachableRetry(unreachable)
	}
	if back {
		return r.afterRollback(rel, es, in.Previous, now), nil
	}
	if failed := firstFailed(es); failed != nil {
		if rollout.Refused(failed) && !anyStarted(es) {
			r.refuseEnvironment(rel, es, now)
			return stop(), nil
		}
		r.startRollback(rel, es, failed, in.Previous, now)
		// The rollback starts at once, in this Reconcile: its first step on every cluster.
		return r.rollOut(ctx, rel, p, env, es, now)
	}
	if verifying > 0 {
		// A healthy wave's checks run; the next wave waits for them.
		return wait(verifying), nil
	}
	if !allSucceeded(es) {
		setEnvRollingOut(es, waveNote(es)+clusterSummary(es), gen, now)
		return wait(poll), nil
	}
	if st, failed := r.verifyAfterRollout(ctx, rel, p, env, es, now); failed {
		// A failed check rolls the environment back like a failed health check.
		return r.rollOut(ctx, rel, p, env, es, now)
	} else if !st.proceeds() {
		return st, nil
	}
	if err := r.recordDeployed(ctx, rel, p, es); err != nil {
		return step{}, err
	}
	msg := fmt.Sprintf("%s is healthy on %s", rollout.ShortImage(p.image), clusterNames(es)) + droppedNote(p, env)
	setEnvSucceeded(es, msg, gen, now)
	rolloutDuration.WithLabelValues(es.Name, resultSucceeded).Observe(rolloutSeconds(es, now))
	r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.SucceededReason, "RollOut", "Environment %s: %s", es.Name, msg)
	return proceed(), nil
}

// advanceWaves steps the clusters of the current wave (every cluster when the environment does
// not roll out in waves, or rolls back). A wave that became healthy lets the next one start in the
// same Reconcile — once its checks passed, when the environment verifies between waves (see
// verifyWave). It returns how long to wait for a wave's checks that run, 0 when none do.
func (r *Reconciler) advanceWaves(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus, in rollout.Input, checks []declaredCheck, unreachable map[string]bool, now metav1.Time) time.Duration {
	gated := !in.Rollback && verifiesBetweenWaves(es, checks)
	for {
		wave := openWave(es, gated)
		for c := range r.stepClusters(ctx, es, in, wave, unreachable) {
			unreachable[c] = true
		}
		es.Wave = max(wave, es.Wave)
		if in.Rollback || firstFailed(es) != nil {
			return 0
		}
		// The last wave is verified with the whole environment, after the rollout (verifyAfterRollout).
		if gated && wave < es.Waves && verifiedWave(es) < wave && waveHealthy(es, wave) {
			if after := r.verifyWave(ctx, rel, p, es, checks, wave, now); after > 0 || firstFailed(es) != nil {
				return after
			}
		}
		if openWave(es, gated) == wave {
			return 0
		}
	}
}

// stepClusters runs one rollout step on every cluster that is not done, in parallel, except the
// clusters in skip (not claimed yet) and, forward, the clusters of waves after wave. It returns
// the clusters that could not be reached.
func (r *Reconciler) stepClusters(ctx context.Context, es *ferryv1.ReleaseEnvironmentStatus, base rollout.Input, wave int32, skip map[string]bool) map[string]bool {
	return r.onClusters(ctx, es, base.Now, func(st *ferryv1.ClusterRolloutStatus) bool {
		if skip[st.Cluster] {
			return false
		}
		if base.Rollback {
			return st.CompletionTime == nil
		}
		return inWave(st, wave) && !rollout.Succeeded(st)
	}, func(ctx context.Context, c client.Client, st *ferryv1.ClusterRolloutStatus) error {
		in := base
		in.Cluster = st.Cluster
		_, err := rollout.Step(ctx, c, in, st)
		return err
	})
}

// onClusters runs fn on every cluster of the environment that want selects, in parallel, each
// within its own time limit and with a client of that cluster. A cluster known to be down is
// answered at once by the cluster cache, without a connection. A cluster that cannot be reached
// (or answers unexpectedly) gets a ClusterUnreachable condition and holds only its own rollout.
// It returns the clusters that could not be reached.
func (r *Reconciler) onClusters(ctx context.Context, es *ferryv1.ReleaseEnvironmentStatus, now time.Time, want func(*ferryv1.ClusterRolloutStatus) bool, fn func(context.Context, client.Client, *ferryv1.ClusterRolloutStatus) error) map[string]bool {
	var (
		wg          sync.WaitGroup
		mu          sync.Mutex
		unreachable = map[string]bool{}
	)
	for i := range es.Clusters {
		st := &es.Clusters[i]
		if !want(st) {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, clusterTimeout)
			defer cancel()
			c, err := r.Clusters.Client(cctx, st.Cluster)
			if err == nil {
				err = fn(cctx, c, st)
			}
			if err != nil {
				mu.Lock()
				unreachable[st.Cluster] = true
				mu.Unlock()
				rollout.SetClusterCondition(st, metav1.ConditionFalse, ferryv1.ClusterUnreachableReason, "cluster "+st.Cluster+" cannot be reached: "+clusterError(err), metav1.NewTime(now))
			}
		})
	}
	wg.Wait()
	return unreachable
}

// unreachableRetry is how soon to look again at an environment with clusters that could not be
// reached: when the first of them may be tried again, and not sooner than unreachableRetry. (A
// Cluster that becomes Ready wakes the Release up earlier.)
func (r *Reconciler) unreachableRetry(unreachable map[string]bool) time.Duration {
	next := time.Duration(0)
	for c := range unreachable {
		if d := r.Clusters.RetryIn(c); next == 0 || d < next {
			next = d
		}
	}
	return max(next, unreachableRetry)
}

// startRollback turns a failed rollout into a rollback of every cluster of the environment, so
// that the whole environment returns to its previous image.
func (r *Reconciler) startRollback(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, failed *ferryv1.ClusterRolloutStatus, prev *rollout.Workload, now metav1.Time) {
	cause := "cluster " + failed.Cluster + ": " + meta.FindStatusCondition(failed.Conditions, ferryv1.RolledOutCondition).Message
	target := "nothing to roll back to: environment " + es.Name + " ran nothing before"
	if prev != nil {
		target = "rolling back to " + rollout.ShortImage(prev.Image)
	}
	for i := range es.Clusters {
		st := &es.Clusters[i]
		if rollout.Refused(st) {
			// Nothing was written into a refused namespace: nothing to take back there.
			st.CompletionTime = &now
			continue
		}
		if failed.Wave > 0 && st.Wave > failed.Wave {
			// A later wave never started: nothing was written there, and it does not start now.
			st.CompletionTime = &now
			rollout.SetClusterCondition(st, metav1.ConditionFalse, ferryv1.WaveNotStartedReason,
				fmt.Sprintf("wave %d did not start: cluster %s of wave %d failed", st.Wave, failed.Cluster, failed.Wave), now)
			continue
		}
		st.BatchStartTime, st.BatchHealthyTime, st.CompletionTime = nil, nil, nil
		rollout.SetClusterCondition(st, metav1.ConditionFalse, ferryv1.RollingBackReason, target+" after "+cause, now)
	}
	setEnvRollingBack(es, cause+"; "+target, rel.Generation, now)
	r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.RolloutFailedReason, "RollOut", "Environment %s: %s; %s", es.Name, cause, target)
}

// afterRollback waits for every cluster to be rolled back, then stops the Release with the cause.
func (r *Reconciler) afterRollback(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, prev *rollout.Workload, now metav1.Time) step {
	for _, st := range es.Clusters {
		if st.CompletionTime == nil {
			return wait(r.pollInterval())
		}
	}
	cause := ""
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition); c != nil {
		cause = strings.TrimSuffix(c.Message, "; rolling back to "+shortOf(prev))
	}
	reason, outcome := ferryv1.RolledBackReason, "rolled back to "+shortOf(prev)
	var notBack []string
	for _, st := range es.Clusters {
		if c := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition); (c == nil || (c.Reason != ferryv1.RolledBackReason && c.Reason != ferryv1.WaveNotStartedReason)) && !rollout.Refused(&st) {
			notBack = append(notBack, st.Cluster)
		}
	}
	switch {
	case prev == nil:
		reason, outcome = ferryv1.RolloutFailedReason, "no previous image to roll back to: the workload was left as it is"
	case len(notBack) > 0:
		reason, outcome = ferryv1.RolloutFailedReason, fmt.Sprintf("the rollback to %s did not become healthy on %s", shortOf(prev), strings.Join(notBack, ", "))
	}
	msg := cause + "; " + outcome
	setEnvFailed(es, reason, msg, rel.Generation, now)
	rolloutDuration.WithLabelValues(es.Name, resultOf(&metav1.Condition{Reason: reason})).Observe(rolloutSeconds(es, now))
	r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, reason, "RollBack", "Environment %s: %s", es.Name, msg)
	return stop()
}

func shortOf(w *rollout.Workload) string {
	if w == nil {
		return ""
	}
	return rollout.ShortImage(w.Image)
}

// clusterRolledOut is the RolledOut condition of a cluster's rollout (empty when there is none).
func clusterRolledOut(st *ferryv1.ClusterRolloutStatus) metav1.Condition {
	if c := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func firstFailed(es *ferryv1.ReleaseEnvironmentStatus) *ferryv1.ClusterRolloutStatus {
	for i := range es.Clusters {
		if rollout.Failed(&es.Clusters[i]) {
			return &es.Clusters[i]
		}
	}
	return nil
}

func allSucceeded(es *ferryv1.ReleaseEnvironmentStatus) bool {
	for i := range es.Clusters {
		if !rollout.Succeeded(&es.Clusters[i]) {
			return false
		}
	}
	return true
}

func clusterNames(es *ferryv1.ReleaseEnvironmentStatus) string {
	names := make([]string, 0, len(es.Clusters))
	for _, c := range es.Clusters {
		names = append(names, c.Cluster)
	}
	return strings.Join(names, ", ")
}

// rolloutSeconds is how long the environment's rollout has taken, from the first cluster's start.
func rolloutSeconds(es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) float64 {
	start := now
	for _, c := range es.Clusters {
		if c.StartTime != nil && c.StartTime.Before(&start) {
			start = *c.StartTime
		}
	}
	return now.Sub(start.Time).Seconds()
}

// recordDeployed writes what now runs in the environment into the Project's
// status.environments, and nothing else of the Project's status.
func (r *Reconciler) recordDeployed(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus) error {
	var deployedAt *metav1.Time
	for _, c := range es.Clusters {
		if c.CompletionTime != nil && (deployedAt == nil || deployedAt.Before(c.CompletionTime)) {
			deployedAt = c.CompletionTime.DeepCopy()
		}
	}
	revision := rel.Spec.Revision
	if revision == "" && p.build != nil {
		revision = p.build.Spec.Revision
	}
	// The image's age, kept with it: a later Release is compared with it after its Build is gone.
	builtAt, err := r.builtAt(ctx, rel.Namespace, rel.Spec.Project, p.image, nil)
	if err != nil {
		return err
	}
	entry := ferryv1.ProjectEnvironmentStatus{Name: es.Name, Image: rel.Spec.Image, Revision: revision, Release: rel.Name, DeployedAt: deployedAt, BuiltAt: builtAt}
	err = retry.OnError(retry.DefaultRetry, func(err error) bool { return errors.Is(err, patch.ErrConflict) }, func() error {
		proj := &ferryv1.Project{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}, proj); err != nil {
			return client.IgnoreNotFound(err)
		}
		// A merge patch of status.environments only, guarded by the resourceVersion: the Build
		// controller writes status.lastBuild of the same object.
		patcher := patch.NewStatusPatcher(proj, patch.WithOptimisticLock())
		if cur := deployedIn(proj, es.Name); cur != nil {
			*cur = entry
		} else {
			proj.Status.Environments = append(proj.Status.Environments, entry)
		}
		if err := patcher.Patch(ctx, r.Client, proj); err != nil {
			return err
		}
		p.project.Status.Environments = proj.Status.Environments
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to record the deployment in Project %s: %w", rel.Spec.Project, err)
	}
	return nil
}

var userinfoRE = regexp.MustCompile(`://[^/@\s]+@`)

// clusterError is the message of a failure to reach a cluster, without userinfo in URLs.
func clusterError(err error) string {
	var ce *clusters.Error
	if errors.As(err, &ce) {
		return ce.Message
	}
	return userinfoRE.ReplaceAllString(err.Error(), "://")
}
