package release

import (
	"context"
	"fmt"
	"path"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// AutoReleaser creates a Release when a Build of a ref that its Project's autoRelease policy
// names succeeds, if a GitLab push or tag push (not a person) made the Build. The Release is named
// after the Build, so a retry or a second manager replica never makes a second one.
type AutoReleaser struct {
	client.Client
	// Recorder emits events.
	Recorder events.EventRecorder
}

// Reconcile releases one Build if it succeeded and its ref is a release ref.
func (a *AutoReleaser) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &ferryv1.Build{}
	if err := a.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !releasable(b) {
		return ctrl.Result{}, nil
	}
	p := &ferryv1.Project{}
	if err := a.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if len(p.Spec.Promotion.Environments) == 0 || !MatchesAutoRelease(p.Spec.Promotion.AutoRelease, b.Spec.Ref) {
		return ctrl.Result{}, nil
	}
	image, err := rollout.PinnedImage(b.Status.Image)
	if err != nil {
		a.Recorder.Eventf(b, nil, corev1.EventTypeWarning, ferryv1.FailedReason, "AutoRelease", "Not released: %v", err)
		return ctrl.Result{}, nil
	}
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: b.Namespace,
			Name:      b.Name,
			Labels:    map[string]string{},
		},
		Spec: ferryv1.ReleaseSpec{
			Project:  b.Spec.Project,
			Build:    b.Name,
			Image:    image,
			Revision: b.Spec.Revision,
			// The Release keeps its own copy: it outlives the Build's history limit.
			Deploy: b.Status.Deploy.DeepCopy(),
		},
	}
	for k, v := range map[string]string{ferryv1.ProjectLabel: b.Spec.Project, ferryv1.BuildLabel: b.Name} {
		if len(validation.IsValidLabelValue(v)) == 0 {
			rel.Labels[k] = v
		}
	}
	if err := a.Create(ctx, rel); client.IgnoreAlreadyExists(err) != nil {
		return ctrl.Result{}, fmt.Errorf("failed to create Release %s: %w", rel.Name, err)
	} else if err == nil {
		a.Recorder.Eventf(b, rel, corev1.EventTypeNormal, "Released", "AutoRelease", "Released %s as Release %s along %s", rollout.ShortImage(image), rel.Name, strings.Join(p.Spec.Promotion.Environments, " → "))
	}
	before := b.DeepCopy()
	if b.Annotations == nil {
		b.Annotations = map[string]string{}
	}
	b.Annotations[ferryv1.ReleasedAnnotation] = rel.Name
	if err := a.Patch(ctx, b, client.MergeFrom(before)); err != nil {
		return ctrl.Result{}, fmt.Errorf("failed to mark Build %s as released: %w", b.Name, err)
	}
	return ctrl.Result{}, nil
}

// releasable: a push or tag push that Ferry's receiver recorded made the Build, which succeeded,
// recorded its image and was not released before. A Manual Build is released by a person: its
// ref is whatever its creator wrote.
func releasable(b *ferryv1.Build) bool {
	return (b.Spec.Trigger.Kind == ferryv1.TriggerPush || b.Spec.Trigger.Kind == ferryv1.TriggerTag) &&
		b.DeletionTimestamp.IsZero() &&
		b.Annotations[ferryv1.ReleasedAnnotation] == "" &&
		b.Status.Image != "" &&
		meta.IsStatusConditionTrue(b.Status.Conditions, ferryv1.ReadyCondition)
}

// MatchesAutoRelease reports whether a Build of ref is released automatically under the policy:
// refs/heads/<branch> against its branch patterns, refs/tags/<tag> against its tag patterns
// (shell globs, as path.Match).
func MatchesAutoRelease(policy *ferryv1.AutoRelease, ref string) bool {
	if policy == nil {
		return false
	}
	var name string
	var patterns []string
	switch {
	case strings.HasPrefix(ref, "refs/heads/"):
		name, patterns = strings.TrimPrefix(ref, "refs/heads/"), policy.Branches
	case strings.HasPrefix(ref, "refs/tags/"):
		name, patterns = strings.TrimPrefix(ref, "refs/tags/"), policy.Tags
	default:
		return false
	}
	for _, pattern := range patterns {
		if ok, err := path.Match(pattern, name); err == nil && ok {
			return true
		}
	}
	return false
}

// SetupWithManager registers the controller for Builds that became releasable.
func (a *AutoReleaser) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Build{}, builder.WithPredicates(predicate.NewPredicateFuncs(func(o client.Object) bool {
			return releasable(o.(*ferryv1.Build))
		}))).
		Named("autorelease").
		Complete(a)
}
