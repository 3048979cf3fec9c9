package v1alpha1

// SupplyChainPolicy is what an image must prove before it rolls out to an Environment (issue 17).
// The checks run before every rollout, a rollback to an older digest included; a digest that fails
// one is refused with what failed.
// +kubebuilder:validation:XValidation:rule="!has(self.requireSignature) || !self.requireSignature || (has(self.keys) && size(self.keys) > 0)",message="requireSignature needs keys"
// +kubebuilder:validation:XValidation:rule="!has(self.requireProvenance) || !self.requireProvenance || (has(self.keys) && size(self.keys) > 0)",message="requireProvenance needs keys"
type SupplyChainPolicy struct {
	// keys are the trusted public keys (PEM, ECDSA P-256, as `cosign public-key` prints them),
	// each in a Secret or a ConfigMap of Ferry's namespace.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=16
	Keys []PublicKeySource `json:"keys,omitempty"`

	// requireSignature refuses images without a cosign signature by one of keys.
	// +optional
	RequireSignature bool `json:"requireSignature,omitempty"`

	// requireProvenance refuses images without SLSA provenance, signed by one of keys, that names
	// the Release's Project repository and revision.
	// +optional
	RequireProvenance bool `json:"requireProvenance,omitempty"`

	// requireSBOM refuses images without an SBOM (an OCI referrer) that describes their digest.
	// +optional
	RequireSBOM bool `json:"requireSBOM,omitempty"`

	// harborScan refuses images whose Harbor vulnerability scan is missing, unfinished, or at or
	// above a severity.
	// +optional
	HarborScan *HarborScanPolicy `json:"harborScan,omitempty"`
}

// PublicKeySource is a PEM public key in a Secret or a ConfigMap of Ferry's namespace.
// +kubebuilder:validation:XValidation:rule="has(self.secretRef) != has(self.configMapRef)",message="set exactly one of secretRef and configMapRef"
type PublicKeySource struct {
	// secretRef is a Secret with the key; key defaults to cosign.pub.
	// +optional
	SecretRef *SecretKeyReference `json:"secretRef,omitempty"`

	// configMapRef is a ConfigMap with the key; key defaults to cosign.pub.
	// +optional
	ConfigMapRef *SecretKeyReference `json:"configMapRef,omitempty"`
}

// HarborScanPolicy reads an image's scan result through Harbor's scan-overview API.
type HarborScanPolicy struct {
	// url is Harbor's base URL, e.g. https://harbor.example.com.
	// +required
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && (self.startsWith('https://') || self.startsWith('http://'))",message="url must be an http(s) URL"
	URL string `json:"url"`

	// credentialsSecretRef names a kubernetes.io/basic-auth Secret in Ferry's namespace (a robot
	// account that may read artifacts); anonymous without it.
	// +optional
	CredentialsSecretRef *LocalObjectReference `json:"credentialsSecretRef,omitempty"`

	// refuseAtOrAbove is the lowest severity that refuses an image: Low, Medium, High or Critical.
	// Harbor's unrecognised severities count as worse than Critical.
	// +optional
	// +kubebuilder:default=High
	// +kubebuilder:validation:Enum=Low;Medium;High;Critical
	RefuseAtOrAbove string `json:"refuseAtOrAbove,omitempty"`
}
