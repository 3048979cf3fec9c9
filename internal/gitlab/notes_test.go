package gitlab_test

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
)

// TestEditMergeRequestNote: a note is found by its marker and edited in place (through a 5xx,
// retried); a note of someone else is refused (403, permanent) and an unknown one is 404.
func TestEditMergeRequestNote(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{ID: id}
	sha, err := fake.AddCommit(id, gitlabsim.Commit{Message: "x"})
	if err != nil {
		t.Fatal(err)
	}
	iid, err := fake.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "f", TargetBranch: "main", SHA: sha})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.FindMergeRequestNoteID(ctx, project, iid, "<!-- m -->"); err != nil || got != 0 {
		t.Fatalf("find before create = %d, %v", got, err)
	}
	if err := c.CreateMergeRequestNote(ctx, project, iid, "first\n<!-- m -->"); err != nil {
		t.Fatal(err)
	}
	noteID, err := c.FindMergeRequestNoteID(ctx, project, iid, "<!-- m -->")
	if err != nil || noteID == 0 {
		t.Fatalf("find = %d, %v", noteID, err)
	}
	fake.Inject(gitlabsim.Fault{Method: http.MethodPut, PathContains: "/notes/", Status: http.StatusBadGateway, Times: 1})
	if err := c.UpdateMergeRequestNote(ctx, project, iid, noteID, "second\n<!-- m -->"); err != nil {
		t.Fatalf("edit through a 502: %v", err)
	}
	notes := fake.Notes(id, iid)
	if len(notes) != 1 || notes[0].Body != "second\n<!-- m -->" || notes[0].ID != noteID {
		t.Fatalf("notes = %+v", notes)
	}

	// Someone else's note: GitLab lets only the author edit it.
	fake.AddUser("alice", "alice-token")
	alice := newClientWithToken(t, fake.URL, "alice-token")
	if err := alice.CreateMergeRequestNote(ctx, project, iid, "alice was here"); err != nil {
		t.Fatal(err)
	}
	aliceNote, _ := c.FindMergeRequestNoteID(ctx, project, iid, "alice was here")
	err = c.UpdateMergeRequestNote(ctx, project, iid, aliceNote, "overwritten")
	var apiErr *gitlab.APIError
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusForbidden || !gitlab.IsPermanent(err) {
		t.Errorf("editing another's note: %v", err)
	}
	err = c.UpdateMergeRequestNote(ctx, project, iid, 999999, "nothing")
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("editing an unknown note: %v", err)
	}
	noToken(t, err)
	if got := fake.Notes(id, iid); got[1].Body != "alice was here" {
		t.Errorf("alice's note = %q", got[1].Body)
	}
}

func newClientWithToken(t *testing.T, baseURL, tok string) *gitlab.Client {
	t.Helper()
	c, err := gitlab.New(baseURL, tok, fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
