package release

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/conditions"
	"github.com/ferryci/ferry/internal/patch"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/text"
)

// maxCleanupAttempts bounds how many times the deletion of a Release retries taking its rollout
// back on a cluster that answers with errors; a cluster that does not answer at all (or is known
// to be down) is given up at once.
const maxCleanupAttempts = 5

// finalize takes back a rollout the deleted Release left unfinished, so that no environment is
// left half on an image nobody tracks, then lets the Release go. Where that cannot be done, what
// was left is recorded (the CleanedUp condition and an event) before the finalizer goes.
func (r *Reconciler) finalize(ctx context.Context, rel *ferryv1.Release) error {
	if !controllerutil.ContainsFinalizer(rel, ferryv1.ReleaseFinalizer) {
		return nil
	}
	if err := r.abandon(ctx, rel); err != nil {
		return err
	}
	r.cleanups.forget(rel.UID)
	before := rel.DeepCopy()
	controllerutil.RemoveFinalizer(rel, ferryv1.ReleaseFinalizer)
	if err := r.Patch(ctx, rel, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// leftBehind is what a deleted Release could not take back on one cluster.
type leftBehind struct {
	cluster, namespace, objects, why string
}

func (l leftBehind) String() string {
	return fmt.Sprintf("cluster %s (%s): %s in namespace %s", l.cluster, l.why, l.objects, l.namespace)
}

// abandon rolls back, once on every cluster, each environment the Release was still writing into.
// A cluster that cannot be reached, is known to be down, or whose Cluster object or credentials
// are gone is given up at once; one that keeps answering with errors is retried, at most
// maxCleanupAttempts times. What the Release had written on a cluster given up is recorded.
func (r *Reconciler) abandon(ctx context.Context, rel *ferryv1.Release) error {
	log := ctrl.LoggerFrom(ctx)
	var open []*ferryv1.ReleaseEnvironmentStatus
	for i := range rel.Status.Environments {
		if es := &rel.Status.Environments[i]; holdsLock(es) {
			open = append(open, es)
		}
	}
	if len(open) == 0 {
		return nil
	}
	p, err := r.resolve(ctx, rel)
	if err != nil {
		log.Info("Cannot roll back the rollout of a deleted Release", "reason", err.Error())
		return nil
	}
	var (
		left    []leftBehind
		failing []leftBehind
		errs    []error
	)
	for _, es := range open {
		if len(es.Clusters) == 0 {
			continue
		}
		env := &ferryv1.Environment{}
		if err := r.Get(ctx, types.NamespacedName{Name: es.Name}, env); err != nil {
			if apierrors.IsNotFound(err) {
				continue
			}
			return err
		}
		in := r.input(ctx, rel, p, env, es, true, r.now())
		envLeft := false
		for i := range es.Clusters {
			started := es.Clusters[i].StartTime != nil
			st := es.Clusters[i].DeepCopy()
			if rollout.Refused(st) {
				continue // nothing was written into a refused namespace
			}
			st.CompletionTime = nil
			in.Cluster = st.Cluster
			err := r.rollBackOn(ctx, in, st)
			if err == nil {
				continue
			}
			what := leftBehind{cluster: st.Cluster, namespace: st.Namespace, objects: leftObjects(in), why: clusterError(err)}
			switch {
			case !started:
				// The rollout had written nothing there (at most its empty namespace).
				log.Info("Skipping a cluster the rollout had not started on while deleting a Release", "cluster", st.Cluster, "reason", what.why)
			case clusters.IsUnreachable(err):
				left, envLeft = append(left, what), true
			default:
				failing, envLeft = append(failing, what), true
				errs = append(errs, fmt.Errorf("failed to roll back cluster %s of environment %s: %w", st.Cluster, es.Name, err))
			}
		}
		if !envLeft {
			r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.CancelledReason, "Delete", "The Release was deleted while rolling out to environment %s: rolled back", es.Name)
		}
	}
	if len(errs) > 0 && r.cleanups.add(rel.UID) < maxCleanupAttempts {
		return errors.Join(errs...)
	}
	return r.recordCleanup(ctx, rel, append(left, failing...))
}

// rollBackOn runs one rollback step on a cluster within its time limit.
func (r *Reconciler) rollBackOn(ctx context.Context, in rollout.Input, st *ferryv1.ClusterRolloutStatus) error {
	ctx, cancel := context.WithTimeout(ctx, clusterTimeout)
	defer cancel()
	c, err := r.Clusters.Client(ctx, st.Cluster)
	if err != nil {
		return err
	}
	_, err = rollout.Step(ctx, c, in, st)
	return err
}

// leftObjects names what a rollout writes that its rollback would have changed: the stable
// Deployment (with the Release's image) and, under the Batch strategy, the canary.
func leftObjects(in rollout.Input) string {
	objects := "Deployment " + rollout.DeploymentName(in.Workload.Project, rollout.StableTrack)
	if in.Strategy.Type == ferryv1.BatchStrategy {
		objects += " and Deployment " + rollout.DeploymentName(in.Workload.Project, rollout.CanaryTrack)
	}
	objects += " (perhaps with " + rollout.ShortImage(in.Workload.Image)
	if in.Previous != nil {
		objects += ", not " + rollout.ShortImage(in.Previous.Image) + " as before"
	}
	return objects + ")"
}

// recordCleanup writes the CleanedUp condition, and for what was left an event, while the
// finalizer still holds the Release.
func (r *Reconciler) recordCleanup(ctx context.Context, rel *ferryv1.Release, left []leftBehind) error {
	patcher := patch.NewStatusPatcher(rel)
	now := r.now()
	if len(left) == 0 {
		conditions.Set(&rel.Status.Conditions, ferryv1.CleanedUpCondition, metav1.ConditionTrue, ferryv1.RolledBackOnDeleteReason,
			"every unfinished rollout was taken back", rel.Generation, now)
		return patcher.Patch(ctx, r.Client, rel)
	}
	parts := make([]string, 0, len(left))
	for _, l := range left {
		parts = append(parts, l.String())
	}
	msg := "the Release was deleted while rolling out and could not take it back on " + strings.Join(parts, "; ") +
		": left as they were; roll the environment back by hand (ferry rollback) once the cluster answers"
	conditions.Set(&rel.Status.Conditions, ferryv1.CleanedUpCondition, metav1.ConditionFalse, ferryv1.ObjectsLeftReason, msg, rel.Generation, now)
	if err := patcher.Patch(ctx, r.Client, rel); err != nil {
		return err
	}
	r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.ObjectsLeftReason, "Delete", "%s", text.Message(msg))
	return nil
}
