// Package release holds the Release controller, which carries one image digest through a
// Project's environments — wait for the previous environment, the deploy lock and the approval
// gate, then roll out on every cluster of the environment in parallel, roll back if that fails,
// record what runs — and the auto-release controller, which turns a successful Build of a release
// ref into a Release.
package release

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/patch"
)

const (
	// DefaultPollInterval is how often a rollout in progress is looked at.
	DefaultPollInterval = time.Second
	// unreachableRetry is how soon an unreachable cluster is tried again.
	unreachableRetry = 5 * time.Second
	// clusterTimeout bounds one step on one cluster, so that a cluster that does not answer holds
	// only its own rollout.
	clusterTimeout = 20 * time.Second
	// stalledRetry is how soon a Release waiting for something the controller does not watch (a
	// pull Secret in the Project's namespace) looks again.
	stalledRetry = 30 * time.Second

	projectIndex = "spec.project"
	releaseIndex = "spec.release"
	// imageDigestIndex indexes Builds by the digest of the image they pushed: the age of an image
	// is that of the Build that made it.
	imageDigestIndex = "status.image.digest"
)

// Reconciler promotes Releases.
type Reconciler struct {
	client.Client
	// APIReader reads without the cache: the deploy lock is taken on what the API server says.
	APIReader client.Reader
	// Clusters hands out clients of target clusters.
	Clusters *clusters.Cache
	// Recorder emits events.
	Recorder events.EventRecorder
	// PollInterval is how often a rollout in progress is looked at. Default DefaultPollInterval.
	PollInterval time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Identities maps the GitLab users who trigger Builds to Kubernetes users, for the
	// self-approval rule when decisions are counted.
	Identities approval.IdentityMapping
	// Namespace is Ferry's own namespace: no Environment deploys into it.
	Namespace string
	// VerifyTargets, when set, hands out the clients verification checks use instead of Clusters
	// (tests).
	VerifyTargets VerifyTarget

	locks keyedMutex
	// cleanups counts, per Release being deleted, the attempts to take its rollout back that
	// failed for another reason than an unreachable cluster (see abandon).
	cleanups attempts
}

// +kubebuilder:rbac:groups=ferry.dev,resources=releases,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=releases/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=releases/finalizers,verbs=update
// +kubebuilder:rbac:groups=ferry.dev,resources=approvals;environments;clusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one Release as far along its path as it can go now.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	rel := &ferryv1.Release{}
	if err := r.Get(ctx, req.NamespacedName, rel); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	// One Reconcile at a time per project: the deploy lock and supersession compare Releases of
	// the same project.
	defer r.locks.lock(rel.Namespace + "/" + rel.Spec.Project)()
	// Work on the Release as the API server has it: the cache may not have seen the status the
	// previous Reconcile wrote, and a transition (an event, a metric, a recorded deployment) must
	// happen once.
	if err := r.APIReader.Get(ctx, req.NamespacedName, rel); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}

	if !rel.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.finalize(ctx, rel)
	}
	if !controllerutil.ContainsFinalizer(rel, ferryv1.ReleaseFinalizer) {
		before := rel.DeepCopy()
		controllerutil.AddFinalizer(rel, ferryv1.ReleaseFinalizer)
		if err := r.Patch(ctx, rel, client.MergeFrom(before)); err != nil {
			return ctrl.Result{}, fmt.Errorf("failed to add the finalizer: %w", err)
		}
	}
	patcher := patch.NewStatusPatcher(rel)
	var p *plan
	defer func() {
		retErr = errors.Join(retErr, patcher.Patch(ctx, r.Client, rel))
		// The deploy lock this Reconcile took is in the status now: others can see it.
		p.releaseLocks()
	}()
	if err := r.requestReverify(ctx, rel, patcher); err != nil {
		return ctrl.Result{}, err
	}
	done := rel.Status.CompletionTime != nil
	if done && !slices.ContainsFunc(rel.Status.Environments, func(es ferryv1.ReleaseEnvironmentStatus) bool { return reverifying(&es) }) {
		return ctrl.Result{}, nil
	}
	if !done {
		rel.Status.ObservedGeneration = rel.Generation
	}

	p, err := r.resolve(ctx, rel)
	if err != nil && done {
		r.failReverifications(rel, err.Error(), r.now())
		return ctrl.Result{}, nil
	}
	if err != nil {
		var stall *stalledError
		if errors.As(err, &stall) {
			setStalled(rel, stall.reason, stall.message, r.now())
			if stall.retry {
				return ctrl.Result{RequeueAfter: stalledRetry}, nil
			}
			return ctrl.Result{}, reconcile.TerminalError(err)
		}
		return ctrl.Result{}, err
	}
	if err := r.reRequest(ctx, rel, patcher); err != nil {
		return ctrl.Result{}, err
	}
	// Re-verifications run in environments the Release already rolled out to, finished or not.
	again, err := r.reverify(ctx, rel, p, r.now())
	if err != nil || done {
		return ctrl.Result{RequeueAfter: again}, err
	}
	res, err := r.promote(ctx, rel, p)
	if again > 0 && (res.RequeueAfter == 0 || again < res.RequeueAfter) {
		res.RequeueAfter = again
	}
	return res, err
}

