package gitlab_test

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
)

// TestMemberAccess reads roles through GET /projects/:id/members/all/:user_id: a member's
// access_level, NoAccess for a non-member, retries on 429 and 5xx.
func TestMemberAccess(t *testing.T) {
	fake, id := newFake(t)
	dev := fake.AddUser("dev", "dev-token")
	stranger := fake.AddUser("stranger", "stranger-token")
	if err := fake.SetRole(id, "dev", gitlabsim.MaintainerAccess); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{ID: id}
	fake.Inject(gitlabsim.Fault{PathContains: "/members/all/", Status: http.StatusTooManyRequests, Times: 1, RetryAfter: "0"})
	fake.Inject(gitlabsim.Fault{PathContains: "/members/all/", Status: http.StatusBadGateway, Times: 1})
	if got, err := c.MemberAccess(ctx, project, dev.ID); err != nil || got != gitlab.Maintainer || got.String() != "Maintainer" {
		t.Errorf("maintainer: %v %v", got, err)
	}
	if got, err := c.MemberAccess(ctx, project, stranger.ID); err != nil || got != gitlab.NoAccess {
		t.Errorf("stranger: %v %v", got, err)
	}
	calls := 0
	for _, call := range fake.Calls() {
		if call.Method == http.MethodGet && call.Path == "/api/v4/projects/"+jsonInt(id)+"/members/all/"+jsonInt(dev.ID) {
			calls++
		}
	}
	if calls != 3 {
		t.Errorf("%d calls for the maintainer, want 3 (429, 502, 200)", calls)
	}
	fake.Inject(gitlabsim.Fault{PathContains: "/members/all/", Status: http.StatusServiceUnavailable})
	_, err := c.MemberAccess(ctx, project, dev.ID)
	noToken(t, err)
	if err == nil || gitlab.IsPermanent(err) {
		t.Errorf("GitLab down: %v", err)
	}
}

func jsonInt(n int64) string { return strconv.FormatInt(n, 10) }

// TestNoteIsNotPostedTwice: a 5xx answer to creating a note is not retried (GitLab may have saved
// it); a 429 is.
func TestNoteIsNotPostedTwice(t *testing.T) {
	fake, id := newFake(t)
	iid, err := fake.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "f"})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, fake.URL, fastRetries)
	project := gitlab.ProjectRef{ID: id}
	fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/notes", Status: http.StatusBadGateway, Times: 1})
	err = c.CreateMergeRequestNote(context.Background(), project, iid, "hello")
	noToken(t, err)
	if err == nil || gitlab.IsPermanent(err) {
		t.Errorf("502: %v", err)
	}
	fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/notes", Status: http.StatusTooManyRequests, Times: 1, RetryAfter: "0"})
	if err := c.CreateMergeRequestNote(context.Background(), project, iid, "hello"); err != nil {
		t.Errorf("429 then 201: %v", err)
	}
	posts := 0
	for _, call := range fake.Calls() {
		if call.Method == http.MethodPost {
			posts++
		}
	}
	if posts != 3 || len(fake.Notes(id, iid)) != 1 {
		t.Errorf("%d POSTs (want 3: 502, 429, 201) and %d notes (want 1)", posts, len(fake.Notes(id, iid)))
	}
}
