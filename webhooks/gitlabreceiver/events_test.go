package gitlabreceiver

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

const (
	sha1 = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	sha2 = "c4c79227ed610f1151f05bbc5be33b4f340d39c8"
)

func TestDecodeEnvelope(t *testing.T) {
	cases := []struct {
		body    string
		wantErr string
		path    string
		id      int64
	}{
		{body: ``, wantErr: "the body is empty"},
		{body: `   `, wantErr: "the body is empty"},
		{body: `{"object_kind": "push",`, wantErr: "malformed JSON"},
		{body: `{"object_kind": "push" "ref": 1}`, wantErr: "malformed JSON at byte 24"},
		{body: `[{"object_kind":"push"}]`, wantErr: "must be a JSON object"},
		{body: `"push"`, wantErr: "must be a JSON object"},
		{body: `{"project": {"id": "abc"}}`, wantErr: "is not a project ID"},
		{body: `{"project": {"id": 15, "path_with_namespace": "g/app"}}`, path: "g/app", id: 15},
		{body: `{"project_id": 15, "project": {"path_with_namespace": "g/app"}}`, path: "g/app", id: 15},
		{body: `{"project_id": "16", "project": null}`, id: 16},
		{body: `{"object_kind": "push", "project": {"id": null}}`},
	}
	for _, c := range cases {
		env, err := decodeEnvelope([]byte(c.body))
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("%q: err = %v, want %q", c.body, err, c.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.body, err)
			continue
		}
		if key := env.project(); key.path != c.path || key.id != c.id {
			t.Errorf("%q: project = %+v", c.body, key)
		}
	}
}

func TestEventKind(t *testing.T) {
	cases := []struct {
		header    string
		eventName string
		want      ferryv1.TriggerKind
	}{
		{"Push Hook", "", ferryv1.TriggerPush},
		{"push hook", "", ferryv1.TriggerPush},
		{"Tag Push Hook", "", ferryv1.TriggerTag},
		{"Merge Request Hook", "", ferryv1.TriggerMergeRequest},
		{"System Hook", "push", ferryv1.TriggerPush},
		{"System Hook", "tag_push", ferryv1.TriggerTag},
		{"System Hook", "repository_update", ""},
		{"System Hook", "", ""},
		{"Push Event", "push", ""}, // GitLab < 10's test button
		{"Note Hook", "", ""},
		{"Pipeline Hook", "", ""},
		{"", "push", ""},
	}
	for _, c := range cases {
		if got := eventKind(c.header, &envelope{EventName: c.eventName}); got != c.want {
			t.Errorf("eventKind(%q, %q) = %q, want %q", c.header, c.eventName, got, c.want)
		}
	}
}

