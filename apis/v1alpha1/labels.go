package v1alpha1

// Labels, annotations and finalizers are part of Ferry's API as much as the fields of its kinds:
// people select on them, set some of them (kubectl annotate, the ferry CLI, the UI) and read
// others. Each one is declared here, once, with who sets it and who reads it.

// Labels and annotations Ferry puts on its own objects and on what it creates, so that people and
// controllers can select them.
const (
	// ProjectLabel names the Project a Build, Release, Approval, PipelineRun or workload belongs to.
	ProjectLabel = "ferry.dev/project"

	// BuildLabel names the Build a PipelineRun or Release comes from.
	BuildLabel = "ferry.dev/build"

	// ReleaseLabel names the Release an Approval or a deployed workload belongs to.
	ReleaseLabel = "ferry.dev/release"

	// EnvironmentLabel names the Environment of an Approval or of a deployed namespace and workload.
	EnvironmentLabel = "ferry.dev/environment"

	// TriggerKindLabel is the kind of event that created a Build (Push, Tag, MergeRequest, Manual).
	TriggerKindLabel = "ferry.dev/trigger"

	// ProjectUIDLabel, on a target namespace, holds the UID of the one Project it belongs to. It is
	// the ownership record: Ferry deploys a Project only into namespaces that carry its UID (or that
	// it creates, or adopts when the Environment says so), and never into one that carries another
	// Project's. A UID fits a label value (63 characters); a Project's name and namespace together
	// may not, so they are in ProjectLabel, ProjectNamespaceLabel and OwnerAnnotation, for people and
	// selectors, and decide nothing.
	ProjectUIDLabel = "ferry.dev/project-uid"

	// ProjectNamespaceLabel, on a target namespace, names the hub namespace of the Project it
	// belongs to (a namespace name fits a label value).
	ProjectNamespaceLabel = "ferry.dev/project-namespace"

	// OwnerAnnotation, on a target namespace, names the Project it belongs to as
	// <namespace>/<name>, unabridged: an annotation has no 63-character limit.
	OwnerAnnotation = "ferry.dev/owner"

	// ManagedByLabel is app.kubernetes.io/managed-by; Ferry sets it to ManagedByValue.
	ManagedByLabel = "app.kubernetes.io/managed-by"

	// ManagedByValue is the value of ManagedByLabel on what Ferry creates.
	ManagedByValue = "ferry"

	// FieldManager is the server-side apply field manager Ferry uses everywhere.
	FieldManager = "ferry"
)

// AssertedIdentityAnnotation is how Ferry's UI names the person it acts for: on an Approval it
// creates and on a Release whose gate it re-requests, a JSON Approver ({"username": …, "groups":
// […]}). Ferry's admission webhook believes it only from the UI's own identity (the manager's
// --ui-identity), checks that RBAC lets that person do what the UI does for them, and judges the
// decision as theirs; from anyone else it refuses the request.
const AssertedIdentityAnnotation = "ferry.dev/asserted-identity"

// ReservedAnnotationPrefix is the prefix of the annotation keys that are Ferry's own. A repository
// never sets one on pods: the pipeline file's validation refuses deploy.podAnnotations under it,
// and a rollout drops them whatever an Environment's allowedPodAnnotations allow.
const ReservedAnnotationPrefix = "ferry.dev/"

// Annotations on a Release and a Build.
const (
	// ReRequestAnnotation on a Release names the environments (comma-separated) whose expired gate
	// is asked for again. People set it with `ferry approve --rerequest`, the UI's re-request
	// button or kubectl annotate; the Release controller reads it, opens a new approval window and
	// removes it. The admission webhook lets the UI set it only for a person RBAC lets patch the
	// Release.
	ReRequestAnnotation = "ferry.dev/rerequest"

	// ReverifyAnnotation on a Release names the environments (comma-separated) whose verification
	// is asked for again (`ferry verify`). The Release controller starts a new run in each named
	// environment the Release rolled out to and still runs in, then removes it. A failed
	// re-verification takes back the verified mark (status.environments[].verification).
	ReverifyAnnotation = "ferry.dev/reverify"

	// ReleasedAnnotation on a Build names the Release the auto-release controller made of it. That
	// controller sets it and reads it, so that deleting that Release (to stop it) does not bring it
	// back; people read it to find the Release of a Build.
	ReleasedAnnotation = "ferry.dev/released-as"

	// RerunOfAnnotation on a Build names the Build whose commit and ref it builds again.
	// `ferry build rerun` sets it; people read it.
	RerunOfAnnotation = "ferry.dev/rerun-of"

	// ReleaseFinalizer is the Release controller's finalizer on a Release: it lets the controller
	// take an unfinished rollout back before the Release goes, because a Release writes into other
	// clusters, which owner references cannot reach. The controller adds and removes it.
	ReleaseFinalizer = "ferry.dev/release"
)

