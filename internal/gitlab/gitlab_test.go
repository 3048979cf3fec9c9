package gitlab_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
)

const (
	token = "glpat-secret-token-never-to-be-seen-0123"
	sha   = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
)

// fastRetries keeps retrying tests quick.
var fastRetries = gitlab.Options{RetryMax: 3, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond}

func newFake(t *testing.T) (*gitlabsim.Server, int64) {
	t.Helper()
	fake := gitlabsim.New()
	t.Cleanup(fake.Close)
	fake.AddUser("ferry-bot", token)
	id := fake.AddProject(gitlabsim.Project{PathWithNamespace: "group/sub/app"})
	return fake, id
}

func newClient(t *testing.T, baseURL string, opts gitlab.Options) *gitlab.Client {
	t.Helper()
	c, err := gitlab.New(baseURL, token, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noToken fails the test when an error message carries the token.
func noToken(t *testing.T, err error) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), token) {
		t.Fatalf("the error reveals the token: %v", err)
	}
}

func TestSetCommitStatusFollowsGitLabsStateMachine(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{Path: "group/sub/app"}
	post := func(state gitlab.State) error {
		return c.SetCommitStatus(ctx, project, sha, gitlab.CommitStatus{
			State: state, Name: "ferry", Ref: "main", TargetURL: "https://ferry.example.com/builds/ns/b", Description: "Build " + string(state),
		})
	}
	steps := []struct {
		state   gitlab.State
		wantErr error
	}{
		{gitlab.StatePending, nil},
		{gitlab.StatePending, gitlab.ErrAlreadyReported}, // :enqueue from :pending
		{gitlab.StateRunning, nil},
		{gitlab.StateRunning, gitlab.ErrAlreadyReported}, // :run from :running
		{gitlab.StatePending, gitlab.ErrAlreadyReported}, // :enqueue from :running
		{gitlab.StateSuccess, nil},
	}
	for i, s := range steps {
		if err := post(s.state); !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d (%s): got %v, want %v", i, s.state, err, s.wantErr)
		}
	}
	rows := fake.Statuses(id, sha)
	if len(rows) != 1 || rows[0].Status != "success" || rows[0].Name != "ferry" || rows[0].Ref != "main" {
		t.Fatalf("statuses = %+v, want one row ferry/main success", rows)
	}
	if rows[0].TargetURL == nil || *rows[0].TargetURL != "https://ferry.example.com/builds/ns/b" || *rows[0].Description != "Build success" {
		t.Errorf("target_url/description not recorded: %+v", rows[0])
	}
	// The project path went URL-encoded, as GitLab routes it.
	for _, call := range fake.Calls() {
		if !strings.Contains(call.Path, "/projects/group%2Fsub%2Fapp/statuses/"+sha) {
			t.Errorf("call path %s does not URL-encode the project path", call.Path)
		}
		if call.User != "ferry-bot" {
			t.Errorf("call %s authenticated as %q", call.Path, call.User)
		}
	}
	// After a terminal state GitLab opens a new row.
	if err := post(gitlab.StateRunning); err != nil {
		t.Fatal(err)
	}
	if rows := fake.Statuses(id, sha); len(rows) != 2 {
		t.Errorf("after success, running should open a second row; rows = %d", len(rows))
	}
}

func TestSetCommitStatusByProjectID(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id, Path: "ignored/when/id/set"}, sha, gitlab.CommitStatus{State: gitlab.StateFailed, Name: "ferry", Ref: "main"})
	if err != nil {
		t.Fatal(err)
	}
	if rows := fake.Statuses(id, sha); len(rows) != 1 || rows[0].Status != "failed" {
		t.Fatalf("rows = %+v", rows)
	}
}

