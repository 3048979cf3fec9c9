package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DefaultNamespaceTemplate is the namespace an environment deploys a project into when the
// Environment does not say otherwise.
const DefaultNamespaceTemplate = "{project}-{environment}"

// EnvironmentSpec is a stage on the way to production: where it deploys, who must approve, and how
// a new version rolls out.
// +kubebuilder:validation:XValidation:rule="!has(self.rollout) || !has(self.rollout.waves) || self.rollout.waves.all(w, w.clusters.all(c, c in self.clusters))",message="a wave may name only clusters of spec.clusters",fieldPath=".rollout.waves"
// +kubebuilder:validation:XValidation:rule="!has(self.rollout) || !has(self.rollout.waves) || self.clusters.all(c, self.rollout.waves.exists_one(w, c in w.clusters))",message="every cluster of spec.clusters must be in exactly one wave",fieldPath=".rollout.waves"
type EnvironmentSpec struct {
	// clusters are the names of the Clusters this environment deploys to. Every cluster receives the
	// same workload; they roll out in parallel unless rollout.waves or rollout.maxClustersAtOnce
	// says otherwise.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=253
	Clusters []string `json:"clusters"`

	// namespaceTemplate makes the namespace a project deploys into from the placeholders {project}
	// (the Project's name), {namespace} (the namespace the Project lives in on the hub) and
	// {environment}. Default "{project}-{environment}". Two Projects of different teams may have
	// the same name: where teams share clusters, "{namespace}-{project}-{environment}" keeps them
	// apart. Whatever the template gives, a namespace belongs to the one Project that Ferry created
	// (or adopted) it for, and reserved namespaces (default, kube-system, kube-public,
	// kube-node-lease, any kube-* namespace and Ferry's own) are refused.
	// +optional
	// +kubebuilder:default="{project}-{environment}"
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^([a-z0-9-]|\{project\}|\{namespace\}|\{environment\})+$`
	NamespaceTemplate string `json:"namespaceTemplate,omitempty"`

	// existingNamespaces says what Ferry does with a target namespace that already exists and that
	// no Project owns (made by hand, by another tool, or by a Ferry older than ownership records):
	// Refuse (the default) stops the environment before anything is written into it; Adopt records
	// the Project as its owner and deploys. A namespace owned by another Project is refused
	// whatever this says: only its owner's record on the namespace can give it up.
	// +optional
	// +kubebuilder:default=Refuse
	ExistingNamespaces ExistingNamespacePolicy `json:"existingNamespaces,omitempty"`

	// allowedPodAnnotations are the pod annotations a repository's deploy.podAnnotations (or a
	// Release's spec.deploy) may set in this environment, as patterns where '*' matches any run of
	// characters, for example "prometheus.io/*". An annotation that matches none is not applied, and
	// the Release names it (an event and the environment's message). Empty allows none: an
	// annotation that turns off a service mesh or configures a sidecar injector is the platform's
	// decision, not the repository's. Keys under ferry.dev/ are never applied.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=317
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9*][-A-Za-z0-9_.*/]*$`
	AllowedPodAnnotations []string `json:"allowedPodAnnotations,omitempty"`

	// approval is the gate a Release must pass before it rolls out here. No approval means no gate.
	// +optional
	Approval *ApprovalPolicy `json:"approval,omitempty"`

	// rollout says how a new version replaces the running one.
	// +optional
	Rollout RolloutStrategy `json:"rollout,omitempty"`

	// windows are recurring deploy windows: when any Allow window exists, a rollout may start
	// only while one is open; an open Deny window keeps every rollout from starting. A window
	// closing never interrupts a rollout that started.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Windows []DeployWindow `json:"windows,omitempty"`

	// freezes are one-off periods in which no rollout starts in this environment. Rollouts already
	// running finish. A cluster-wide Freeze stops several Environments at once.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=32
	Freezes []EnvironmentFreeze `json:"freezes,omitempty"`

	// breakGlass names the people who may let one Release through a freeze or a closed window
	// with a break-glass Approval (spec.breakGlass and a comment saying why). When it is not set,
	// the approval policy's users and groups may; with neither, nobody may.
	// +optional
	BreakGlass *BreakGlassPolicy `json:"breakGlass,omitempty"`

	// verification are the checks every application must pass after a rollout here, before the
	// environment succeeds: a failed check rolls the environment back. Applications add their own
	// (deploy.verification).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Verification []VerificationCheck `json:"verification,omitempty"`

	// soak, when set, holds a Release before this environment (before its gate opens) until its
	// digest has run healthy in the previous environment of the Release's path for soak.duration.
	// The soak counts only that environment, and starts again when a rollout there was rolled back
	// to the digest. It does nothing in the first environment of a path.
	// +optional
	Soak *SoakPolicy `json:"soak,omitempty"`

	// autoPromote lets a Release through this environment's approval gate without a decision when
	// its digest passed the verification of the previous environment of its path (the last run
	// there passed: a failed re-verification takes that back) and this environment's soak, when it
	// has one. The Release records it (status.environments[].autoPromotion) like a decision. A
	// Release whose digest was not verified there waits for approvals as usual.
	// +optional
	AutoPromote bool `json:"autoPromote,omitempty"`

	// locked stops every new rollout into this environment until it is cleared: a freeze with no
	// end. Rollouts already running finish.
	// +optional
	Locked bool `json:"locked,omitempty"`

	// lockReason tells people why the environment is locked.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	LockReason string `json:"lockReason,omitempty"`

	// description says what the environment is for.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description,omitempty"`

	// supplyChain is what an image must prove (signature, provenance, SBOM, Harbor scan) before it
	// rolls out here.
	// +optional
	SupplyChain *SupplyChainPolicy `json:"supplyChain,omitempty"`
}

