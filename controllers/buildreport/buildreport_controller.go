// Package buildreport holds the Build reporter: it watches Builds and tells GitLab how each one is
// doing — a commit status named "ferry" (pending, running, success, failed, canceled) linking to
// the Build in Ferry's UI, and for merge request Builds one note with the result. It follows
// GitLab's commit-status state machine, remembers what it reported in status.reportedState (and
// the note in an annotation) so that a restart never reports twice, retries GitLab's failures with
// backoff, and never touches anything else of the Build: reporting can fail, the Build cannot fail
// because of it.
package buildreport

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/patch"
)

// secretRetryInterval is how soon a Build is looked at again when its Project's token Secret is
// missing, so that reporting resumes once someone creates it.
const secretRetryInterval = time.Minute

// NewAPIFunc returns a GitLab client for one instance and token.
type NewAPIFunc func(baseURL, token string) (gitlab.API, error)

// Reconciler reports Builds to GitLab.
type Reconciler struct {
	client.Client
	// APIReader reads token Secrets, which live in the Projects' namespaces and are not cached.
	APIReader client.Reader
	// Recorder emits events on Builds when reporting fails for good.
	Recorder events.EventRecorder
	// UIBaseURL is Ferry's UI; commit statuses link to <UIBaseURL>/builds/<namespace>/<name>.
	UIBaseURL string
	// NewAPI makes GitLab clients. Default: gitlab.New with production retries.
	NewAPI NewAPIFunc
	// Timeout bounds one Reconcile's calls to GitLab. Default 2 minutes.
	Timeout time.Duration

	// memos remember what this process reported, ahead of a cache that may not have caught up
	// with its own patches yet.
	memos sync.Map // types.NamespacedName → memo
}

// memo is what was reported for one Build (identified by UID: a re-created Build starts afresh).
type memo struct {
	uid   types.UID
	state gitlab.State
	noted bool
}

func (r *Reconciler) memo(b *ferryv1.Build) memo {
	if v, ok := r.memos.Load(client.ObjectKeyFromObject(b)); ok && v.(memo).uid == b.UID {
		return v.(memo)
	}
	return memo{uid: b.UID}
}

func (r *Reconciler) remember(b *ferryv1.Build, update func(*memo)) {
	m := r.memo(b)
	update(&m)
	r.memos.Store(client.ObjectKeyFromObject(b), m)
}

// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds/status,verbs=get;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile reports one Build's state, and for a finished merge request Build its note.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	b := &ferryv1.Build{}
	if err := r.Get(ctx, req.NamespacedName, b); err != nil {
		if apierrors.IsNotFound(err) {
			r.memos.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	state := DesiredState(b)
	needStatus := gitlab.ShouldReport(r.lastReported(b), state)
	needNote := r.needsNote(b, state)
	if !needStatus && !needNote {
		return ctrl.Result{}, nil
	}
	p := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, p); err != nil {
		// Without its Project there is nowhere to report to; the Build controller says so on the Build.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.Spec.GitLab.TokenSecretRef == nil {
		return ctrl.Result{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	api, err := r.api(ctx, p)
	if err != nil {
		var missing *gitlab.MissingTokenError
		if errors.As(err, &missing) {
			ctrl.LoggerFrom(ctx).Info("Cannot report to GitLab", "problem", missing.Error())
			r.warn(b, missing.Error())
			return ctrl.Result{RequeueAfter: secretRetryInterval}, nil
		}
		return ctrl.Result{}, err
	}
	if needStatus {
		if err := r.reportStatus(ctx, api, p, b, state); err != nil {
			return ctrl.Result{}, err
		}
	}
	if r.needsNote(b, state) {
		return ctrl.Result{}, r.postNote(ctx, api, p, b, state)
	}
	return ctrl.Result{}, nil
}

// reportStatus posts the commit status and records it. A permanent refusal (no permission, unknown
// project or commit) is an event, not a retry loop.
func (r *Reconciler) reportStatus(ctx context.Context, api gitlab.API, p *ferryv1.Project, b *ferryv1.Build, state gitlab.State) error {
	err := api.SetCommitStatus(ctx, statusProject(p, b), b.Spec.Revision, gitlab.CommitStatus{
		State:       state,
		Name:        StatusName,
		Ref:         StatusRef(b),
		TargetURL:   BuildURL(r.UIBaseURL, b),
		Description: Description(b, state),
	})
	switch {
	case err == nil, errors.Is(err, gitlab.ErrAlreadyReported):
	case gitlab.IsPermanent(err):
		ctrl.LoggerFrom(ctx).Info("GitLab refused the commit status", "state", state, "problem", err.Error())
		r.warn(b, err.Error())
		return nil
	default:
		return err
	}
	r.remember(b, func(m *memo) { m.state = state })
	patcher := patch.NewStatusPatcher(b)
	b.Status.ReportedState = string(state)
	if err := patcher.Patch(ctx, r.Client, b); err != nil {
		return fmt.Errorf("failed to record the reported state of Build %s: %w", client.ObjectKeyFromObject(b), err)
	}
	return nil
}

// postNote adds the result note to the merge request once: the marker in earlier notes covers a
// crash between posting and annotating.
func (r *Reconciler) postNote(ctx context.Context, api gitlab.API, p *ferryv1.Project, b *ferryv1.Build, state gitlab.State) error {
	project := gitlab.ProjectRefOf(p)
	iid := b.Spec.Trigger.MergeRequestIID
	found, err := api.FindMergeRequestNote(ctx, project, iid, noteMarker(b))
	if err == nil && !found {
		err = api.CreateMergeRequestNote(ctx, project, iid, NoteBody(b, state, BuildURL(r.UIBaseURL, b)))
	}
	switch {
	case err == nil:
	case gitlab.IsPermanent(err):
		ctrl.LoggerFrom(ctx).Info("GitLab refused the merge request note", "problem", err.Error())
		r.warn(b, err.Error())
		r.remember(b, func(m *memo) { m.noted = true })
		return nil
	default:
		return err
	}
	r.remember(b, func(m *memo) { m.noted = true })
	before := b.DeepCopy()
	metav1.SetMetaDataAnnotation(&b.ObjectMeta, ferryv1.GitLabNoteAnnotation, string(state))
	if err := r.Patch(ctx, b, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("failed to record the note on Build %s: %w", client.ObjectKeyFromObject(b), err))
	}
	return nil
}

// lastReported is the newer of what the Build records and what this process reported.
func (r *Reconciler) lastReported(b *ferryv1.Build) gitlab.State {
	recorded := gitlab.State(b.Status.ReportedState)
	if mine := r.memo(b).state; mine != "" && (recorded == "" || gitlab.ShouldReport(recorded, mine)) {
		return mine
	}
	return recorded
}

// needsNote: a merge request Build that finished and whose note was not posted yet.
func (r *Reconciler) needsNote(b *ferryv1.Build, state gitlab.State) bool {
	if b.Spec.Trigger.Kind != ferryv1.TriggerMergeRequest || b.Spec.Trigger.MergeRequestIID <= 0 || !state.Terminal() {
		return false
	}
	if _, ok := b.Annotations[ferryv1.GitLabNoteAnnotation]; ok {
		return false
	}
	return !r.memo(b).noted
}

// statusProject is where the commit status goes: the fork for a merge request from a fork,
// else the Project's GitLab project.
func statusProject(p *ferryv1.Project, b *ferryv1.Build) gitlab.ProjectRef {
	if v := b.Annotations[ferryv1.GitLabSourceProjectAnnotation]; v != "" {
		if id, err := strconv.ParseInt(v, 10, 64); err == nil && id > 0 {
			return gitlab.ProjectRef{ID: id}
		}
	}
	return gitlab.ProjectRefOf(p)
}

// api reads the Project's token and returns a client for its GitLab.
func (r *Reconciler) api(ctx context.Context, p *ferryv1.Project) (gitlab.API, error) {
	token, err := gitlab.ProjectToken(ctx, r.APIReader, p)
	if err != nil {
		return nil, err
	}
	newAPI := r.NewAPI
	if newAPI == nil {
		newAPI = func(baseURL, token string) (gitlab.API, error) { return gitlab.New(baseURL, token, gitlab.Options{}) }
	}
	return newAPI(p.Spec.GitLab.URL, token)
}

func (r *Reconciler) warn(b *ferryv1.Build, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(b, nil, corev1.EventTypeWarning, ferryv1.GitLabReportFailedReason, "ReportToGitLab", "%s", msg)
	}
}

func (r *Reconciler) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 2 * time.Minute
}

// SetupWithManager registers the controller, named "buildreport", watching Builds.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Build{}).
		Named("buildreport").
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}
