// Package build holds the Build controller: it reads a Build's pipeline file at the Build's exact
// commit, resolves its stack and runtime through the platform's catalog, runs the plan with an
// executor (a Tekton PipelineRun owned by the Build, or processes on the host) and mirrors the run
// into the Build's conditions. It also cancels superseded Builds, records the Project's last Build
// and keeps each Project's Build history to its limit.
package build

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/patch"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

// DefaultConcurrency is how many Builds are reconciled at once.
const DefaultConcurrency = 8

// Reconciler reconciles Builds.
type Reconciler struct {
	client.Client
	// APIReader reads what the cache does not hold: the Projects' credentials Secrets.
	APIReader client.Reader
	// Scheme sets owner references.
	Scheme *runtime.Scheme
	// Recorder emits events; their reasons are the condition reasons.
	Recorder events.EventRecorder
	// Namespace is Ferry's namespace, where the catalog ConfigMap lives.
	Namespace string
	// Executor runs the Builds.
	Executor Executor
	// FerryImage is the image of the ferry binary, for the clone and assemble steps.
	FerryImage string
	// MaxBuildTimeout caps every Build's timeout (0: buildplan.DefaultMaxTimeout).
	MaxBuildTimeout time.Duration
	// ReadSource reads the pipeline file at a commit. Default gitsource.ReadFile.
	ReadSource SourceReader
	// Concurrency is how many Builds are reconciled at once. Default DefaultConcurrency.
	Concurrency int
	// GitLimits bound each read of a pipeline file from a git server (zero fields:
	// gitsource.ReadFileLimits).
	GitLimits gitsource.Limits
	// FetchShare is how many of the Concurrency workers may fetch from one git server, or for one
	// namespace, at once; the other Builds wait (WaitingForGitServer). Default half of them.
	FetchShare int
	// HostBackoff is how long Builds leave a git server alone after a fetch from it timed out;
	// it doubles with each further timeout. Default DefaultHostBackoff.
	HostBackoff time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// SupplyChain, when set, makes the manager publish an SBOM, signed provenance and a signature
	// for every image a Build pushes.
	SupplyChain *SupplyChain

	files          fileCache
	slots          fetchSlots
	catalogMu      sync.Mutex
	catalogVersion string
	catalogCache   *catalog.Catalog
	catalogExpiry  time.Time
	// pruned and cancelled are the Builds this manager deleted and asked to cancel lately.
	pruned, cancelled claims
}

// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=get;list;watch;patch;delete
// +kubebuilder:rbac:groups=ferry.dev,resources=builds/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects/status,verbs=get;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=configmaps,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile moves one Build forward: its Project, the Project's last Build, superseded Builds, the
// run (started once), and the run's state mirrored into the Build.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	b := &ferryv1.Build{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		if f, ok := r.Executor.(ForgettingExecutor); ok && apierrors.IsNotFound(err) {
			return ctrl.Result{}, f.Forget(ctx, req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !b.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	before := b.DeepCopy()
	// Write the status only onto the Build that was read: a reconcile that started from a stale
	// cache (an executor's notification can arrive before the cache has the previous reconcile's
	// write) must not replace the newer status with one derived from the older, nor count a
	// transition twice.
	patcher := patch.NewStatusPatcher(b, patch.WithOptimisticLock())
	defer func() {
		// Events and metrics follow what was written, so a retried reconcile does not count twice.
		err := patcher.Patch(ctx, r.Client, b)
		conflict := errors.Is(err, patch.ErrConflict)
		switch {
		case err != nil && !conflict:
			retErr = errors.Join(retErr, err)
		case conflict && (retErr == nil || errors.Is(retErr, reconcile.TerminalError(nil))):
			// The cache had not seen the Build's latest write: try again once it has.
			result, retErr = ctrl.Result{RequeueAfter: staleRetry}, nil
		default:
			r.recordTransition(before, b)
		}
	}()
	if isFinished(b) {
		return r.prune(ctx, b)
	}

	project := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, project); err != nil {
		if apierrors.IsNotFound(err) {
			markProjectNotFound(b, r.now())
			return ctrl.Result{}, reconcile.TerminalError(fmt.Errorf("project %s not found: %w", b.Spec.Project, err))
		}
		return ctrl.Result{}, err
	}
	if err := r.recordLastBuild(ctx, project, b); err != nil {
		return ctrl.Result{}, err
	}
	if self, err := r.supersedeOlder(ctx, project, b); err != nil || self {
		return ctrl.Result{}, err
	}
	run, err := r.ensureRun(ctx, b, project)
	if se := (*sourceError)(nil); errors.As(err, &se) && se.wait > 0 {
		return ctrl.Result{RequeueAfter: se.wait}, nil
	}
	if ue := (*executorUnavailableError)(nil); errors.As(err, &ue) {
		log.FromContext(ctx).Info("Waiting to create the Build's run", "error", ue.Error())
		return ctrl.Result{RequeueAfter: executorRetry}, nil
	}
	if err != nil {
		return ctrl.Result{}, err
	}
	if run == nil {
		// Ended without a run (cancelled before it started, a pipeline file that cannot run):
		// finished like any other, it prunes the history too; in a burst of pushes these are
		// most of the Builds.
		if isFinished(b) {
			return r.finished(ctx, b)
		}
		return ctrl.Result{}, nil
	}
	if b.Spec.Cancelled && !run.Done() && !run.CancelRequested {
		if err := r.Executor.Cancel(ctx, b); err != nil {
			return ctrl.Result{}, err
		}
	}
	setRunStatus(b, run, planFacts{repository: project.Spec.Image.Repository, tags: imageTags(b)}, r.now())
	r.publishSupplyChain(ctx, b, project)
	if isFinished(b) {
		return r.finished(ctx, b)
	}
	return ctrl.Result{}, nil
}

