package v1alpha1

import (
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Conditions and reasons of a Preview.
const (
	// PreviewDeletedCondition is False while the namespace of a deleted Preview could not be
	// deleted (reason NamespaceDeleteFailed, the message says why); the controller keeps trying.
	PreviewDeletedCondition = "NamespaceDeleted"

	// NamespaceDeleteFailedReason: the preview namespace could not be deleted; it is retried.
	NamespaceDeleteFailedReason = "NamespaceDeleteFailed"

	// NoDeploySettingsReason: the Build has no deploy settings (no deploy: in its pipeline file),
	// so there is nothing to preview.
	NoDeploySettingsReason = "NoDeploySettings"
)

// PreviewSpec is the merge request a Preview shows and the Build it runs.
type PreviewSpec struct {
	// project is the Project (in the Preview's namespace) whose merge request this is.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Project string `json:"project"`

	// mergeRequestIID is the merge request's project-local number.
	// +required
	// +kubebuilder:validation:Minimum=1
	MergeRequestIID int64 `json:"mergeRequestIID"`

	// build is the newest successful Build of the merge request's head; the preview runs its
	// image.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Build string `json:"build"`
}

// PreviewStatus is where a preview runs and what GitLab was told.
type PreviewStatus struct {
	// conditions: Ready says whether the Build's workload is healthy in the preview namespace;
	// NamespaceDeleted=False says a deletion failed and is retried.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// namespace is the preview namespace on the cluster, {project}-mr-{iid}.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// cluster is the Cluster the preview runs on.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Cluster string `json:"cluster,omitempty"`

	// url is where the preview is reached: the Service in the cluster.
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	URL string `json:"url,omitempty"`

	// rollout is the rollout of the current Build into the preview namespace.
	// +optional
	Rollout *ClusterRolloutStatus `json:"rollout,omitempty"`

	// deployedBuild is the Build whose rollout the status describes.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	DeployedBuild string `json:"deployedBuild,omitempty"`

	// lastActivity is when the merge request last had a successful Build; the TTL counts from it.
	// +optional
	LastActivity *metav1.Time `json:"lastActivity,omitempty"`

	// noteID is the GitLab note on the merge request that tells where the preview is; it is
	// edited, never posted again.
	// +optional
	NoteID int64 `json:"noteID,omitempty"`

	// noteBody is what the note last said (without its marker).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	NoteBody string `json:"noteBody,omitempty"`
}

// Preview is one merge request's preview environment: the namespace {project}-mr-{iid} on the
// Project's preview cluster, running the newest successful Build of the merge request's head. The
// preview controller creates it; deleting it (the merge request was merged or closed, its TTL
// passed, or a newer preview pushed it out of the Project's cap) deletes the namespace and
// everything in it.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=fprev,categories=ferry
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="MR",type=integer,JSONPath=`.spec.mergeRequestIID`
// +kubebuilder:printcolumn:name="Build",type=string,JSONPath=`.spec.build`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.namespace`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Last Activity",type=date,JSONPath=`.status.lastActivity`
type Preview struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the merge request and its Build.
	// +required
	Spec PreviewSpec `json:"spec"`

	// status is where the preview runs.
	// +optional
	Status PreviewStatus `json:"status,omitempty"`
}

// PreviewList is a list of Previews.
//
// +kubebuilder:object:root=true
type PreviewList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Preview `json:"items"`
}

// PreviewName is the name of a merge request's Preview and of its namespace: {project}-mr-{iid}.
func PreviewName(project string, iid int64) string {
	return project + "-mr-" + strconv.FormatInt(iid, 10)
}

func init() {
	register(&Preview{}, &PreviewList{})
}
