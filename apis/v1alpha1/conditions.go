package v1alpha1

// Condition types. Every kind with a status summarises itself in Ready; the others say which part of
// the work a Ready=False points at. Reconciling and Stalled follow kstatus: Reconciling=True while work
// is in progress, Stalled=True when only a change by a person can make progress.
const (
	// ReadyCondition summarises the object: True when it has reached the state its spec asks for.
	ReadyCondition = "Ready"

	// ReconcilingCondition is True while a controller is making progress towards the spec.
	ReconcilingCondition = "Reconciling"

	// StalledCondition is True when the controller cannot make progress without a change to the spec
	// or to something the spec refers to.
	StalledCondition = "Stalled"

	// SourceResolvedCondition is True on a Build once the pipeline file was read and parsed at the
	// Build's exact commit.
	SourceResolvedCondition = "SourceResolved"

	// PipelineSucceededCondition mirrors the Build's pipeline run: Unknown while it runs, True when it
	// succeeded, False when it failed, timed out or was cancelled.
	PipelineSucceededCondition = "PipelineSucceeded"

	// ImagePushedCondition is True on a Build once its image was pushed and its digest recorded.
	ImagePushedCondition = "ImagePushed"

	// ApprovedCondition is True on a Release environment whose approval gate is open.
	ApprovedCondition = "Approved"

	// RolledOutCondition is True on a Release environment (or cluster) whose workload is healthy
	// with the Release's digest.
	RolledOutCondition = "RolledOut"

	// CleanedUpCondition is set on a Release being deleted that was still rolling out: True when
	// every unfinished rollout was taken back, False (ObjectsLeft) when a cluster could not be
	// reached, naming the cluster, the namespace and the objects left there. It is written before
	// the finalizer is removed, so the last state of the Release (and its event) keeps it.
	CleanedUpCondition = "CleanedUp"
)

