package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReleaseSpec is one image, pinned by digest, to be carried along a Project's environments. It
// cannot change once created: another digest or path is another Release.
// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="a Release's spec is immutable: create a new Release"
type ReleaseSpec struct {
	// project is the name of the Project, in the Release's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="project is immutable"
	Project string `json:"project"`

	// build is the Build that produced the image, when there is one.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Build string `json:"build,omitempty"`

	// image is the image to deploy, pinned by digest: repository@sha256:<64 hex>. A tag alone is
	// refused; a tag before the digest is allowed and ignored.
	// +required
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.matches('^[^@\\\\s]+@sha256:[0-9a-f]{64}$')",message="image must be pinned by digest: repository@sha256:<64 hex digits>"
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="image is immutable: create a new Release for another digest"
	Image string `json:"image"`

	// revision is the commit the image was built from.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{40}$`
	Revision string `json:"revision,omitempty"`

	// deploy is how the application runs; when empty it is taken from the Build.
	// +optional
	Deploy *DeploySpec `json:"deploy,omitempty"`

	// environments limits the Release to these environments of the Project's promotion path (kept in
	// the path's order). Empty means the whole path.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=63
	Environments []string `json:"environments,omitempty"`

	// rollback marks a Release that deliberately returns an environment to an older digest. Only a
	// rollback may replace a newer digest with an older one.
	// +optional
	Rollback bool `json:"rollback,omitempty"`

	// requestedBy is the user who created the Release, as the API server authenticated them. Ferry's
	// admission webhook sets it; a value sent by a client is replaced.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	RequestedBy string `json:"requestedBy,omitempty"`
}

