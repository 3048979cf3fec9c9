// Package gitlabdeploy holds the deployment reporter: it watches Releases and records every
// rollout of a Release into an environment as a GitLab deployment (POST
// /projects/:id/deployments, environment = the Environment's name, the Build's branch or tag and
// commit, status running; then PUT status success, failed or canceled), and points the GitLab
// environment's external URL at the application (the Environment's gitlab.ferry.dev/external-url
// annotation) or, without one, at the Release's page in Ferry's UI. GitLab's Environments page,
// the merge request's "deployed to" line and its deployment frequency then show Ferry's deploys.
//
// What was reported is recorded on the Release, in the gitlab.ferry.dev/deployments annotation, per
// environment: before a deployment is created the newest deployment ID of the GitLab environment
// is written down, and the new deployment's ID right after it is created. A manager that stopped
// between the two finds its deployment again (same environment, ref and commit, newer than the
// recorded ID) instead of creating another, so a restart never doubles a record. GitLab's 429 and
// 5xx answers are retried with backoff (the create only after looking for what it may have saved);
// reporting can fail, the Release cannot fail because of it. While a deployment is open the
// Release carries the gitlab.ferry.dev/deployments finalizer: a Release deleted mid-rollout has
// its open deployments canceled before it goes (for at most ten minutes of GitLab failing).
package gitlabdeploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

// secretRetryInterval is how soon a Release is looked at again when its Project's token Secret is
// missing.
const secretRetryInterval = time.Minute

// NewAPIFunc returns a GitLab client for one instance and token.
type NewAPIFunc func(baseURL, token string) (gitlab.DeploymentsAPI, error)

// Record is what was reported to GitLab for one environment of a Release.
type Record struct {
	// After is the newest deployment ID of the GitLab environment before Ferry created its own; a
	// deployment of the same ref and commit with a greater ID is Ferry's.
	After int64 `json:"after"`
	// ID is the GitLab deployment's ID, 0 until it was created.
	ID int64 `json:"id,omitempty"`
	// Status is the deployment status last reported.
	Status gitlab.DeploymentStatus `json:"status,omitempty"`
	// URL is the external URL last set on the GitLab environment.
	URL string `json:"url,omitempty"`
	// Refused is a status GitLab refused for good (an event says why); it is not tried again
	// until the environment's status changes.
	Refused gitlab.DeploymentStatus `json:"refused,omitempty"`
}

// statusCreating marks a Record whose deployment is about to be created.
const statusCreating gitlab.DeploymentStatus = "creating"

// Records are a Release's Records by environment name.
type Records map[string]Record

// Reconciler reports Releases' rollouts to GitLab as deployments.
type Reconciler struct {
	client.Client
	// APIReader reads token Secrets, which are not cached.
	APIReader client.Reader
	// Recorder emits events on Releases when reporting fails for good.
	Recorder events.EventRecorder
	// UIBaseURL is Ferry's UI; a deployment links to <UIBaseURL>/releases/<namespace>/<name>.
	UIBaseURL string
	// NewAPI makes GitLab clients. Default: gitlab.New with production retries.
	NewAPI NewAPIFunc
	// Timeout bounds one Reconcile's calls to GitLab. Default 2 minutes.
	Timeout time.Duration

	// memos remember what this process recorded, ahead of a cache that may not have caught up
	// with its own patches yet.
	memos sync.Map // types.NamespacedName → memo
}

// memo is what this process recorded for one Release (by UID: a re-created Release starts afresh).
type memo struct {
	uid     types.UID
	records Records
}

