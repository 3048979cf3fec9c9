package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// FreezeSpec is a period in which no rollout starts in the Environments it selects.
// +kubebuilder:validation:XValidation:rule="!has(self.end) || self.end > self.start",message="end must be after start",fieldPath=".end"
type FreezeSpec struct {
	// start is when the freeze begins.
	// +required
	Start metav1.Time `json:"start"`

	// end is when the freeze ends; without it the freeze lasts until it is given an end or deleted
	// (`ferry freeze end`).
	// +optional
	End *metav1.Time `json:"end,omitempty"`

	// reason tells people why rollouts are frozen, for example the incident being handled.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="reason must say why"
	Reason string `json:"reason"`

	// environmentSelector selects the Environments, by their labels, that the freeze stops. An empty
	// selector ({}) selects every Environment: "stop the line".
	// +required
	EnvironmentSelector metav1.LabelSelector `json:"environmentSelector"`

	// namespaceSelector, when set, limits the freeze to Releases in namespaces with these labels
	// (for example one team's namespaces).
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
}

// Freeze stops new rollouts into every Environment it selects from start until end: rollouts that
// already started finish, Releases about to start wait and say why. A break-glass Approval lets one
// Release through.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ffrz,categories=ferry
// +kubebuilder:printcolumn:name="Start",type=string,JSONPath=`.spec.start`
// +kubebuilder:printcolumn:name="End",type=string,JSONPath=`.spec.end`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.spec.reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Freeze struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the period, the reason and what it stops.
	// +required
	Spec FreezeSpec `json:"spec"`
}

// FreezeList is a list of Freezes.
//
// +kubebuilder:object:root=true
type FreezeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Freeze `json:"items"`
}

func init() {
	register(&Freeze{}, &FreezeList{})
}
