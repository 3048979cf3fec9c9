package v1alpha1

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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

// Results of the supply-chain gate recorded on a Release's environment.
const (
	// SupplyChainPassed: the image proved what the Environment requires.
	SupplyChainPassed = "Passed"
	// SupplyChainRefused: the image failed a check; the Release stopped before its rollout.
	SupplyChainRefused = "Refused"
)

// SupplyChainResult is what the supply-chain gate found for an image before its rollout to an
// environment: who signed it, where it was built, whether it carries an SBOM, its scan.
type SupplyChainResult struct {
	// digest is the image checked, repository@sha256:….
	// +required
	// +kubebuilder:validation:MaxLength=1024
	Digest string `json:"digest"`

	// result is Passed or Refused.
	// +required
	// +kubebuilder:validation:Enum=Passed;Refused
	Result string `json:"result"`

	// message says what failed when the image was refused, or what passed.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Message string `json:"message,omitempty"`

	// signedBy names the trusted key whose signature verified, when a signature was required.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	SignedBy string `json:"signedBy,omitempty"`

	// provenance is what the verified provenance says, when provenance was required.
	// +optional
	Provenance *ProvenanceSummary `json:"provenance,omitempty"`

	// sbom says the image has an SBOM that matches its digest.
	// +optional
	SBOM bool `json:"sbom,omitempty"`

	// sbomPackages is the number of packages the SBOM lists.
	// +optional
	// +kubebuilder:validation:Minimum=0
	SBOMPackages int32 `json:"sbomPackages,omitempty"`

	// scan is the Harbor scan's result, when the Environment checks one.
	// +optional
	Scan *ScanSummary `json:"scan,omitempty"`

	// packages is what changed in the image's packages since the image running in the
	// environment, from the two images' SBOMs; unset when nothing ran there before.
	// +optional
	Packages *PackageDiff `json:"packages,omitempty"`

	// checkedAt is when the gate checked the image.
	// +required
	CheckedAt metav1.Time `json:"checkedAt"`
}

// ProvenanceSummary is the verified SLSA provenance of an image, in short.
type ProvenanceSummary struct {
	// repository is the repository the image was built from.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Repository string `json:"repository,omitempty"`

	// revision is the commit built.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Revision string `json:"revision,omitempty"`

	// builder is the builder and its version (Ferry vX, executor).
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Builder string `json:"builder,omitempty"`

	// stack and runtime are the base images, pinned by digest.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Stack string `json:"stack,omitempty"`

	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Runtime string `json:"runtime,omitempty"`

	// buildRef is the Build that made the image, namespace/name.
	// +optional
	// +kubebuilder:validation:MaxLength=317
	BuildRef string `json:"buildRef,omitempty"`
}

// ScanSummary is a registry scan's result.
type ScanSummary struct {
	// severity is the highest severity found (None, Low, Medium, High, Critical, …).
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Severity string `json:"severity,omitempty"`

	// refuseAtOrAbove is the threshold applied.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	RefuseAtOrAbove string `json:"refuseAtOrAbove,omitempty"`
}

// MaxPackageChanges bounds status.environments[].supplyChain.packages.changes: the counts say how
// many changes there are, the list names the first of them.
const MaxPackageChanges = 50

// PackageDiff is what changed in packages from the image running in an environment to the
// Release's image, from their SBOMs, in short: the counts of each kind of change and the first
// MaxPackageChanges changes.
type PackageDiff struct {
	// from is the image that was running in the environment, repository@sha256:….
	// +required
	// +kubebuilder:validation:MaxLength=1024
	From string `json:"from"`

	// unavailable says why the packages could not be compared (an image without an SBOM, the
	// registry failing); the counts and changes are then unset.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Unavailable string `json:"unavailable,omitempty"`

	// added, removed, upgraded and downgraded count the packages of each kind of change;
	// changed counts version changes that cannot be ordered (a version missing, a package found
	// at several versions in one image).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Added int32 `json:"added,omitempty"`

	// +optional
	// +kubebuilder:validation:Minimum=0
	Removed int32 `json:"removed,omitempty"`

	// +optional
	// +kubebuilder:validation:Minimum=0
	Upgraded int32 `json:"upgraded,omitempty"`

	// +optional
	// +kubebuilder:validation:Minimum=0
	Downgraded int32 `json:"downgraded,omitempty"`

	// +optional
	// +kubebuilder:validation:Minimum=0
	Changed int32 `json:"changed,omitempty"`

	// changes are the first changes, added, removed, upgraded, downgraded then changed packages,
	// each kind by package type and name.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=50
	Changes []PackageChange `json:"changes,omitempty"`
}

// Total is the number of changed packages, listed or not.
func (d *PackageDiff) Total() int {
	return int(d.Added) + int(d.Removed) + int(d.Upgraded) + int(d.Downgraded) + int(d.Changed)
}

// Counts says the diff in short for the UI and `ferry get release -o wide`: "+3 −1 ↑5" (added,
// removed, upgraded), then "↓1" (downgraded) and "~2" (changed) when there are any.
func (d *PackageDiff) Counts() string {
	s := fmt.Sprintf("+%d −%d ↑%d", d.Added, d.Removed, d.Upgraded)
	if d.Downgraded > 0 {
		s += fmt.Sprintf(" ↓%d", d.Downgraded)
	}
	if d.Changed > 0 {
		s += fmt.Sprintf(" ~%d", d.Changed)
	}
	return s
}

// PackageChange is one package that differs between two images.
type PackageChange struct {
	// kind is Added, Removed, Upgraded, Downgraded or Changed.
	// +required
	// +kubebuilder:validation:Enum=Added;Removed;Upgraded;Downgraded;Changed
	Kind string `json:"kind"`

	// type is the package's type: deb, golang or pypi.
	// +required
	// +kubebuilder:validation:MaxLength=32
	Type string `json:"type"`

	// name is the package's name (for Go, the module path).
	// +required
	// +kubebuilder:validation:MaxLength=512
	Name string `json:"name"`

	// from is its version in the running image; unset for an added package.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	From string `json:"from,omitempty"`

	// to is its version in the Release's image; unset for a removed package.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	To string `json:"to,omitempty"`
}
