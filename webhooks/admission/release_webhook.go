// Package admission holds Ferry's admission webhooks: the checks that need the identity of the
// person making the request, or a lookup of another object, which CEL rules in the CRDs cannot do.
package admission

import (
	"context"
	"fmt"
	"slices"
	"strings"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
)

// SkipVerb is the verb on environments (group ferry.dev, the environment's name, the Release's
// namespace) that RBAC must grant a user who creates a Release whose spec.environments leave out
// a gated environment that comes earlier on the Project's path than one it goes to.
const SkipVerb = "skip"

// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// ReleaseWebhook makes what approvers are shown what they approve. It records who created a
// Release from the authenticated request (the self-approval rule compares approvers with it), and
// refuses a Release whose image is not its Project's, whose Build did not make its image from its
// revision, or whose path leaves out an approval gate without the right to.
type ReleaseWebhook struct {
	// Reader reads Projects, Builds, Releases and Environments, uncached.
	Reader client.Reader
	// Client creates SubjectAccessReviews.
	Client client.Client
	// Asserted believes the person Ferry's UI names when it re-requests a gate; nil believes
	// nobody.
	Asserted *AssertedIdentities
}

// +kubebuilder:webhook:path=/mutate-ferry-dev-v1alpha1-release,mutating=true,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=releases,verbs=create,versions=v1alpha1,name=releases.ferry.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-ferry-dev-v1alpha1-release,mutating=false,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=releases,verbs=create;update,versions=v1alpha1,name=vreleases.ferry.dev,admissionReviewVersions=v1

// Default sets spec.requestedBy to the requesting user, and spec.revision to the Build's commit
// when the Release names a Build and no revision.
func (w *ReleaseWebhook) Default(ctx context.Context, r *ferryv1.Release) error {
	user, err := requestUser(ctx)
	if err != nil {
		return err
	}
	r.Spec.RequestedBy = user.Username
	if r.Spec.Build == "" || r.Spec.Revision != "" {
		return nil
	}
	b := &ferryv1.Build{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.Spec.Build}, b); err != nil {
		// The validating webhook says what is wrong with the Build.
		return client.IgnoreNotFound(err)
	}
	r.Spec.Revision = b.Spec.Revision
	return nil
}

// ValidateCreate refuses a Release that would show approvers something else than what it deploys,
// or skip a gate, with the reason.
func (w *ReleaseWebhook) ValidateCreate(ctx context.Context, r *ferryv1.Release) (admission.Warnings, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("no admission request in context: %w", err)
	}
	if err := w.Asserted.checkReleaseCreate(ctx, r); err != nil {
		return nil, err
	}
	p := &ferryv1.Project{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.Spec.Project}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("project %s not found in namespace %s: a Release's image and path are those of its Project", r.Spec.Project, r.Namespace)
		}
		return nil, fmt.Errorf("failed to read Project %s: %w", r.Spec.Project, err)
	}
	if r.Spec.Build != "" {
		err = w.checkBuild(ctx, r)
	} else {
		err = w.checkRevision(ctx, r)
	}
	if err != nil {
		return nil, err
	}
	if repo := imageRepository(r.Spec.Image); repo != p.Spec.Image.Repository {
		return nil, fmt.Errorf("spec.image %s is not in repository %s of project %s (spec.image.repository): a Release deploys only its Project's images", r.Spec.Image, p.Spec.Image.Repository, p.Name)
	}
	return nil, w.checkPath(ctx, r, p, req)
}

// ValidateUpdate allows updates (the spec is immutable, a CEL rule of the CRD) but for the
// person Ferry's UI acts for: only the UI names one, and the UI only re-requests gates.
func (w *ReleaseWebhook) ValidateUpdate(ctx context.Context, oldObj, newObj *ferryv1.Release) (admission.Warnings, error) {
	return nil, w.Asserted.checkReleaseUpdate(ctx, oldObj, newObj)
}

// ValidateDelete allows deletion.
func (w *ReleaseWebhook) ValidateDelete(context.Context, *ferryv1.Release) (admission.Warnings, error) {
	return nil, nil
}

// checkBuild refuses a Release whose Build is not a successful Build of its Project that made its
// image from its revision.
func (w *ReleaseWebhook) checkBuild(ctx context.Context, r *ferryv1.Release) error {
	b := &ferryv1.Build{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: r.Spec.Build}, b); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("build %s not found in namespace %s: spec.build names the Build that made the image, or is left empty", r.Spec.Build, r.Namespace)
		}
		return fmt.Errorf("failed to read Build %s: %w", r.Spec.Build, err)
	}
	if b.Spec.Project != r.Spec.Project {
		return fmt.Errorf("build %s belongs to project %s, not %s", b.Name, b.Spec.Project, r.Spec.Project)
	}
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready == nil || ready.Status != metav1.ConditionTrue || b.Status.Image == "" {
		state := "has not finished"
		if ready != nil {
			state = fmt.Sprintf("is Ready=%s (%s)", ready.Status, ready.Reason)
		}
		return fmt.Errorf("build %s %s: only the image of a successful Build can be released", b.Name, state)
	}
	if imageDigest(b.Status.Image) != imageDigest(r.Spec.Image) {
		return fmt.Errorf("spec.image %s is not the image of Build %s (%s): a Release of a Build deploys the image it made", r.Spec.Image, b.Name, b.Status.Image)
	}
	if r.Spec.Revision != b.Spec.Revision {
		return fmt.Errorf("spec.revision %s is not the commit Build %s was made from (%s): leave spec.revision empty to take the Build's", r.Spec.Revision, b.Name, b.Spec.Revision)
	}
	return nil
}

