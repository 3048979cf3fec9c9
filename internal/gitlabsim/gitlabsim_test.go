package gitlabsim_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/ferryci/ferry/internal/gitlabsim"
)

const token = "glpat-fake-token"

func do(t *testing.T, method, u, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("PRIVATE-TOKEN", token)
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// TestCommitStatusStateMachine drives the fake over plain HTTP with the transitions
// create_commit_status_service.rb allows and refuses.
func TestCommitStatusStateMachine(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "group/app"})
	sha := strings.Repeat("a", 40)
	post := s.APIURL() + "/projects/group%2Fapp/statuses/" + sha
	steps := []struct {
		state      string
		wantStatus int
		wantBody   string
	}{
		{"pending", 201, `"status":"pending"`},
		{"pending", 400, `Cannot transition status via :enqueue from :pending`},
		{"running", 201, `"status":"running"`},
		{"running", 400, `Cannot transition status via :run from :running`},
		{"pending", 400, `Cannot transition status via :enqueue from :running`},
		{"skipped", 400, `Cannot transition status via :skip from :running`},
		{"error", 400, `state does not have a valid value`},
		{"failure", 400, `state does not have a valid value`},
		{"success", 201, `"status":"success"`},
		// A terminal state closes the row: the next post opens a new one.
		{"pending", 201, `"status":"pending"`},
		{"canceled", 201, `"status":"canceled"`},
	}
	for i, st := range steps {
		code, body := do(t, http.MethodPost, post, url.Values{"state": {st.state}, "name": {"ferry"}, "ref": {"main"}}.Encode())
		if code != st.wantStatus || !strings.Contains(body, st.wantBody) {
			t.Fatalf("step %d %s: %d %s, want %d %s", i, st.state, code, body, st.wantStatus, st.wantBody)
		}
	}
	// The same state under another name is another status.
	if code, body := do(t, http.MethodPost, post, "state=running&name=other&ref=main"); code != 201 {
		t.Fatalf("another name: %d %s", code, body)
	}
	code, body := do(t, http.MethodGet, s.APIURL()+"/projects/group%2Fapp/repository/commits/"+sha+"/statuses", "")
	var latest []gitlabsim.CommitStatus
	if err := json.Unmarshal([]byte(body), &latest); code != 200 || err != nil {
		t.Fatalf("list: %d %s %v", code, body, err)
	}
	if len(latest) != 2 || latest[0].Status != "canceled" || latest[1].Name != "other" {
		t.Errorf("latest per name = %+v", latest)
	}
	if n := len(s.Statuses(id, sha)); n != 3 {
		t.Errorf("rows = %d, want 3 (ferry twice, other once)", n)
	}
}

func TestRoutingAndAuthentication(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "group/sub/app", Members: []string{"bot"}})
	s.AddUser("stranger", "other-token")
	sha := strings.Repeat("b", 40)
	cases := []struct {
		name   string
		path   string
		token  string
		status int
	}{
		{"encoded path", "/projects/group%2Fsub%2Fapp/statuses/" + sha, token, 201},
		{"numeric id", "/projects/" + jsonInt(id) + "/statuses/" + sha, token, 201},
		{"case-insensitive path", "/projects/Group%2FSub%2FApp/statuses/" + sha, token, 201},
		{"raw slash does not route", "/projects/group/sub/app/statuses/" + sha, token, 404},
		{"no token", "/projects/group%2Fsub%2Fapp/statuses/" + sha, "", 401},
		{"not a member", "/projects/group%2Fsub%2Fapp/statuses/" + sha, "other-token", 404},
		{"unknown project", "/projects/nope%2Fnope/statuses/" + sha, token, 404},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, s.APIURL()+c.path, strings.NewReader(`{"state":"success","ref":"main","name":"`+c.name+`"}`))
			req.Header.Set("Content-Type", "application/json")
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Errorf("status %d, want %d: %s", resp.StatusCode, c.status, b)
			}
		})
	}
}

