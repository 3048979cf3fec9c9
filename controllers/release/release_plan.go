package release

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/rollout"
)

// plan is what a Release needs from other objects, resolved once per Reconcile.
type plan struct {
	project *ferryv1.Project
	// path is the environments the Release goes through, in order.
	path []string
	// build is the Release's Build, nil when it has none or it is gone.
	build *ferryv1.Build
	// image is the Release's image, repository@sha256:….
	image string
	// deploy is how the application runs.
	deploy ferryv1.DeploySpec
	// subject is whom self-approval is checked against.
	subject approval.Subject
	// pullSecret is the Project's pull Secret to copy into target namespaces.
	pullSecret *rollout.PullSecret
	// unlock releases the deploy-lock mutexes this Reconcile took (see takeTargets); the Reconcile
	// calls it once the status that records the lock is written.
	unlock []func()
}

// releaseLocks releases the mutexes the Reconcile took. A nil plan holds none.
func (p *plan) releaseLocks() {
	if p == nil {
		return
	}
	for _, unlock := range p.unlock {
		unlock()
	}
	p.unlock = nil
}

// owner is the Project, the owner of every namespace the Release deploys into.
func (p *plan) owner() rollout.Owner {
	return rollout.Owner{Namespace: p.project.Namespace, Name: p.project.Name, UID: p.project.UID}
}

// stalledError is a problem only a person can fix. retry asks to look again later because the
// fix is not watched.
type stalledError struct {
	reason, message string
	retry           bool
}

func (e *stalledError) Error() string { return e.message }

func stalled(reason, format string, args ...any) error {
	return &stalledError{reason: reason, message: fmt.Sprintf(format, args...)}
}

// resolve reads the Project, the path, the Build and the deploy settings.
func (r *Reconciler) resolve(ctx context.Context, rel *ferryv1.Release) (*plan, error) {
	p := &plan{project: &ferryv1.Project{}}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}, p.project); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, stalled(ferryv1.ProjectNotFoundReason, "project %s not found in namespace %s", rel.Spec.Project, rel.Namespace)
		}
		return nil, fmt.Errorf("failed to read Project %s: %w", rel.Spec.Project, err)
	}
	full := p.project.Spec.Promotion.Environments
	if len(full) == 0 {
		return nil, stalled(ferryv1.NotOnPromotionPathReason, "project %s has no promotion environments (spec.promotion.environments)", rel.Spec.Project)
	}
	for _, e := range rel.Spec.Environments {
		if !slices.Contains(full, e) {
			return nil, stalled(ferryv1.NotOnPromotionPathReason, "environment %s is not on the promotion path of project %s (%s)", e, rel.Spec.Project, strings.Join(full, " → "))
		}
	}
	p.path = slices.DeleteFunc(slices.Clone(full), func(e string) bool {
		return len(rel.Spec.Environments) > 0 && !slices.Contains(rel.Spec.Environments, e)
	})
	image, err := rollout.PinnedImage(rel.Spec.Image)
	if err != nil {
		return nil, stalled(ferryv1.FailedReason, "%v", err)
	}
	p.image = image
	var triggers []*ferryv1.Build
	if rel.Spec.Build != "" {
		b := &ferryv1.Build{}
		switch err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Build}, b); {
		case err == nil:
			p.build = b
			triggers = []*ferryv1.Build{b}
		case !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("failed to read Build %s: %w", rel.Spec.Build, err)
		case rel.Spec.Deploy == nil:
			return nil, stalled(ferryv1.BuildNotFoundReason, "build %s not found: the Release has no deploy settings of its own (spec.deploy) and its Build's are gone", rel.Spec.Build)
		}
	} else if triggers, err = r.buildsOfImage(ctx, rel.Namespace, rel.Spec.Project, image, false); err != nil {
		return nil, err
	}
	p.subject = approval.SubjectOf(rel, triggers, r.Identities)
	p.deploy = deploySettings(rel, p.build)
	if ref := p.project.Spec.Image.PullSecretRef; ref != nil {
		ps, err := r.pullSecret(ctx, rel.Namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		p.pullSecret = ps
	}
	return p, nil
}

