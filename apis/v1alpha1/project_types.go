package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultPipelineFile is the pipeline file read from a repository when a Project does not name one.
const DefaultPipelineFile = ".ferry.yaml"

// ProjectSpec ties one GitLab project to the image it builds and the environments it is promoted
// through.
type ProjectSpec struct {
	// gitlab says which GitLab project this is and how to talk to it.
	// +required
	GitLab GitLabProject `json:"gitlab"`

	// repository says where to fetch the source from.
	// +required
	Repository Repository `json:"repository"`

	// pipelineFile is the path of the pipeline file in the repository. Default ".ferry.yaml".
	// +optional
	// +kubebuilder:default=".ferry.yaml"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('/') && !self.contains('..')",message="pipelineFile must be a relative path inside the repository"
	PipelineFile string `json:"pipelineFile,omitempty"`

	// image says where built images are pushed.
	// +required
	Image ImageRepository `json:"image"`

	// triggers say which pushes and merge requests start a Build.
	// +optional
	Triggers Triggers `json:"triggers,omitempty"`

	// promotion is the ordered path of environments a Release goes through, and when a Release is
	// created without a person asking.
	// +optional
	Promotion Promotion `json:"promotion,omitempty"`

	// buildHistoryLimit is how many finished Builds to keep; older ones are deleted with their
	// pipeline runs. Default 20.
	// +optional
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	BuildHistoryLimit int32 `json:"buildHistoryLimit,omitempty"`

	// buildTimeout caps how long one Build may run. The pipeline file may ask for less, never more.
	// Default 1h.
	// +optional
	BuildTimeout *metav1.Duration `json:"buildTimeout,omitempty"`

	// serviceAccountName is the ServiceAccount the pipeline run's pods use in this namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// preview deploys every successful Build of a merge request's head into a namespace of its
	// own, {project}-mr-{iid}, on a chosen cluster. A preview needs no approval and is not an
	// environment of the promotion path.
	// +optional
	Preview *PreviewSettings `json:"preview,omitempty"`
}

// PreviewSettings say whether and where a Project's merge requests get preview environments.
// +kubebuilder:validation:XValidation:rule="!self.enabled || size(self.cluster) > 0",message="cluster is required when previews are enabled"
type PreviewSettings struct {
	// enabled turns previews on.
	// +optional
	Enabled bool `json:"enabled,omitempty"`

	// cluster is the name of the Cluster previews are deployed to.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$`
	Cluster string `json:"cluster,omitempty"`

	// ttl is how long a preview lives without a new Build of its merge request; it is then
	// deleted with everything in its namespace. Default 72h; at least 1m, at most 30 days.
	// +optional
	// +kubebuilder:default="72h"
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('1m') && duration(self) <= duration('720h')",message="ttl must be between 1m and 720h"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// maxPreviews is how many previews the Project may have at once; a new one deletes the
	// least recently active. Default 5.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MaxPreviews int32 `json:"maxPreviews,omitempty"`
}

// DefaultPreviewTTL is a preview's time to live when the Project does not say.
const DefaultPreviewTTL = 72 * time.Hour

// DefaultMaxPreviews is the cap of previews per Project when the Project does not say.
const DefaultMaxPreviews = 5

// PreviewTTL is the Project's preview TTL with its default.
func (p *PreviewSettings) PreviewTTL() time.Duration {
	if p == nil || p.TTL == nil || p.TTL.Duration <= 0 {
		return DefaultPreviewTTL
	}
	return p.TTL.Duration
}

// Max is the Project's cap of previews with its default.
func (p *PreviewSettings) Max() int {
	if p == nil || p.MaxPreviews <= 0 {
		return DefaultMaxPreviews
	}
	return int(p.MaxPreviews)
}

// GitLabProject identifies a GitLab project and the secrets used with it.
type GitLabProject struct {
	// url is the base URL of the GitLab instance, for example https://gitlab.example.com. Webhooks
	// are matched on it and the API token is only ever sent to this host.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^https?://[^/@]+(/.*)?$')",message="url must be an http(s) URL without credentials"
	URL string `json:"url"`

	// projectPath is the project's full path, path_with_namespace in GitLab's payloads, for example
	// group/subgroup/app.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^[^/\s]+(/[^/\s]+)+$`
	ProjectPath string `json:"projectPath"`

	// projectID is GitLab's numeric project ID. When set, webhooks may also match on it, which
	// survives a project rename.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ProjectID int64 `json:"projectID,omitempty"`

	// tokenSecretRef names a Secret in the Project's namespace with an API token (key default
	// "token") used to report commit statuses and merge request notes. Without it Ferry reports
	// nothing back to GitLab.
	// +optional
	TokenSecretRef *SecretKeyReference `json:"tokenSecretRef,omitempty"`

	// webhookSecretRef names a Secret in the Project's namespace that authenticates GitLab's
	// webhooks. Key "token" is the secret token GitLab sends in X-Gitlab-Token; during a rotation
	// "previousToken" is accepted too; "signingToken" (whsec_…) makes Ferry also verify GitLab's
	// webhook-signature HMAC.
	// +required
	WebhookSecretRef LocalObjectReference `json:"webhookSecretRef"`
}

