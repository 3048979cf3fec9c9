package release

import (
	"context"
	"errors"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/rollout"
)

// finalize takes back a rollout the deleted Release left unfinished, so that no environment is
// left half on an image nobody tracks, then lets the Release go.
func (r *Reconciler) finalize(ctx context.Context, rel *ferryv1.Release) error {
	if !controllerutil.ContainsFinalizer(rel, Finalizer) {
		return nil
	}
	if err := r.abandon(ctx, rel); err != nil {
		return err
	}
	before := rel.DeepCopy()
	controllerutil.RemoveFinalizer(rel, Finalizer)
	if err := r.Patch(ctx, rel, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(err)
	}
	return nil
}

// abandon rolls back, once on every cluster, each environment the Release was still writing into.
// A cluster whose Cluster object or credentials are gone is skipped; one that does not answer is
// retried.
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
	for _, es := range open {
		env := &ferryv1.Environment{}
		if err := r.Get(ctx, types.NamespacedName{Name: es.Name}, env); err != nil {
			if isNotFound(err) {
				continue
			}
			return err
		}
		ns := es.Clusters[0].Namespace
		in := rollout.Input{
			Workload: p.workload(rel, es.Name, ns),
			Previous: r.previousWorkload(ctx, rel, p, es, ns),
			Strategy: rollout.StrategyOf(env),
			Rollback: true,
			Now:      r.now().Time,
		}
		for i := range es.Clusters {
			st := es.Clusters[i].DeepCopy()
			st.CompletionTime = nil
			in.Cluster = st.Cluster
			c, err := r.Clusters.Client(ctx, st.Cluster)
			if err == nil {
				_, err = rollout.Step(ctx, c, in, st)
			}
			var ce *clusters.Error
			switch {
			case errors.As(err, &ce):
				log.Info("Skipping a cluster that cannot be reached while deleting a Release", "cluster", st.Cluster, "reason", ce.Message)
			case err != nil:
				return fmt.Errorf("failed to roll back cluster %s of environment %s: %w", st.Cluster, es.Name, err)
			}
		}
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.CancelledReason, "Delete", "The Release was deleted while rolling out to environment %s: rolled back", es.Name)
	}
	return nil
}
