// Package rollout puts a Release's image on one cluster: the namespace from the Environment's
// template, a Deployment and a Service made from the deploy settings with image@sha256:…, applied
// server-side with Ferry's field manager, and the strategy that replaces the running version —
// the Deployment's own rolling update, or batches of a canary Deployment beside the stable one.
//
// Step advances a rollout by what can be done at once and never waits, so the Release controller
// calls it again later, after a restart too: every write is skipped when the object already holds
// what would be written, so nothing is applied twice.
package rollout

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Names on what a rollout creates; its labels and annotations under ferry.dev/ are in apis/v1alpha1.
const (
	// NameLabel is app.kubernetes.io/name: the project. The Service selects on it, so it reaches
	// the stable and the canary pods alike.
	NameLabel = "app.kubernetes.io/name"

	// ContainerName is the name of the application container.
	ContainerName = "app"
)

// Tracks of the Batch strategy.
const (
	// StableTrack is the Deployment that runs the current version; under Rolling it is the only one.
	StableTrack = "stable"
	// CanaryTrack is the Deployment beside the stable one that grows batch by batch.
	CanaryTrack = "canary"
)

// DefaultProgressDeadline is how long a rollout (each batch, for Batch) may take to become healthy
// when the Environment does not say.
const DefaultProgressDeadline = 10 * time.Minute

// Workload is what one Release deploys into one environment.
type Workload struct {
	// Project, Environment and Release name where the workload comes from; they become labels.
	Project     string
	Environment string
	Release     string

	// Owner is the Project the target namespace must belong to.
	Owner Owner

	// Namespace is the namespace on the target cluster.
	Namespace string

	// Image is repository@sha256:<digest>.
	Image string

	// Deploy is how the application runs.
	Deploy ferryv1.DeploySpec

	// PullSecret, when set, is copied into the namespace and named in the pods' imagePullSecrets.
	PullSecret *PullSecret
}

// PullSecret is a kubernetes.io/dockerconfigjson Secret to copy into target namespaces.
type PullSecret struct {
	// Name is the Secret's name in the target namespace.
	Name string
	// DockerConfigJSON is the content of the .dockerconfigjson key.
	DockerConfigJSON []byte
}

// Replicas is the number of replicas the workload asks for (default 1).
func (w *Workload) Replicas() int32 {
	if w.Deploy.Replicas == nil {
		return 1
	}
	return *w.Deploy.Replicas
}

// Strategy is an Environment's rollout strategy with its defaults filled in.
type Strategy struct {
	// Type is Rolling or Batch.
	Type ferryv1.RolloutStrategyType
	// Batches is the number of batches under Batch.
	Batches int32
	// Between is what happens between two batches.
	Between ferryv1.BatchGate
	// Pause is how long to wait after a healthy batch when Between is Pause.
	Pause time.Duration
	// ProgressDeadline bounds how long a rollout (each batch) may take to become healthy.
	ProgressDeadline time.Duration
}

// StrategyOf returns the Environment's strategy with defaults.
func StrategyOf(env *ferryv1.Environment) Strategy {
	r := env.Spec.Rollout
	s := Strategy{Type: r.Type, ProgressDeadline: DefaultProgressDeadline, Between: ferryv1.BatchGateNone}
	if s.Type == "" {
		s.Type = ferryv1.RollingStrategy
	}
	if r.ProgressDeadline != nil && r.ProgressDeadline.Duration > 0 {
		s.ProgressDeadline = r.ProgressDeadline.Duration
	}
	if s.Type == ferryv1.BatchStrategy && r.Batch != nil {
		s.Batches = r.Batch.Batches
		if r.Batch.Between != "" {
			s.Between = r.Batch.Between
		}
		if r.Batch.Pause != nil {
			s.Pause = r.Batch.Pause.Duration
		}
	}
	if s.Type == ferryv1.BatchStrategy && s.Batches < 2 {
		// The API requires 2..10; a Batch strategy without batches is a plain rolling update.
		s.Type = ferryv1.RollingStrategy
	}
	return s
}

// DeploymentName is the name of a track's Deployment: the project for the stable one,
// <project>-canary for the canary.
func DeploymentName(project, track string) string {
	if track == CanaryTrack {
		return project + "-canary"
	}
	return project
}

// NamespaceFor expands an Environment's namespace template ({project}, {namespace}, {environment};
// default "{project}-{environment}") for a Project (its hub namespace and name) and checks that the
// result is a valid namespace name. Whether Ferry may deploy there is for CheckReserved and Claim.
func NamespaceFor(template string, project types.NamespacedName, environment string) (string, error) {
	if template == "" {
		template = ferryv1.DefaultNamespaceTemplate
	}
	ns := strings.NewReplacer("{project}", project.Name, "{namespace}", project.Namespace, "{environment}", environment).Replace(template)
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return "", fmt.Errorf("namespace template %q gives %q for project %s and environment %s, which is not a valid namespace name (lower-case letters, digits and '-', at most 63): %s",
			template, ns, project, environment, strings.Join(errs, "; "))
	}
	return ns, nil
}

// PinnedImage returns repository@sha256:<digest> for an image reference that carries a digest,
// dropping a tag written before the digest (repository:tag@sha256:… is allowed and the tag
// ignored).
func PinnedImage(ref string) (string, error) {
	repo, digest, ok := strings.Cut(ref, "@")
	if !ok || !strings.HasPrefix(digest, "sha256:") || len(digest) != len("sha256:")+64 {
		return "", fmt.Errorf("image %q is not pinned by digest (repository@sha256:<64 hex digits>)", ref)
	}
	if slash := strings.LastIndex(repo, "/"); strings.LastIndex(repo, ":") > slash {
		repo = repo[:strings.LastIndex(repo, ":")]
	}
	if repo == "" {
		return "", fmt.Errorf("image %q has no repository", ref)
	}
	return repo + "@" + digest, nil
}

// ShortImage shortens repository@sha256:<digest> to repository@sha256:<12 hex> for messages.
func ShortImage(ref string) string {
	repo, digest, ok := strings.Cut(ref, "@sha256:")
	if !ok || len(digest) < 12 {
		return ref
	}
	return repo + "@sha256:" + digest[:12]
}