// Repository is where the source of a Project is fetched from.
type Repository struct {
	// cloneURL is the repository's HTTPS or SSH clone URL. It is the only URL Ferry ever fetches for
	// this Project.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(https?://[^/@]+/|ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:).+')",message="cloneURL must be an http(s) or ssh URL without embedded credentials"
	CloneURL string `json:"cloneURL"`

	// credentialsSecretRef names a Secret in the Project's namespace with the clone credentials: a
	// kubernetes.io/basic-auth Secret (username, password) for HTTPS, or a kubernetes.io/ssh-auth
	// Secret (ssh-privatekey, and known_hosts) for SSH.
	// +optional
	CredentialsSecretRef *LocalObjectReference `json:"credentialsSecretRef,omitempty"`
}

// ImageRepository is where a Project's images are pushed.
type ImageRepository struct {
	// repository is the image repository without tag or digest, for example
	// harbor.example.com/team/app.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\.[a-z0-9]+([._-][a-z0-9]+)*)*(/[a-z0-9]+([._-][a-z0-9]+)*)+$`
	Repository string `json:"repository"`

	// pushSecretRef names a kubernetes.io/dockerconfigjson Secret in the Project's namespace with the
	// credentials to push (for Harbor, a robot account robot$project+name).
	// +optional
	PushSecretRef *LocalObjectReference `json:"pushSecretRef,omitempty"`

	// pullSecretRef names a kubernetes.io/dockerconfigjson Secret that target clusters use to pull
	// the image; Ferry copies it into each target namespace.
	// +optional
	PullSecretRef *LocalObjectReference `json:"pullSecretRef,omitempty"`

	// insecure allows plain HTTP to the registry. Loopback registries never need it.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// Triggers say which GitLab events start a Build.
type Triggers struct {
	// branches are the branches whose pushes build, as glob patterns (main, release/*). Default
	// ["main"].
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Branches []string `json:"branches,omitempty"`

	// tags are the tags whose pushes build, as glob patterns (v*). No tags means tag pushes do not
	// build.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	Tags []string `json:"tags,omitempty"`

	// mergeRequests builds the head of merge requests that target a tracked branch.
	// +optional
	MergeRequests bool `json:"mergeRequests,omitempty"`

	// supersede cancels a running Build when a newer push to the same ref arrives.
	// +optional
	Supersede bool `json:"supersede,omitempty"`
}

// Promotion is the path a Release follows.
type Promotion struct {
	// environments are the names of Environments in the order a Release goes through them.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:XValidation:rule="self.all(e, self.exists_one(x, x == e))",message="environments must not repeat"
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=63
	Environments []string `json:"environments,omitempty"`

	// autoRelease creates a Release when a Build of a matching ref succeeds.
	// +optional
	AutoRelease *AutoRelease `json:"autoRelease,omitempty"`
}

// AutoRelease says which successful Builds become Releases without a person asking.
type AutoRelease struct {
	// branches are glob patterns of branches whose successful Builds are released.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=255
	Branches []string `json:"branches,omitempty"`

	// tags are glob patterns of tags whose successful Builds are released.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=255
	Tags []string `json:"tags,omitempty"`
}

// ProjectStatus is what Ferry last observed of a Project.
type ProjectStatus struct {
	// conditions: Ready says whether the Project's references resolve.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// lastBuild is the most recently created Build.
	// +optional
	LastBuild *BuildReference `json:"lastBuild,omitempty"`

	// environments is what runs in each environment of the promotion path.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	Environments []ProjectEnvironmentStatus `json:"environments,omitempty"`
}

// BuildReference is a short record of a Build.
type BuildReference struct {
	// name is the Build's name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// revision is the commit the Build built.
	// +optional
	// +kubebuilder:validation:MaxLength=40
	Revision string `json:"revision,omitempty"`

	// ref is the git ref the Build was triggered for.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Ref string `json:"ref,omitempty"`
}

// ProjectEnvironmentStatus is what one environment runs for a Project.
type ProjectEnvironmentStatus struct {
	// name is the Environment's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// image is the deployed image, repository@sha256:….
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// revision is the commit the deployed image was built from.
	// +optional
	// +kubebuilder:validation:MaxLength=40
	Revision string `json:"revision,omitempty"`

	// release is the Release that deployed it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Release string `json:"release,omitempty"`

	// deployedAt is when the rollout finished.
	// +optional
	DeployedAt *metav1.Time `json:"deployedAt,omitempty"`

	// builtAt is when the first Build of the Project that made the image was created; empty when
	// no Build is known to have made it. A Release of an image built earlier, or of an image whose
	// age cannot be compared, stops before this environment unless it is a rollback.
	// +optional
	BuiltAt *metav1.Time `json:"builtAt,omitempty"`
}

// Project is one GitLab project built and delivered by Ferry.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fproj,categories=ferry
// +kubebuilder:printcolumn:name="GitLab Project",type=string,JSONPath=`.spec.gitlab.projectPath`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image.repository`
// +kubebuilder:printcolumn:name="Last Build",type=string,JSONPath=`.status.lastBuild.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Project struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the GitLab project, image repository, triggers and promotion path.
	// +required
	Spec ProjectSpec `json:"spec"`

	// status is what was last observed.
	// +optional
	Status ProjectStatus `json:"status,omitempty"`
}

// ProjectList is a list of Projects.
//
// +kubebuilder:object:root=true
type ProjectList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Project `json:"items"`
}

func init() {
	register(&Project{}, &ProjectList{})
}
