package v1alpha1

import corev1 "k8s.io/api/core/v1"

// SecretKeyReference names one key of a Secret. Where the Secret lives (Ferry's own namespace or the
// referring object's namespace) is said by the field that holds the reference.
type SecretKeyReference struct {
	// name is the name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// key is the key within the Secret's data. Each field that holds a reference documents its default.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]*$`
	Key string `json:"key,omitempty"`
}

// LocalObjectReference names an object in the same namespace as the referrer.
type LocalObjectReference struct {
	// name is the name of the referenced object.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// DeploySpec is how an application runs once its image is deployed: the part of the repository's
// pipeline file that a Build records at its exact commit so that a Release can deploy it later.
type DeploySpec struct {
	// replicas is the number of pods to run in each cluster of an environment.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	Replicas *int32 `json:"replicas,omitempty"`

	// ports are the TCP ports the application listens on; the first one is the Service's port.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// healthCheck is the HTTP probe that decides whether a pod is ready.
	// +optional
	HealthCheck *HealthCheck `json:"healthCheck,omitempty"`

	// resources are the CPU and memory requests and limits of the application container.
	// +optional
	Resources *ResourceRequirements `json:"resources,omitempty"`

	// podAnnotations are added to the application's pods (for a service mesh or a metrics scraper).
	// Keys under ferry.dev/ are Ferry's own and refused.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	// +kubebuilder:validation:XValidation:rule="self.all(k, !k.startsWith('ferry.dev/'))",message="annotation keys under ferry.dev/ are reserved"
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// verification are the application's own checks after a rollout, besides the Environment's.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Verification []VerificationCheck `json:"verification,omitempty"`
}

// HealthCheck is an HTTP GET readiness and liveness probe.
type HealthCheck struct {
	// path is the HTTP path to GET, for example /healthz.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	Path string `json:"path"`

	// port is the TCP port to probe.
	// +required
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// initialDelaySeconds is how long to wait after the container starts before the first probe.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=3600
	InitialDelaySeconds int32 `json:"initialDelaySeconds,omitempty"`
}

// ResourceRequirements are the compute requests and limits of the application container.
type ResourceRequirements struct {
	// requests are the minimum resources, for example {cpu: 250m, memory: 256Mi}.
	// +optional
	Requests corev1.ResourceList `json:"requests,omitempty"`

	// limits are the maximum resources, for example {memory: 512Mi}.
	// +optional
	Limits corev1.ResourceList `json:"limits,omitempty"`
}