// WindowKind says whether a deploy window lets rollouts start or keeps them from starting.
// +kubebuilder:validation:Enum=Allow;Deny
type WindowKind string

const (
	// AllowWindow lets rollouts start: when an Environment has Allow windows, only inside one.
	AllowWindow WindowKind = "Allow"
	// DenyWindow keeps every rollout from starting while the window is open.
	DenyWindow WindowKind = "Deny"
)

// DeployWindow is a recurring period, from a cron schedule in a time zone, that lets rollouts start
// (Allow) or keeps them from starting (Deny).
// +kubebuilder:validation:XValidation:rule="duration(self.duration) > duration('0s')",message="duration must be positive",fieldPath=".duration"
// +kubebuilder:validation:XValidation:rule="duration(self.duration) <= duration('168h')",message="duration must be at most 168h (a week)",fieldPath=".duration"
type DeployWindow struct {
	// name identifies the window in messages, for example "weekday-office-hours".
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// kind is Allow or Deny.
	// +required
	Kind WindowKind `json:"kind"`

	// schedule is when the window opens: a five-field cron expression (minute hour day-of-month
	// month day-of-week) read in timeZone, for example "0 9 * * 1-5". Descriptors (@daily) and a
	// time zone inside the schedule (CRON_TZ=) are refused: timeZone says it.
	// +required
	// +kubebuilder:validation:MinLength=9
	// +kubebuilder:validation:MaxLength=128
	// +kubebuilder:validation:Pattern=`^[0-9A-Za-z*/,?-]+( +[0-9A-Za-z*/,?-]+){4}$`
	Schedule string `json:"schedule"`

	// duration is how long the window stays open each time it opens, in elapsed time (a window
	// across a daylight-saving change lasts as long as any other), from 1s to 168h.
	// +required
	Duration metav1.Duration `json:"duration"`

	// timeZone is the IANA time zone the schedule is read in, for example "Europe/Berlin".
	// Default UTC. A start that falls into the hour skipped when clocks go forward opens the window
	// when the clock jumps; a start that happens twice when clocks go back opens it the first time.
	// +optional
	// +kubebuilder:default=UTC
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_+/-]+$`
	TimeZone string `json:"timeZone,omitempty"`
}

// EnvironmentFreeze is a one-off period without new rollouts in one Environment.
// +kubebuilder:validation:XValidation:rule="!has(self.end) || self.end > self.start",message="end must be after start",fieldPath=".end"
type EnvironmentFreeze struct {
	// name identifies the freeze in messages.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// start is when the freeze begins.
	// +required
	Start metav1.Time `json:"start"`

	// end is when the freeze ends; without it the freeze lasts until it is removed.
	// +optional
	End *metav1.Time `json:"end,omitempty"`

	// reason tells people why rollouts are frozen.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.trim().size() > 0",message="reason must say why"
	Reason string `json:"reason"`
}

// BreakGlassPolicy names who may let one Release through a freeze or a closed window.
// +kubebuilder:validation:XValidation:rule="(has(self.users) ? size(self.users) : 0) + (has(self.groups) ? size(self.groups) : 0) > 0",message="a break-glass policy must name at least one user or group"
type BreakGlassPolicy struct {
	// users are the usernames (as the API server authenticates them) who may break glass.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Users []string `json:"users,omitempty"`

	// groups are the groups (as the API server authenticates them) whose members may break glass.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Groups []string `json:"groups,omitempty"`
}

// ApprovalPolicy decides whose Approvals count and how many are needed.
// +kubebuilder:validation:XValidation:rule="(has(self.users) ? size(self.users) : 0) + (has(self.groups) ? size(self.groups) : 0) > 0",message="an approval policy must name at least one user or group"
// +kubebuilder:validation:XValidation:rule="(has(self.groups) && size(self.groups) > 0) || !has(self.minApprovals) || self.minApprovals <= (has(self.users) ? size(self.users) : 0)",message="minApprovals cannot exceed the number of users when no group is named"
type ApprovalPolicy struct {
	// users are the usernames (as the API server authenticates them) who may approve.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Users []string `json:"users,omitempty"`

	// groups are the groups (as the API server authenticates them) whose members may approve.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=100
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=253
	Groups []string `json:"groups,omitempty"`

	// minApprovals is how many distinct eligible people must approve. Default 1.
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	MinApprovals int32 `json:"minApprovals,omitempty"`

	// forbidSelfApproval refuses an approval from the person who created the Release or whose push
	// triggered its Build. Default true.
	// +optional
	// +kubebuilder:default=true
	ForbidSelfApproval *bool `json:"forbidSelfApproval,omitempty"`

	// expiry is how long a gate stays open for decisions after it starts waiting, for example 72h.
	// An expired gate must be re-requested. No expiry means the gate waits indefinitely.
	// +optional
	Expiry *metav1.Duration `json:"expiry,omitempty"`
}

// ExistingNamespacePolicy says what Ferry does with a target namespace that exists and that no
// Project owns.
// +kubebuilder:validation:Enum=Refuse;Adopt
type ExistingNamespacePolicy string

const (
	// RefuseExistingNamespaces stops the environment with NamespaceNotOwned before writing anything
	// into a namespace that Ferry did not create for a Project.
	RefuseExistingNamespaces ExistingNamespacePolicy = "Refuse"

	// AdoptExistingNamespaces records the Project as the owner of a namespace that exists and that
	// no Project owns, then deploys into it.
	AdoptExistingNamespaces ExistingNamespacePolicy = "Adopt"
)

// RolloutStrategyType names how a new version replaces the running one.
// +kubebuilder:validation:Enum=Rolling;Batch
type RolloutStrategyType string

const (
	// RollingStrategy lets the Deployment's own rolling update replace pods.
	RollingStrategy RolloutStrategyType = "Rolling"

	// BatchStrategy moves replicas over in batches: a canary Deployment beside the stable one, behind
	// one Service, grows batch by batch until it replaces the stable one.
	BatchStrategy RolloutStrategyType = "Batch"
)

// RolloutStrategy says how a new version rolls out and when it counts as failed.
// +kubebuilder:validation:XValidation:rule="self.type != 'Batch' || has(self.batch)",message="batch must be set when type is Batch"
// +kubebuilder:validation:XValidation:rule="!has(self.waves) || !has(self.maxClustersAtOnce)",message="waves and maxClustersAtOnce are mutually exclusive",fieldPath=".waves"
type RolloutStrategy struct {
	// type is Rolling (default) or Batch.
	// +optional
	// +kubebuilder:default=Rolling
	Type RolloutStrategyType `json:"type,omitempty"`

	// batch configures the Batch strategy.
	// +optional
	Batch *BatchRollout `json:"batch,omitempty"`

	// progressDeadline is how long a rollout (each batch, for Batch) may take to become healthy
	// before it is rolled back. Default 10m.
	// +optional
	ProgressDeadline *metav1.Duration `json:"progressDeadline,omitempty"`

	// waves rolls the environment's clusters out in groups, one after the other: a wave starts
	// only when every cluster of the waves before it is healthy. Every cluster of spec.clusters
	// must be in exactly one wave. The first cluster that fails stops the rollout: no later wave
	// starts, and the clusters of the waves already rolled out and of the failed wave go back to
	// the previous digest. Under the Batch strategy with approvals between batches, the first wave
	// waits for them and the approvals it received let the later waves through the same batches.
	// Without waves (and without maxClustersAtOnce) every cluster rolls out at once.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=50
	Waves []RolloutWave `json:"waves,omitempty"`

	// maxClustersAtOnce rolls the clusters out in waves of at most this many, in the order of
	// spec.clusters, with the same rules as waves. It cannot be set together with waves. Unset
	// rolls every cluster out at once.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=50
	MaxClustersAtOnce *int32 `json:"maxClustersAtOnce,omitempty"`
}

// RolloutWave is a group of an Environment's clusters that roll out together.
type RolloutWave struct {
	// clusters are the clusters of this wave, each one of spec.clusters.
	// +required
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=50
	// +kubebuilder:validation:items:MaxLength=253
	Clusters []string `json:"clusters"`
}

// BatchGate says what must happen between two batches besides the batch becoming healthy.
// +kubebuilder:validation:Enum=None;Pause;Approval
type BatchGate string

const (
	// BatchGateNone moves on as soon as a batch is healthy.
	BatchGateNone BatchGate = "None"
	// BatchGatePause waits for a fixed time after a batch is healthy, then checks health again.
	BatchGatePause BatchGate = "Pause"
	// BatchGateApproval waits for an Approval naming the next batch.
	BatchGateApproval BatchGate = "Approval"
)

// BatchRollout splits a rollout into batches.
// +kubebuilder:validation:XValidation:rule="self.between != 'Pause' || has(self.pause)",message="pause must be set when between is Pause"
type BatchRollout struct {
	// batches is the number of batches, the last of which moves every replica. Between 2 and 10.
	// +required
	// +kubebuilder:validation:Minimum=2
	// +kubebuilder:validation:Maximum=10
	Batches int32 `json:"batches"`

	// between is what must happen between two batches: None, Pause or Approval. Default None.
	// +optional
	// +kubebuilder:default=None
	Between BatchGate `json:"between,omitempty"`

	// pause is how long to wait after a healthy batch when between is Pause.
	// +optional
	Pause *metav1.Duration `json:"pause,omitempty"`
}

// Environment is a stage of delivery (dev, staging, prod): a set of clusters, a namespace per
// project, an approval gate and a rollout strategy. Platform teams own Environments; nothing in a
// repository can change them.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=fenv,categories=ferry
// +kubebuilder:printcolumn:name="Clusters",type=string,JSONPath=`.spec.clusters`
// +kubebuilder:printcolumn:name="Min Approvals",type=integer,JSONPath=`.spec.approval.minApprovals`
// +kubebuilder:printcolumn:name="Strategy",type=string,JSONPath=`.spec.rollout.type`
// +kubebuilder:printcolumn:name="Locked",type=boolean,JSONPath=`.spec.locked`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Environment struct {
	metav1.TypeMeta `json:",inline"`
	// metadata is the standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the environment's clusters, gate and rollout strategy.
	// +required
	Spec EnvironmentSpec `json:"spec"`
}

// EnvironmentList is a list of Environments.
//
// +kubebuilder:object:root=true
type EnvironmentList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Environment `json:"items"`
}

func init() {
	register(&Environment{}, &EnvironmentList{})
}