// Condition reasons, CamelCase. Events use the same words.
const (
	// ProgressingReason: work is under way.
	ProgressingReason = "Progressing"

	// SucceededReason: the work finished as asked.
	SucceededReason = "Succeeded"

	// FailedReason: the work finished and did not succeed.
	FailedReason = "Failed"

	// ClusterReachableReason: the Cluster's API server answered a version probe.
	ClusterReachableReason = "ClusterReachable"

	// SecretNotFoundReason: a referenced Secret does not exist.
	SecretNotFoundReason = "SecretNotFound"

	// InvalidKubeConfigReason: the Cluster's kubeconfig cannot be parsed or names no usable context.
	InvalidKubeConfigReason = "InvalidKubeConfig"

	// ClusterUnreachableReason: the Cluster's API server did not answer, or refused the credentials.
	ClusterUnreachableReason = "ClusterUnreachable"

	// ProjectNotFoundReason: a Build or Release names a Project that does not exist.
	ProjectNotFoundReason = "ProjectNotFound"

	// InvalidPipelineFileReason: the repository's pipeline file is missing or invalid at the commit.
	InvalidPipelineFileReason = "InvalidPipelineFile"

	// SourceUnavailableReason: the repository could not be fetched at the commit.
	SourceUnavailableReason = "SourceUnavailable"

	// WaitingForGitServerReason: the Build waits for a turn to fetch its source: the git server's
	// or the namespace's share of the Build workers is in use, another Build is reading the same
	// file, or the server timed out recently and is left alone for a while.
	WaitingForGitServerReason = "WaitingForGitServer"

	// PipelineRunningReason: the pipeline run was created and has not finished.
	PipelineRunningReason = "PipelineRunning"

	// WaitingForExecutorReason: the Build's run could not be created yet (Tekton's webhook does
	// not answer, the API server is busy); the controller retries and creates it once.
	WaitingForExecutorReason = "WaitingForExecutor"

	// PipelineRunRefusedReason: the Build's PipelineRun was refused (by Tekton's webhook, a
	// quota or a policy of the namespace); the Build fails with their words, without running.
	PipelineRunRefusedReason = "PipelineRunRefused"

	// QueuedReason: the Build's run exists and waits for the executor to have room for it (the local
	// executor runs a bounded number of Builds at once).
	QueuedReason = "Queued"

	// InvalidImageTagReason: the Build's git tag cannot be an image tag (for example release/1.0);
	// the Build fails without running.
	InvalidImageTagReason = "InvalidImageTag"

	// PipelineFailedReason: the pipeline run finished with a failure.
	PipelineFailedReason = "PipelineFailed"

	// PipelineTimeoutReason: the pipeline run exceeded its timeout.
	PipelineTimeoutReason = "PipelineTimeout"

	// CancelledReason: a Build or Release was cancelled by a person or superseded by a newer one.
	CancelledReason = "Cancelled"

	// SupersededReason: a newer Build or Release for the same ref or environment replaced this one.
	SupersededReason = "Superseded"

	// ResultsMissingReason: the pipeline succeeded but did not report the image it pushed.
	ResultsMissingReason = "ResultsMissing"

	// WaitingForApprovalReason: an environment's gate needs more approvals.
	WaitingForApprovalReason = "WaitingForApproval"

	// ApprovedReason: enough eligible approvals were given.
	ApprovedReason = "Approved"

	// RejectedReason: an eligible person rejected the release for the environment.
	RejectedReason = "Rejected"

	// ExpiredReason: the approval window passed before enough approvals were given.
	ExpiredReason = "Expired"

	// NoGateReason: the environment has no approval policy.
	NoGateReason = "NoGate"

	// WaitingForPreviousEnvironmentReason: an earlier environment on the promotion path is not done.
	WaitingForPreviousEnvironmentReason = "WaitingForPreviousEnvironment"

	// EnvironmentLockedReason: the environment's deploy lock is set, or another Release holds it.
	EnvironmentLockedReason = "EnvironmentLocked"

	// WaitingForWindowReason: the environment's deploy windows do not let a rollout start now (no
	// Allow window is open, or a Deny window is); the message says which and when they open.
	WaitingForWindowReason = "WaitingForWindow"

	// FrozenReason: a freeze of the Environment, or a cluster-wide Freeze selecting it, keeps
	// rollouts from starting; the message names it, its reason and when it ends.
	FrozenReason = "Frozen"

	// BreakGlassReason: a break-glass Approval let a Release start through a freeze or a closed
	// deploy window.
	BreakGlassReason = "BreakGlass"

	// BreakGlassRefusedReason: a break-glass Approval was refused (its author is not named by the
	// Environment's policy).
	BreakGlassRefusedReason = "BreakGlassRefused"

	// RollingOutReason: the workload is being applied and has not become healthy yet.
	RollingOutReason = "RollingOut"

	// RolloutFailedReason: the workload did not become healthy before its deadline.
	RolloutFailedReason = "RolloutFailed"

	// RolledBackReason: after a failed rollout the environment's previous digest was restored.
	RolledBackReason = "RolledBack"

	// WaveNotStartedReason: an earlier wave of the environment's clusters failed, so this
	// cluster's wave never started and nothing was written to it.
	WaveNotStartedReason = "WaveNotStarted"

	// HealthyReason: every replica is updated and available.
	HealthyReason = "Healthy"

	// GitLabReportFailedReason: GitLab refused a Build's commit status or merge request note for
	// good (no permission, unknown project or commit), or the Project's token Secret is missing.
	// The Build itself is not affected.
	GitLabReportFailedReason = "GitLabReportFailed"
	// RollingBackReason: a rollout failed and the environment's previous image is being restored.
	RollingBackReason = "RollingBack"

	// PausedReason: a batch is healthy and the Batch strategy pauses before the next one.
	PausedReason = "Paused"

	// NewerImageDeployedReason: the environment runs an image built after the Release's, and only a
	// rollback Release may replace a newer image with an older one.
	NewerImageDeployedReason = "NewerImageDeployed"

	// EnvironmentNotFoundReason: a Release's path names an Environment that does not exist.
	EnvironmentNotFoundReason = "EnvironmentNotFound"

	// NotOnPromotionPathReason: a Release names an environment that is not on its Project's
	// promotion path, or the path is empty.
	NotOnPromotionPathReason = "NotOnPromotionPath"

	// BuildNotFoundReason: a Release needs its Build's deploy settings and the Build does not exist.
	BuildNotFoundReason = "BuildNotFound"

	// NamespaceNotOwnedReason: a Release's target namespace on a cluster belongs to another Project,
	// or exists and no Project owns it while the Environment does not adopt existing namespaces.
	// Nothing was written into it.
	NamespaceNotOwnedReason = "NamespaceNotOwned"

	// NamespaceReservedReason: an Environment's namespace template gives a namespace Ferry never
	// deploys into (default, kube-system, kube-public, kube-node-lease, any kube-* namespace, or
	// Ferry's own namespace).
	NamespaceReservedReason = "NamespaceReserved"

	// PodAnnotationsDroppedReason: pod annotations of the deploy settings that the Environment's
	// allowedPodAnnotations do not allow were not applied.
	PodAnnotationsDroppedReason = "PodAnnotationsDropped"

	// RolledBackOnDeleteReason: a Release deleted while rolling out had its unfinished rollouts
	// taken back on every cluster.
	RolledBackOnDeleteReason = "RolledBackOnDelete"

	// ObjectsLeftReason: a Release deleted while rolling out could not take its rollout back on a
	// cluster (unreachable, or it kept failing); the objects it had written there were left as they
	// were.
	ObjectsLeftReason = "ObjectsLeft"
)
