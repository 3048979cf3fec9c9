// Package preview holds the preview controller: every successful Build of a merge request's head,
// for a Project with previews enabled, runs in a namespace of its own, {project}-mr-{iid}, on the
// Project's preview cluster. A Preview object per merge request, in the Project's namespace,
// records it (kubectl get previews); the merge request gets one note saying where the preview is,
// edited when that changes, never posted twice.
//
// A Preview goes when its merge request is merged or closed (the receiver deletes it), after a TTL
// without a new Build, or when a newer preview would take the Project over its cap (the least
// recently active goes). Its finalizer deletes the namespace first, and only a namespace Ferry
// created for that Preview: one carrying the Preview's name and its Project's UID. A namespace
// that exists without that record is refused, never taken over, and never deleted. A deletion
// that fails is retried and shown as NamespaceDeleted=False.
package preview

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

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
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/rollout"
)

// EnvironmentName is the environment name a preview's workload carries in its labels. It is not
// an Environment: previews need no approval and are no step of the promotion path.
const EnvironmentName = "preview"

// pollInterval is how often a rollout in progress is looked at again.
const pollInterval = 2 * time.Second

// ClusterClients hands out clients of target clusters (*clusters.Cache).
type ClusterClients interface {
	Client(ctx context.Context, name string) (client.Client, error)
}

// NewAPIFunc returns a GitLab client for one instance and token.
type NewAPIFunc func(baseURL, token string) (gitlab.PreviewNotesAPI, error)

// Reconciler deploys Previews and deletes their namespaces.
type Reconciler struct {
	client.Client
	// APIReader reads token Secrets, which are not cached.
	APIReader client.Reader
	// Clusters hands out clients of the preview clusters.
	Clusters ClusterClients
	// Recorder emits events on Previews.
	Recorder events.EventRecorder
	// UIBaseURL is Ferry's UI; the note links to <UIBaseURL>/previews/<namespace>/<name>.
	UIBaseURL string
	// FerryNamespace is Ferry's own namespace, never deployed into.
	FerryNamespace string
	// NewAPI makes GitLab clients. Default: gitlab.New with production retries.
	NewAPI NewAPIFunc
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=ferry.dev,resources=previews,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=ferry.dev,resources=previews/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

func (r *Reconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Reconcile brings one Preview's namespace, workload and note up to date, or deletes its
// namespace when the Preview is deleted.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pv := &ferryv1.Preview{}
	if err := r.Get(ctx, req.NamespacedName, pv); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !pv.DeletionTimestamp.IsZero() {
		return r.finalize(ctx, pv)
	}
	if controllerutil.AddFinalizer(pv, ferryv1.PreviewFinalizer) {
		if err := r.Update(ctx, pv); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
	}
	p := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: pv.Namespace, Name: pv.Spec.Project}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.remove(ctx, pv, "its Project is gone")
		}
		return ctrl.Result{}, err
	}
	if !owns(p, pv) {
		// A Preview that does not belong to its Project (made by hand, or for an earlier Project
		// of that name) is never deployed: its namespace record would not name the Project.
		r.warn(pv, fmt.Sprintf("Preview %s is not controlled by Project %s (UID %s); it is not deployed", pv.Name, p.Name, p.UID))
		return ctrl.Result{}, nil
	}
	if p.Spec.Preview == nil || !p.Spec.Preview.Enabled {
		return ctrl.Result{}, r.remove(ctx, pv, "previews are turned off on its Project")
	}
	now := r.now()
	if pv.Status.LastActivity != nil {
		ttl := p.Spec.Preview.PreviewTTL()
		if left := pv.Status.LastActivity.Add(ttl).Sub(now); left <= 0 {
			return ctrl.Result{}, r.remove(ctx, pv, fmt.Sprintf("it had no new Build for %s (ttl)", ttl))
		}
	}
	if pv.Status.DeployedBuild == "" {
		// A Build that finished after its merge request was merged or closed must not bring the
		// preview back: the hook that removed it has come and gone.
		if state, err := r.mergeRequestState(ctx, p, pv); err != nil {
			return ctrl.Result{}, err
		} else if state == "merged" || state == "closed" {
			return ctrl.Result{}, r.remove(ctx, pv, fmt.Sprintf("merge request !%d is %s", pv.Spec.MergeRequestIID, state))
		}
	}
	res, err := r.deploy(ctx, p, pv, now)
	if err != nil || res.RequeueAfter > 0 {
		return res, err
	}
	if pv.Status.LastActivity != nil {
		return ctrl.Result{RequeueAfter: pv.Status.LastActivity.Add(p.Spec.Preview.PreviewTTL()).Sub(now) + time.Second}, nil
	}
	return ctrl.Result{}, nil
}

