package release

import (
	"context"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// targetNamespace is the namespace the Release deploys into in env, from the Environment's
// template, and the environment's targets. A template that gives no valid namespace, or a
// reserved one, stops the environment before anything is asked of approvers or clusters.
func (r *Reconciler) targetNamespace(rel *ferryv1.Release, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (string, []target, bool) {
	project := types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}
	ns, err := rollout.NamespaceFor(env.Spec.NamespaceTemplate, project, env.Name)
	if err != nil {
		setEnvStopped(es, ferryv1.FailedReason, err.Error(), rel.Generation, now)
		return "", nil, false
	}
	if err := rollout.CheckReserved(ns, r.Namespace, env.Name); err != nil {
		setEnvStopped(es, ferryv1.NamespaceReservedReason, err.Error(), rel.Generation, now)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.NamespaceReservedReason, "RollOut", "Environment %s: %s", env.Name, err.Error())
		return "", nil, false
	}
	return ns, targetsOf(env.Spec.Clusters, ns), true
}

// namespaceRules are the Environment's rules for namespaces its Projects do not own yet.
func (r *Reconciler) namespaceRules(env *ferryv1.Environment) rollout.NamespaceRules {
	return rollout.NamespaceRules{Adopt: env.Spec.ExistingNamespaces == ferryv1.AdoptExistingNamespaces, FerryNamespace: r.Namespace}
}

// restrictPodAnnotations keeps, in a workload's deploy settings, the pod annotations the
// Environment allows.
func restrictPodAnnotations(w *rollout.Workload, env *ferryv1.Environment) {
	if w == nil || len(w.Deploy.PodAnnotations) == 0 {
		return
	}
	// A new map: the settings may be shared with the plan.
	w.Deploy.PodAnnotations, _ = rollout.AllowPodAnnotations(w.Deploy.PodAnnotations, env.Spec.AllowedPodAnnotations)
}

// droppedAnnotations are the pod annotations of the Release's deploy settings that env does not
// allow, sorted.
func droppedAnnotations(p *plan, env *ferryv1.Environment) []string {
	_, dropped := rollout.AllowPodAnnotations(p.deploy.PodAnnotations, env.Spec.AllowedPodAnnotations)
	return dropped
}

// droppedNote is appended to the environment's messages when pod annotations were not applied.
func droppedNote(p *plan, env *ferryv1.Environment) string {
	dropped := droppedAnnotations(p, env)
	if len(dropped) == 0 {
		return ""
	}
	return "; pod annotations not allowed in environment " + env.Name + " (spec.allowedPodAnnotations) were not applied: " + strings.Join(dropped, ", ")
}

// reportDroppedAnnotations emits a Warning event when the rollout into env starts without some of
// the pod annotations the Release asked for.
func (r *Reconciler) reportDroppedAnnotations(rel *ferryv1.Release, p *plan, env *ferryv1.Environment) {
	if dropped := droppedAnnotations(p, env); len(dropped) > 0 {
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.PodAnnotationsDroppedReason, "RollOut",
			"Environment %s does not allow the pod annotations %s (spec.allowedPodAnnotations): they were not applied", env.Name, strings.Join(dropped, ", "))
	}
}

// input is what a rollout step in env needs: the Release's workload and the previous one (the
// rollback target), both with only the pod annotations env allows, the strategy and the
// namespace rules.
func (r *Reconciler) input(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, back bool, now metav1.Time) rollout.Input {
	ns := es.Clusters[0].Namespace
	in := rollout.Input{
		Workload:   p.workload(rel, es.Name, ns),
		Previous:   r.previousWorkload(ctx, rel, p, es, ns),
		Strategy:   rollout.StrategyOf(env),
		Rollback:   back,
		Namespaces: r.namespaceRules(env),
		Now:        now.Time,
	}
	restrictPodAnnotations(in.Workload, env)
	restrictPodAnnotations(in.Previous, env)
	return in
}

// claimNamespaces makes sure, on every cluster the rollout has not started on, that the target
// namespace belongs to the Project (see rollout.Claim), before anything else is written on any
// cluster. A refused cluster gets a RolledOut=False condition with the reason. It returns the
// clusters it could not reach: the rollout does not start there in this pass.
func (r *Reconciler) claimNamespaces(ctx context.Context, es *ferryv1.ReleaseEnvironmentStatus, in rollout.Input) map[string]bool {
	now := metav1.NewTime(in.Now)
	return r.onClusters(ctx, es, in.Now, func(st *ferryv1.ClusterRolloutStatus) bool {
		return st.StartTime == nil && !rollout.Succeeded(st) && !rollout.Failed(st)
	}, func(ctx context.Context, c client.Client, st *ferryv1.ClusterRolloutStatus) error {
		err := rollout.Claim(ctx, c, st.Cluster, in.Workload, in.Namespaces)
		if ne, ok := rollout.IsNamespaceRefused(err); ok {
			rollout.SetClusterCondition(st, metav1.ConditionFalse, ne.Reason, ne.Message, now)
			return nil
		}
		return err
	})
}

// anyStarted reports whether the rollout started writing on a cluster of the environment.
func anyStarted(es *ferryv1.ReleaseEnvironmentStatus) bool {
	for _, c := range es.Clusters {
		if c.StartTime != nil {
			return true
		}
	}
	return false
}

// refuseEnvironment stops an environment whose namespace was refused on a cluster before anything
// was written anywhere.
func (r *Reconciler) refuseEnvironment(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) {
	var reason string
	var msgs []string
	for i := range es.Clusters {
		st := &es.Clusters[i]
		if !rollout.Refused(st) {
			continue
		}
		st.CompletionTime = &now
		c := clusterRolledOut(st)
		if reason == "" {
			reason = c.Reason
		}
		msgs = append(msgs, "cluster "+st.Cluster+": "+c.Message)
	}
	msg := strings.Join(msgs, "; ") + "; nothing was written on any cluster of environment " + es.Name
	setEnvFailed(es, reason, msg, rel.Generation, now)
	rolloutDuration.WithLabelValues(es.Name, resultOf(&metav1.Condition{Reason: reason})).Observe(rolloutSeconds(es, now))
	r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, reason, "RollOut", "Environment %s: %s", es.Name, msg)
}
