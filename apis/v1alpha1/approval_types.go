package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Decision is a release manager's answer to a gate.
// +kubebuilder:validation:Enum=Approve;Reject
type Decision string

const (
	// DecisionApprove counts towards opening the gate.
	DecisionApprove Decision = "Approve"
	// DecisionReject closes the gate for this Release.
	DecisionReject Decision = "Reject"
)

// ApprovalSpec is one person's decision on one environment of one Release.
// +kubebuilder:validation:XValidation:rule="self.decision != 'Reject' || (has(self.comment) && size(self.comment) > 0)",message="a rejection needs a comment saying why"
// +kubebuilder:validation:XValidation:rule="!has(self.breakGlass) || !self.breakGlass || (has(self.comment) && size(self.comment.trim()) > 0)",message="a break-glass decision needs a comment saying why",fieldPath=".comment"
// +kubebuilder:validation:XValidation:rule="!has(self.breakGlass) || !self.breakGlass || (self.decision == 'Approve' && (!has(self.batch) || self.batch == 0))",message="a break-glass decision approves an environment's start: decision Approve, no batch",fieldPath=".breakGlass"
type ApprovalSpec struct {
	// release is the name of the Release, in the Approval's namespace.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Release string `json:"release"`

	// environment is the name of the Environment whose gate this decides.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Environment string `json:"environment"`

	// decision is Approve or Reject.
	// +required
	Decision Decision `json:"decision"`

	// comment says why; required for a rejection.
	// +optional
	// +kubebuilder:validation:MaxLength=2000
	Comment string `json:"comment,omitempty"`

	// batch, under the Batch rollout strategy with approvals between batches, is the batch (2 or
	// more) this decision lets start. Zero decides the environment's gate.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	Batch int32 `json:"batch,omitempty"`

	// breakGlass lets this one Release start in this environment through a freeze or outside its
	// deploy windows. It needs a comment saying why and a person the Environment's break-glass
	// policy (or, without one, its approval policy) names. It does not count towards the approval
	// gate.
	// +optional
	BreakGlass bool `json:"breakGlass,omitempty"`

	// approver is who decided, as the API server authenticated the request that created the
	// Approval. Ferry's admission webhook writes it; a value sent by a client is refused.
	// +optional
	Approver *Approver `json:"approver,omitempty"`

	// image is the Release's image (repository@sha256:…) the decision is bound to. Ferry's admission
	// webhook writes it from the Release.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`
}

// Approver is an authenticated identity.
type Approver struct {
	// username is the user's name as authenticated by the API server.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Username string `json:"username"`

	// groups are the user's groups as authenticated by the API server.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=253
	Groups []string `json:"groups,omitempty"`
}

// Approval is one immutable decision by a release manager on one environment of a Release. The object
// itself is the audit record: who decided, what, when, on which digest and why.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=fapr,categories=ferry
// +kubebuilder:validation:XValidation:rule="self.spec == oldSelf.spec",message="an Approval is immutable: create a new one to change a decision"
// +kubebuilder:printcolumn:name="Release",type=string,JSONPath=`.spec.release`
// +kubebuilder:printcolumn:name="Environment",type=string,JSONPath=`.spec.environment`
// +kubebuilder:printcolumn:name="Decision",type=string,JSONPath=`.spec.decision`
// +kubebuilder:printcolumn:name="Break Glass",type=boolean,JSONPath=`.spec.breakGlass`,priority=1
// +kubebuilder:printcolumn:name="Approver",type=string,JSONPath=`.spec.approver.username`
// +kubebuilder:printcolumn:name="Comment",type=string,JSONPath=`.spec.comment`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Approval struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the decision.
	// +required
	Spec ApprovalSpec `json:"spec"`
}

// ApprovalList is a list of Approvals.
//
// +kubebuilder:object:root=true
type ApprovalList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Approval `json:"items"`
}

func init() {
	register(&Approval{}, &ApprovalList{})
}
