package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TriggerKind names what started a Build.
// +kubebuilder:validation:Enum=Push;Tag;MergeRequest;Manual
type TriggerKind string

const (
	// TriggerPush is a push to a branch.
	TriggerPush TriggerKind = "Push"
	// TriggerTag is a pushed tag.
	TriggerTag TriggerKind = "Tag"
	// TriggerMergeRequest is a merge request opened, reopened or updated with new commits.
	TriggerMergeRequest TriggerKind = "MergeRequest"
	// TriggerManual is a person asking for a Build.
	TriggerManual TriggerKind = "Manual"
)

// BuildSpec is one commit of one Project to be turned into one image.
// +kubebuilder:validation:XValidation:rule="has(self.trigger) == has(oldSelf.trigger)",message="trigger is immutable"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancelled) || !oldSelf.cancelled || (has(self.cancelled) && self.cancelled)",message="a cancelled Build cannot be resumed"
type BuildSpec struct {
	// project is the name of the Project, in the Build's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="project is immutable"
	Project string `json:"project"`

	// revision is the full 40-hex SHA of the commit to build. The pipeline file is read at this
	// commit, never at a branch head.
	// +required
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{40}$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="revision is immutable"
	Revision string `json:"revision"`

	// ref is the git ref the commit was pushed to: refs/heads/main, refs/tags/v1.2.0 or
	// refs/merge-requests/7/head.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^refs/[^\s]+$`
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="ref is immutable"
	// +kubebuilder:validation:XValidation:rule="!self.contains('..') && !self.contains('/-')",message="ref must not contain '..' or a component starting with '-'"
	Ref string `json:"ref"`

	// trigger records what started the Build.
	// +optional
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="trigger is immutable"
	Trigger BuildTrigger `json:"trigger,omitempty"`

	// cancelled asks for the Build to stop. It cannot be cleared once set.
	// +optional
	Cancelled bool `json:"cancelled,omitempty"`

	// cancelReason says why the Build was cancelled, for example "superseded by <build>".
	// +optional
	// +kubebuilder:validation:MaxLength=512
	CancelReason string `json:"cancelReason,omitempty"`
}

// BuildTrigger records the event that started a Build.
type BuildTrigger struct {
	// kind is Push, Tag, MergeRequest or Manual.
	// +optional
	Kind TriggerKind `json:"kind,omitempty"`

	// deliveryID is the webhook delivery's Idempotency-Key (or the receiver's substitute for older
	// GitLab); it is what makes a redelivery a no-op.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	DeliveryID string `json:"deliveryID,omitempty"`

	// user is the GitLab username (user_username) who caused the Build or, for Manual, the
	// Kubernetes user who created it. Only Ferry's GitLab receiver may record a GitLab user: the
	// admission webhook makes every Build created by anyone else Manual, by its creator.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	User string `json:"user,omitempty"`

	// userID is the GitLab user's numeric ID (user_id), which GitLab's OpenID Connect ID tokens
	// carry as sub: approvals compare it with the approver when the API server names people by
	// that claim.
	// +optional
	// +kubebuilder:validation:Minimum=0
	UserID int64 `json:"userID,omitempty"`

	// userEmail is the GitLab user's e-mail address as the event carried it (user_email), when
	// GitLab sent one: it sends the user's public address, or "" or "[REDACTED]", which are not
	// recorded.
	// +optional
	// +kubebuilder:validation:MaxLength=254
	UserEmail string `json:"userEmail,omitempty"`

	// mergeRequestIID is the project-local number of the merge request, for MergeRequest builds.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MergeRequestIID int64 `json:"mergeRequestIID,omitempty"`

	// tag is the tag name, for Tag builds.
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Tag string `json:"tag,omitempty"`
}

// BuildStatus is the progress and outcome of a Build.
type BuildStatus struct {
	// conditions: SourceResolved, PipelineSucceeded, ImagePushed and the summary Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=10
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// executor is the executor that ran the Build: tekton or local.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Executor string `json:"executor,omitempty"`

	// pipelineRunRef names the Tekton PipelineRun (in the Build's namespace) that runs the Build.
	// +optional
	PipelineRunRef *LocalObjectReference `json:"pipelineRunRef,omitempty"`

	// image is the pushed image, repository@sha256:….
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// tags are the tags pushed with the image: the commit SHA, and the git tag for tag builds.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=8
	// +kubebuilder:validation:items:MaxLength=128
	Tags []string `json:"tags,omitempty"`

	// lineage records the layers the image is made of.
	// +optional
	Lineage *ImageLineage `json:"lineage,omitempty"`

	// deploy is how the application runs, read from the pipeline file at the Build's commit.
	// +optional
	Deploy *DeploySpec `json:"deploy,omitempty"`

	// steps are the pipeline's steps with their outcome, in order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=64
	Steps []StepStatus `json:"steps,omitempty"`

	// logURL is where the Build's step logs can be read.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	LogURL string `json:"logURL,omitempty"`

	// startTime is when the pipeline started running.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the Build finished, whatever its outcome.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// reportedState is the last commit status Ferry reported to GitLab (pending, running, success,
	// failed, canceled), so that a restart never reports a state twice or goes backwards.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	ReportedState string `json:"reportedState,omitempty"`
}

// ImageLineage names the three layers of a Ferry image: the OS stack, the language runtime built on
// it, and the application. Recording them is what makes a rebase onto a patched stack possible.
type ImageLineage struct {
	// stack is the OS base image.
	// +optional
	Stack *LayerSource `json:"stack,omitempty"`

	// runtime is the language runtime image, built on the stack.
	// +optional
	Runtime *LayerSource `json:"runtime,omitempty"`

	// appLayer is the digest of the application layer Ferry made from the repository.
	// +optional
	// +kubebuilder:validation:MaxLength=80
	AppLayer string `json:"appLayer,omitempty"`
}

// LayerSource is an image that an application image is built on.
type LayerSource struct {
	// name is the catalog name (debian-12, python-3.12) or the image reference as written.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Name string `json:"name,omitempty"`

	// image is the image pinned by digest, repository@sha256:….
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// digest is the manifest digest, sha256:….
	// +optional
	// +kubebuilder:validation:MaxLength=80
	Digest string `json:"digest,omitempty"`
}

// StepStatus is the outcome of one pipeline step.
type StepStatus struct {
	// name is the step's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// state is Waiting, Running, Succeeded, Failed or Skipped.
	// +optional
	// +kubebuilder:validation:Enum=Waiting;Running;Succeeded;Failed;Skipped
	State string `json:"state,omitempty"`

	// exitCode is the step's exit code once it finished.
	// +optional
	ExitCode *int32 `json:"exitCode,omitempty"`

	// startTime is when the step started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the step finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// Build turns one commit of a Project into one image: it reads the pipeline file at the commit,
// runs the pipeline and records the pushed digest and how it was made.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fb,categories=ferry
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Ref",type=string,JSONPath=`.spec.ref`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.spec.revision`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.status.image`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Build struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the commit to build.
	// +required
	Spec BuildSpec `json:"spec"`

	// status is the Build's progress and outcome.
	// +optional
	Status BuildStatus `json:"status,omitempty"`
}

// BuildList is a list of Builds.
//
// +kubebuilder:object:root=true
type BuildList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Build `json:"items"`
}

func init() {
	register(&Build{}, &BuildList{})
}
