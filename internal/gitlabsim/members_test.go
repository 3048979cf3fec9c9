package gitlabsim_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"testing"

	"github.com/ferryci/ferry/internal/gitlabsim"
)

// TestMembersAll answers GET /projects/:id/members/all/:user_id as GitLab documents it: the member
// with access_level, 404 for a user without a role.
func TestMembersAll(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	dev := s.AddUser("dev", "dev-token")
	guest := s.AddUser("guest", "guest-token")
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/app"})
	if err := s.SetRole(id, "dev", gitlabsim.DeveloperAccess); err != nil {
		t.Fatal(err)
	}
	code, body := do(t, http.MethodGet, s.APIURL()+"/projects/g%2Fapp/members/all/"+strconv.FormatInt(dev.ID, 10), "")
	var m map[string]any
	_ = json.Unmarshal([]byte(body), &m)
	if code != http.StatusOK || m["access_level"] != float64(30) || m["username"] != "dev" || m["state"] != "active" {
		t.Errorf("member: %d %s", code, body)
	}
	if code, body := do(t, http.MethodGet, s.APIURL()+"/projects/g%2Fapp/members/all/"+strconv.FormatInt(guest.ID, 10), ""); code != http.StatusNotFound {
		t.Errorf("non-member: %d %s", code, body)
	}
	if code, _ := do(t, http.MethodGet, s.APIURL()+"/projects/g%2Fapp/members/all/abc", ""); code != http.StatusBadRequest {
		t.Errorf("bad user_id: %d", code)
	}
}

// TestNoteHook sends a Note Hook with the keys of GitLab's own sample (note_merge_request.json)
// and stores the note.
func TestNoteHook(t *testing.T) {
	var body []byte
	var header http.Header
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ = io.ReadAll(r.Body)
		header = r.Header.Clone()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer receiver.Close()
	s := gitlabsim.New()
	defer s.Close()
	alice := s.AddUser("alice", "alice-token")
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "g/app"})
	c1, _ := s.AddCommit(id, gitlabsim.Commit{Message: "one"})
	if err := s.AddHook(id, gitlabsim.Hook{URL: receiver.URL, Token: "hook-secret", NoteEvents: true}); err != nil {
		t.Fatal(err)
	}
	iid, _ := s.AddMergeRequest(id, gitlabsim.MergeRequest{SourceBranch: "f", SHA: c1})
	n, d, err := s.Comment(context.Background(), id, iid, gitlabsim.NoteSpec{User: "alice", Body: "/retest"})
	if err != nil || len(d) != 1 || d[0].Status != http.StatusAccepted {
		t.Fatalf("comment: %+v %v", d, err)
	}
	if header.Get("X-Gitlab-Event") != "Note Hook" || header.Get("X-Gitlab-Token") != "hook-secret" {
		t.Errorf("headers = %v", header)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	oa := got["object_attributes"].(map[string]any)
	mr := got["merge_request"].(map[string]any)
	//nolint:misspell // noteable_type is GitLab's field name
	if got["object_kind"] != "note" || oa["note"] != "/retest" || oa["noteable_type"] != "MergeRequest" || oa["action"] != "create" ||
		oa["author_id"] != float64(alice.ID) || oa["id"] != float64(n.ID) || mr["iid"] != float64(iid) ||
		mr["last_commit"].(map[string]any)["id"] != c1 || got["user"].(map[string]any)["username"] != "alice" {
		t.Errorf("payload = %s", body)
	}
	// Every key of GitLab's sample is there (at the top, in object_attributes and in merge_request).
	raw, err := os.ReadFile("../../webhooks/gitlabreceiver/testdata/gitlab-webhooks/go-gitlab/note_merge_request.json")
	if err != nil {
		t.Fatal(err)
	}
	var sample map[string]any
	_ = json.Unmarshal(raw, &sample)
	for _, part := range []struct {
		name      string
		want, got map[string]any
	}{{"top", sample, got}, {"object_attributes", sample["object_attributes"].(map[string]any), oa}, {"merge_request", sample["merge_request"].(map[string]any), mr}} {
		var missing []string
		for k := range part.want {
			if _, ok := part.got[k]; !ok {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		// These describe what the simulator does not model.
		allowed := map[string]bool{"assignee_id": true, "assignee": true, "milestone_id": true, "created_at": true, "updated_at": true, "description": true, "position": true}
		for _, k := range missing {
			if part.name != "merge_request" || !allowed[k] {
				t.Errorf("%s lacks %q of GitLab's sample", part.name, k)
			}
		}
	}
	if notes := s.Notes(id, iid); len(notes) != 1 || notes[0].Body != "/retest" || notes[0].Author.Username != "alice" {
		t.Errorf("notes = %+v", notes)
	}
}
