package v1alpha1

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