func TestStatusWithoutRefUsesTheFirstBranchContainingTheCommit(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/app"})
	root, _ := s.AddCommit(id, gitlabsim.Commit{Message: "root"})
	child, _ := s.AddCommit(id, gitlabsim.Commit{Message: "child", ParentIDs: []string{root}})
	orphan, _ := s.AddCommit(id, gitlabsim.Commit{Message: "orphan"})
	if err := s.SetBranch(id, "main", child); err != nil {
		t.Fatal(err)
	}
	if code, body := do(t, http.MethodPost, s.APIURL()+"/projects/g%2Fapp/statuses/"+root, "state=success"); code != 201 || !strings.Contains(body, `"ref":"main"`) || !strings.Contains(body, `"name":"default"`) {
		t.Errorf("root: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPost, s.APIURL()+"/projects/g%2Fapp/statuses/"+orphan, "state=success"); code != 404 || !strings.Contains(body, "References for commit Not Found") {
		t.Errorf("orphan: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPost, s.APIURL()+"/projects/g%2Fapp/statuses/"+strings.Repeat("c", 40), "state=success&ref=main"); code != 404 || !strings.Contains(body, "Commit Not Found") {
		t.Errorf("unknown commit: %d %s", code, body)
	}
	code, body := do(t, http.MethodGet, s.APIURL()+"/projects/g%2Fapp/repository/compare?from="+root+"&to=main", "")
	if code != 200 || !strings.Contains(body, child) || strings.Contains(body, `"id":"`+root) {
		t.Errorf("compare: %d %s", code, body)
	}
}

func TestNotesPaginationAndQuickActions(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/app"})
	iid, _ := s.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "f"})
	notes := s.APIURL() + "/projects/g%2Fapp/merge_requests/" + jsonInt(iid) + "/notes"
	for _, b := range []string{"first", "second\n/merge", "third"} {
		if code, body := do(t, http.MethodPost, notes, url.Values{"body": {b}}.Encode()); code != 201 {
			t.Fatalf("%d %s", code, body)
		}
	}
	if code, _ := do(t, http.MethodPost, notes, "body="); code != 400 {
		t.Errorf("empty body: %d", code)
	}
	if code, _ := do(t, http.MethodPost, s.APIURL()+"/projects/g%2Fapp/merge_requests/99/notes", "body=x"); code != 404 {
		t.Errorf("unknown MR: %d", code)
	}
	req, _ := http.NewRequest(http.MethodGet, notes+"?per_page=2", nil)
	req.Header.Set("PRIVATE-TOKEN", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page []gitlabsim.Note
	_ = json.NewDecoder(resp.Body).Decode(&page)
	_ = resp.Body.Close()
	if len(page) != 2 || page[0].Body != "third" || resp.Header.Get("X-Next-Page") != "2" || resp.Header.Get("X-Total") != "3" {
		t.Errorf("page 1 = %+v headers %v", page, resp.Header)
	}
	all := s.Notes(id, iid)
	if len(all[1].QuickActions) != 1 || all[1].QuickActions[0] != "/merge" || len(all[0].QuickActions) != 0 {
		t.Errorf("quick actions = %+v", all)
	}
}

// TestWebhooks checks the deliveries against what GitLab sends: headers, the push payload's
// SHAs and commit list, annotated tags, merge request oldrev, signatures and redelivery.
func TestWebhooks(t *testing.T) {
	var mu sync.Mutex
	var got []*http.Request
	var bodies [][]byte
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, r)
		bodies = append(bodies, b)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer receiver.Close()
	s := gitlabsim.New()
	defer s.Close()
	signing := gitlabsim.NewSigningToken()
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/sub/app"})
	if err := s.AddHook(id, gitlabsim.Hook{URL: receiver.URL, Token: "hook-secret", SigningToken: signing, PushEvents: true, TagPushEvents: true, MergeRequestsEvents: true}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c1, _ := s.AddCommit(id, gitlabsim.Commit{Message: "one"})
	c2, _ := s.AddCommit(id, gitlabsim.Commit{Message: "two", ParentIDs: []string{c1}})

	d, err := s.Push(ctx, id, gitlabsim.PushSpec{Branch: "main", To: c2, User: "alice"})
	if err != nil || len(d) != 1 || d[0].Status != http.StatusAccepted {
		t.Fatalf("push: %+v %v", d, err)
	}
	var push map[string]any
	_ = json.Unmarshal(bodies[0], &push)
	if push["before"] != gitlabsim.ZeroSHA || push["after"] != c2 || push["checkout_sha"] != c2 || push["ref"] != "refs/heads/main" ||
		push["total_commits_count"] != float64(2) || push["user_username"] != "alice" {
		t.Errorf("push payload = %v", push)
	}
	h := got[0].Header
	for _, k := range []string{"Idempotency-Key", "X-Gitlab-Webhook-Uuid", "X-Gitlab-Event-Uuid", "X-Gitlab-Instance", "User-Agent"} {
		if h.Get(k) == "" {
			t.Errorf("header %s missing", k)
		}
	}
	if h.Get("X-Gitlab-Event") != "Push Hook" || h.Get("X-Gitlab-Token") != "hook-secret" || h.Get("X-Gitlab-Instance") != s.URL {
		t.Errorf("headers = %v", h)
	}
	if h.Get("Webhook-Signature") != gitlabsim.Sign(signing, h.Get("Webhook-Id"), h.Get("Webhook-Timestamp"), bodies[0]) || h.Get("Webhook-Id") != h.Get("Idempotency-Key") {
		t.Errorf("signature headers do not verify: %v", h)
	}

	if _, err := s.PushTag(ctx, id, gitlabsim.TagSpec{Tag: "v1", SHA: c1, Message: "release one", User: "alice"}); err != nil {
		t.Fatal(err)
	}
	var tagPush map[string]any
	_ = json.Unmarshal(bodies[1], &tagPush)
	if tagPush["checkout_sha"] != c1 || tagPush["after"] == c1 || tagPush["object_kind"] != "tag_push" {
		t.Errorf("annotated tag: after must be the tag object and checkout_sha the commit: %v", tagPush)
	}

	if _, err := s.Push(ctx, id, gitlabsim.PushSpec{Branch: "main"}); err != nil {
		t.Fatal(err)
	}
	var del map[string]any
	_ = json.Unmarshal(bodies[2], &del)
	if del["after"] != gitlabsim.ZeroSHA || del["checkout_sha"] != nil {
		t.Errorf("deletion payload = %v", del)
	}

	iid, _, err := s.OpenMergeRequest(ctx, id, gitlabsim.MergeRequest{SourceBranch: "feature", SHA: c1, Title: "Add"}, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateMergeRequest(ctx, id, iid, c2, "bob"); err != nil {
		t.Fatal(err)
	}
	var open, update map[string]any
	_ = json.Unmarshal(bodies[3], &open)
	_ = json.Unmarshal(bodies[4], &update)
	oa := update["object_attributes"].(map[string]any)
	if oa["oldrev"] != c1 || oa["last_commit"].(map[string]any)["id"] != c2 || oa["action"] != "update" || oa["iid"] != float64(iid) {
		t.Errorf("update attributes = %v", oa)
	}
	if _, ok := open["object_attributes"].(map[string]any)["oldrev"]; ok {
		t.Error("an open event carries no oldrev")
	}

	again := s.Redeliver(ctx, d[0])
	if again.Status != http.StatusAccepted || again.IdempotencyKey() != d[0].IdempotencyKey() || again.Header.Get("X-Gitlab-Webhook-UUID") == d[0].Header.Get("X-Gitlab-Webhook-UUID") {
		t.Errorf("redelivery must keep the Idempotency-Key and change the webhook UUID: %v vs %v", again.Header, d[0].Header)
	}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
