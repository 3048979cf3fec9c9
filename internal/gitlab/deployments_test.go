package gitlab_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
)

func countCalls(fake *gitlabsim.Server, method, part string) map[int]int {
	out := map[int]int{}
	for _, c := range fake.Calls() {
		if c.Method == method && strings.Contains(c.Path, part) {
			out[c.Status]++
		}
	}
	return out
}

// TestCreateDeploymentRetries: 429 is retried (GitLab refused before saving anything); a 5xx is
// not, since GitLab may have saved the deployment: the caller looks first.
func TestCreateDeploymentRetries(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{ID: id}
	nd := gitlab.NewDeployment{Environment: "dev", Ref: "main", SHA: sha, Status: gitlab.DeploymentRunning}

	fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/deployments", Status: http.StatusTooManyRequests, RetryAfter: "0", Times: 2})
	d, err := c.CreateDeployment(ctx, project, nd)
	if err != nil {
		t.Fatalf("after two 429: %v", err)
	}
	if d.Status != gitlab.DeploymentRunning || d.Environment != "dev" || d.SHA != sha {
		t.Errorf("created %+v", d)
	}
	fake.ResetCalls()
	fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/deployments", Status: http.StatusBadGateway, Times: 1})
	_, err = c.CreateDeployment(ctx, project, nd)
	noToken(t, err)
	if err == nil || gitlab.IsPermanent(err) {
		t.Fatalf("a 502 must be a transient error, got %v", err)
	}
	if n := countCalls(fake, http.MethodPost, "/deployments"); n[http.StatusBadGateway] != 1 || len(n) != 1 {
		t.Errorf("POST answers %v, want one 502 and no retry", n)
	}
	if n := len(fake.Deployments(id)); n != 1 {
		t.Errorf("%d deployments, want 1", n)
	}
}

// TestFindDeploymentStopsAtTheRecordedID: only deployments newer than afterID count, whatever
// their commit; the newest match wins, across pages.
func TestFindDeploymentStopsAtTheRecordedID(t *testing.T) {
	fake, _ := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{Path: "group/sub/app"}
	create := func(env, ref, commit string) int64 {
		t.Helper()
		d, err := c.CreateDeployment(ctx, project, gitlab.NewDeployment{Environment: env, Ref: ref, SHA: commit, Status: gitlab.DeploymentSuccess})
		if err != nil {
			t.Fatal(err)
		}
		return d.ID
	}
	old := create("dev", "main", sha)
	last, err := c.LastDeploymentID(ctx, project, "dev")
	if err != nil || last != old {
		t.Fatalf("LastDeploymentID = %d, %v; want %d", last, err, old)
	}
	if none, err := c.LastDeploymentID(ctx, project, "production"); err != nil || none != 0 {
		t.Fatalf("an environment without deployments: %d, %v", none, err)
	}
	if got, err := c.FindDeployment(ctx, project, "dev", "main", sha, old); err != nil || got != nil {
		t.Fatalf("nothing newer than %d: got %+v, %v", old, got, err)
	}
	mine := create("dev", "main", sha)
	other := strings.Repeat("c", 40)
	for range 120 { // more than a page of other commits after it
		create("dev", "main", other)
	}
	create("production", "main", sha)
	got, err := c.FindDeployment(ctx, project, "dev", "main", sha, old)
	if err != nil || got == nil || got.ID != mine {
		t.Fatalf("FindDeployment = %+v, %v; want %d", got, err, mine)
	}
	if got, err := c.FindDeployment(ctx, project, "dev", "release", sha, old); err != nil || got != nil {
		t.Errorf("another ref: %+v, %v", got, err)
	}
}

// TestUpdateDeploymentIsIdempotent: setting the status a deployment already has (an earlier
// answer was lost) is done, not an error; an unknown deployment is a permanent error.
func TestUpdateDeploymentIsIdempotent(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{ID: id}
	d, err := c.CreateDeployment(ctx, project, gitlab.NewDeployment{Environment: "dev", Ref: "main", SHA: sha, Status: gitlab.DeploymentRunning})
	if err != nil {
		t.Fatal(err)
	}
	fake.Inject(gitlabsim.Fault{Method: http.MethodPut, PathContains: "/deployments/", Status: http.StatusServiceUnavailable, Times: 2})
	for range 2 {
		if err := c.UpdateDeployment(ctx, project, d.ID, gitlab.DeploymentSuccess); err != nil {
			t.Fatalf("update: %v", err)
		}
	}
	if got := fake.Deployments(id); got[0].Status != "success" {
		t.Errorf("status %s", got[0].Status)
	}
	err = c.UpdateDeployment(ctx, project, d.ID+1000, gitlab.DeploymentSuccess)
	if !gitlab.IsPermanent(err) {
		t.Errorf("an unknown deployment: %v, want a permanent error", err)
	}
	noToken(t, err)
}

// TestSetEnvironmentURL: the environment is found by name and its external URL set; an unknown
// environment is a permanent error.
func TestSetEnvironmentURL(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{ID: id}
	for _, env := range []string{"dev", "dev-2"} {
		if _, err := c.CreateDeployment(ctx, project, gitlab.NewDeployment{Environment: env, Ref: "main", SHA: sha, Status: gitlab.DeploymentRunning}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetEnvironmentURL(ctx, project, "dev", "https://shop.example.com"); err != nil {
		t.Fatal(err)
	}
	envs := fake.Environments(id)
	if envs[0].ExternalURL == nil || *envs[0].ExternalURL != "https://shop.example.com" || envs[1].ExternalURL != nil {
		t.Errorf("environments %+v", envs)
	}
	fake.ResetCalls()
	if err := c.SetEnvironmentURL(ctx, project, "dev", "https://shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if n := countCalls(fake, http.MethodPut, "/environments/"); len(n) != 0 {
		t.Errorf("an unchanged URL was set again: %v", n)
	}
	if err := c.SetEnvironmentURL(ctx, project, "staging", "https://x.example.com"); !gitlab.IsPermanent(err) {
		t.Errorf("an unknown environment: %v", err)
	}
}
