package gitlabsim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/testutil"
)

// hookLog is a webhook receiver that keeps what it was sent.
type hookLog struct {
	mu     sync.Mutex
	events []hookEvent
}

type hookEvent struct {
	Event string
	Body  map[string]any
}

func (l *hookLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	l.mu.Lock()
	l.events = append(l.events, hookEvent{Event: r.Header.Get("X-Gitlab-Event"), Body: m})
	l.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

// wait waits for a delivery of event that match accepts, and returns it.
func (l *hookLog) wait(t *testing.T, event string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	testutil.Eventually(t, "a "+event, func() (bool, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, e := range l.events {
			if e.Event == event && match(e.Body) {
				found = e.Body
				return true, nil
			}
		}
		return false, fmt.Errorf("deliveries so far: %d", len(l.events))
	})
	return found
}

func (l *hookLog) count(event string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, e := range l.events {
		if e.Event == event {
			n++
		}
	}
	return n
}

func doAs(t *testing.T, tok, method, u, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("PRIVATE-TOKEN", tok)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if m == nil {
		m = map[string]any{"raw": string(raw)}
	}
	return resp.StatusCode, m
}

func attrs(body map[string]any) map[string]any {
	a, _ := body["object_attributes"].(map[string]any)
	return a
}

// mrProject is a project with main at c1 and branch feature at c2, a child of c1; dev is a
// developer, lead a maintainer.
func mrProject(t *testing.T) (*gitlabsim.Server, *hookLog, int64, string, string) {
	t.Helper()
	log := &hookLog{}
	receiver := httptest.NewServer(log)
	t.Cleanup(receiver.Close)
	s := gitlabsim.New()
	t.Cleanup(s.Close)
	s.AddUser("dev", "dev-token")
	s.AddUser("lead", "lead-token")
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/app"})
	c1, _ := s.AddCommit(id, gitlabsim.Commit{Message: "one"})
	c2, _ := s.AddCommit(id, gitlabsim.Commit{Message: "two", ParentIDs: []string{c1}})
	if err := s.SetBranch(id, "main", c1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetBranch(id, "feature", c2); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(id, "dev", gitlabsim.DeveloperAccess); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRole(id, "lead", gitlabsim.MaintainerAccess); err != nil {
		t.Fatal(err)
	}
	if err := s.AddHook(id, gitlabsim.Hook{URL: receiver.URL, PushEvents: true, MergeRequestsEvents: true, NoteEvents: true}); err != nil {
		t.Fatal(err)
	}
	return s, log, id, c1, c2
}

// TestMergeRequestThroughAPI opens a merge request, comments on it and merges it through the
// REST API, and sees the webhooks GitLab sends for each: Merge Request Hook open, Note Hook, Push
// Hook of the target branch and Merge Request Hook merge.
func TestMergeRequestThroughAPI(t *testing.T) {
	s, log, _, c1, c2 := mrProject(t)
	var apiDeliveries sync.Map
	s.OnAPIDelivery = func(d gitlabsim.Delivery) { apiDeliveries.Store(d.Event, true) }
	api := s.APIURL() + "/projects/g%2Fapp/merge_requests"

	code, mr := doAs(t, "dev-token", http.MethodPost, api, `{"source_branch":"feature","target_branch":"main","title":"Two"}`)
	if code != http.StatusCreated || mr["iid"] != float64(1) || mr["sha"] != c2 || mr["state"] != "opened" || mr["author"].(map[string]any)["username"] != "dev" {
		t.Fatalf("create: %d %v", code, mr)
	}
	open := log.wait(t, "Merge Request Hook", func(b map[string]any) bool { return attrs(b)["action"] == "open" })
	if a := attrs(open); a["iid"] != float64(1) || a["last_commit"].(map[string]any)["id"] != c2 || open["user"].(map[string]any)["username"] != "dev" {
		t.Errorf("open hook: %v", open)
	}
	if code, body := doAs(t, "dev-token", http.MethodPost, api, `{"source_branch":"feature","target_branch":"main","title":"Again"}`); code != http.StatusConflict ||
		!strings.Contains(fmt.Sprint(body["message"]), "Another open merge request already exists for this source branch: !1") {
		t.Errorf("second open merge request: %d %v", code, body)
	}

	code, note := doAs(t, "lead-token", http.MethodPost, api+"/1/notes", `{"body":"/retest"}`)
	if code != http.StatusCreated {
		t.Fatalf("note: %d %v", code, note)
	}
	hook := log.wait(t, "Note Hook", func(b map[string]any) bool { return attrs(b)["note"] == "/retest" })
	if a := attrs(hook); a["id"] != note["id"] || a["action"] != "create" || hook["user"].(map[string]any)["username"] != "lead" {
		t.Errorf("note hook: %v", hook)
	}

	if code, body := doAs(t, "dev-token", http.MethodPut, api+"/1/merge", ""); code != http.StatusUnauthorized {
		t.Errorf("merge by a developer (main is protected): %d %v", code, body)
	}
	if code, body := doAs(t, "lead-token", http.MethodPut, api+"/1/merge", `{"sha":"`+c1+`"}`); code != http.StatusConflict {
		t.Errorf("merge with a sha that is not the head: %d %v", code, body)
	}
	code, merged := doAs(t, "lead-token", http.MethodPut, api+"/1/merge", `{"sha":"`+c2+`"}`)
	if code != http.StatusOK || merged["state"] != "merged" || merged["merged_by"].(map[string]any)["username"] != "lead" || merged["merged_at"] == nil {
		t.Fatalf("merge: %d %v", code, merged)
	}
	push := log.wait(t, "Push Hook", func(b map[string]any) bool { return b["ref"] == "refs/heads/main" })
	if push["before"] != c1 || push["after"] != c2 || push["user_username"] != "lead" {
		t.Errorf("push hook of the merge: %v", push)
	}
	log.wait(t, "Merge Request Hook", func(b map[string]any) bool {
		return attrs(b)["action"] == "merge" && attrs(b)["state"] == "merged"
	})
	if code, commit := doAs(t, "dev-token", http.MethodGet, s.APIURL()+"/projects/g%2Fapp/repository/commits/main", ""); code != http.StatusOK || commit["id"] != c2 {
		t.Errorf("main after the merge: %d %v", code, commit)
	}
	if code, body := doAs(t, "lead-token", http.MethodPut, api+"/1/merge", ""); code != http.StatusMethodNotAllowed || body["message"] != "405 Method Not Allowed" {
		t.Errorf("merging a merged merge request: %d %v", code, body)
	}
	for _, event := range []string{"Merge Request Hook", "Note Hook", "Push Hook"} {
		if _, ok := apiDeliveries.Load(event); !ok {
			t.Errorf("OnAPIDelivery was not told about the %s", event)
		}
	}
}

// TestMergeRequestAPIRefuses answers bad requests as GitLab does.
func TestMergeRequestAPIRefuses(t *testing.T) {
	s, log, id, c1, _ := mrProject(t)
	api := s.APIURL() + "/projects/g%2Fapp/merge_requests"
	for _, tc := range []struct {
		name, token, body string
		want              int
		wantText          string
	}{
		{"bad token", "nope", `{"source_branch":"feature","target_branch":"main","title":"x"}`, http.StatusUnauthorized, "401 Unauthorized"},
		{"no title", "dev-token", `{"source_branch":"feature","target_branch":"main"}`, http.StatusBadRequest, "title is missing"},
		{"unknown source branch", "dev-token", `{"source_branch":"nope","target_branch":"main","title":"x"}`, http.StatusBadRequest, `Source branch \"nope\" does not exist`},
		{"unknown target branch", "dev-token", `{"source_branch":"feature","target_branch":"nope","title":"x"}`, http.StatusBadRequest, `Target branch \"nope\" does not exist`},
		{"same branch", "dev-token", `{"source_branch":"main","target_branch":"main","title":"x"}`, http.StatusBadRequest, "same project/branch"},
	} {
		code, body := doAs(t, tc.token, http.MethodPost, api, tc.body)
		raw, _ := json.Marshal(body)
		if code != tc.want || !strings.Contains(string(raw), tc.wantText) {
			t.Errorf("%s: %d %s, want %d %q", tc.name, code, raw, tc.want, tc.wantText)
		}
	}
	if code, _ := doAs(t, "lead-token", http.MethodPut, api+"/7/merge", ""); code != http.StatusNotFound {
		t.Errorf("merging an unknown merge request: %d", code)
	}
	if code, _ := doAs(t, "nope", http.MethodPut, api+"/1/merge", ""); code != http.StatusUnauthorized {
		t.Errorf("merging with a bad token: %d", code)
	}

	// A closed merge request cannot be merged: 405.
	closed, _ := s.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "feature", SHA: c1, State: "closed"})
	if code, body := doAs(t, "lead-token", http.MethodPut, fmt.Sprintf("%s/%d/merge", api, closed), ""); code != http.StatusMethodNotAllowed {
		t.Errorf("merging a closed merge request: %d %v", code, body)
	}
	// A head the target branch is not an ancestor of cannot be fast-forwarded: 406.
	side, _ := s.AddCommit(id, gitlabsim.Commit{Message: "side"})
	if err := s.SetBranch(id, "side", side); err != nil {
		t.Fatal(err)
	}
	code, mr := doAs(t, "dev-token", http.MethodPost, api, `{"source_branch":"side","target_branch":"main","title":"Side"}`)
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, mr)
	}
	if code, body := doAs(t, "lead-token", http.MethodPut, fmt.Sprintf("%s/%v/merge", api, mr["iid"]), ""); code != http.StatusNotAcceptable || body["message"] != "Branch cannot be merged" {
		t.Errorf("merging what cannot be fast-forwarded: %d %v", code, body)
	}
	if code, _ := doAs(t, "dev-token", http.MethodGet, s.APIURL()+"/projects/g%2Fapp/repository/commits/main", ""); code != http.StatusOK {
		t.Errorf("main: %d", code)
	}
	log.wait(t, "Merge Request Hook", func(b map[string]any) bool { return attrs(b)["source_branch"] == "side" })
	if n := log.count("Push Hook"); n != 0 {
		t.Errorf("%d Push Hooks after refused merges, want none", n)
	}
}