func TestDecodeTrigger(t *testing.T) {
	push := func(ref, after, checkout string) string {
		return `{"object_kind":"push","ref":"` + ref + `","after":"` + after + `","checkout_sha":` + checkout + `,"user_username":"alice","user_id":4,"user_email":"alice@example.com","project":{"id":1,"path_with_namespace":"g/app"}}`
	}
	tagPush := func(ref, after, checkout string) string {
		return `{"object_kind":"tag_push","ref":"` + ref + `","after":"` + after + `","checkout_sha":` + checkout + `,"user_username":"alice","user_id":4,"user_email":"","project":{"id":1,"path_with_namespace":"g/app"}}`
	}
	mr := func(action, oldrev string, iid int, head string) string {
		return `{"object_kind":"merge_request","user":{"id":9,"username":"bob","email":"[REDACTED]"},"project":{"id":1,"path_with_namespace":"g/app"},"object_attributes":{"iid":` +
			strconv.Itoa(iid) + `,"action":"` + action + `","oldrev":"` + oldrev + `","target_branch":"main","source_branch":"feat/x","source_project_id":7,"target_project_id":1,"last_commit":{"id":"` + head + `"}}}`
	}
	q := func(s string) string { return `"` + s + `"` }
	cases := []struct {
		name     string
		header   string
		body     string
		want     *trigger
		ignored  string
		badInput string
	}{
		{name: "push", header: "Push Hook", body: push("refs/heads/main", sha1, q(sha1)),
			want: &trigger{kind: ferryv1.TriggerPush, ref: "refs/heads/main", name: "main", revision: sha1, user: gitlabUser{"alice", 4, "alice@example.com"}}},
		{name: "push to a branch with slashes", header: "Push Hook", body: push("refs/heads/feat/中文", sha1, q(sha1)),
			want: &trigger{kind: ferryv1.TriggerPush, ref: "refs/heads/feat/中文", name: "feat/中文", revision: sha1, user: gitlabUser{"alice", 4, "alice@example.com"}}},
		{name: "branch deleted", header: "Push Hook", body: push("refs/heads/main", zeroSHA, "null"), ignored: "branch main was deleted"},
		{name: "deleted with a checkout_sha left", header: "Push Hook", body: push("refs/heads/main", zeroSHA, q(sha1)), ignored: "was deleted"},
		{name: "SHA-256 repository", header: "Push Hook", body: push("refs/heads/main", sha1, q(strings.Repeat("a", 64))), ignored: "not a 40-hex commit SHA"},
		{name: "push of a tag ref", header: "Push Hook", body: push("refs/tags/v1", sha1, q(sha1)), ignored: "is not a branch"},
		{name: "annotated tag builds the commit", header: "Tag Push Hook", body: tagPush("refs/tags/v1.0.1", "446bae8f4c3d6cc66900af3b524f3f19f29c0b67", q(sha2)),
			want: &trigger{kind: ferryv1.TriggerTag, ref: "refs/tags/v1.0.1", name: "v1.0.1", revision: sha2, user: gitlabUser{"alice", 4, ""}}},
		{name: "tag deleted", header: "Tag Push Hook", body: tagPush("refs/tags/v1", zeroSHA, "null"), ignored: "tag v1 was deleted"},
		{name: "tag deleted, stored with after set", header: "Tag Push Hook", body: tagPush("refs/tags/xyz", sha1, "null"), ignored: "tag xyz was deleted"},
		{name: "header and body disagree", header: "Tag Push Hook", body: push("refs/heads/main", sha1, q(sha1)), badInput: `does not match the body's object_kind "push"`},
		{name: "MR open", header: "Merge Request Hook", body: mr("open", "", 3, sha1),
			// Who opens a merge request is its author.
			want: &trigger{kind: ferryv1.TriggerMergeRequest, ref: "refs/merge-requests/3/head", name: "main", revision: sha1, user: gitlabUser{"bob", 9, "[REDACTED]"}, mergeRequestIID: 3, sourceBranch: "feat/x", sourceProjectID: 7, targetProjectID: 1, authorID: 9}},
		{name: "MR reopen", header: "Merge Request Hook", body: mr("reopen", "", 3, sha1), want: &trigger{kind: ferryv1.TriggerMergeRequest, ref: "refs/merge-requests/3/head", name: "main", revision: sha1, user: gitlabUser{"bob", 9, "[REDACTED]"}, mergeRequestIID: 3, sourceBranch: "feat/x", sourceProjectID: 7, targetProjectID: 1}},
		{name: "MR update with new commits", header: "Merge Request Hook", body: mr("update", sha2, 3, sha1), want: &trigger{kind: ferryv1.TriggerMergeRequest, ref: "refs/merge-requests/3/head", name: "main", revision: sha1, user: gitlabUser{"bob", 9, "[REDACTED]"}, mergeRequestIID: 3, sourceBranch: "feat/x", sourceProjectID: 7, targetProjectID: 1}},
		{name: "MR update without new commits", header: "Merge Request Hook", body: mr("update", "", 3, sha1), ignored: "updated without new commits"},
		{name: "MR approved", header: "Merge Request Hook", body: mr("approved", "", 3, sha1), ignored: `action "approved" is not built`},
		{name: "MR merged", header: "Merge Request Hook", body: mr("merge", "", 3, sha1), ignored: `action "merge" is not built`},
		{name: "MR closed", header: "Merge Request Hook", body: mr("close", "", 3, sha1), ignored: `action "close" is not built`},
		{name: "MR without iid", header: "Merge Request Hook", body: mr("open", "", 0, sha1), badInput: "without object_attributes.iid"},
		{name: "system hook push", header: "System Hook", body: `{"event_name":"push","ref":"refs/heads/main","after":"` + sha1 + `","checkout_sha":"` + sha1 + `","user_username":"root","project_id":4,"project":{"path_with_namespace":"g/app"}}`,
			want: &trigger{kind: ferryv1.TriggerPush, ref: "refs/heads/main", name: "main", revision: sha1, user: gitlabUser{name: "root"}}},
		{name: "system hook tag push", header: "System Hook", body: `{"event_name":"tag_push","ref":"refs/tags/v2","after":"` + sha1 + `","checkout_sha":"` + sha1 + `","project_id":4}`,
			want: &trigger{kind: ferryv1.TriggerTag, ref: "refs/tags/v2", name: "v2", revision: sha1}},
		{name: "wrong JSON types", header: "Push Hook", body: `{"object_kind":"push","ref":42}`, badInput: "failed to parse the Push Hook payload"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := decodeEnvelope([]byte(c.body))
			if err != nil {
				t.Fatal(err)
			}
			kind := eventKind(c.header, env)
			got, err := decodeTrigger(c.header, kind, env, []byte(c.body))
			var ig *ignored
			var bad *payloadError
			switch {
			case c.ignored != "":
				if !errors.As(err, &ig) || !strings.Contains(ig.reason, c.ignored) {
					t.Fatalf("err = %v, want ignored %q", err, c.ignored)
				}
			case c.badInput != "":
				if !errors.As(err, &bad) || !strings.Contains(bad.msg, c.badInput) {
					t.Fatalf("err = %v, want a payload error %q", err, c.badInput)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				if *got != *c.want {
					t.Errorf("trigger = %+v\nwant      %+v", *got, *c.want)
				}
			}
		})
	}
}

