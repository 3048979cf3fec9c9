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

	// ManagedByLabel is app.kubernetes.io/managed-by; Ferry sets it to ManagedByValue.
	ManagedByLabel = "app.kubernetes.io/managed-by"

	// ManagedByValue is the value of ManagedByLabel on what Ferry creates.
	ManagedByValue = "ferry"

	// FieldManager is the server-side apply field manager Ferry uses everywhere.
	FieldManager = "ferry"
)
