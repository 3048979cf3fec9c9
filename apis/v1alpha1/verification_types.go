package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// VerificationCheck is one check run after a rollout became healthy on every cluster of an
// environment, on each of them: an HTTP check against the application's Service, or a Job run in
// the application's namespace. A check that fails rolls the environment back like a failed health
// check. Environments declare checks for every application (spec.verification); an application
// declares its own (deploy.verification in .ferry.yaml).
// +kubebuilder:validation:XValidation:rule="(has(self.http) ? 1 : 0) + (has(self.job) ? 1 : 0) == 1",message="a check must set exactly one of http and job"
type VerificationCheck struct {
	// name identifies the check in the Release's status, events and messages.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=40
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// http sends GET requests to the application's Service, through the cluster's API server.
	// +optional
	HTTP *HTTPCheck `json:"http,omitempty"`

	// job runs an image as a Job in the application's namespace; it passes when the container
	// exits 0.
	// +optional
	Job *JobCheck `json:"job,omitempty"`
}

// HTTPCheck is a GET request to the application's Service, repeated times times, interval apart;
// every one of them must pass.
// +kubebuilder:validation:XValidation:rule="!has(self.interval) || (duration(self.interval) >= duration('1s') && duration(self.interval) <= duration('1h'))",message="interval must be between 1s and 1h",fieldPath=".interval"
// +kubebuilder:validation:XValidation:rule="!has(self.maxLatency) || (duration(self.maxLatency) > duration('0s') && duration(self.maxLatency) <= duration('60s'))",message="maxLatency must be between 1ms and 60s",fieldPath=".maxLatency"
type HTTPCheck struct {
	// path is the path (and query) to GET, for example /healthz or /api/version?full=1. It may
	// not contain "." or ".." segments, percent-encoding, a backslash or a fragment.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/[A-Za-z0-9._~!$&'()*+,;=:@/?-]*$`
	Path string `json:"path"`

	// port is the Service port to send to. Default: the application's first port.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port,omitempty"`

	// expectStatus is the HTTP status every answer must have. Default 200.
	// +optional
	// +kubebuilder:default=200
	// +kubebuilder:validation:Minimum=100
	// +kubebuilder:validation:Maximum=599
	ExpectStatus int32 `json:"expectStatus,omitempty"`

	// bodyMatch, when set, is a regular expression (Go RE2 syntax) every answer's body (its first
	// 64 KiB) must match.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	BodyMatch string `json:"bodyMatch,omitempty"`

	// maxLatency, when set, is the longest an answer may take; a slower one fails the check.
	// +optional
	MaxLatency *metav1.Duration `json:"maxLatency,omitempty"`

	// times is how many requests are sent. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	Times int32 `json:"times,omitempty"`

	// interval is the time between two requests. Default 10s.
	// +optional
	// +kubebuilder:default="10s"
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// JobCheck is an image run once as a Job in the application's namespace, without a service
// account token.
// +kubebuilder:validation:XValidation:rule="!has(self.timeout) || (duration(self.timeout) >= duration('1s') && duration(self.timeout) <= duration('1h'))",message="timeout must be between 1s and 1h",fieldPath=".timeout"
type JobCheck struct {
	// image is the image to run.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image"`

	// command replaces the image's entrypoint.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=4096
	Command []string `json:"command,omitempty"`

	// args are the arguments to the entrypoint.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=4096
	Args []string `json:"args,omitempty"`

	// timeout is how long the Job may take: one that has not finished by then is stopped and the
	// check fails. Default 5m.
	// +optional
	// +kubebuilder:default="5m"
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Defaults of a check's fields when an object did not go through the API server's defaulting.
const (
	// DefaultCheckInterval is the time between two requests of an HTTP check.
	DefaultCheckInterval = 10 * time.Second
	// DefaultJobTimeout is how long a Job check may take.
	DefaultJobTimeout = 5 * time.Minute
)

// IntervalOrDefault is the time between two requests.
func (h *HTTPCheck) IntervalOrDefault() time.Duration {
	if h.Interval == nil || h.Interval.Duration <= 0 {
		return DefaultCheckInterval
	}
	return h.Interval.Duration
}

// TimeoutOrDefault is how long the Job may take.
func (j *JobCheck) TimeoutOrDefault() time.Duration {
	if j.Timeout == nil || j.Timeout.Duration <= 0 {
		return DefaultJobTimeout
	}
	return j.Timeout.Duration
}

// VerificationSource says who declared a check.
// +kubebuilder:validation:Enum=Environment;Application
type VerificationSource string

const (
	// EnvironmentCheck is declared by the Environment (the platform).
	EnvironmentCheck VerificationSource = "Environment"
	// ApplicationCheck is declared by the application (deploy.verification).
	ApplicationCheck VerificationSource = "Application"
)

// VerificationResult is the outcome of a check on a cluster.
// +kubebuilder:validation:Enum=Passed;Failed
type VerificationResult string

const (
	// VerificationPassed means every try passed.
	VerificationPassed VerificationResult = "Passed"
	// VerificationFailed means a try failed (or the Job failed or timed out).
	VerificationFailed VerificationResult = "Failed"
)

// VerificationStatus is the verification of a Release's image in one environment: the run in
// progress or the last one.
type VerificationStatus struct {
	// run counts the verifications of this environment: 1 after the rollout, one more for each
	// re-verification asked for.
	// +optional
	Run int32 `json:"run,omitempty"`

	// image is the image (by digest) the run verifies.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Image string `json:"image,omitempty"`

	// verifiedImage is the image that passed the last completed run; a failed run clears it.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	VerifiedImage string `json:"verifiedImage,omitempty"`

	// startTime is when the run started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the run passed or failed.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// verifiedWave, when the environment rolls out in waves, is the last wave whose clusters passed
	// every check of this run: the next wave starts only after its predecessor passed, and a
	// restarted manager goes on from here without verifying a passed wave again.
	// +optional
	VerifiedWave int32 `json:"verifiedWave,omitempty"`

	// checks are the run's progress, one entry per check and cluster.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +listMapKey=source
	// +listMapKey=cluster
	// +kubebuilder:validation:MaxItems=200
	Checks []VerificationCheckStatus `json:"checks,omitempty"`
}

// VerificationCheckStatus is the progress of one check on one cluster.
type VerificationCheckStatus struct {
	// name is the check's name.
	// +required
	// +kubebuilder:validation:MaxLength=40
	Name string `json:"name"`

	// source says who declared the check: Environment or Application.
	// +required
	Source VerificationSource `json:"source"`

	// cluster is the cluster the check runs against.
	// +required
	// +kubebuilder:validation:MaxLength=253
	Cluster string `json:"cluster"`

	// tries is how many HTTP requests were sent (and counted) so far.
	// +optional
	Tries int32 `json:"tries,omitempty"`

	// nextTry is when the next HTTP request is due.
	// +optional
	NextTry *metav1.Time `json:"nextTry,omitempty"`

	// job is the name of the Job of a Job check.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	Job string `json:"job,omitempty"`

	// startTime is when the check started (a Job check's timeout counts from it).
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// result is Passed or Failed once the check is done.
	// +optional
	Result VerificationResult `json:"result,omitempty"`

	// message says what the check saw: the last answer's status and latency, or why it failed,
	// with the output (truncated, secrets redacted).
	// +optional
	// +kubebuilder:validation:MaxLength=2048
	Message string `json:"message,omitempty"`
}

// The verification's condition and reasons (on status.environments[].conditions).
const (
	// VerifiedCondition is True when the image passed the environment's verification, Unknown while
	// a run is in progress and False when the last run failed.
	VerifiedCondition = "Verified"
	// VerifyingReason means a verification run is in progress.
	VerifyingReason = "Verifying"
	// VerifiedReason means every check passed on every cluster.
	VerifiedReason = "Verified"
	// VerificationFailedReason means a check failed; after a rollout, the environment rolls back.
	VerificationFailedReason = "VerificationFailed"
)
