package gitlab

import (
	"context"
	"fmt"
	"strings"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// PreviewNotesAPI is what the preview controller asks of GitLab: one note per merge request that
// it finds again by a marker, and edits.
type PreviewNotesAPI interface {
	// FindMergeRequestNoteID returns the ID of the newest note of the merge request that contains
	// marker (among the newest 500), 0 when there is none.
	FindMergeRequestNoteID(ctx context.Context, project ProjectRef, iid int64, marker string) (int64, error)
	// CreateMergeRequestNote adds a note. A 5xx answer is not retried: the caller looks for the
	// note by its marker before it tries again.
	CreateMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, body string) error
	// UpdateMergeRequestNote replaces the body of a note (PUT
	// /projects/:id/merge_requests/:iid/notes/:note_id). Editing is idempotent, so 429 and 5xx
	// are retried.
	UpdateMergeRequestNote(ctx context.Context, project ProjectRef, iid, noteID int64, body string) error
	// MergeRequestState is the merge request's state: opened, closed, locked or merged.
	MergeRequestState(ctx context.Context, project ProjectRef, iid int64) (string, error)
}

var _ PreviewNotesAPI = (*Client)(nil)

// FindMergeRequestNoteID looks through the newest 500 notes of a merge request for marker.
func (c *Client) FindMergeRequestNoteID(ctx context.Context, project ProjectRef, iid int64, marker string) (int64, error) {
	opt := &gl.ListMergeRequestNotesOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		OrderBy:     gl.Ptr("created_at"),
		Sort:        gl.Ptr("desc"),
	}
	for range 5 {
		notes, resp, err := c.api.Notes.ListMergeRequestNotes(project.pid(), iid, opt, gl.WithContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("failed to list notes of merge request !%d of %s: %w", iid, project, convert(err))
		}
		for _, n := range notes {
			if strings.Contains(n.Body, marker) {
				return n.ID, nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			return 0, nil
		}
		opt.Page = resp.NextPage
	}
	return 0, nil
}

// UpdateMergeRequestNote replaces the body of a merge request note.
func (c *Client) UpdateMergeRequestNote(ctx context.Context, project ProjectRef, iid, noteID int64, body string) error {
	_, _, err := c.api.Notes.UpdateMergeRequestNote(project.pid(), iid, noteID, &gl.UpdateMergeRequestNoteOptions{Body: &body}, gl.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("failed to edit note %d of merge request !%d of %s: %w", noteID, iid, project, convert(err))
	}
	return nil
}

// MergeRequestState reads the merge request's state (GET /projects/:id/merge_requests/:iid).
func (c *Client) MergeRequestState(ctx context.Context, project ProjectRef, iid int64) (string, error) {
	mr, _, err := c.api.MergeRequests.GetMergeRequest(project.pid(), iid, nil, gl.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("failed to read merge request !%d of %s: %w", iid, project, convert(err))
	}
	return mr.State, nil
}