// +kubebuilder:rbac:groups=ferry.dev,resources=releases,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=environments,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings the GitLab deployments of one Release up to date with its environments.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	rel := &ferryv1.Release{}
	if err := r.Get(ctx, req.NamespacedName, rel); err != nil {
		if apierrors.IsNotFound(err) {
			r.memos.Delete(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	deleting := !rel.DeletionTimestamp.IsZero()
	if todo := pending(rel, r.records(rel)); len(todo) > 0 {
		res, err := r.reportAll(ctx, rel, todo)
		switch {
		case err != nil && deleting && time.Since(rel.DeletionTimestamp.Time) > finalizeTimeout:
			r.warn(rel, fmt.Sprintf("the Release was deleted and its open GitLab deployments could not be canceled within %s: %v", finalizeTimeout, err))
		case err != nil:
			return ctrl.Result{}, err
		case res.RequeueAfter > 0 && !deleting:
			return res, nil
		}
	}
	return ctrl.Result{}, r.dropFinalizer(ctx, rel)
}

// finalizeTimeout bounds how long a deleted Release waits for its open deployments to be
// canceled in a GitLab that keeps failing.
const finalizeTimeout = 10 * time.Minute

// reportAll reports the environments of todo.
func (r *Reconciler) reportAll(ctx context.Context, rel *ferryv1.Release, todo []task) (ctrl.Result, error) {
	p := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}, p); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if p.Spec.GitLab.TokenSecretRef == nil {
		return ctrl.Result{}, nil
	}
	ref, tag, err := r.gitRef(ctx, rel)
	if err != nil {
		return ctrl.Result{}, err
	}
	if ref == "" || rel.Spec.Revision == "" {
		// Without a commit and a branch or tag GitLab cannot record a deployment.
		return ctrl.Result{}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	api, err := r.api(ctx, p)
	if err != nil {
		var missing *gitlab.MissingTokenError
		if errors.As(err, &missing) {
			ctrl.LoggerFrom(ctx).Info("Cannot report deployments to GitLab", "problem", missing.Error())
			r.warn(rel, missing.Error())
			return ctrl.Result{RequeueAfter: secretRetryInterval}, nil
		}
		return ctrl.Result{}, err
	}
	project := gitlab.ProjectRefOf(p)
	for _, t := range todo {
		link, err := r.link(ctx, rel, t.env)
		if err != nil {
			return ctrl.Result{}, err
		}
		d := deployment{r: r, api: api, project: project, rel: rel, env: t.env, ref: ref, tag: tag, link: link}
		err = d.report(ctx, t.status)
		if err != nil && gitlab.IsPermanent(err) {
			ctrl.LoggerFrom(ctx).Info("GitLab refused the deployment", "environment", t.env, "problem", err.Error())
			r.warn(rel, err.Error())
			rec := r.records(rel)[t.env]
			rec.Refused = t.status
			err = r.record(ctx, rel, t.env, rec)
		}
		if err != nil {
			return ctrl.Result{}, err
		}
	}
	return ctrl.Result{}, nil
}

// open: a deployment that was (or may have been) created and has not ended. A create GitLab
// refused (4xx) saved nothing.
func open(rec Record) bool {
	if rec.Refused != "" {
		return false
	}
	return rec.Status == statusCreating || (rec.ID != 0 && !rec.Status.Terminal())
}

// dropFinalizer lets the Release go once none of its deployments is open, or once it is deleted
// (after its open deployments were canceled, or given up on).
func (r *Reconciler) dropFinalizer(ctx context.Context, rel *ferryv1.Release) error {
	if !controllerutil.ContainsFinalizer(rel, ferryv1.GitLabDeploymentsFinalizer) {
		return nil
	}
	if rel.DeletionTimestamp.IsZero() {
		for _, rec := range r.records(rel) {
			if open(rec) {
				return nil
			}
		}
	}
	before := rel.DeepCopy()
	controllerutil.RemoveFinalizer(rel, ferryv1.GitLabDeploymentsFinalizer)
	// The release controller changes the finalizers too: never write over a list it changed.
	if err := r.Patch(ctx, rel, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{})); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("failed to remove the finalizer of Release %s: %w", client.ObjectKeyFromObject(rel), err))
	}
	return nil
}

// task is one environment whose deployment is behind.
type task struct {
	env    string
	status gitlab.DeploymentStatus
}

// pending lists the environments whose rollout started and whose recorded deployment status
// differs from what the Release's status says; for a deleted Release, the open deployments, to be
// canceled.
func pending(rel *ferryv1.Release, records Records) []task {
	var out []task
	if !rel.DeletionTimestamp.IsZero() {
		for env, rec := range records {
			if open(rec) {
				out = append(out, task{env: env, status: gitlab.DeploymentCanceled})
			}
		}
		slices.SortFunc(out, func(a, b task) int { return strings.Compare(a.env, b.env) })
		return out
	}
	for i := range rel.Status.Environments {
		es := &rel.Status.Environments[i]
		want := DesiredStatus(es)
		if want == "" {
			continue
		}
		if rec := records[es.Name]; (rec.ID != 0 && rec.Status == want) || rec.Refused == want {
			continue
		}
		out = append(out, task{env: es.Name, status: want})
	}
	return out
}