// owns reports whether the Preview is controlled by the Project (its owner reference).
func owns(p *ferryv1.Project, pv *ferryv1.Preview) bool {
	ref := metav1.GetControllerOf(pv)
	return ref != nil && ref.UID == p.UID && ref.Kind == "Project"
}

// remove deletes the Preview; its finalizer deletes the namespace.
func (r *Reconciler) remove(ctx context.Context, pv *ferryv1.Preview, why string) error {
	ctrl.LoggerFrom(ctx).Info("Deleting preview", "reason", why)
	r.event(pv, corev1.EventTypeNormal, "PreviewExpired", "Delete", "the preview is deleted: "+why)
	return client.IgnoreNotFound(r.Delete(ctx, pv))
}

// deploy claims the preview namespace, rolls the Build out into it and tells the merge request.
func (r *Reconciler) deploy(ctx context.Context, p *ferryv1.Project, pv *ferryv1.Preview, now time.Time) (ctrl.Result, error) {
	b := &ferryv1.Build{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: pv.Namespace, Name: pv.Spec.Build}, b); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, r.setReady(ctx, pv, metav1.ConditionFalse, "BuildNotFound", fmt.Sprintf("Build %s does not exist", pv.Spec.Build))
		}
		return ctrl.Result{}, err
	}
	if b.Spec.Project != p.Name || b.Spec.Trigger.MergeRequestIID != pv.Spec.MergeRequestIID {
		return ctrl.Result{}, r.setReady(ctx, pv, metav1.ConditionFalse, "BuildMismatch",
			fmt.Sprintf("Build %s is not a Build of merge request !%d of Project %s", b.Name, pv.Spec.MergeRequestIID, p.Name))
	}
	image, err := rollout.PinnedImage(b.Status.Image)
	if err != nil {
		return ctrl.Result{}, r.setReady(ctx, pv, metav1.ConditionFalse, "InvalidImage", fmt.Sprintf("Build %s: %v", b.Name, err))
	}
	if b.Status.Deploy == nil {
		return ctrl.Result{}, r.setReady(ctx, pv, metav1.ConditionFalse, ferryv1.NoDeploySettingsReason,
			fmt.Sprintf("Build %s has no deploy settings (deploy: in the pipeline file): there is nothing to run", b.Name))
	}
	before := pv.DeepCopy()
	if pv.Status.Cluster == "" {
		pv.Status.Cluster = p.Spec.Preview.Cluster
	}
	ns := ferryv1.PreviewName(p.Name, pv.Spec.MergeRequestIID)
	pv.Status.Namespace = ns
	if pv.Status.DeployedBuild != b.Name || pv.Status.Rollout == nil {
		pv.Status.DeployedBuild = b.Name
		pv.Status.Rollout = &ferryv1.ClusterRolloutStatus{Cluster: pv.Status.Cluster, Namespace: ns}
		pv.Status.LastActivity = &metav1.Time{Time: now}
	}
	c, err := r.Clusters.Client(ctx, pv.Status.Cluster)
	if err != nil {
		meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.ClusterUnreachableReason, Message: err.Error(), ObservedGeneration: pv.Generation})
		return ctrl.Result{}, errors.Join(r.patchStatus(ctx, before, pv), err)
	}
	if refused, err := claim(ctx, c, p, pv, r.FerryNamespace); err != nil {
		return ctrl.Result{}, errors.Join(r.patchStatus(ctx, before, pv), err)
	} else if refused != "" {
		r.warn(pv, refused)
		meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.NamespaceNotOwnedReason, Message: refused, ObservedGeneration: pv.Generation})
		return ctrl.Result{}, r.patchStatus(ctx, before, pv)
	}
	w := &rollout.Workload{
		Project: p.Name, Environment: EnvironmentName, Release: pv.Name, Namespace: ns,
		Owner: rollout.Owner{Namespace: p.Namespace, Name: p.Name, UID: p.UID},
		Image: image, Deploy: *b.Status.Deploy,
	}
	// A registry that needs credentials to pull gets them in the preview namespace too, as in the
	// Project's environments.
	if ref := p.Spec.Image.PullSecretRef; ref != nil {
		ps, err := rollout.ReadPullSecret(ctx, r.APIReader, p.Namespace, ref.Name)
		if missing := (*rollout.MissingPullSecretError)(nil); errors.As(err, &missing) {
			meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.SecretNotFoundReason, Message: missing.Error(), ObservedGeneration: pv.Generation})
			return ctrl.Result{RequeueAfter: pollInterval}, r.patchStatus(ctx, before, pv)
		} else if err != nil {
			return ctrl.Result{}, errors.Join(r.patchStatus(ctx, before, pv), err)
		}
		w.PullSecret = ps
	}
	st := pv.Status.Rollout
	if _, err := rollout.Step(ctx, c, rollout.Input{
		Cluster: pv.Status.Cluster, Workload: w,
		Strategy:   rollout.Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: rollout.DefaultProgressDeadline},
		Namespaces: rollout.NamespaceRules{FerryNamespace: r.FerryNamespace},
		Now:        now,
	}, st); err != nil {
		return ctrl.Result{}, errors.Join(r.patchStatus(ctx, before, pv), err)
	}
	pv.Status.URL = serviceURL(w)
	done := st.CompletionTime != nil || rollout.Failed(st)
	rolled := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition)
	switch {
	case rollout.Succeeded(st):
		meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.HealthyReason, Message: rolled.Message, ObservedGeneration: pv.Generation})
	case rolled != nil:
		status := metav1.ConditionUnknown
		if done {
			status = metav1.ConditionFalse
		}
		meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: status, Reason: rolled.Reason, Message: rolled.Message, ObservedGeneration: pv.Generation})
	}
	if err := r.patchStatus(ctx, before, pv); err != nil {
		return ctrl.Result{}, err
	}
	if !done {
		return ctrl.Result{RequeueAfter: pollInterval}, nil
	}
	return ctrl.Result{}, r.tell(ctx, p, pv, b)
}

