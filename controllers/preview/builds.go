package preview

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// BuildWatcher turns each successful Build of a merge request, for a Project with previews
// enabled, into the merge request's Preview (creating it, or pointing it at the newer Build). A
// new Preview that would take the Project over its cap first deletes the least recently active.
type BuildWatcher struct {
	client.Client
	// Recorder emits events on Builds whose preview cannot be made.
	Recorder events.EventRecorder
}

// Reconcile makes the Preview of one Build's merge request show it.
func (w *BuildWatcher) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &ferryv1.Build{}
	if err := w.Get(ctx, req.NamespacedName, b); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	iid := b.Spec.Trigger.MergeRequestIID
	if b.Spec.Trigger.Kind != ferryv1.TriggerMergeRequest || iid <= 0 || !succeeded(b) {
		return ctrl.Result{}, nil
	}
	p := &ferryv1.Project{}
	if err := w.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.Spec.Preview == nil || !p.Spec.Preview.Enabled {
		return ctrl.Result{}, nil
	}
	name := ferryv1.PreviewName(p.Name, iid)
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		w.warn(b, fmt.Sprintf("no preview: %q is not a valid namespace name (Project names for previews must leave room for -mr-%d within 63 characters)", name, iid))
		return ctrl.Result{}, nil
	}
	pv := &ferryv1.Preview{}
	err := w.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: name}, pv)
	switch {
	case apierrors.IsNotFound(err):
		if err := w.makeRoom(ctx, p); err != nil {
			return ctrl.Result{}, err
		}
		pv = &ferryv1.Preview{
			ObjectMeta: metav1.ObjectMeta{
				Namespace: b.Namespace, Name: name,
				Labels: map[string]string{ferryv1.ProjectLabel: p.Name, ferryv1.PreviewLabel: strconv.FormatInt(iid, 10)},
			},
			Spec: ferryv1.PreviewSpec{Project: p.Name, MergeRequestIID: iid, Build: b.Name},
		}
		if err := controllerutil.SetControllerReference(p, pv, w.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, client.IgnoreAlreadyExists(w.Create(ctx, pv))
	case err != nil:
		return ctrl.Result{}, err
	}
	if !pv.DeletionTimestamp.IsZero() || pv.Spec.Build == b.Name {
		return ctrl.Result{}, nil
	}
	if newer, err := w.newer(ctx, b, pv.Spec.Build); err != nil || !newer {
		return ctrl.Result{}, err
	}
	before := pv.DeepCopy()
	pv.Spec.Build = b.Name
	return ctrl.Result{}, w.Patch(ctx, pv, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}))
}

// newer reports whether b was created after the Build the Preview runs (true when that one is
// gone).
func (w *BuildWatcher) newer(ctx context.Context, b *ferryv1.Build, current string) (bool, error) {
	cur := &ferryv1.Build{}
	if err := w.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: current}, cur); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	}
	if !b.CreationTimestamp.Equal(&cur.CreationTimestamp) {
		return cur.CreationTimestamp.Before(&b.CreationTimestamp), nil
	}
	return b.Name > cur.Name, nil
}

// makeRoom deletes the least recently active Previews of the Project until one more fits under
// its cap.
func (w *BuildWatcher) makeRoom(ctx context.Context, p *ferryv1.Project) error {
	list := &ferryv1.PreviewList{}
	if err := w.List(ctx, list, client.InNamespace(p.Namespace), client.MatchingLabels{ferryv1.ProjectLabel: p.Name}); err != nil {
		return err
	}
	live := list.Items[:0]
	for _, pv := range list.Items {
		if pv.DeletionTimestamp.IsZero() && pv.Spec.Project == p.Name {
			live = append(live, pv)
		}
	}
	sortOldestFirst(live)
	for i := 0; len(live)-i >= p.Spec.Preview.Max(); i++ {
		old := &live[i]
		ctrl.LoggerFrom(ctx).Info("Deleting the least recently active preview to stay under the cap", "preview", old.Name, "maxPreviews", p.Spec.Preview.Max())
		if w.Recorder != nil {
			w.Recorder.Eventf(old, nil, corev1.EventTypeNormal, "PreviewEvicted", "Delete", "the preview is deleted: Project %s has %d previews at most (maxPreviews) and this one was the least recently active", p.Name, p.Spec.Preview.Max())
		}
		if err := w.Delete(ctx, old); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}

func succeeded(b *ferryv1.Build) bool {
	c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	return c != nil && c.Status == metav1.ConditionTrue && b.Status.Image != ""
}

func (w *BuildWatcher) warn(b *ferryv1.Build, msg string) {
	if w.Recorder != nil {
		w.Recorder.Eventf(b, nil, corev1.EventTypeWarning, "PreviewFailed", "Preview", "%s", msg)
	}
}

// SetupWithManager registers the Preview controller ("preview") and the Build watcher
// ("previewbuilds").
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Preview{}).
		Named("preview").
		Complete(r); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Build{}).
		Named("previewbuilds").
		Complete(&BuildWatcher{Client: r.Client, Recorder: r.Recorder})
}