// buildsOfImage are the Builds of a Project that made image (by digest), oldest first, from the
// cache; live asks the API server when the cache knows none, in case it has not seen the Build yet.
func (r *Reconciler) buildsOfImage(ctx context.Context, namespace, project, image string, live bool) ([]*ferryv1.Build, error) {
	_, digest, _ := strings.Cut(image, "@")
	list := &ferryv1.BuildList{}
	if err := r.List(ctx, list, client.InNamespace(namespace), client.MatchingFields{imageDigestIndex: digest}); err != nil {
		return nil, fmt.Errorf("failed to list the Builds of image %s: %w", rollout.ShortImage(image), err)
	}
	builds := buildsOf(list.Items, project, digest)
	if len(builds) > 0 || !live {
		return builds, nil
	}
	list = &ferryv1.BuildList{}
	if err := r.APIReader.List(ctx, list, client.InNamespace(namespace)); err != nil {
		return nil, fmt.Errorf("failed to list the Builds in %s: %w", namespace, err)
	}
	return buildsOf(list.Items, project, digest), nil
}

// buildsOf picks the Builds of project whose image has digest, oldest first.
func buildsOf(items []ferryv1.Build, project, digest string) []*ferryv1.Build {
	var out []*ferryv1.Build
	for i := range items {
		b := &items[i]
		if b.Spec.Project == project && digest != "" && imageDigest(b) == digest {
			out = append(out, b)
		}
	}
	slices.SortFunc(out, func(a, b *ferryv1.Build) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// imageDigest is the digest of the image a Build pushed, "" when it pushed none.
func imageDigest(b *ferryv1.Build) string {
	_, digest, _ := strings.Cut(b.Status.Image, "@")
	return digest
}

// deploySettings are the Release's own, else its Build's, else the defaults.
func deploySettings(rel *ferryv1.Release, b *ferryv1.Build) ferryv1.DeploySpec {
	switch {
	case rel.Spec.Deploy != nil:
		return *rel.Spec.Deploy.DeepCopy()
	case b != nil && b.Status.Deploy != nil:
		return *b.Status.Deploy.DeepCopy()
	}
	return ferryv1.DeploySpec{}
}

// pullSecret reads the Project's pull Secret. Its content never appears in a message.
func (r *Reconciler) pullSecret(ctx context.Context, ns, name string) (*rollout.PullSecret, error) {
	ps, err := rollout.ReadPullSecret(ctx, r.APIReader, ns, name)
	if missing := (*rollout.MissingPullSecretError)(nil); errors.As(err, &missing) {
		return nil, &stalledError{reason: ferryv1.SecretNotFoundReason, message: missing.Error(), retry: true}
	}
	return ps, err
}

// workload is what the Release deploys into an environment's namespace.
func (p *plan) workload(rel *ferryv1.Release, env, namespace string) *rollout.Workload {
	return &rollout.Workload{
		Project: rel.Spec.Project, Environment: env, Release: rel.Name, Namespace: namespace, Owner: p.owner(),
		Image: p.image, Deploy: p.deploy, PullSecret: p.pullSecret,
	}
}

// deployedIn is what the Project records as running in an environment.
func deployedIn(project *ferryv1.Project, env string) *ferryv1.ProjectEnvironmentStatus {
	for i := range project.Status.Environments {
		if project.Status.Environments[i].Name == env {
			return &project.Status.Environments[i]
		}
	}
	return nil
}

// previousWorkload is what the environment ran before the Release: the image recorded when the
// rollout started, with the settings of the Release that deployed it (the Release's own settings
// when that one is gone). Nil when the environment ran nothing.
func (r *Reconciler) previousWorkload(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus, namespace string) *rollout.Workload {
	if es.PreviousImage == "" {
		return nil
	}
	image, err := rollout.PinnedImage(es.PreviousImage)
	if err != nil {
		return nil
	}
	w := &rollout.Workload{
		Project: rel.Spec.Project, Environment: es.Name, Namespace: namespace, Owner: p.owner(),
		Image: image, Deploy: p.deploy, PullSecret: p.pullSecret,
	}
	cur := deployedIn(p.project, es.Name)
	if cur == nil || cur.Image != es.PreviousImage || cur.Release == "" {
		return w
	}
	w.Release = cur.Release
	prev := &ferryv1.Release{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: cur.Release}, prev); err != nil {
		return w
	}
	var b *ferryv1.Build
	if prev.Spec.Deploy == nil && prev.Spec.Build != "" {
		b = &ferryv1.Build{}
		if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: prev.Spec.Build}, b); err != nil {
			return w
		}
	}
	w.Deploy = deploySettings(prev, b)
	return w
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