// checkRevision refuses a revision that a Release naming no Build claims for its image, unless a
// Build of the Project made the image from that commit, or an earlier Release of the image says
// so (it was checked when it was created).
func (w *ReleaseWebhook) checkRevision(ctx context.Context, r *ferryv1.Release) error {
	if r.Spec.Revision == "" {
		return nil
	}
	builds, err := buildsOfImage(ctx, w.Reader, r.Namespace, r.Spec.Project, r.Spec.Image)
	if err != nil {
		return err
	}
	for _, b := range builds {
		if b.Spec.Revision == r.Spec.Revision {
			return nil
		}
	}
	if len(builds) > 0 {
		return fmt.Errorf("spec.revision %s is not the commit Build %s made image %s from (%s): leave spec.revision empty or name the Build", r.Spec.Revision, builds[0].Name, r.Spec.Image, builds[0].Spec.Revision)
	}
	releases := &ferryv1.ReleaseList{}
	if err := w.Reader.List(ctx, releases, client.InNamespace(r.Namespace)); err != nil {
		return fmt.Errorf("failed to list Releases in %s: %w", r.Namespace, err)
	}
	for _, o := range releases.Items {
		if o.Spec.Project == r.Spec.Project && imageDigest(o.Spec.Image) == imageDigest(r.Spec.Image) && o.Spec.Revision == r.Spec.Revision {
			return nil
		}
	}
	return fmt.Errorf("spec.revision %s cannot be checked: no Build or Release of project %s records image %s; name the Build that made it (spec.build) or leave spec.revision empty", r.Spec.Revision, r.Spec.Project, r.Spec.Image)
}

// checkPath refuses environments that are not on the Project's path, and a path that leaves out
// a gated environment before one it goes to, unless the image already passed that gate or RBAC
// grants the requesting user the skip verb on it.
func (w *ReleaseWebhook) checkPath(ctx context.Context, r *ferryv1.Release, p *ferryv1.Project, req admission.Request) error {
	full := p.Spec.Promotion.Environments
	if len(full) == 0 {
		return fmt.Errorf("project %s has no promotion path (spec.promotion.environments): there is nowhere to release to", p.Name)
	}
	last := -1
	for _, e := range r.Spec.Environments {
		i := slices.Index(full, e)
		if i < 0 {
			return fmt.Errorf("environment %s is not on the promotion path of project %s (%s)", e, p.Name, strings.Join(full, " → "))
		}
		last = max(last, i)
	}
	var passed []ferryv1.Release
	listed := false
	for _, e := range full[:max(last, 0)] {
		if slices.Contains(r.Spec.Environments, e) {
			continue
		}
		gated, err := w.gated(ctx, e)
		if err != nil {
			return err
		}
		if !gated {
			continue
		}
		if !listed {
			if passed, err = w.releasesOfImage(ctx, r); err != nil {
				return err
			}
			listed = true
		}
		if passedGate(passed, e) {
			continue
		}
		allowed, err := w.maySkip(ctx, r.Namespace, e, req)
		if err != nil || allowed {
			return err
		}
		return fmt.Errorf("spec.environments leave out environment %s, which comes before %s on the path of project %s (%s) and has an approval gate that image %s has not passed: user %q may not skip it (RBAC verb %q on environments/%s of group %s in namespace %s)",
			e, full[last], p.Name, strings.Join(full, " → "), r.Spec.Image, req.UserInfo.Username, SkipVerb, e, ferryv1.GroupVersion.Group, r.Namespace)
	}
	return nil
}

// gated reports whether an environment has an approval gate. One that does not exist may get one
// before the Release gets there, and counts as gated.
func (w *ReleaseWebhook) gated(ctx context.Context, name string) (bool, error) {
	env := &ferryv1.Environment{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Name: name}, env); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("failed to read Environment %s: %w", name, err)
	}
	return env.Spec.Approval != nil, nil
}