func TestDescriptionIsOneLineAndCut(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	long := strings.Repeat("é", 300) + "\nsecond line"
	err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{
		State: gitlab.StatePending, Name: "ferry", Ref: "main", Description: long, TargetURL: "https://x/" + strings.Repeat("a", 300),
	})
	if err != nil {
		t.Fatalf("a long description or URL must not make GitLab refuse the status: %v", err)
	}
	row := fake.Statuses(id, sha)[0]
	if n := len([]rune(*row.Description)); n != 255 || strings.Contains(*row.Description, "second") {
		t.Errorf("description has %d characters: %q", n, *row.Description)
	}
	if row.TargetURL != nil {
		t.Errorf("a target URL over 255 characters must be left out, got %q", *row.TargetURL)
	}
}

func TestRetriesOn5xxAnd429(t *testing.T) {
	for _, status := range []int{http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			fake, id := newFake(t)
			fake.Inject(gitlabsim.Fault{PathContains: "/statuses/", Status: status, Times: 2})
			c := newClient(t, fake.URL, fastRetries)
			if err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: gitlab.StateRunning, Name: "ferry", Ref: "main"}); err != nil {
				t.Fatalf("two failures then success should succeed: %v", err)
			}
			if n := len(fake.Calls()); n != 3 {
				t.Errorf("calls = %d, want 3 (two failures, one success)", n)
			}
		})
	}
}

func TestGivesUpAfterRetryMax(t *testing.T) {
	fake, id := newFake(t)
	fake.Inject(gitlabsim.Fault{Status: http.StatusServiceUnavailable})
	c := newClient(t, fake.URL, fastRetries)
	err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: gitlab.StateRunning, Name: "ferry", Ref: "main"})
	if err == nil || gitlab.IsPermanent(err) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want a transient 503 error", err)
	}
	noToken(t, err)
	if n := len(fake.Calls()); n != 4 {
		t.Errorf("calls = %d, want 1 + RetryMax(3)", n)
	}
}

func TestHonoursRetryAfter(t *testing.T) {
	fake, id := newFake(t)
	fake.Inject(gitlabsim.Fault{Status: http.StatusTooManyRequests, Times: 1, RetryAfter: "1"})
	c := newClient(t, fake.URL, gitlab.Options{RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 3 * time.Second})
	start := time.Now()
	if err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: gitlab.StatePending, Name: "ferry", Ref: "main"}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("retried after %s, Retry-After asked for 1s", d)
	}
}

func TestPermanentErrors(t *testing.T) {
	fake, id := newFake(t)
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	cases := map[string]error{
		"unknown project": c.SetCommitStatus(ctx, gitlab.ProjectRef{Path: "no/such"}, sha, gitlab.CommitStatus{State: gitlab.StatePending, Name: "ferry", Ref: "main"}),
		"unknown MR":      c.CreateMergeRequestNote(ctx, gitlab.ProjectRef{ID: id}, 99, "hello"),
		"invalid state":   c.SetCommitStatus(ctx, gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: "error", Name: "ferry", Ref: "main"}),
	}
	wrongToken, err := gitlab.New(fake.URL, "wrong-token", fastRetries)
	if err != nil {
		t.Fatal(err)
	}
	cases["wrong token"] = wrongToken.SetCommitStatus(ctx, gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: gitlab.StatePending, Name: "ferry", Ref: "main"})
	for name, err := range cases {
		if err == nil || !gitlab.IsPermanent(err) {
			t.Errorf("%s: err = %v, want a permanent error", name, err)
		}
		noToken(t, err)
	}
	for _, call := range fake.Calls() {
		if call.Status >= 500 {
			t.Errorf("unexpected server error %+v", call)
		}
	}
	if n := len(fake.Calls()); n != 4 {
		t.Errorf("permanent errors must not be retried: %d calls for 4 requests", n)
	}
}