func TestMatchGlob(t *testing.T) {
	cases := []struct {
		pattern, name string
		want          bool
	}{
		{"main", "main", true},
		{"main", "main2", false},
		{"main", "xmain", false},
		{"*", "anything/at/all", true},
		{"release/*", "release/1.2", true},
		{"release/*", "release/1.2/hotfix", true},
		{"release/*", "release", false},
		{"release/*", "releases/1", false},
		{"v*", "v1.2.3", true},
		{"v*", "1.2.3", false},
		{"*-stable", "1.2-stable", true},
		{"*-stable", "1.2-stable-rc", false},
		{"feat/*/ui", "feat/x/ui", true},
		{"feat/*/ui", "feat/x/y/ui", true},
		{"feat/*/ui", "feat/ui", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"v[0-9]", "v[0-9]", true}, // literal, as in GitLab
		{"v[0-9]", "v1", false},
	}
	for _, c := range cases {
		if got := matchGlob(c.pattern, c.name); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestTracked(t *testing.T) {
	push := &trigger{kind: ferryv1.TriggerPush, name: "develop"}
	tag := &trigger{kind: ferryv1.TriggerTag, name: "v1.0"}
	mrToMain := &trigger{kind: ferryv1.TriggerMergeRequest, name: "main", mergeRequestIID: 4}
	project := func(tr ferryv1.Triggers) *ferryv1.Project {
		return &ferryv1.Project{Spec: ferryv1.ProjectSpec{Triggers: tr}}
	}
	cases := []struct {
		name     string
		triggers ferryv1.Triggers
		trigger  *trigger
		ignored  string
	}{
		{"default tracks main only", ferryv1.Triggers{}, &trigger{kind: ferryv1.TriggerPush, name: "main"}, ""},
		{"default does not track develop", ferryv1.Triggers{}, push, "branch develop is not tracked (triggers.branches: main)"},
		{"glob", ferryv1.Triggers{Branches: []string{"dev*"}}, push, ""},
		{"no tags by default", ferryv1.Triggers{}, tag, "triggers.tags is empty"},
		{"tag glob", ferryv1.Triggers{Tags: []string{"v*"}}, tag, ""},
		{"tag not matched", ferryv1.Triggers{Tags: []string{"release-*"}}, tag, "tag v1.0 is not tracked"},
		{"MRs off", ferryv1.Triggers{}, mrToMain, "triggers.mergeRequests is false"},
		{"MR into tracked branch", ferryv1.Triggers{MergeRequests: true}, mrToMain, ""},
		{"MR into untracked branch", ferryv1.Triggers{MergeRequests: true, Branches: []string{"release/*"}}, mrToMain, "merge request !4 targets main, which is not tracked"},
	}
	for _, c := range cases {
		err := tracked(project(c.triggers), c.trigger)
		if c.ignored == "" && err != nil || c.ignored != "" && (err == nil || !strings.Contains(err.Error(), c.ignored)) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.ignored)
		}
	}
}

func TestValidRef(t *testing.T) {
	for ref, ok := range map[string]bool{
		"refs/heads/main":              true,
		"refs/heads/feat/中文":           true,
		"refs/merge-requests/7/head":   true,
		"refs/heads/a..b":              false,
		"refs/heads/feat/-x":           false,
		"refs/heads/with space":        false,
		"refs/heads/" + long(600, "a"): false,
	} {
		if err := validRef(ref); (err == nil) != ok {
			t.Errorf("validRef(%q) = %v", ref, err)
		}
	}
}

func long(n int, s string) string { return strings.Repeat(s, n) }