// prune prunes the Project's history from a finished Build's reconcile, and comes back soon when
// more is left than one reconcile deletes.
func (r *Reconciler) prune(ctx context.Context, b *ferryv1.Build) (ctrl.Result, error) {
	more, err := r.pruneHistory(ctx, b)
	if more && err == nil {
		return ctrl.Result{RequeueAfter: pruneRetry}, nil
	}
	return ctrl.Result{}, err
}

// finished prunes the history from the reconcile in which the Build finished, and comes back once
// more to prune again: Builds finishing at once each prune from a cache that may not show the
// others finished yet, and nothing else would bring the last of them back to see the history
// beyond its limit. That second reconcile reads the cache only, unless it deletes.
func (r *Reconciler) finished(ctx context.Context, b *ferryv1.Build) (ctrl.Result, error) {
	result, err := r.prune(ctx, b)
	if err == nil && result.RequeueAfter == 0 {
		result.RequeueAfter = pruneRetry
	}
	return result, err
}

// staleRetry is how soon a reconcile that read a Build older than the API server's runs again.
const staleRetry = 200 * time.Millisecond

// ensureRun returns the Build's run, starting it if there is none. It returns nil (and no error)
// when the Build ended without a run: cancelled first, a git tag that cannot tag an image, or a
// pipeline file that cannot run.
func (r *Reconciler) ensureRun(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (*RunState, error) {
	run, err := r.Executor.Observe(ctx, b)
	if err != nil {
		return nil, err
	}
	if run.Exists {
		if b.Status.Executor == "" {
			b.Status.Executor = r.Executor.Name()
		}
		return run, nil
	}
	now := r.now()
	if b.Spec.Cancelled {
		markCancelledBeforeStart(b, now)
		return nil, nil
	}
	if err := image.ValidateTags(imageTags(b)); err != nil {
		markInvalidImageTag(b, "the git tag cannot be an image tag: "+err.Error(), now)
		return nil, nil
	}
	plan, err := r.plan(ctx, b, p)
	var se *sourceError
	switch {
	case pipelinefile.IsInvalid(err):
		markInvalidPipelineFile(b, err.Error(), now)
		return nil, nil
	case errors.As(err, &se) && (se.terminal || r.startDeadlinePassed(b, p)):
		reason := se.reason
		if reason == ferryv1.WaitingForGitServerReason {
			reason = ferryv1.SourceUnavailableReason
		}
		markSourceUnavailable(b, reason, se.Error(), now)
		markFinished(b, metav1.ConditionFalse, reason, se.Error(), now)
		return nil, nil
	case errors.As(err, &se):
		markSourceUnavailable(b, se.reason, se.Error(), now)
		return nil, err
	case err != nil:
		return nil, err
	}
	markSourceResolved(b, fmt.Sprintf("read %s at %s", plan.PipelineFile, shortSHA(b.Spec.Revision)), now)
	b.Status.Executor = r.Executor.Name()
	b.Status.Deploy = plan.File.Deploy.DeepCopy()
	b.Status.Steps = waitingSteps(plan)
	run, err = r.Executor.Start(ctx, b, plan)
	var refused *RunRefusedError
	switch {
	case errors.As(err, &refused):
		markRunRefused(b, refused.Error(), r.now())
		return nil, nil
	case err != nil:
		// Tekton's webhook not answering: the run is created once it does (its name is the
		// Build's, so never twice).
		markWaitingForExecutor(b, err, r.now())
		return nil, &executorUnavailableError{err: err}
	}
	return run, nil
}

// executorRetry is how soon a Build whose run could not be created tries again: steadily, so
// that Builds start soon after an outage of Tekton's webhook rather than after a backoff grown
// during it.
const executorRetry = 5 * time.Second

// executorUnavailableError: the run could not be created for now.
type executorUnavailableError struct{ err error }

func (e *executorUnavailableError) Error() string { return e.err.Error() }
func (e *executorUnavailableError) Unwrap() error { return e.err }

// startDeadlinePassed: a Build whose source could not be read within its timeout fails.
func (r *Reconciler) startDeadlinePassed(b *ferryv1.Build, p *ferryv1.Project) bool {
	var project time.Duration
	if p.Spec.BuildTimeout != nil {
		project = p.Spec.BuildTimeout.Duration
	}
	return r.now().Sub(b.CreationTimestamp.Time) > buildplan.EffectiveTimeout(nil, project, r.MaxBuildTimeout)
}

func waitingSteps(p *buildplan.Plan) []ferryv1.StepStatus {
	steps := make([]ferryv1.StepStatus, 0, len(p.Steps))
	for _, s := range p.Steps {
		steps = append(steps, ferryv1.StepStatus{Name: s.Name, State: "Waiting"})
	}
	return steps
}

// imageTags are the tags `ferry assemble` pushes: the commit SHA and, for tag Builds, the tag.
func imageTags(b *ferryv1.Build) []string {
	tags := []string{b.Spec.Revision}
	if tag := gitTag(b); tag != "" {
		tags = append(tags, tag)
	}
	return tags
}

func (r *Reconciler) concurrency() int {
	if r.Concurrency > 0 {
		return r.Concurrency
	}
	return DefaultConcurrency
}

func (r *Reconciler) now() metav1.Time {
	if r.Now != nil {
		return metav1.NewTime(r.Now())
	}
	return metav1.Now()
}

// Field indexes on Builds.
const (
	projectIndex    = "spec.project"
	projectRefIndex = "spec.project+ref"
)

// indexProject is the projectIndex of a Build.
func indexProject(o client.Object) []string { return []string{o.(*ferryv1.Build).Spec.Project} }

// indexProjectRef is the projectRefIndex of a Build.
func indexProjectRef(o client.Object) []string {
	b := o.(*ferryv1.Build)
	return []string{b.Spec.Project + "\x00" + b.Spec.Ref}
}

// NotifyingExecutor is an executor that tells the controller when a run changes (the local
// executor); a Tekton PipelineRun is watched instead.
type NotifyingExecutor interface {
	Executor
	// Notifications carries a Build whose run changed.
	Notifications() <-chan event.GenericEvent
}

// ForgettingExecutor keeps something of each Build outside the API server (the local executor's
// processes and logs) and stops and removes it when the Build is deleted, as Kubernetes' garbage
// collector does for a PipelineRun.
type ForgettingExecutor interface {
	Executor
	// Forget stops what still runs of a Build that no longer exists and removes what the executor
	// kept of it.
	Forget(ctx context.Context, key types.NamespacedName) error
}

// SetupWithManager registers the controller: Builds (spec changes only: the controller's own
// status writes do not come back), the PipelineRuns they own and their TaskRuns (status changes
// only), and Projects (so that Builds waiting for one start when it appears or changes).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	ctx := context.Background()
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Build{}, projectIndex, indexProject); err != nil {
		return err
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &ferryv1.Build{}, projectRefIndex, indexProjectRef); err != nil {
		return err
	}
	r.Concurrency = r.concurrency()
	bldr := ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Build{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&pipelinev1.PipelineRun{}, builder.WithPredicates(runChanged())).
		Watches(&pipelinev1.TaskRun{}, handler.EnqueueRequestsFromMapFunc(r.buildOfTaskRun), builder.WithPredicates(runChanged())).
		Watches(&ferryv1.Project{}, handler.EnqueueRequestsFromMapFunc(r.unfinishedBuildsOfProject), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Concurrency}).
		Named("build")
	if n, ok := r.Executor.(NotifyingExecutor); ok {
		bldr = bldr.WatchesRawSource(source.Channel(n.Notifications(), &handler.EnqueueRequestForObject{}))
	}
	return bldr.Complete(r)
}

// runChanged passes changes of a run's status or spec and deletions, not creations: the controller
// created the run and already knows it.
func runChanged() predicate.Predicate {
	return predicate.Funcs{
		CreateFunc: func(event.CreateEvent) bool { return false },
		UpdateFunc: func(e event.UpdateEvent) bool {
			return e.ObjectOld.GetResourceVersion() != e.ObjectNew.GetResourceVersion()
		},
	}
}

// buildOfTaskRun finds the Build of a TaskRun by the label Tekton copies from the PipelineRun.
func (r *Reconciler) buildOfTaskRun(_ context.Context, o client.Object) []reconcile.Request {
	name := o.GetLabels()[ferryv1.BuildLabel]
	if name == "" {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: name}}}
}

// unfinishedBuildsOfProject re-queues the Builds of a Project that have not finished.
func (r *Reconciler) unfinishedBuildsOfProject(ctx context.Context, o client.Object) []reconcile.Request {
	list := &ferryv1.BuildList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{projectIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list the Builds of a Project", "project", o.GetName())
		return nil
	}
	var reqs []reconcile.Request
	for i := range list.Items {
		if !isFinished(&list.Items[i]) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
		}
	}
	return reqs
}