// promote walks the path: environments that succeeded are passed, the first one that did not is
// worked on, and the ones after it wait.
func (r *Reconciler) promote(ctx context.Context, rel *ferryv1.Release, p *plan) (ctrl.Result, error) {
	now := r.now()
	ensureEnvironments(rel, p.path, now)
	defer func() {
		wasDone := rel.Status.CompletionTime != nil
		summarize(rel, p.path, now)
		if !wasDone && rel.Status.CompletionTime != nil {
			r.finished(rel)
		}
	}()
	for _, name := range p.path {
		es := envStatus(rel, name)
		if envSucceeded(es) {
			continue
		}
		if es.CompletionTime != nil {
			return ctrl.Result{}, nil
		}
		st, err := r.reconcileEnvironment(ctx, rel, p, es, now)
		if err != nil {
			return ctrl.Result{}, err
		}
		if !st.proceeds() {
			return st.result(), nil
		}
	}
	return ctrl.Result{}, nil
}

// finished records a Release that reached its end, in events and metrics.
func (r *Reconciler) finished(rel *ferryv1.Release) {
	ready := readyCondition(rel)
	result := resultOf(ready)
	releasesTotal.WithLabelValues(result).Inc()
	eventType := corev1.EventTypeNormal
	if result != resultSucceeded {
		eventType = corev1.EventTypeWarning
	}
	r.Recorder.Eventf(rel, nil, eventType, ready.Reason, "Finish", "%s", ready.Message)
}

func (r *Reconciler) now() metav1.Time {
	if r.Now != nil {
		return metav1.NewTime(r.Now().Truncate(time.Second))
	}
	return metav1.NewTime(time.Now().Truncate(time.Second))
}

func (r *Reconciler) pollInterval() time.Duration {
	if r.PollInterval > 0 {
		return r.PollInterval
	}
	return DefaultPollInterval
}

// reRequest opens a new approval window for each environment named in the Release's
// ReRequestAnnotation whose gate is waiting or expired, then removes the annotation.
func (r *Reconciler) reRequest(ctx context.Context, rel *ferryv1.Release, patcher *patch.StatusPatcher) error {
	value, ok := rel.Annotations[ferryv1.ReRequestAnnotation]
	if !ok {
		return nil
	}
	now := r.now()
	for _, name := range splitList(value) {
		es := envStatus(rel, name)
		if es == nil || es.Gate == nil || es.CompletionTime != nil || rolloutStarted(es) {
			continue
		}
		env := &ferryv1.Environment{}
		if err := r.Get(ctx, types.NamespacedName{Name: name}, env); err != nil {
			return client.IgnoreNotFound(err)
		}
		es.Gate.WaitingSince = &now
		es.Gate.ExpiresAt = expiresAt(env.Spec.Approval, now)
		setGateWaiting(es, "the gate was re-requested", rel.Generation, now)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.WaitingForApprovalReason, "ReRequest", "The approval gate of environment %s was re-requested", name)
	}
	// Record the new window before the request is consumed, so that a crash in between repeats it.
	if err := patcher.Patch(ctx, r.Client, rel); err != nil {
		return err
	}
	before := rel.DeepCopy()
	delete(rel.Annotations, ferryv1.ReRequestAnnotation)
	if err := r.Patch(ctx, rel, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("failed to remove annotation %s: %w", ferryv1.ReRequestAnnotation, err)
	}
	return nil
}

