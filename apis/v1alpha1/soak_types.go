package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// SoakPolicy makes a Release wait until its digest has run healthy in the previous environment of
// its path for a while.
// +kubebuilder:validation:XValidation:rule="duration(self.duration) >= duration('1s') && duration(self.duration) <= duration('720h')",message="duration must be between 1s and 720h (30 days)",fieldPath=".duration"
type SoakPolicy struct {
	// duration is how long the digest must have run healthy in the previous environment of the
	// Release's path (counted from when its rollout there became healthy, or from the last rollback
	// to it there) before this environment's gate opens and the rollout starts, for example 2h.
	// +required
	Duration metav1.Duration `json:"duration"`
}

// SoakingReason means the Release waits for its digest to soak in the previous environment.
const SoakingReason = "Soaking"

// AutoPromotionRecord says that a Release went through an environment's approval gate without a
// decision, and on what grounds.
type AutoPromotionRecord struct {
	// previousEnvironment is the environment of the path where the digest passed verification.
	// +required
	// +kubebuilder:validation:MaxLength=63
	PreviousEnvironment string `json:"previousEnvironment"`

	// verifiedRun is the verification run there that passed.
	// +optional
	VerifiedRun int32 `json:"verifiedRun,omitempty"`

	// soak is the soak the digest passed in it, when this environment requires one.
	// +optional
	Soak *metav1.Duration `json:"soak,omitempty"`

	// time is when the gate let the Release through.
	// +optional
	Time *metav1.Time `json:"time,omitempty"`
}

// AutoPromotedReason means the gate opened without a decision: the digest passed the previous
// environment's verification (and this environment's soak).
const AutoPromotedReason = "AutoPromoted"