// claim makes sure the preview namespace is this Preview's: it creates it with the record (the
// Preview's name and the Project's UID) or finds it carrying that record. A namespace that exists
// without it is refused with a message, never adopted.
func claim(ctx context.Context, c client.Client, p *ferryv1.Project, pv *ferryv1.Preview, ferryNamespace string) (string, error) {
	name := pv.Status.Namespace
	if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
		return fmt.Sprintf("the preview namespace %q is not a valid namespace name: %s", name, strings.Join(errs, "; ")), nil
	}
	if err := rollout.CheckReserved(name, ferryNamespace, EnvironmentName); err != nil {
		return err.Error(), nil
	}
	ns := &corev1.Namespace{}
	err := c.Get(ctx, types.NamespacedName{Name: name}, ns)
	if apierrors.IsNotFound(err) {
		ns = &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Labels: map[string]string{
				ferryv1.PreviewLabel: pv.Name, ferryv1.ProjectUIDLabel: string(p.UID),
				ferryv1.ProjectLabel: p.Name, ferryv1.ProjectNamespaceLabel: p.Namespace,
				ferryv1.EnvironmentLabel: EnvironmentName, ferryv1.ManagedByLabel: ferryv1.ManagedByValue,
			},
			Annotations: map[string]string{ferryv1.OwnerAnnotation: p.Namespace + "/" + p.Name},
		}}
		// Create, not apply: it fails if someone made the namespace meanwhile, which is then
		// judged like any namespace that exists.
		if err = c.Create(ctx, ns, client.FieldOwner(ferryv1.FieldManager)); err == nil {
			return "", nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return "", fmt.Errorf("failed to create namespace %s: %w", name, err)
		}
		err = c.Get(ctx, types.NamespacedName{Name: name}, ns)
	}
	if err != nil {
		return "", fmt.Errorf("failed to read namespace %s: %w", name, err)
	}
	if ours(ns, pv, p.UID) {
		return "", nil
	}
	return fmt.Sprintf("namespace %s on cluster %s exists and was not created by Ferry for preview %s/%s (labels %s=%q, %s=%q): Ferry neither deploys into it nor deletes it; delete or rename it on the cluster to let the preview run",
		name, pv.Status.Cluster, pv.Namespace, pv.Name, ferryv1.PreviewLabel, ns.Labels[ferryv1.PreviewLabel], ferryv1.ProjectUIDLabel, ns.Labels[ferryv1.ProjectUIDLabel]), nil
}

// ours reports whether a namespace carries the record of the Preview: its name and its Project's
// UID.
func ours(ns *corev1.Namespace, pv *ferryv1.Preview, projectUID types.UID) bool {
	return projectUID != "" && ns.Labels[ferryv1.PreviewLabel] == pv.Name && ns.Labels[ferryv1.ProjectUIDLabel] == string(projectUID)
}

// serviceURL is where the workload's Service answers inside the cluster; "" without a port.
func serviceURL(w *rollout.Workload) string {
	if len(w.Deploy.Ports) == 0 {
		return ""
	}
	return fmt.Sprintf("http://%s.%s.svc.cluster.local:%d", rollout.DeploymentName(w.Project, rollout.StableTrack), w.Namespace, w.Deploy.Ports[0])
}

