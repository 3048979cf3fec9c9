package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ClusterSpec says how Ferry reaches a target cluster.
// +kubebuilder:validation:XValidation:rule="has(self.kubeConfigSecretRef) != (has(self.inCluster) && self.inCluster)",message="exactly one of kubeConfigSecretRef and inCluster must be set"
type ClusterSpec struct {
	// kubeConfigSecretRef names a Secret in Ferry's own namespace that holds a kubeconfig for the
	// cluster; key defaults to "kubeconfig". The kubeconfig's current context is used.
	// +optional
	KubeConfigSecretRef *SecretKeyReference `json:"kubeConfigSecretRef,omitempty"`

	// inCluster makes Ferry use its own ServiceAccount on the cluster it runs in.
	// +optional
	InCluster bool `json:"inCluster,omitempty"`

	// description says what the cluster is for, for people reading a list of clusters.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// probeInterval is how often the cluster is probed once reachable (default 5m). Each probe is
	// jittered by up to 10% so that many clusters do not probe in step.
	// +optional
	ProbeInterval *metav1.Duration `json:"probeInterval,omitempty"`
}

// ClusterStatus is what Ferry last observed of a target cluster.
type ClusterStatus struct {
	// conditions: Ready says whether the API server answered with the given credentials.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=8
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// observedGeneration is the generation of the spec that the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// serverVersion is the git version the API server reported, for example v1.35.4.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	ServerVersion string `json:"serverVersion,omitempty"`

	// lastProbeTime is when the cluster was last probed, successfully or not.
	// +optional
	LastProbeTime *metav1.Time `json:"lastProbeTime,omitempty"`
}

// Cluster is a Kubernetes cluster that environments deploy to. Platform teams own Clusters; the
// credentials they point at never leave Ferry's namespace.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=fcl,categories=ferry
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.serverVersion`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`,priority=1
// +kubebuilder:printcolumn:name="Last Probe",type=date,JSONPath=`.status.lastProbeTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says how to reach the cluster.
	// +required
	Spec ClusterSpec `json:"spec"`

	// status is the last observation of the cluster.
	// +optional
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}

func init() {
	register(&Cluster{}, &ClusterList{})
}
