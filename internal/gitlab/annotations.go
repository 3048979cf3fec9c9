package gitlab

// Annotations the GitLab receiver and reporter put on Builds.
const (
	// SourceBranchAnnotation is the source branch of a merge request Build: GitLab's commit status
	// names it as the ref.
	SourceBranchAnnotation = "gitlab.ferry.dev/source-branch"

	// SourceProjectAnnotation is the numeric ID of the fork a merge request comes from, when it is
	// not the Project's own GitLab project: the commit status goes there.
	SourceProjectAnnotation = "gitlab.ferry.dev/source-project-id"

	// NoteAnnotation records that the result note was posted on the merge request (its value is
	// the reported state), so that a restart never posts it twice.
	NoteAnnotation = "gitlab.ferry.dev/merge-request-note"
)