// Annotations the GitLab receiver and the GitLab reporter put on Builds.
const (
	// GitLabSourceBranchAnnotation is the source branch of a merge request Build. The receiver sets
	// it; the reporter reads it, because GitLab's commit status names it as the ref.
	GitLabSourceBranchAnnotation = "gitlab.ferry.dev/source-branch"

	// GitLabSourceProjectAnnotation is the numeric ID of the fork a merge request comes from, when
	// it is not the Project's own GitLab project. The receiver sets it; the reporter reads it and
	// posts the commit status there.
	GitLabSourceProjectAnnotation = "gitlab.ferry.dev/source-project-id"

	// GitLabNoteAnnotation records that the result note was posted on the merge request (its value
	// is the reported state). The reporter sets it and reads it, so that a restart never posts the
	// note twice.
	GitLabNoteAnnotation = "gitlab.ferry.dev/merge-request-note"

	// GitLabOKToTestAnnotation names the GitLab user who allowed a merge request's commit to build
	// with /ok-to-test (a merge request from a fork, or by someone without the Developer role, does
	// not build until a member says so). The receiver sets it on the Build it then creates; that
	// Build is the record of the permission: it is the commit's Build on the merge request's ref,
	// so every later delivery of that commit reuses it, and a new push (another commit) has none.
	GitLabOKToTestAnnotation = "gitlab.ferry.dev/ok-to-test-by"

	// GitLabCommandNoteAnnotation is the ID of the merge request comment whose command (/retest,
	// /ok-to-test) created the Build. The receiver sets it and reads it, so that a command run again
	// (GitLab redelivers the comment, or the reply note failed) reports that Build instead of making
	// another.
	GitLabCommandNoteAnnotation = "gitlab.ferry.dev/command-note"
)

// Annotations of the GitLab deployment reporter (controllers/gitlabdeploy).
const (
	// GitLabDeploymentsAnnotation is, on a Release, the GitLab deployment recorded for each
	// environment it rolled out to (JSON: environment → id, status, the deployment ID before it).
	// The reporter sets it and reads it, so that a restart never creates a deployment twice.
	GitLabDeploymentsAnnotation = "gitlab.ferry.dev/deployments"

	// GitLabExternalURLAnnotation is, on an Environment, the URL where the application answers in
	// it (http or https). The reporter sets it as the GitLab environment's external URL; without
	// it GitLab links to the Release's page in Ferry's UI.
	GitLabExternalURLAnnotation = "gitlab.ferry.dev/external-url"

	// GitLabDeploymentsFinalizer is on a Release while one of its GitLab deployments is running,
	// so that deleting the Release cancels the deployment instead of leaving it running.
	GitLabDeploymentsFinalizer = "gitlab.ferry.dev/deployments"
)

// Annotations the Build controller puts on the PipelineRun of a Build.
const (
	// RevisionAnnotation is the commit the run builds. The Build controller sets it; people read it.
	RevisionAnnotation = "ferry.dev/revision"

	// DeployAnnotation holds the pipeline file's deploy settings (JSON) at the run's commit. The
	// Build controller sets it and reads it back, so that the Build can record them even if it never
	// saw the file.
	DeployAnnotation = "ferry.dev/deploy"
)

// TektonPipelineRunLabel is Tekton's label on a TaskRun naming the PipelineRun it belongs to.
// Tekton sets it; the UI reads it to find the pods, and so the step logs, of a Build.
const TektonPipelineRunLabel = "tekton.dev/pipelineRun"

// Labels and annotations a rollout puts on what it creates in a target cluster.
const (
	// TrackLabel says whether a pod belongs to the stable or the canary Deployment. A rollout sets
	// it on the pods and their Deployments' selectors; people select on it.
	TrackLabel = "ferry.dev/track"

	// AppliedAnnotation holds a hash of what Ferry last applied to an object. A rollout sets it and
	// reads it: an apply whose hash equals it is skipped, which is what makes a retry or a restart
	// write nothing twice.
	AppliedAnnotation = "ferry.dev/applied"

	// ImageAnnotation records on a Deployment the image (repository@sha256:…) Ferry set. A rollout
	// sets it; people read it.
	ImageAnnotation = "ferry.dev/image"
)

// Preview environments.
const (
	// PreviewLabel, on a preview namespace, names the Preview it was created for; with
	// ProjectUIDLabel it is the record that lets Ferry delete the namespace. A namespace without
	// both is never deleted by the preview controller. On a Preview, it names the merge request's
	// IID.
	PreviewLabel = "ferry.dev/preview"

	// PreviewFinalizer on a Preview makes its namespace go before it does. The preview controller
	// sets it and removes it once the namespace is deleted (or was not Ferry's to delete).
	PreviewFinalizer = "ferry.dev/preview-namespace"
)
