package gitlab

import "context"

// FakeAPI is an API whose methods call the function fields; a nil field succeeds and does
// nothing. Unit tests use it; integration tests use the simulator, internal/gitlabsim.
type FakeAPI struct {
	SetCommitStatusFn        func(ctx context.Context, project ProjectRef, sha string, status CommitStatus) error
	FindMergeRequestNoteFn   func(ctx context.Context, project ProjectRef, iid int64, marker string) (bool, error)
	CreateMergeRequestNoteFn func(ctx context.Context, project ProjectRef, iid int64, body string) error
	MemberAccessFn           func(ctx context.Context, project ProjectRef, userID int64) (AccessLevel, error)
}

var _ API = (*FakeAPI)(nil)

// SetCommitStatus calls SetCommitStatusFn.
func (f *FakeAPI) SetCommitStatus(ctx context.Context, project ProjectRef, sha string, status CommitStatus) error {
	if f.SetCommitStatusFn == nil {
		return nil
	}
	return f.SetCommitStatusFn(ctx, project, sha, status)
}

// FindMergeRequestNote calls FindMergeRequestNoteFn.
func (f *FakeAPI) FindMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, marker string) (bool, error) {
	if f.FindMergeRequestNoteFn == nil {
		return false, nil
	}
	return f.FindMergeRequestNoteFn(ctx, project, iid, marker)
}

// CreateMergeRequestNote calls CreateMergeRequestNoteFn.
func (f *FakeAPI) CreateMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, body string) error {
	if f.CreateMergeRequestNoteFn == nil {
		return nil
	}
	return f.CreateMergeRequestNoteFn(ctx, project, iid, body)
}

// MemberAccess calls MemberAccessFn; without one every user has NoAccess.
func (f *FakeAPI) MemberAccess(ctx context.Context, project ProjectRef, userID int64) (AccessLevel, error) {
	if f.MemberAccessFn == nil {
		return NoAccess, nil
	}
	return f.MemberAccessFn(ctx, project, userID)
}