// releasesOfImage are the Releases of r's Project with r's image.
func (w *ReleaseWebhook) releasesOfImage(ctx context.Context, r *ferryv1.Release) ([]ferryv1.Release, error) {
	list := &ferryv1.ReleaseList{}
	if err := w.Reader.List(ctx, list, client.InNamespace(r.Namespace)); err != nil {
		return nil, fmt.Errorf("failed to list Releases in %s: %w", r.Namespace, err)
	}
	return slices.DeleteFunc(list.Items, func(o ferryv1.Release) bool {
		return o.Spec.Project != r.Spec.Project || imageDigest(o.Spec.Image) != imageDigest(r.Spec.Image)
	}), nil
}

// passedGate reports whether one of the Releases had its gate in env opened by approvals.
func passedGate(releases []ferryv1.Release, env string) bool {
	for _, o := range releases {
		for _, es := range o.Status.Environments {
			if c := meta.FindStatusCondition(es.Conditions, ferryv1.ApprovedCondition); es.Name == env && c != nil && c.Status == metav1.ConditionTrue && c.Reason == ferryv1.ApprovedReason {
				return true
			}
		}
	}
	return false
}

// maySkip asks the API server whether the requesting user may skip environment env in namespace.
func (w *ReleaseWebhook) maySkip(ctx context.Context, namespace, env string, req admission.Request) (bool, error) {
	u := req.UserInfo
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: SkipVerb, Group: ferryv1.GroupVersion.Group, Resource: "environments", Name: env,
		},
	}}
	if len(u.Extra) > 0 {
		review.Spec.Extra = map[string]authorizationv1.ExtraValue{}
		for k, v := range u.Extra {
			review.Spec.Extra[k] = authorizationv1.ExtraValue(v)
		}
	}
	if err := w.Client.Create(ctx, review); err != nil {
		return false, fmt.Errorf("failed to ask whether user %q may skip environment %s: %w", u.Username, env, err)
	}
	return review.Status.Allowed, nil
}

// buildsOfImage are the Builds of a Project that made image (by digest), oldest first.
func buildsOfImage(ctx context.Context, reader client.Reader, namespace, project, image string) ([]*ferryv1.Build, error) {
	list := &ferryv1.BuildList{}
	if err := reader.List(ctx, list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("failed to list Builds in %s: %w", namespace, err)
	}
	digest := imageDigest(image)
	var out []*ferryv1.Build
	for i := range list.Items {
		b := &list.Items[i]
		if b.Spec.Project == project && b.Status.Image != "" && imageDigest(b.Status.Image) == digest {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b *ferryv1.Build) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	return out, nil
}

// imageDigest is the digest of repository@sha256:…, "" when there is none.
func imageDigest(image string) string {
	_, digest, _ := strings.Cut(image, "@")
	return digest
}

// imageRepository is an image reference without its digest and tag.
func imageRepository(image string) string {
	repo, _, _ := strings.Cut(image, "@")
	if slash := strings.LastIndex(repo, "/"); strings.LastIndex(repo, ":") > slash {
		repo = repo[:strings.LastIndex(repo, ":")]
	}
	return repo
}

// Options configure the admission webhooks.
type Options struct {
	// Identities maps the GitLab users who trigger Builds to the Kubernetes users who approve.
	Identities approval.IdentityMapping
	// BuildCreators are the users whose Builds keep their trigger (Ferry's GitLab receiver).
	BuildCreators *BuildCreators
	// UI is the identity of Ferry's UI, whose requests may name the person it acts for; nil or
	// empty, nobody's may.
	UI *TrustedUI
}

// SetupWebhooks registers Ferry's admission webhooks with the manager's webhook server.
func SetupWebhooks(mgr ctrl.Manager, opts Options) error {
	builds := &BuildWebhook{Creators: opts.BuildCreators}
	if err := ctrl.NewWebhookManagedBy(mgr, &ferryv1.Build{}).
		WithDefaulter(builds).
		WithValidator(builds).
		Complete(); err != nil {
		return err
	}
	asserted := &AssertedIdentities{UI: opts.UI, Client: mgr.GetClient()}
	releases := &ReleaseWebhook{Reader: mgr.GetAPIReader(), Client: mgr.GetClient(), Asserted: asserted}
	if err := ctrl.NewWebhookManagedBy(mgr, &ferryv1.Release{}).
		WithDefaulter(releases).
		WithValidator(releases).
		Complete(); err != nil {
		return err
	}
	approvals := &ApprovalWebhook{Reader: mgr.GetAPIReader(), Identities: opts.Identities, Asserted: asserted, Recorder: mgr.GetEventRecorder("ferry-admission")}
	if err := ctrl.NewWebhookManagedBy(mgr, &ferryv1.Approval{}).
		WithDefaulter(approvals).
		WithValidator(approvals).
		Complete(); err != nil {
		return err
	}
	if err := ctrl.NewWebhookManagedBy(mgr, &ferryv1.Environment{}).
		WithValidator(&EnvironmentWebhook{}).
		Complete(); err != nil {
		return err
	}
	return ctrl.NewWebhookManagedBy(mgr, &ferryv1.Freeze{}).
		WithValidator(&FreezeWebhook{}).
		Complete()
}