// finalize deletes the preview namespace, when it is this Preview's, and then lets the Preview
// go. A deletion that fails is shown as NamespaceDeleted=False and retried with backoff.
func (r *Reconciler) finalize(ctx context.Context, pv *ferryv1.Preview) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(pv, ferryv1.PreviewFinalizer) {
		return ctrl.Result{}, nil
	}
	if pv.Status.Namespace != "" && pv.Status.Cluster != "" {
		if err := r.deleteNamespace(ctx, pv); err != nil {
			before := pv.DeepCopy()
			meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{
				Type: ferryv1.PreviewDeletedCondition, Status: metav1.ConditionFalse, Reason: ferryv1.NamespaceDeleteFailedReason,
				Message: fmt.Sprintf("namespace %s on cluster %s could not be deleted, retrying: %v", pv.Status.Namespace, pv.Status.Cluster, err), ObservedGeneration: pv.Generation,
			})
			r.warn(pv, fmt.Sprintf("namespace %s on cluster %s could not be deleted: %v", pv.Status.Namespace, pv.Status.Cluster, err))
			return ctrl.Result{}, errors.Join(r.patchStatus(ctx, before, pv), err)
		}
	}
	controllerutil.RemoveFinalizer(pv, ferryv1.PreviewFinalizer)
	return ctrl.Result{}, client.IgnoreNotFound(r.Update(ctx, pv))
}

// deleteNamespace deletes the preview namespace when it carries the Preview's record; one that
// does not is left alone.
func (r *Reconciler) deleteNamespace(ctx context.Context, pv *ferryv1.Preview) error {
	ref := metav1.GetControllerOf(pv)
	if ref == nil {
		return nil
	}
	c, err := r.Clusters.Client(ctx, pv.Status.Cluster)
	if err != nil {
		return err
	}
	ns := &corev1.Namespace{}
	if err := c.Get(ctx, types.NamespacedName{Name: pv.Status.Namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to read namespace %s: %w", pv.Status.Namespace, err)
	}
	if !ours(ns, pv, ref.UID) {
		r.warn(pv, fmt.Sprintf("namespace %s on cluster %s was not created by Ferry for this preview; it is left alone", ns.Name, pv.Status.Cluster))
		return nil
	}
	if !ns.DeletionTimestamp.IsZero() {
		return nil
	}
	// Guarded by UID and resourceVersion: a namespace re-created by someone else since it was read
	// is not deleted.
	uid, rv := ns.UID, ns.ResourceVersion
	if err := c.Delete(ctx, ns, client.Preconditions{UID: &uid, ResourceVersion: &rv}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to delete namespace %s: %w", ns.Name, err)
	}
	return nil
}

// noteMarker finds the Preview's note again; it is an HTML comment, invisible in GitLab.
func noteMarker(pv *ferryv1.Preview) string {
	return "<!-- ferry-preview:" + string(pv.UID) + " -->"
}

// noteBody is what the merge request is told about its preview.
func (r *Reconciler) noteBody(pv *ferryv1.Preview, b *ferryv1.Build) string {
	var sb strings.Builder
	state := "is ready"
	if !meta.IsStatusConditionTrue(pv.Status.Conditions, ferryv1.ReadyCondition) {
		state = "failed to roll out"
	}
	rev := b.Spec.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	fmt.Fprintf(&sb, "**Preview** %s: namespace `%s` on cluster `%s` runs Build `%s` (commit %s).", state, pv.Status.Namespace, pv.Status.Cluster, b.Name, rev)
	if pv.Status.URL != "" {
		fmt.Fprintf(&sb, "\n\nURL (inside the cluster): %s", pv.Status.URL)
	}
	if r.UIBaseURL != "" {
		fmt.Fprintf(&sb, "\n\nIn Ferry: %s/previews/%s/%s", strings.TrimSuffix(r.UIBaseURL, "/"), pv.Namespace, pv.Name)
	}
	return sb.String()
}

// tell posts the preview's note once and edits it when it changes. The note is found again by
// its marker before one is created, so a create that GitLab saved but answered with a 5xx (or a
// status write that did not happen) never makes a second note.
func (r *Reconciler) tell(ctx context.Context, p *ferryv1.Project, pv *ferryv1.Preview, b *ferryv1.Build) error {
	body := r.noteBody(pv, b)
	if pv.Status.NoteID != 0 && pv.Status.NoteBody == body {
		return nil
	}
	if p.Spec.GitLab.TokenSecretRef == nil {
		return nil
	}
	api, err := r.api(ctx, p)
	if err != nil {
		return err
	}
	project := gitlab.ProjectRefOf(p)
	iid := pv.Spec.MergeRequestIID
	marker := noteMarker(pv)
	full := body + "\n\n" + marker
	before := pv.DeepCopy()
	id := pv.Status.NoteID
	if id == 0 {
		if id, err = api.FindMergeRequestNoteID(ctx, project, iid, marker); err != nil {
			return err
		}
		if id == 0 {
			if err := api.CreateMergeRequestNote(ctx, project, iid, full); err != nil {
				return r.gitlabFailed(pv, err)
			}
			if id, err = api.FindMergeRequestNoteID(ctx, project, iid, marker); err != nil {
				return err
			}
			if id == 0 {
				return fmt.Errorf("the preview note of merge request !%d was created but is not listed", iid)
			}
			pv.Status.NoteID, pv.Status.NoteBody = id, body
			return r.patchStatus(ctx, before, pv)
		}
		pv.Status.NoteID = id
	}
	if err := api.UpdateMergeRequestNote(ctx, project, iid, id, full); err != nil {
		if gitlab.IsPermanent(err) {
			var apiErr *gitlab.APIError
			if errors.As(err, &apiErr) && apiErr.StatusCode == 404 {
				// The note was deleted in GitLab: post a new one next time.
				pv.Status.NoteID, pv.Status.NoteBody = 0, ""
				return errors.Join(r.patchStatus(ctx, before, pv), err)
			}
		}
		return r.gitlabFailed(pv, err)
	}
	pv.Status.NoteBody = body
	return r.patchStatus(ctx, before, pv)
}

// gitlabFailed: a permanent refusal is an event and is not retried until the note changes; the
// rest is retried with backoff.
func (r *Reconciler) gitlabFailed(pv *ferryv1.Preview, err error) error {
	if gitlab.IsPermanent(err) {
		r.warn(pv, err.Error())
		return nil
	}
	return err
}

func (r *Reconciler) setReady(ctx context.Context, pv *ferryv1.Preview, status metav1.ConditionStatus, reason, msg string) error {
	before := pv.DeepCopy()
	meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: status, Reason: reason, Message: msg, ObservedGeneration: pv.Generation})
	return r.patchStatus(ctx, before, pv)
}

