package release

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/text"
	"github.com/ferryci/ferry/internal/window"
)

// +kubebuilder:rbac:groups=ferry.dev,resources=freezes,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// deployWindow makes the environment wait while its deploy windows, its freezes, its lock or a
// cluster-wide Freeze keep rollouts from starting, and looks again when they open; a break-glass
// Approval lets this Release through. It only runs before a rollout starts: a window that closes
// or a freeze that begins never interrupts a rollout.
func (r *Reconciler) deployWindow(ctx context.Context, rel *ferryv1.Release, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	freezes := &ferryv1.FreezeList{}
	if err := r.List(ctx, freezes); err != nil {
		return step{}, fmt.Errorf("failed to list Freezes: %w", err)
	}
	var nsLabels labels.Set
	if slices.ContainsFunc(freezes.Items, func(f ferryv1.Freeze) bool { return f.Spec.NamespaceSelector != nil }) {
		ns := &corev1.Namespace{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Name: rel.Namespace}, ns); err != nil {
			return step{}, fmt.Errorf("failed to read namespace %s: %w", rel.Namespace, err)
		}
		nsLabels = labels.Set(ns.Labels)
		if nsLabels == nil {
			nsLabels = labels.Set{}
		}
	}
	windows, frozen, err := window.ForEnvironment(env, freezes.Items, nsLabels)
	if err != nil {
		// Admission refuses such windows; one that got in keeps the environment closed.
		es.WindowOpensAt = nil
		if prev := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); prev == nil || prev.Message != err.Error() {
			r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.WaitingForWindowReason, "Wait", "Environment %s: %s", env.Name, err.Error())
		}
		setEnvWaiting(es, ferryv1.WaitingForWindowReason, err.Error(), gen, now)
		return wait(0), nil
	}
	st := window.Evaluate(windows, frozen, now.Time)
	if st.Open {
		es.WindowOpensAt = nil
		observeWindowWait(env, es, "opened", now)
		return proceed(), nil
	}
	reason, msg := closedMessage(env, st)
	bg, err := r.breakGlass(ctx, rel, env)
	if err != nil {
		return step{}, err
	}
	if bg != nil {
		es.WindowOpensAt = nil
		if es.BreakGlass == nil || es.BreakGlass.Approval != bg.Name {
			t := now
			es.BreakGlass = &ferryv1.BreakGlassRecord{Approval: bg.Name, User: bg.Spec.Approver.Username, Reason: bg.Spec.Comment, Overrode: text.Truncate(msg, 2000), Time: &t}
			r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.BreakGlassReason, "BreakGlass", "Environment %s: %s broke glass (%s) through: %s", env.Name, bg.Spec.Approver.Username, bg.Spec.Comment, msg)
			breakGlassTotal.WithLabelValues(env.Name).Inc()
			observeWindowWait(env, es, "break_glass", now)
		}
		return proceed(), nil
	}
	if prev := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); prev == nil || prev.Reason != reason {
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, reason, "Wait", "Environment %s: %s", env.Name, msg)
	}
	setEnvWaiting(es, reason, msg, gen, now)
	if st.OpensAt.IsZero() {
		es.WindowOpensAt = nil
		return wait(0), nil
	}
	opens := metav1.NewTime(st.OpensAt)
	es.WindowOpensAt = &opens
	// Look again when it opens, by the reconciler's clock; a Freeze or Environment change wakes
	// the Release earlier.
	return wait(max(st.OpensAt.Sub(now.Time), 0)), nil
}

// observeWindowWait records how long the environment waited for its windows or a freeze, when its
// Ready condition still says it waits: from when it began to wait until what let it go. (A wait for
// the lock is not counted: its reason, EnvironmentLocked, is also that of the deploy lock another
// Release holds.)
func observeWindowWait(env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, by string, now metav1.Time) {
	ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
	if ready == nil || (ready.Reason != ferryv1.WaitingForWindowReason && ready.Reason != ferryv1.FrozenReason) {
		return
	}
	windowWait.WithLabelValues(env.Name, by).Observe(max(now.Sub(ready.LastTransitionTime.Time).Seconds(), 0))
}

// closedMessage is the reason and message of an environment that its windows or freezes keep
// closed: EnvironmentLocked (the lock, worded as it always was), Frozen (a freeze), or
// WaitingForWindow (deploy windows only).
func closedMessage(env *ferryv1.Environment, st window.State) (string, string) {
	reason := ferryv1.WaitingForWindowReason
	var lock *window.Freeze
	var others []string
	for _, b := range st.Blockers {
		if b.Kind == window.FreezeBlocker {
			if b.Freeze.Kind == window.Lock {
				lock = b.Freeze
				continue
			}
			reason = ferryv1.FrozenReason
		}
		others = append(others, b.Describe())
	}
	var msg string
	if lock != nil {
		reason = ferryv1.EnvironmentLockedReason
		msg = "environment " + env.Name + " is locked"
		if lock.Reason != "" {
			msg += ": " + lock.Reason
		}
		if len(others) > 0 {
			msg += "; " + strings.Join(others, "; ")
		}
		return reason, msg
	}
	msg = "environment " + env.Name + " is closed to rollouts: " + strings.Join(others, "; ")
	if !st.OpensAt.IsZero() {
		msg += "; opens at " + st.OpensAt.UTC().Format("2006-01-02T15:04:05Z07:00")
	}
	return reason, msg
}

// breakGlass is the first break-glass Approval on this Release and environment, bound to its
// image, from someone the Environment's policy lets break glass now; nil when there is none.
func (r *Reconciler) breakGlass(ctx context.Context, rel *ferryv1.Release, env *ferryv1.Environment) (*ferryv1.Approval, error) {
	all, err := r.approvals(ctx, rel)
	if err != nil {
		return nil, err
	}
	var candidates []*ferryv1.Approval
	for i := range all {
		a := &all[i]
		if !a.Spec.BreakGlass || a.Spec.Environment != env.Name || a.Spec.Decision != ferryv1.DecisionApprove || a.Spec.Approver == nil ||
			a.Spec.Image != rel.Spec.Image || strings.TrimSpace(a.Spec.Comment) == "" || a.DeletionTimestamp != nil {
			continue
		}
		if approval.MayBreakGlass(env, a.Spec.Approver.Username, a.Spec.Approver.Groups) != nil {
			continue
		}
		candidates = append(candidates, a)
	}
	if len(candidates) == 0 {
		return nil, nil
	}
	return slices.MinFunc(candidates, func(a, b *ferryv1.Approval) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	}), nil
}

// releasesBeforeRollout are the unfinished Releases with an environment that has not started its
// rollout: a Freeze that begins, ends or changes may let them start or keep them waiting.
func (r *Reconciler) releasesBeforeRollout(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.releasesWhere(ctx, func(rel *ferryv1.Release) bool {
		if rel.Status.CompletionTime != nil {
			return false
		}
		return len(rel.Status.Environments) == 0 || slices.ContainsFunc(rel.Status.Environments, func(es ferryv1.ReleaseEnvironmentStatus) bool {
			return es.CompletionTime == nil && !rolloutStarted(&es)
		})
	})
}
