package gitlabreceiver_test

import (
	"io/fs"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// corpusCase says what one payload of the corpus must lead to.
type corpusCase struct {
	file string
	// name tells variants of the same file apart.
	name string
	// triggers replaces defaultTriggers.
	triggers *ferryv1.Triggers

	status int
	// For a created Build:
	kind     ferryv1.TriggerKind
	revision string
	ref      string
	user     string
	// userID and userEmail are the GitLab user's ID and e-mail address when the payload has a
	// usable one ("" and "[REDACTED]" are not).
	userID    int64
	userEmail string
	tag       string
	iid       int64
	// reason is a substring of the answer's reason (ignored) or error (4xx).
	reason string
}

func created(kind ferryv1.TriggerKind, revision, ref string) corpusCase {
	return corpusCase{status: http.StatusCreated, kind: kind, revision: revision, ref: ref}
}

func ignoredBecause(reason string) corpusCase {
	return corpusCase{status: http.StatusOK, reason: reason}
}

func (c corpusCase) in(file string) corpusCase           { c.file = file; return c }
func (c corpusCase) by(user string) corpusCase           { c.user = user; return c }
func (c corpusCase) named(name string) corpusCase        { c.name = name; return c }
func (c corpusCase) mr(iid int64) corpusCase             { c.iid = iid; return c }
func (c corpusCase) tagged(tag string) corpusCase        { c.tag = tag; return c }
func (c corpusCase) with(tr ferryv1.Triggers) corpusCase { c.triggers = &tr; return c }

// identified records the user ID and the usable e-mail address the payload carries.
func (c corpusCase) identified(id int64, email string) corpusCase {
	c.userID, c.userEmail = id, email
	return c
}

const (
	docsSHA      = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	helloSHA     = "c4c79227ed610f1151f05bbc5be33b4f340d39c8"
	docsTagSHA   = "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"
	scmPushSHA   = "2adc9465c4edfc33834e173fe89436a7cb899a1d"
	scmMergeSHA  = "78a76ee6b4992a6baf64c59fc4c44c7323d60438"
	annotatedSHA = "adeb26a4a024541729e7d7626ca183dda55f5c39" // checkout_sha; after is the tag object 446bae8f…
	chineseSHA   = "7ab2cc0aae04d9afbc69aeabb0efb758316fec72"
	derivedSHA   = "7853c451c2f3faac7b156bc9ffe717c74638caf1"
	zulipNewSHA  = "68d7a5528cf423dfaac37dd62a56ac9cc8a884e3"
	latestMRSHA  = "e59094b8de0f2f91abbe4760a52d9137260252d8"
	subgroupMR   = "eee7db80b395994106c2f2e070c7a3dc2cce0c87"
)

var allBranches = ferryv1.Triggers{Branches: []string{"*"}, Tags: []string{"v*"}, MergeRequests: true}

// corpus lists every payload of testdata/gitlab-webhooks with what it must do.
var corpus = []corpusCase{
	// requests/: ready header+body bundles (real GitLab 17.11.1-ee header set).
	ignoredBecause(`merge request action "close" is not built`).in("requests/mr_close.json"),
	ignoredBecause(`merge request action "merge" is not built`).in("requests/mr_merge.json"),
	created(ferryv1.TriggerMergeRequest, latestMRSHA, "refs/merge-requests/16/head").mr(16).by("agarcia").identified(1, "agarcia@example.com").in("requests/mr_open_latest.json"),
	created(ferryv1.TriggerMergeRequest, helloSHA, "refs/merge-requests/1/head").mr(1).by("sytses").in("requests/mr_update_with_oldrev.json"),
	ignoredBecause(`"Push Event" events are not built`).in("requests/neg_legacy_test_header.json"),
	{file: "requests/neg_missing_token.json", status: http.StatusUnauthorized, reason: "unauthorized"},
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").identified(4, "john@example.com").in("requests/neg_system_hook_push.json"),
	created(ferryv1.TriggerPush, derivedSHA, "refs/heads/master").by("jsmith").identified(4, "john@example.com").in("requests/push_1234_commits_DERIVED.json"),
	ignoredBecause("branch changes is not tracked").in("requests/push_branch_create_zero_commits.json"),
	created(ferryv1.TriggerPush, zulipNewSHA, "refs/heads/changes").with(allBranches).named("tracked").identified(1129123, "jerryguitarist@gmail.com").in("requests/push_branch_create_zero_commits.json"),
	ignoredBecause("branch feature was deleted").in("requests/push_branch_delete.json"),
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").by("jsmith").identified(4, "john@example.com").in("requests/push_docs.json"),
	created(ferryv1.TriggerPush, scmMergeSHA, "refs/heads/master").by("sytses").identified(51764, "").in("requests/push_merge_commit_after_mr_merge.json"),
	created(ferryv1.TriggerPush, chineseSHA, "refs/heads/master").by("jiajb").identified(85, "").in("requests/push_subgroup_chinese.json"),
	created(ferryv1.TriggerTag, annotatedSHA, "refs/tags/v1.0.1").tagged("v1.0.1").by("wenzhenglin").identified(75, "wenzhenglin@haodai.net").in("requests/tag_push_create_annotated.json"),
	created(ferryv1.TriggerTag, scmPushSHA, "refs/tags/v1.0.0").tagged("v1.0.0").by("sytses").identified(51764, "").in("requests/tag_push_create_lightweight.json"),
	ignoredBecause("tag v1.0.0 is not tracked").with(ferryv1.Triggers{Tags: []string{"release-*"}}).named("untracked").in("requests/tag_push_create_lightweight.json"),
	ignoredBecause("tag pushes are not built").with(ferryv1.Triggers{}).named("no tags").in("requests/tag_push_create_lightweight.json"),
	ignoredBecause("tag v1.0.0 was deleted").in("requests/tag_push_delete.json"),

	// Bare payloads, delivered with the real header set.
	created(ferryv1.TriggerPush, derivedSHA, "refs/heads/master").by("jsmith").identified(4, "john@example.com").in("derived/push_1234_commits_capped_at_20_DERIVED.json"),
	created(ferryv1.TriggerMergeRequest, docsSHA, "refs/merge-requests/1/head").mr(1).by("root").identified(1, "admin@example.com").in("gitlab_docs/merge_request_hook_open.json"),
	ignoredBecause("merge requests are not built").with(ferryv1.Triggers{Branches: []string{"master"}}).named("MRs off").in("gitlab_docs/merge_request_hook_open.json"),
	ignoredBecause("targets master, which is not tracked").with(ferryv1.Triggers{Branches: []string{"main"}, MergeRequests: true}).named("untracked target").in("gitlab_docs/merge_request_hook_open.json"),
	created(ferryv1.TriggerMergeRequest, latestMRSHA, "refs/merge-requests/16/head").mr(16).by("agarcia").identified(1, "agarcia@example.com").in("gitlab_docs/merge_request_hook_open_latest_2026.json"),
	// The two partial excerpts of the docs name no project, so nothing can authenticate them and
	// their event is never decoded; their decisions are unit-tested.
	{file: "gitlab_docs/merge_request_hook_system_unapproved_partial.json", status: http.StatusBadRequest, reason: "names no project"},
	{file: "gitlab_docs/merge_request_hook_update_with_oldrev_partial.json", status: http.StatusBadRequest, reason: "names no project"},
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").by("jsmith").identified(4, "john@example.com").in("gitlab_docs/push_hook.json"),
	created(ferryv1.TriggerTag, docsTagSHA, "refs/tags/v1.0.0").tagged("v1.0.0").identified(1, "").in("gitlab_docs/tag_push_hook.json"),
	ignoredBecause(`"Job Hook" events are not built`).in("go-gitlab/build.json"),
	ignoredBecause(`merge request action "merge" is not built`).in("go-gitlab/group_merge_request.json"),
	ignoredBecause(`"Job Hook" events are not built`).in("go-gitlab/job.json"),
	created(ferryv1.TriggerMergeRequest, docsSHA, "refs/merge-requests/1/head").mr(1).by("user1").identified(1, "user1@example.com").in("go-gitlab/merge_request.json"),
	ignoredBecause("the comment has no command").in("go-gitlab/note_merge_request.json"),
	ignoredBecause(`"Pipeline Hook" events are not built`).in("go-gitlab/pipeline.json"),
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").by("jsmith").identified(4, "john@example.com").in("go-gitlab/push.json"),
	created(ferryv1.TriggerMergeRequest, "0ab96a10266b95b4b533dcfd98738015fbe70889", "refs/merge-requests/2/head").mr(2).by("test").identified(2, "test@test.test").in("go-gitlab/service_merge_request.json"),
	ignoredBecause(`system hook event "subgroup_create" is not built`).in("go-gitlab/subgroup.json"),
	created(ferryv1.TriggerTag, docsTagSHA, "refs/tags/v1.0.0").tagged("v1.0.0").by("jsmith").identified(1, "").in("go-gitlab/tag_push.json"),
	created(ferryv1.TriggerMergeRequest, docsSHA, "refs/merge-requests/1/head").mr(1).by("root").identified(1, "admin@example.com").in("go-playground/merge-request-event.json"),
	ignoredBecause(`"Pipeline Hook" events are not built`).in("go-playground/pipeline-event.json"),
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").identified(4, "john@example.com").in("go-playground/push-event.json"),
	created(ferryv1.TriggerPush, docsSHA, "refs/heads/master").identified(4, "john@example.com").in("go-playground/system-push-event.json"),
	created(ferryv1.TriggerTag, docsTagSHA, "refs/tags/v1.0.0").tagged("v1.0.0").identified(1, "").in("go-playground/tag-event.json"),
	ignoredBecause("branch feature is not tracked").in("go-scm/branch_create.json"),
	created(ferryv1.TriggerPush, helloSHA, "refs/heads/feature").by("sytses").with(allBranches).named("tracked").identified(51764, "").in("go-scm/branch_create.json"),
	ignoredBecause("branch feature was deleted").with(allBranches).in("go-scm/branch_delete.json"),
	ignoredBecause(`merge request action "close" is not built`).in("go-scm/pull_request_close.json"),
	created(ferryv1.TriggerMergeRequest, helloSHA, "refs/merge-requests/1/head").mr(1).by("sytses").in("go-scm/pull_request_create.json"),
	created(ferryv1.TriggerMergeRequest, helloSHA, "refs/merge-requests/1/head").mr(1).by("sytses").in("go-scm/pull_request_edited.json"),
	ignoredBecause(`merge request action "merge" is not built`).in("go-scm/pull_request_merge.json"),
	created(ferryv1.TriggerMergeRequest, helloSHA, "refs/merge-requests/1/head").mr(1).by("sytses").in("go-scm/pull_request_reopen.json"),
	created(ferryv1.TriggerPush, scmPushSHA, "refs/heads/master").by("sytses").identified(51764, "").in("go-scm/push.json"),
	created(ferryv1.TriggerPush, "8f784b32840472e7fda687b1c18e2bef26af768b", "refs/heads/master").by("jenkins-x-bot").identified(510, "").in("go-scm/push2.json"),
	created(ferryv1.TriggerPush, scmMergeSHA, "refs/heads/master").by("sytses").identified(51764, "").in("go-scm/push_merge.json"),
	created(ferryv1.TriggerTag, scmPushSHA, "refs/tags/v1.0.0").tagged("v1.0.0").by("sytses").identified(51764, "").in("go-scm/tag_create.json"),
	ignoredBecause("tag v1.0.0 was deleted").in("go-scm/tag_delete.json"),
	created(ferryv1.TriggerMergeRequest, "45e272a57335e4e308f3176df6e9226a9e7805a9", "refs/merge-requests/2/head").mr(2).by("shreyaspapi").identified(0, "spapinwar@gmail.com").in("packit/merge_request_update_with_oldrev.json"),
	created(ferryv1.TriggerTag, annotatedSHA, "refs/tags/v1.0.1").tagged("v1.0.1").by("wenzhenglin").identified(75, "wenzhenglin@haodai.net").in("selfhosted_wen/annotated_tag_push.json"),
	ignoredBecause(`system hook event "repository_update" is not built`).in("selfhosted_wen/system_hook_repository_update.json"),
	created(ferryv1.TriggerPush, "1a1736ec3d7b03349b31218a2f2c572c7c7206d6", "refs/heads/main").by("dibyom").identified(111448, "").in("tekton_triggers/gitlab_com_push_event.json"),
	created(ferryv1.TriggerPush, zulipNewSHA, "refs/heads/changes").with(allBranches).identified(1129123, "jerryguitarist@gmail.com").in("zulip/push_hook__push_local_branch_without_commits.json"),
	ignoredBecause("branch tomek was deleted").with(allBranches).in("zulip/push_hook__remove_branch.json"),
	ignoredBecause("tag xyz was deleted").in("zulip/tag_push_hook__remove_tag.json"),
	ignoredBecause("targets test, which is not tracked").in("merge_request_hook_subgroup_nonascii_with_headers_gitlab17.11.json"),
	created(ferryv1.TriggerMergeRequest, subgroupMR, "refs/merge-requests/607/head").mr(607).by("王加豪").with(ferryv1.Triggers{Branches: []string{"test"}, MergeRequests: true}).named("tracked").identified(223, "").in("merge_request_hook_subgroup_nonascii_with_headers_gitlab17.11.json"),
	ignoredBecause(`"Release Hook" events are not built`).in("release_hook_subgroup_with_real_headers_gitlab17.11.json"),
	created(ferryv1.TriggerPush, chineseSHA, "refs/heads/master").by("jiajb").identified(85, "").in("selfhosted_push_subgroup_chinese_4color.json"),
}

// TestCorpus delivers every payload of the corpus to the real receiver over HTTP, with a Project
// for its GitLab project in a real API server, and checks which create a Build (with which commit
// and ref) and which are ignored, and why.
func TestCorpus(t *testing.T) {
	covered := map[string]bool{}
	for _, c := range corpus {
		covered[c.file] = true
	}
	err := filepath.WalkDir(fixtures, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") {
			return err
		}
		rel, _ := filepath.Rel(fixtures, path)
		// The real header set is not a payload: every bare payload is delivered with it.
		if rel != "headers_real_gitlab_17.11.1-ee.json" && !covered[rel] {
			t.Errorf("%s has no expectation in the corpus table", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	e := newEnv(t)
	for i, c := range corpus {
		name := strings.TrimSuffix(c.file, ".json")
		if c.name != "" {
			name += "/" + c.name
		}
		t.Run(name, func(t *testing.T) {
			h, body := loadFixture(t, c.file)
			path := projectPath(body)
			if path == "" {
				path = "no/project"
			}
			projectName := "p" + strconv.Itoa(i)
			triggers := defaultTriggers
			if c.triggers != nil {
				triggers = *c.triggers
			}
			token := e.project(projectName, path, projectOptions{mutate: func(p *ferryv1.Project) { p.Spec.Triggers = triggers }})
			if c.file != "requests/neg_missing_token.json" {
				h.Set("X-Gitlab-Token", token)
			}
			r := post(t, e.r.url, h, body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			builds := listBuilds(t, e.c, e.ns, projectName)
			if c.status != http.StatusCreated {
				mustContain(t, "answer", r.answer.Reason+r.answer.Error, c.reason)
				if len(builds) != 0 {
					t.Fatalf("%d Builds were created for an ignored delivery", len(builds))
				}
				return
			}
			if len(builds) != 1 {
				t.Fatalf("%d Builds, want 1", len(builds))
			}
			b := builds[0]
			if r.answer.Result != "created" || len(r.answer.Builds) != 1 || r.answer.Builds[0] != e.ns+"/"+b.Name {
				t.Errorf("answer %s does not name Build %s", r.body, b.Name)
			}
			if b.Spec.Project != projectName || b.Spec.Revision != c.revision || b.Spec.Ref != c.ref {
				t.Errorf("Build spec project=%s revision=%s ref=%s, want %s %s %s", b.Spec.Project, b.Spec.Revision, b.Spec.Ref, projectName, c.revision, c.ref)
			}
			want := ferryv1.BuildTrigger{Kind: c.kind, DeliveryID: h.Get("Idempotency-Key"), User: c.user, UserID: c.userID, UserEmail: c.userEmail, MergeRequestIID: c.iid, Tag: c.tag}
			if b.Spec.Trigger != want {
				t.Errorf("trigger = %+v\nwant      %+v", b.Spec.Trigger, want)
			}
			if b.Labels[ferryv1.ProjectLabel] != projectName || b.Labels[ferryv1.TriggerKindLabel] != string(c.kind) {
				t.Errorf("labels = %v", b.Labels)
			}
			if c.kind == ferryv1.TriggerMergeRequest && b.Annotations[ferryv1.GitLabSourceBranchAnnotation] == "" {
				t.Errorf("a merge request Build records its source branch: %v", b.Annotations)
			}
			if !strings.HasPrefix(b.Name, projectName+"-"+c.revision[:7]+"-") {
				t.Errorf("Build name %s lacks the readable prefix", b.Name)
			}
		})
	}
}
