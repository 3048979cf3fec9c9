package dev

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/testutil"

	"net/http/httptest"
)

// TestMergeRequestCommands runs ferry dev mr open, comment and merge against a git server and the
// fake GitLab wired as ferry dev wires them: the branch is pushed, the merge request opened
// (Merge Request Hook), the comment delivered (Note Hook), and the merge moves the git server's
// main (Push Hook of main, by the maintainer who merged) before the Merge Request Hook "merge".
func TestMergeRequestCommands(t *testing.T) {
	const password = "bobs-git-password"
	rec := &hookRecorder{}
	receiver := httptest.NewServer(rec)
	t.Cleanup(receiver.Close)
	var logMu sync.Mutex
	var logged []string
	gl := gitlabsim.New()
	t.Cleanup(gl.Close)
	var m *mirror
	git, err := gitserver.Start(gitserver.Options{Dir: t.TempDir(), Users: map[string]string{developer: password}, OnPush: func(repo string) { m.onPush(repo) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = git.Close() })
	if _, err := importExample(git, "demo/app", filepath.Join("..", "..", "examples", "go-hello")); err != nil {
		t.Fatal(err)
	}
	m = newMirror(git, gl, developer, func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logged = append(logged, fmt.Sprintf(format, args...))
	})
	m.connect()
	if err := m.add("demo/app", 101); err != nil {
		t.Fatal(err)
	}
	if err := gl.AddHook(101, gitlabsim.Hook{URL: receiver.URL, PushEvents: true, MergeRequestsEvents: true, NoteEvents: true}); err != nil {
		t.Fatal(err)
	}
	gl.AddUser("alice", "alice-token")
	gl.AddUser(developer, "bob-token")
	for user, role := range map[string]int{"alice": gitlabsim.MaintainerAccess, developer: gitlabsim.DeveloperAccess} {
		if err := gl.SetRole(101, user, role); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	ep := Endpoints{
		DataDir: dir, GitLabURL: gl.URL, Kubeconfig: filepath.Join(dir, "kubeconfig"),
		Users: map[string]UserEndpoint{
			"alice":   {GitLabToken: "alice-token"},
			developer: {GitLabToken: "bob-token", GitPassword: password},
		},
		Projects: map[string]ProjectEndpoint{"app": {
			RepoURL: git.RepoURL("demo/app"), GitLabProject: "demo/app", GitLabProjectID: 101,
			Preview: true, PreviewURLTemplate: "http://app.mr-{iid}.localhost:8080/",
		}},
	}
	data, _ := json.Marshal(ep)
	if err := os.WriteFile(EndpointsPath(dir), data, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out bytes.Buffer
	opts := MROptions{DataDir: dir, Project: "app", Out: &out}

	mr, err := OpenMergeRequest(ctx, opts, "A change for review")
	if err != nil {
		t.Fatal(err)
	}
	if mr.IID != 1 || mr.State != "opened" || mr.TargetBranch != "main" || !strings.HasPrefix(mr.SourceBranch, "change-") {
		t.Fatalf("merge request %+v", mr)
	}
	if head, _ := git.Head("demo/app", mr.SourceBranch); head != mr.SHA {
		t.Errorf("branch %s is at %s on the git server, the merge request's head is %s", mr.SourceBranch, head, mr.SHA)
	}
	for _, want := range []string{"Opened merge request !1 as bob", "http://app.mr-1.localhost:8080/", "dev mr comment app 1 /retest --data-dir " + dir, "dev mr merge app 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ferry dev mr open does not say %q:\n%s", want, out.String())
		}
	}
	waitHook(t, rec, "Merge Request Hook", func(b map[string]any) bool { return attrsOf(b)["action"] == "open" })

	if err := CommentMergeRequest(ctx, opts, 1, "/retest"); err != nil {
		t.Fatal(err)
	}
	waitHook(t, rec, "Note Hook", func(b map[string]any) bool { return attrsOf(b)["note"] == "/retest" })
	if err := CommentMergeRequest(ctx, opts, 9, "/retest"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("a comment on a merge request that does not exist: %v", err)
	}

	bobMerges := opts
	bobMerges.As = developer
	if _, err := MergeMergeRequest(ctx, bobMerges, 1); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("the developer merged into protected main: %v", err)
	}
	before, _ := git.Head("demo/app", "main")
	merged, err := MergeMergeRequest(ctx, opts, 1)
	if err != nil {
		t.Fatal(err)
	}
	if merged.State != "merged" {
		t.Errorf("merged merge request %+v", merged)
	}
	push := waitHook(t, rec, "Push Hook", func(b map[string]any) bool { return b["ref"] == "refs/heads/main" })
	if push["before"] != before || push["after"] != mr.SHA || push["user_username"] != "alice" {
		t.Errorf("Push Hook of the merge: before %v after %v by %v, want %s → %s by alice", push["before"], push["after"], push["user_username"], before, mr.SHA)
	}
	if head, _ := git.Head("demo/app", "main"); head != mr.SHA {
		t.Errorf("main is at %s on the git server after the merge, want %s", head, mr.SHA)
	}
	waitHook(t, rec, "Merge Request Hook", func(b map[string]any) bool { return attrsOf(b)["action"] == "merge" })
	if _, err := MergeMergeRequest(ctx, opts, 1); err == nil || !strings.Contains(err.Error(), "405") {
		t.Errorf("merging twice: %v", err)
	}
	logMu.Lock()
	defer logMu.Unlock()
	if all := strings.Join(logged, "\n"); !strings.Contains(all, "GitLab API → GitLab Note Hook → receiver 201") {
		t.Errorf("the Note Hook of the comment was not logged:\n%s", all)
	}
}

func attrsOf(b map[string]any) map[string]any {
	a, _ := b["object_attributes"].(map[string]any)
	return a
}

// waitHook waits for a delivery of event that match accepts.
func waitHook(t *testing.T, rec *hookRecorder, event string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	testutil.Eventually(t, "a "+event, func() (bool, error) {
		for _, h := range rec.all() {
			if h.header.Get("X-Gitlab-Event") == event && match(h.body) {
				found = h.body
				return true, nil
			}
		}
		return false, fmt.Errorf("%d deliveries", len(rec.all()))
	})
	return found
}