func TestTokenOnlyGoesToTheProjectsHost(t *testing.T) {
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("PRIVATE-TOKEN") != "" || r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{}`))
	}))
	defer elsewhere.Close()

	fake, id := newFake(t)
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		fake.Inject(gitlabsim.Fault{Status: status, Times: 1, Location: elsewhere.URL + "/api/v4/projects/1/statuses/" + sha})
		c := newClient(t, fake.URL, fastRetries)
		err := c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: id}, sha, gitlab.CommitStatus{State: gitlab.StatePending, Name: "ferry", Ref: "main"})
		if !errors.Is(err, gitlab.ErrForeignHost) || !gitlab.IsPermanent(err) {
			t.Errorf("redirect %d: err = %v, want ErrForeignHost", status, err)
		}
		noToken(t, err)
	}
	if n := leaked.Load(); n != 0 {
		t.Fatalf("the token reached another host %d times", n)
	}
}

func TestRetriesConnectionRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	c := newClient(t, "http://"+addr, fastRetries)
	err = c.SetCommitStatus(context.Background(), gitlab.ProjectRef{ID: 1}, sha, gitlab.CommitStatus{State: gitlab.StatePending, Name: "ferry"})
	if err == nil || gitlab.IsPermanent(err) {
		t.Fatalf("err = %v, want a transient connection error", err)
	}
}

func TestInvalidBaseURL(t *testing.T) {
	for _, u := range []string{"", "gitlab.example.com", "ftp://gitlab.example.com", "https://user:" + token + "@gitlab.example.com", "https://" + token + "@gitlab.example.com"} {
		_, err := gitlab.New(u, token, gitlab.Options{})
		if err == nil {
			t.Errorf("%q: want an error", u)
		}
		noToken(t, err)
	}
}

func TestMergeRequestNotes(t *testing.T) {
	fake, id := newFake(t)
	iid, err := fake.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "feature", SHA: sha})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, fake.URL, fastRetries)
	ctx := context.Background()
	project := gitlab.ProjectRef{Path: "group/sub/app"}
	found, err := c.FindMergeRequestNote(ctx, project, iid, "<!-- ferry:build ns/b -->")
	if err != nil || found {
		t.Fatalf("found = %v, err = %v on an MR without notes", found, err)
	}
	if err := c.CreateMergeRequestNote(ctx, project, iid, "Build succeeded\n<!-- ferry:build ns/b -->"); err != nil {
		t.Fatal(err)
	}
	// Bury the note under more than a page of newer ones.
	for i := range 130 {
		if err := c.CreateMergeRequestNote(ctx, project, iid, fmt.Sprintf("comment %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	found, err = c.FindMergeRequestNote(ctx, project, iid, "<!-- ferry:build ns/b -->")
	if err != nil || !found {
		t.Fatalf("found = %v, err = %v: the marker is on the second page", found, err)
	}
	if notes := fake.Notes(id, iid); len(notes) != 131 || notes[0].Author.Username != "ferry-bot" {
		t.Errorf("notes = %d", len(notes))
	}
}

func TestShouldReport(t *testing.T) {
	cases := []struct {
		last, next gitlab.State
		want       bool
	}{
		{"", gitlab.StatePending, true},
		{"", gitlab.StateRunning, true},
		{"", gitlab.StateSuccess, true},
		{"", "", false},
		{gitlab.StatePending, gitlab.StatePending, false},
		{gitlab.StatePending, gitlab.StateRunning, true},
		{gitlab.StatePending, gitlab.StateFailed, true},
		{gitlab.StateRunning, gitlab.StateRunning, false},
		{gitlab.StateRunning, gitlab.StatePending, false},
		{gitlab.StateRunning, gitlab.StateCanceled, true},
		{gitlab.StateSuccess, gitlab.StateFailed, false},
		{gitlab.StateFailed, gitlab.StateRunning, false},
		{gitlab.StateCanceled, gitlab.StatePending, false},
	}
	for _, c := range cases {
		if got := gitlab.ShouldReport(c.last, c.next); got != c.want {
			t.Errorf("ShouldReport(%q, %q) = %v, want %v", c.last, c.next, got, c.want)
		}
	}
}