// ReleaseStatus is how far a Release has come along its environments.
type ReleaseStatus struct {
	// conditions: Ready (every environment rolled out), Reconciling and Stalled.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// environments is the progress in each environment of the path, in path order.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=20
	Environments []ReleaseEnvironmentStatus `json:"environments,omitempty"`

	// completionTime is when the Release reached its last environment or stopped.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// ReleaseEnvironmentStatus is a Release's gate and rollout in one environment.
type ReleaseEnvironmentStatus struct {
	// name is the Environment's name.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// conditions: Approved (the gate), RolledOut (every cluster healthy) and Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// gate is the approval gate's state.
	// +optional
	Gate *GateStatus `json:"gate,omitempty"`

	// clusters is the rollout on each cluster of the environment.
	// +optional
	// +listType=map
	// +listMapKey=cluster
	// +kubebuilder:validation:MaxItems=50
	Clusters []ClusterRolloutStatus `json:"clusters,omitempty"`

	// wave is the wave of clusters (1-based) rolling out now, or the last one that did, when the
	// environment rolls out in waves (spec.rollout.waves or maxClustersAtOnce).
	// +optional
	Wave int32 `json:"wave,omitempty"`

	// waves is the number of waves of the environment's rollout; unset when every cluster rolls
	// out at once.
	// +optional
	Waves int32 `json:"waves,omitempty"`

	// previousImage is what ran in the environment before this Release, the target of a rollback.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	PreviousImage string `json:"previousImage,omitempty"`

	// windowOpensAt, while the Release waits for the environment's deploy windows or freezes, is
	// when they next let a rollout start; unset when that is not known (a freeze without an end).
	// +optional
	WindowOpensAt *metav1.Time `json:"windowOpensAt,omitempty"`

	// breakGlass is the break-glass decision that let the rollout start through a freeze or a
	// closed window, when one did.
	// +optional
	BreakGlass *BreakGlassRecord `json:"breakGlass,omitempty"`

	// soakEndsAt is when the digest's soak in the previous environment ends (or ended), when the
	// Environment requires one (spec.soak).
	// +optional
	SoakEndsAt *metav1.Time `json:"soakEndsAt,omitempty"`

	// autoPromotion records that the Release went through the gate without a decision
	// (Environment spec.autoPromote), and why.
	// +optional
	AutoPromotion *AutoPromotionRecord `json:"autoPromotion,omitempty"`

	// verification is the verification of the image after the rollout (the run in progress or the
	// last one), when the environment or the application declares checks.
	// +optional
	Verification *VerificationStatus `json:"verification,omitempty"`

	// supplyChain is what the supply-chain gate found for the image before its rollout here,
	// when the Environment has a supplyChain policy (issue 17).
	// +optional
	SupplyChain *SupplyChainResult `json:"supplyChain,omitempty"`

	// startTime is when the Release started waiting for or rolling out in this environment.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the environment's rollout finished or stopped.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// GateStatus is the approval gate of one environment.
type GateStatus struct {
	// requiredApprovals is the policy's minimum when the gate started waiting.
	// +optional
	RequiredApprovals int32 `json:"requiredApprovals,omitempty"`

	// approvals are the decisions counted for this gate, one per person.
	// +optional
	// +listType=map
	// +listMapKey=approval
	// +kubebuilder:validation:MaxItems=100
	Approvals []ApprovalRecord `json:"approvals,omitempty"`

	// waitingSince is when the gate started waiting, or was last re-requested.
	// +optional
	WaitingSince *metav1.Time `json:"waitingSince,omitempty"`

	// expiresAt is when the gate expires if it is still waiting.
	// +optional
	ExpiresAt *metav1.Time `json:"expiresAt,omitempty"`
}

// ApprovalRecord is one counted decision.
type ApprovalRecord struct {
	// approval is the name of the Approval object.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Approval string `json:"approval"`

	// user is who decided.
	// +required
	// +kubebuilder:validation:MaxLength=253
	User string `json:"user"`

	// decision is Approve or Reject.
	// +required
	Decision Decision `json:"decision"`

	// time is when the decision was made.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// BreakGlassRecord is the break-glass decision a rollout started with, and what it overrode.
type BreakGlassRecord struct {
	// approval is the name of the Approval object.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Approval string `json:"approval"`

	// user is who decided.
	// +required
	// +kubebuilder:validation:MaxLength=253
	User string `json:"user"`

	// reason is the decision's comment.
	// +optional
	// +kubebuilder:validation:MaxLength=2000
	Reason string `json:"reason,omitempty"`

	// overrode names the freezes and windows that kept the environment closed.
	// +optional
	// +kubebuilder:validation:MaxLength=2000
	Overrode string `json:"overrode,omitempty"`

	// time is when the rollout started through them.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// ClusterRolloutStatus is a rollout on one cluster.
type ClusterRolloutStatus struct {
	// cluster is the Cluster's name.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Cluster string `json:"cluster"`

	// namespace is the namespace deployed into on that cluster.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Namespace string `json:"namespace,omitempty"`

	// conditions: RolledOut (Unknown while rolling out, True when healthy, False when failed, rolled
	// back or unreachable, with the reason).
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=4
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// replicas is the desired number of replicas.
	// +optional
	Replicas int32 `json:"replicas,omitempty"`

	// updatedReplicas is the number of replicas running the Release's image.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas,omitempty"`

	// availableReplicas is the number of the Release's replicas that are available.
	// +optional
	AvailableReplicas int32 `json:"availableReplicas,omitempty"`

	// batch is the batch being rolled out (1-based) under the Batch strategy.
	// +optional
	Batch int32 `json:"batch,omitempty"`

	// batches is the total number of batches under the Batch strategy.
	// +optional
	Batches int32 `json:"batches,omitempty"`

	// wave is the wave (1-based) this cluster rolls out in, when the environment rolls out in
	// waves; fixed when the rollout starts.
	// +optional
	Wave int32 `json:"wave,omitempty"`

	// startTime is when the rollout on this cluster began.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// batchStartTime is when the current batch (the whole update under Rolling, or the rollback)
	// was applied; the progress deadline counts from it.
	// +optional
	BatchStartTime *metav1.Time `json:"batchStartTime,omitempty"`

	// batchHealthyTime is when the current batch became healthy; a Pause between batches counts
	// from it.
	// +optional
	BatchHealthyTime *metav1.Time `json:"batchHealthyTime,omitempty"`

	// image is what the cluster's workload was last set to run: the Release's image, or the
	// previous image after a rollback.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// completionTime is when the rollout on this cluster finished or stopped.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`
}

// Release carries one image digest through a Project's environments: each environment waits for
// its gate, rolls out on every one of its clusters, and is rolled back if the rollout fails.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=frel,categories=ferry
// +kubebuilder:printcolumn:name="Project",type=string,JSONPath=`.spec.project`
// +kubebuilder:printcolumn:name="Build",type=string,JSONPath=`.spec.build`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Release struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the image and the path it takes.
	// +required
	Spec ReleaseSpec `json:"spec"`

	// status is the progress per environment.
	// +optional
	Status ReleaseStatus `json:"status,omitempty"`
}

// ReleaseList is a list of Releases.
//
// +kubebuilder:object:root=true
type ReleaseList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Release `json:"items"`
}

func init() {
	register(&Release{}, &ReleaseList{})
}

// Approved counts the approving decisions the gate has counted so far; 0 for a nil gate.
func (g *GateStatus) Approved() int {
	if g == nil {
		return 0
	}
	n := 0
	for _, a := range g.Approvals {
		if a.Decision == DecisionApprove {
			n++
		}
	}
	return n
}