// TestMergeMovesTheRepositoryBranch: with MoveBranch set, a merge moves the branch of the
// repository the project stands for, which reports the push itself.
func TestMergeMovesTheRepositoryBranch(t *testing.T) {
	s, log, id, c1, c2 := mrProject(t)
	moved := make(chan string, 1)
	s.MoveBranch = func(ctx context.Context, projectID int64, branch, from, to, user string) {
		moved <- fmt.Sprintf("%d %s %s→%s by %s", projectID, branch, from, to, user)
		if _, err := s.Push(ctx, projectID, gitlabsim.PushSpec{Branch: branch, To: to, User: user}); err != nil {
			t.Error(err)
		}
	}
	api := s.APIURL() + "/projects/g%2Fapp/merge_requests"
	if code, body := doAs(t, "dev-token", http.MethodPost, api, `{"source_branch":"feature","target_branch":"main","title":"Two"}`); code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, body)
	}
	if code, body := doAs(t, "lead-token", http.MethodPut, api+"/1/merge", ""); code != http.StatusOK {
		t.Fatalf("merge: %d %v", code, body)
	}
	log.wait(t, "Merge Request Hook", func(b map[string]any) bool { return attrs(b)["action"] == "merge" })
	if got, want := <-moved, fmt.Sprintf("%d main %s→%s by lead", id, c1, c2); got != want {
		t.Errorf("MoveBranch(%s), want %s", got, want)
	}
	if n := log.count("Push Hook"); n != 1 {
		t.Errorf("%d Push Hooks, want the repository's one", n)
	}
}