func (r *Reconciler) patchStatus(ctx context.Context, before, pv *ferryv1.Preview) error {
	if err := r.Status().Patch(ctx, pv, client.MergeFrom(before)); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("failed to write the status of Preview %s: %w", client.ObjectKeyFromObject(pv), err))
	}
	return nil
}

// mergeRequestState asks GitLab for the Preview's merge request's state; "" when the Project has
// no GitLab token to ask with.
func (r *Reconciler) mergeRequestState(ctx context.Context, p *ferryv1.Project, pv *ferryv1.Preview) (string, error) {
	if p.Spec.GitLab.TokenSecretRef == nil {
		return "", nil
	}
	api, err := r.api(ctx, p)
	if err != nil {
		return "", err
	}
	return api.MergeRequestState(ctx, gitlab.ProjectRefOf(p), pv.Spec.MergeRequestIID)
}

// api reads the Project's token and returns a client for its GitLab.
func (r *Reconciler) api(ctx context.Context, p *ferryv1.Project) (gitlab.PreviewNotesAPI, error) {
	token, err := gitlab.ProjectToken(ctx, r.APIReader, p)
	if err != nil {
		return nil, err
	}
	newAPI := r.NewAPI
	if newAPI == nil {
		newAPI = func(baseURL, token string) (gitlab.PreviewNotesAPI, error) {
			return gitlab.New(baseURL, token, gitlab.Options{})
		}
	}
	return newAPI(p.Spec.GitLab.URL, token)
}

func (r *Reconciler) warn(pv *ferryv1.Preview, msg string) {
	r.event(pv, corev1.EventTypeWarning, "PreviewFailed", "Deploy", msg)
}

func (r *Reconciler) event(pv *ferryv1.Preview, kind, reason, action, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(pv, nil, kind, reason, action, "%s", msg)
	}
}

// sortOldestFirst orders Previews by last activity (creation when none), oldest first.
func sortOldestFirst(items []ferryv1.Preview) {
	at := func(pv *ferryv1.Preview) time.Time {
		if pv.Status.LastActivity != nil {
			return pv.Status.LastActivity.Time
		}
		return pv.CreationTimestamp.Time
	}
	slices.SortStableFunc(items, func(a, b ferryv1.Preview) int { return at(&a).Compare(at(&b)) })
}