// DesiredStatus is the GitLab deployment status of a Release's environment: none before the
// rollout started (a gate or a window may still stop it), running while it rolls out or rolls
// back, success when it is Ready, canceled when it was superseded or cancelled, failed otherwise.
func DesiredStatus(es *ferryv1.ReleaseEnvironmentStatus) gitlab.DeploymentStatus {
	if meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition) == nil {
		return ""
	}
	ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
	switch {
	case ready != nil && ready.Status == metav1.ConditionTrue:
		return gitlab.DeploymentSuccess
	case es.CompletionTime == nil, ready == nil || ready.Status != metav1.ConditionFalse:
		return gitlab.DeploymentRunning
	case ready.Reason == ferryv1.SupersededReason || ready.Reason == ferryv1.CancelledReason:
		return gitlab.DeploymentCanceled
	}
	return gitlab.DeploymentFailed
}

// deployment reports one environment of one Release.
type deployment struct {
	r       *Reconciler
	api     gitlab.DeploymentsAPI
	project gitlab.ProjectRef
	rel     *ferryv1.Release
	env     string
	ref     string
	tag     bool
	link    string
}

func (d *deployment) report(ctx context.Context, want gitlab.DeploymentStatus) error {
	rec := d.r.records(d.rel)[d.env]
	if rec.ID == 0 {
		if rec.After == 0 && rec.Status == "" {
			// Write down where GitLab's list stands before creating anything, so that a restart
			// after the create can tell Ferry's deployment from older ones of the same commit.
			after, err := d.api.LastDeploymentID(ctx, d.project, d.env)
			if err != nil {
				return err
			}
			rec = Record{After: after, Status: statusCreating}
			if err := d.r.record(ctx, d.rel, d.env, rec); err != nil {
				return err
			}
		}
		found, err := d.api.FindDeployment(ctx, d.project, d.env, d.ref, d.rel.Spec.Revision, rec.After)
		if err != nil {
			return err
		}
		if found == nil && !d.rel.DeletionTimestamp.IsZero() {
			// Deleted before the deployment was made: there is nothing to cancel.
			rec.Status = gitlab.DeploymentCanceled
			return d.r.record(ctx, d.rel, d.env, rec)
		}
		if found == nil {
			found, err = d.api.CreateDeployment(ctx, d.project, gitlab.NewDeployment{
				Environment: d.env, Ref: d.ref, Tag: d.tag, SHA: d.rel.Spec.Revision, Status: gitlab.DeploymentRunning,
			})
			if err != nil {
				return err
			}
		}
		rec.ID, rec.Status, rec.Refused = found.ID, found.Status, ""
		if err := d.r.record(ctx, d.rel, d.env, rec); err != nil {
			return err
		}
	}
	if d.link != "" && rec.URL != d.link {
		if err := d.api.SetEnvironmentURL(ctx, d.project, d.env, d.link); err != nil && !gitlab.IsPermanent(err) {
			return err
		} else if err != nil {
			d.r.warn(d.rel, err.Error())
		}
		rec.URL = d.link
		if err := d.r.record(ctx, d.rel, d.env, rec); err != nil {
			return err
		}
	}
	if rec.Status != want {
		if err := d.api.UpdateDeployment(ctx, d.project, rec.ID, want); err != nil {
			return err
		}
		rec.Status, rec.Refused = want, ""
		if err := d.r.record(ctx, d.rel, d.env, rec); err != nil {
			return err
		}
	}
	return nil
}

// records merges what the Release's annotation says with what this process recorded since: this
// process's own Records win, since the cache may not show its latest patch yet (only the elected
// manager reports, so nothing else writes them meanwhile).
func (r *Reconciler) records(rel *ferryv1.Release) Records {
	out := Records{}
	if v := rel.Annotations[ferryv1.GitLabDeploymentsAnnotation]; v != "" {
		if err := json.Unmarshal([]byte(v), &out); err != nil {
			out = Records{}
		}
	}
	if v, ok := r.memos.Load(client.ObjectKeyFromObject(rel)); ok && v.(memo).uid == rel.UID {
		for env, mine := range v.(memo).records {
			out[env] = mine
		}
	}
	return out
}

// record writes one environment's Record into the Release's annotation. The first open
// deployment also puts the finalizer on the Release, in the same write, so that deleting the
// Release mid-rollout cancels it instead of leaving it running in GitLab.
func (r *Reconciler) record(ctx context.Context, rel *ferryv1.Release, env string, rec Record) error {
	all := r.records(rel)
	all[env] = rec
	data, err := json.Marshal(all)
	if err != nil {
		return err
	}
	before := rel.DeepCopy()
	metav1.SetMetaDataAnnotation(&rel.ObjectMeta, ferryv1.GitLabDeploymentsAnnotation, string(data))
	var opts []client.MergeFromOption
	if open(rec) && rel.DeletionTimestamp.IsZero() && controllerutil.AddFinalizer(rel, ferryv1.GitLabDeploymentsFinalizer) {
		// The release controller changes the finalizers too: never write over a list it changed.
		opts = append(opts, client.MergeFromWithOptimisticLock{})
	}
	if err := r.Patch(ctx, rel, client.MergeFromWithOptions(before, opts...)); err != nil {
		*rel = *before
		return client.IgnoreNotFound(fmt.Errorf("failed to record the GitLab deployment of Release %s in %s: %w", client.ObjectKeyFromObject(rel), env, err))
	}
	r.memos.Store(client.ObjectKeyFromObject(rel), memo{uid: rel.UID, records: all})
	return nil
}