// SetupWithManager registers the controller: it watches Releases, and the Approvals, Projects,
// Environments, Freezes, sibling Releases, Releases that let go of a deploy lock and Clusters (when one
// becomes Ready again) that decide whether a Release can move on.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Release{}, projectIndex, func(o client.Object) []string {
		return []string{o.(*ferryv1.Release).Spec.Project}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Approval{}, releaseIndex, func(o client.Object) []string {
		return []string{o.(*ferryv1.Approval).Spec.Release}
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Build{}, imageDigestIndex, func(o client.Object) []string {
		if d := imageDigest(o.(*ferryv1.Build)); d != "" {
			return []string{d}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Release{}, targetIndex, indexLockedTargets); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Release{}, builder.WithPredicates(specOrMetadataChanged())).
		Watches(&ferryv1.Approval{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: o.(*ferryv1.Approval).Spec.Release}}}
		})).
		Watches(&ferryv1.Project{}, handler.EnqueueRequestsFromMapFunc(r.releasesOfProject)).
		Watches(&ferryv1.Environment{}, handler.EnqueueRequestsFromMapFunc(r.unfinishedReleases)).
		Watches(&ferryv1.Freeze{}, handler.EnqueueRequestsFromMapFunc(r.releasesBeforeRollout)).
		Watches(&ferryv1.Release{}, handler.EnqueueRequestsFromMapFunc(r.siblings)).
		Watches(&ferryv1.Release{}, r.lockReleased()).
		Watches(&ferryv1.Cluster{}, handler.EnqueueRequestsFromMapFunc(r.releasesOnCluster), builder.WithPredicates(becameReady())).
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Named("release").
		Complete(r)
}

// specOrMetadataChanged lets through what a person or another controller changed on a Release:
// its spec, annotations (a re-request) or deletion; the controller's own status writes are not.
func specOrMetadataChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!maps.Equal(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()) ||
				!e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp())
		},
	}
}

func (r *Reconciler) releasesOfProject(ctx context.Context, o client.Object) []reconcile.Request {
	list := &ferryv1.ReleaseList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{projectIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the Releases of a Project", "project", o.GetName())
		return nil
	}
	return unfinished(list.Items, "")
}

func (r *Reconciler) unfinishedReleases(ctx context.Context, _ client.Object) []reconcile.Request {
	return r.releasesWhere(ctx, func(rel *ferryv1.Release) bool { return rel.Status.CompletionTime == nil })
}

// becameReady lets through a Cluster whose Ready condition turned True: the Releases waiting on it
// may move on.
func becameReady() predicate.Predicate {
	ready := func(o client.Object) bool {
		return meta.IsStatusConditionTrue(o.(*ferryv1.Cluster).Status.Conditions, ferryv1.ReadyCondition)
	}
	return predicate.Funcs{
		CreateFunc:  func(event.CreateEvent) bool { return false },
		DeleteFunc:  func(event.DeleteEvent) bool { return false },
		GenericFunc: func(event.GenericEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return !ready(e.ObjectOld) && ready(e.ObjectNew)
		},
	}
}

// releasesOnCluster are the Releases with a rollout (or a deletion) on a Cluster that is not done.
func (r *Reconciler) releasesOnCluster(ctx context.Context, o client.Object) []reconcile.Request {
	return r.releasesWhere(ctx, func(rel *ferryv1.Release) bool {
		if rel.Status.CompletionTime != nil && rel.DeletionTimestamp.IsZero() {
			return false
		}
		return slices.ContainsFunc(rel.Status.Environments, func(es ferryv1.ReleaseEnvironmentStatus) bool {
			return es.CompletionTime == nil && slices.ContainsFunc(es.Clusters, func(c ferryv1.ClusterRolloutStatus) bool { return c.Cluster == o.GetName() })
		})
	})
}

// releasesWhere lists every Release from the cache and asks for a Reconcile of those keep selects.
func (r *Reconciler) releasesWhere(ctx context.Context, keep func(*ferryv1.Release) bool) []reconcile.Request {
	list := &ferryv1.ReleaseList{}
	if err := r.List(ctx, list); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list Releases")
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if keep(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}

// siblings are the other unfinished Releases of a Release's project: one of them may be waiting
// for the deploy lock this one released, or be superseded by it.
func (r *Reconciler) siblings(ctx context.Context, o client.Object) []reconcile.Request {
	rel := o.(*ferryv1.Release)
	list := &ferryv1.ReleaseList{}
	if err := r.List(ctx, list, client.InNamespace(rel.Namespace), client.MatchingFields{projectIndex: rel.Spec.Project}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the Releases of a Project", "project", rel.Spec.Project)
		return nil
	}
	return unfinished(list.Items, rel.Name)
}

func unfinished(items []ferryv1.Release, except string) []reconcile.Request {
	var reqs []reconcile.Request
	for _, rel := range items {
		if rel.Name != except && rel.Status.CompletionTime == nil {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&rel)})
		}
	}
	return reqs
}

// keyedMutex serialises work per key.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*sync.Mutex
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*sync.Mutex{}
	}
	m, ok := k.locks[key]
	if !ok {
		m = &sync.Mutex{}
		k.locks[key] = m
	}
	k.mu.Unlock()
	m.Lock()
	return m.Unlock
}
