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