// gitRef is the branch or tag name of the Release's Build, and whether it is a tag; "" when the
// Release has no Build or its ref is neither.
func (r *Reconciler) gitRef(ctx context.Context, rel *ferryv1.Release) (string, bool, error) {
	if rel.Spec.Build == "" {
		return "", false, nil
	}
	b := &ferryv1.Build{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Build}, b); err != nil {
		if apierrors.IsNotFound(err) {
			return "", false, nil
		}
		return "", false, err
	}
	ref, tag := RefName(b)
	return ref, tag, nil
}

// RefName turns a Build's ref into GitLab's deployment ref: the branch or tag name, and for a
// merge request Build its source branch.
func RefName(b *ferryv1.Build) (string, bool) {
	if name, ok := strings.CutPrefix(b.Spec.Ref, "refs/heads/"); ok {
		return name, false
	}
	if name, ok := strings.CutPrefix(b.Spec.Ref, "refs/tags/"); ok {
		return name, true
	}
	if strings.HasPrefix(b.Spec.Ref, "refs/merge-requests/") {
		return b.Annotations[ferryv1.GitLabSourceBranchAnnotation], false
	}
	return "", false
}

// link is the GitLab environment's external URL: the Environment's application URL when it has
// a valid one, else the Release's page in the UI; "" (the URL is left alone) when there is no UI
// URL either.
func (r *Reconciler) link(ctx context.Context, rel *ferryv1.Release, envName string) (string, error) {
	env := &ferryv1.Environment{}
	err := r.Get(ctx, types.NamespacedName{Name: envName}, env)
	if client.IgnoreNotFound(err) != nil {
		return "", err
	}
	if err == nil {
		if v := env.Annotations[ferryv1.GitLabExternalURLAnnotation]; v != "" {
			problem := checkURL(v)
			if problem == "" {
				return v, nil
			}
			r.warn(rel, fmt.Sprintf("the %s annotation of Environment %s %s; GitLab links to the Release instead", ferryv1.GitLabExternalURLAnnotation, envName, problem))
		}
	}
	if checkURL(r.UIBaseURL) != "" {
		return "", nil
	}
	return ReleaseURL(r.UIBaseURL, rel), nil
}

// checkURL says what is wrong with an external URL for GitLab: "" when nothing.
func checkURL(v string) string {
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return "is not a URL"
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return "is not an http(s) URL with a host"
	case u.User != nil:
		return "must not carry credentials"
	case len(v) > 255:
		return "is longer than GitLab's 255 characters"
	}
	return ""
}

// ReleaseURL is the Release's page in Ferry's UI.
func ReleaseURL(base string, rel *ferryv1.Release) string {
	return strings.TrimSuffix(base, "/") + "/releases/" + url.PathEscape(rel.Namespace) + "/" + url.PathEscape(rel.Name)
}

// api reads the Project's token and returns a client for its GitLab.
func (r *Reconciler) api(ctx context.Context, p *ferryv1.Project) (gitlab.DeploymentsAPI, error) {
	token, err := gitlab.ProjectToken(ctx, r.APIReader, p)
	if err != nil {
		return nil, err
	}
	newAPI := r.NewAPI
	if newAPI == nil {
		newAPI = func(baseURL, token string) (gitlab.DeploymentsAPI, error) {
			return gitlab.New(baseURL, token, gitlab.Options{})
		}
	}
	return newAPI(p.Spec.GitLab.URL, token)
}

func (r *Reconciler) warn(rel *ferryv1.Release, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.GitLabReportFailedReason, "ReportDeploymentToGitLab", "%s", msg)
	}
}

func (r *Reconciler) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 2 * time.Minute
}

// SetupWithManager registers the controller, named "gitlabdeploy", watching Releases.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Release{}).
		Named("gitlabdeploy").
		WithOptions(controller.Options{MaxConcurrentReconciles: 4}).
		Complete(r)
}
