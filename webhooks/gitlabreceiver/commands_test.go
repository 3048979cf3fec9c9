package gitlabreceiver_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// The GitLab API token of the commands tests' Project; it must never show up in a note or answer.
const commandsAPIToken = "glpat-commands-api-token-0123456789"

// mrEnv is a fake GitLab with project team/shop (and a fork, mallory/shop), the Ferry Project for
// it, and Ferry's receiver (as the manager's ServiceAccount with the generated ClusterRole) that
// GitLab's push, merge request and comment hooks reach.
type mrEnv struct {
	t    *testing.T
	c    client.Client
	cfg  *rest.Config
	ns   string
	fake *gitlabsim.Server
	// gid is team/shop, fork mallory/shop.
	gid, fork int64
	// base is main's head, head a commit of branch feature, forkHead a commit of the fork.
	base, head, forkHead string
	hookURL              string
	stop                 func()
}

func newMREnv(t *testing.T) *mrEnv {
	t.Helper()
	hub := testutil.CurrentHub(t)
	e := &mrEnv{t: t, c: hub.Client, fake: gitlabsim.New()}
	t.Cleanup(e.fake.Close)
	e.cfg = managerIdentity(t, e.c, hub.Config)
	f := e.fake
	f.AddUser("ferry-bot", commandsAPIToken)
	for _, u := range []string{"alice", "maia", "rita", "mallory"} {
		f.AddUser(u, u+"-token")
	}
	e.gid = f.AddProject(gitlabsim.Project{PathWithNamespace: "team/shop"})
	e.fork = f.AddProject(gitlabsim.Project{PathWithNamespace: "mallory/shop"})
	for user, role := range map[string]int{"alice": gitlabsim.DeveloperAccess, "maia": gitlabsim.MaintainerAccess, "rita": gitlabsim.ReporterAccess} {
		if err := f.SetRole(e.gid, user, role); err != nil {
			t.Fatal(err)
		}
	}
	e.base, _ = f.AddCommit(e.gid, gitlabsim.Commit{Message: "initial"})
	e.head, _ = f.AddCommit(e.gid, gitlabsim.Commit{Message: "feature", ParentIDs: []string{e.base}})
	e.forkHead, _ = f.AddCommit(e.fork, gitlabsim.Commit{Message: "from the fork"})
	if err := f.SetBranch(e.gid, "main", e.base); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	e.ns = testutil.Namespace(t, e.c)
	for name, data := range map[string]string{"shop-webhook": "hook-secret", "shop-gitlab": commandsAPIToken} {
		if err := e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}, Data: map[string][]byte{"token": []byte(data)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.c.Create(ctx, &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "shop"},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL: f.URL, ProjectPath: "team/shop", ProjectID: e.gid,
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: "shop-webhook"},
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: "shop-gitlab"},
			},
			Repository: ferryv1.Repository{CloneURL: f.URL + "/team/shop.git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/shop"},
			Triggers:   ferryv1.Triggers{Branches: []string{"main"}, MergeRequests: true},
		},
	}); err != nil {
		t.Fatal(err)
	}
	e.start()
	if err := f.AddHook(e.gid, gitlabsim.Hook{URL: e.hookURL, Token: "hook-secret", PushEvents: true, MergeRequestsEvents: true, NoteEvents: true}); err != nil {
		t.Fatal(err)
	}
	return e
}

// start runs a manager with only the receiver; the hook's URL follows it.
func (e *mrEnv) start() {
	e.t.Helper()
	m, err := manager.New(e.cfg, manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0",
		Controllers: []string{"-*"}, ReceiverAddr: "127.0.0.1:0", ReceiverMaxBodyBytes: testMaxBody,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	stopped := false
	e.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("manager: %v", err)
		}
	}
	e.t.Cleanup(e.stop)
	testutil.EventuallyWithin(e.t, 30*time.Second, "the receiver to listen", func() (bool, error) { return m.Receiver.Addr() != "", nil })
	url := "http://" + m.Receiver.Addr() + "/hooks/gitlab"
	if e.hookURL != "" {
		e.fake.SetHookURL(e.gid, url)
	}
	e.hookURL = url
	// The receiver's cache must know the Project: a comment without a command is answered only
	// once the token matched it.
	testutil.Eventually(e.t, "the receiver to know the Project", func() (bool, error) {
		h := http.Header{}
		h.Set("X-Gitlab-Event", "Push Hook")
		h.Set("X-Gitlab-Token", "hook-secret")
		body := fmt.Appendf(nil, `{"object_kind":"push","ref":"refs/heads/probe","before":"%s","after":"%s","checkout_sha":null,"project_id":%d,"project":{"path_with_namespace":"team/shop"}}`,
			strings.Repeat("1", 40), strings.Repeat("0", 40), e.gid)
		r := post(e.t, url, h, body)
		return r.status == http.StatusOK, fmt.Errorf("%d %s", r.status, r.body)
	})
}

// openMR opens a merge request of branch feature (head e.head) by user and checks the answer.
func (e *mrEnv) openMR(user string, wantStatus int) (int64, gitlabsim.Delivery) {
	e.t.Helper()
	iid, d, err := e.fake.OpenMergeRequest(context.Background(), e.gid, gitlabsim.MergeRequest{SourceBranch: "feature", TargetBranch: "main", SHA: e.head, Title: "Feature"}, user)
	if err != nil || len(d) != 1 || d[0].Status != wantStatus {
		e.t.Fatalf("MR delivery: %s %v", describe(d), err)
	}
	return iid, d[0]
}

// comment writes a note on merge request iid and checks that the receiver answered with status.
func (e *mrEnv) comment(iid int64, user, body string, wantStatus int) (gitlabsim.Note, gitlabsim.Delivery) {
	e.t.Helper()
	n, d, err := e.fake.Comment(context.Background(), e.gid, iid, gitlabsim.NoteSpec{User: user, Body: body})
	if err != nil || len(d) != 1 || d[0].Status != wantStatus {
		e.t.Fatalf("comment %q by %s: %s %v", body, user, describe(d), err)
	}
	return n, d[0]
}

// reply waits for Ferry's reply to note n and returns its body.
func (e *mrEnv) reply(iid int64, n gitlabsim.Note) string {
	e.t.Helper()
	marker := fmt.Sprintf("<!-- ferry:command %s/shop note %d -->", e.ns, n.ID)
	var found []string
	testutil.Eventually(e.t, fmt.Sprintf("Ferry's reply to %q", n.Body), func() (bool, error) {
		found = e.notesContaining(iid, marker)
		return len(found) > 0, nil
	})
	return found[0]
}

func (e *mrEnv) notesContaining(iid int64, s string) []string {
	var out []string
	for _, n := range e.fake.Notes(e.gid, iid) {
		if n.Author.Username == "ferry-bot" && strings.Contains(n.Body, s) {
			out = append(out, n.Body)
		}
	}
	return out
}

// builds are the Project's Builds of merge request iid.
func (e *mrEnv) builds(iid int64) []ferryv1.Build {
	e.t.Helper()
	var out []ferryv1.Build
	for _, b := range listBuilds(e.t, e.c, e.ns, "shop") {
		if b.Spec.Ref == fmt.Sprintf("refs/merge-requests/%d/head", iid) {
			out = append(out, b)
		}
	}
	return out
}

func (e *mrEnv) setReady(b *ferryv1.Build, status metav1.ConditionStatus, reason string) {
	e.t.Helper()
	setBuildConditions(e.t, e.c, b, metav1.Condition{Type: ferryv1.ReadyCondition, Status: status, Reason: reason, Message: reason})
}

// checkReplies fails when a reply runs a quick action or shows the API token.
func (e *mrEnv) checkReplies(iid int64) {
	e.t.Helper()
	for _, n := range e.fake.Notes(e.gid, iid) {
		if n.Author.Username != "ferry-bot" {
			continue
		}
		if len(n.QuickActions) > 0 || strings.Contains(n.Body, commandsAPIToken) || strings.Contains(n.Body, "hook-secret") {
			e.t.Errorf("reply %q runs quick actions %v or shows a token", n.Body, n.QuickActions)
		}
	}
}

func answerOf(t *testing.T, d gitlabsim.Delivery) (result, text string) {
	t.Helper()
	var a struct{ Result, Reason, Message, Error string }
	if err := json.Unmarshal(d.Response, &a); err != nil {
		t.Fatalf("answer %q: %v", d.Response, err)
	}
	return a.Result, a.Reason + " " + a.Message + " " + a.Error
}

// TestRetest: /retest skips a commit whose last Build succeeded, /retest force builds it again,
// /retest after a failure builds it again; a comment delivered twice acts and replies once.
func TestRetest(t *testing.T) {
	e := newMREnv(t)
	iid, _ := e.openMR("alice", http.StatusCreated)
	first := e.builds(iid)
	if len(first) != 1 || first[0].Spec.Revision != e.head {
		t.Fatalf("Builds of the MR: %+v", first)
	}
	e.setReady(&first[0], metav1.ConditionTrue, ferryv1.SucceededReason)

	n, d := e.comment(iid, "alice", "/retest", http.StatusAccepted)
	if result, _ := answerOf(t, d); result != "accepted" {
		t.Errorf("answer to /retest: %s", d.Response)
	}
	reply := e.reply(iid, n)
	mustContain(t, "reply to /retest", reply, "skipped: the last Build of commit "+e.head[:7]+", `"+first[0].Name+"`, succeeded")
	if got := e.builds(iid); len(got) != 1 {
		t.Fatalf("/retest of a succeeded commit made a Build: %d Builds", len(got))
	}

	n, d = e.comment(iid, "maia", "Flaky registry, again please.\n/retest force", http.StatusAccepted)
	reply = e.reply(iid, n)
	var forced *ferryv1.Build
	testutil.Eventually(t, "a second Build", func() (bool, error) {
		bs := e.builds(iid)
		for i := range bs {
			if bs[i].Name != first[0].Name {
				forced = &bs[i]
			}
		}
		return len(bs) == 2, nil
	})
	mustContain(t, "reply to /retest force", reply, "Build `"+forced.Name+"` of commit "+e.head[:7]+" started")
	if forced.Spec.Revision != e.head || forced.Spec.Trigger.User != "maia" || forced.Spec.Trigger.Kind != ferryv1.TriggerMergeRequest || forced.Spec.Trigger.MergeRequestIID != iid {
		t.Errorf("forced Build = %+v", forced.Spec)
	}
	// GitLab delivers the comment again: nothing more is built or said.
	if again := e.fake.Redeliver(context.Background(), d); again.Status != http.StatusAccepted {
		t.Errorf("redelivered comment: %d %s", again.Status, again.Response)
	}
	e.setReady(forced, metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	n3, _ := e.comment(iid, "alice", "/retest", http.StatusAccepted)
	reply = e.reply(iid, n3)
	if got := e.builds(iid); len(got) != 3 {
		t.Fatalf("after /retest of a failed commit: %d Builds, want 3", len(got))
	}
	mustContain(t, "reply to /retest after a failure", reply, "started")
	if replies := e.notesContaining(iid, fmt.Sprintf("note %d -->", n.ID)); len(replies) != 1 {
		t.Errorf("%d replies to one comment delivered twice", len(replies))
	}
	e.checkReplies(iid)
}

// TestCancelCommand: /cancel from someone without the Developer role changes nothing and says
// which role is needed; from a developer it cancels the MR's unfinished Builds, naming them.
func TestCancelCommand(t *testing.T) {
	e := newMREnv(t)
	iid, _ := e.openMR("alice", http.StatusCreated)
	b := e.builds(iid)[0]

	for user, has := range map[string]string{"mallory": "is not a member of team/shop", "rita": "has the Reporter role"} {
		n, _ := e.comment(iid, user, "/cancel", http.StatusAccepted)
		reply := e.reply(iid, n)
		mustContain(t, "reply to "+user, reply, "needs the Developer role or higher in team/shop, and @"+user+" "+has+"; nothing was done")
	}
	cur := &ferryv1.Build{}
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(&b), cur); err != nil || cur.Spec.Cancelled {
		t.Fatalf("a refused /cancel cancelled the Build: %v %+v", err, cur.Spec)
	}

	n, _ := e.comment(iid, "alice", "/cancel", http.StatusAccepted)
	mustContain(t, "reply to /cancel", e.reply(iid, n), "cancelled `"+b.Name+"`")
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(&b), cur); err != nil || !cur.Spec.Cancelled || !strings.Contains(cur.Spec.CancelReason, "@alice") {
		t.Fatalf("after /cancel: %v %+v", err, cur.Spec)
	}
	n, _ = e.comment(iid, "alice", "/cancel", http.StatusAccepted)
	mustContain(t, "reply to a second /cancel", e.reply(iid, n), "nothing to cancel")

	// An unknown command gets the list of the known ones; a command mid-line is text.
	n, _ = e.comment(iid, "alice", "/deploy production", http.StatusAccepted)
	mustContain(t, "reply to an unknown command", e.reply(iid, n), "not a Ferry command; nothing was done. Ferry's commands are `/retest`, `/retest force`, `/cancel` and `/ok-to-test`")
	_, d := e.comment(iid, "alice", "I would not /cancel this", http.StatusOK)
	if result, why := answerOf(t, d); result != "ignored" || !strings.Contains(why, "has no command") {
		t.Errorf("a command mid-line: %s", d.Response)
	}
	e.checkReplies(iid)
}

// TestOKToTest: merge requests from a fork or from a non-member wait for a member's /ok-to-test
// for their commit; the permission survives a restart and does not carry over to a new push.
func TestOKToTest(t *testing.T) {
	e := newMREnv(t)
	ctx := context.Background()
	// A merge request from the fork, by its owner.
	iid, d, err := e.fake.OpenMergeRequest(ctx, e.gid, gitlabsim.MergeRequest{SourceProjectID: e.fork, SourceBranch: "main", TargetBranch: "main", SHA: e.forkHead, Title: "Improve things"}, "mallory")
	if err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("fork MR: %s %v", describe(d), err)
	}
	if result, why := answerOf(t, d[0]); result != "ignored" || !strings.Contains(why, "comes from a fork") || !strings.Contains(why, "/ok-to-test") {
		t.Errorf("fork MR answer: %s", d[0].Response)
	}
	testutil.Eventually(t, "a note saying the MR waits for /ok-to-test", func() (bool, error) {
		return len(e.notesContaining(iid, "has not built this merge request")) == 1, nil
	})
	if len(e.builds(iid)) != 0 {
		t.Fatal("a fork's merge request built")
	}

	// The fork's owner cannot allow it; a reporter neither.
	for _, user := range []string{"mallory", "rita"} {
		n, _ := e.comment(iid, user, "/ok-to-test", http.StatusAccepted)
		mustContain(t, "reply to "+user, e.reply(iid, n), "needs the Developer role or higher")
	}
	if len(e.builds(iid)) != 0 {
		t.Fatal("a refused /ok-to-test built")
	}

	n, _ := e.comment(iid, "alice", "Reviewed, looks harmless.\n/ok-to-test", http.StatusAccepted)
	reply := e.reply(iid, n)
	bs := e.builds(iid)
	if len(bs) != 1 || bs[0].Spec.Revision != e.forkHead || bs[0].Annotations[ferryv1.GitLabOKToTestAnnotation] != "alice" ||
		bs[0].Annotations[ferryv1.GitLabSourceProjectAnnotation] != fmt.Sprint(e.fork) {
		t.Fatalf("after /ok-to-test: %+v", bs)
	}
	mustContain(t, "reply to /ok-to-test", reply, "commit "+e.forkHead[:7]+" may build (allowed by @alice)")

	// The permission is in the API server: a restarted receiver reuses the Build when GitLab
	// delivers the merge request again ("Resend Request": same body and Idempotency-Key).
	e.stop()
	e.start()
	h := d[0].Header.Clone()
	h.Set("X-Gitlab-Webhook-UUID", newUUID())
	if r := post(t, e.hookURL, h, d[0].Body); r.status != http.StatusOK || r.answer.Result != "reused" {
		t.Errorf("redelivered fork MR after /ok-to-test: %d %s", r.status, r.body)
	}

	// A new push to the fork needs a new /ok-to-test.
	newer, _ := e.fake.AddCommit(e.fork, gitlabsim.Commit{Message: "sneaky change", ParentIDs: []string{e.forkHead}})
	d, err = e.fake.UpdateMergeRequest(ctx, e.gid, iid, newer, "mallory")
	if err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("push to the fork: %s %v", describe(d), err)
	}
	if result, why := answerOf(t, d[0]); result != "ignored" || !strings.Contains(why, newer[:7]) {
		t.Errorf("new push answer: %s", d[0].Response)
	}
	if bs := e.builds(iid); len(bs) != 1 {
		t.Fatalf("a new push after /ok-to-test built: %d Builds", len(bs))
	}
	// A new /ok-to-test allows the new commit.
	n2, _ := e.comment(iid, "alice", "/ok-to-test", http.StatusAccepted)
	mustContain(t, "reply to the second /ok-to-test", e.reply(iid, n2), "commit "+newer[:7]+" may build")
	if bs := e.builds(iid); len(bs) != 2 {
		t.Fatalf("after the second /ok-to-test: %d Builds, want 2", len(bs))
	}
	e.checkReplies(iid)
}

// TestNonMemberMergeRequestWaits: a merge request of the project itself by a user without the
// Developer role waits for /ok-to-test too; a developer's builds at once.
func TestNonMemberMergeRequestWaits(t *testing.T) {
	e := newMREnv(t)
	iid, d := e.openMR("rita", http.StatusOK)
	if result, why := answerOf(t, d); result != "ignored" || !strings.Contains(why, "opened by a user without the Developer role in team/shop") {
		t.Errorf("reporter's MR: %s", d.Response)
	}
	if len(e.builds(iid)) != 0 {
		t.Fatal("a reporter's merge request built")
	}
	n, _ := e.comment(iid, "maia", "/retest", http.StatusAccepted)
	mustContain(t, "a maintainer's /retest", e.reply(iid, n), "started")
	if len(e.builds(iid)) != 1 {
		t.Fatal("a maintainer's /retest did not build")
	}
}

// TestCommandsSurviveGitLabFaults: the members and notes API answer 429 and 5xx; the command runs
// once and is answered once.
func TestCommandsSurviveGitLabFaults(t *testing.T) {
	e := newMREnv(t)
	iid, _ := e.openMR("alice", http.StatusCreated)
	e.setReady(&e.builds(iid)[0], metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	e.fake.Inject(gitlabsim.Fault{PathContains: "/members/all/", Status: http.StatusTooManyRequests, Times: 2, RetryAfter: "0"})
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/notes", Status: http.StatusServiceUnavailable, Times: 1})
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodGet, PathContains: "/notes", Status: http.StatusBadGateway, Times: 1})
	n, _ := e.comment(iid, "alice", "/retest", http.StatusAccepted)
	mustContain(t, "reply after faults", e.reply(iid, n), "started")
	if bs := e.builds(iid); len(bs) != 2 {
		t.Errorf("%d Builds after one /retest through faults, want 2", len(bs))
	}
	if replies := e.notesContaining(iid, fmt.Sprintf("note %d -->", n.ID)); len(replies) != 1 {
		t.Errorf("%d replies", len(replies))
	}
	faulted := 0
	for _, c := range e.fake.Calls() {
		if c.Status == http.StatusTooManyRequests || c.Status >= 500 {
			faulted++
		}
	}
	if faulted != 4 {
		t.Errorf("%d faulted calls, want 4 (every fault was met and retried)", faulted)
	}
}

// TestForgedComments: what an attacker can send without the webhook token, or with it but about
// something else, runs nothing and calls GitLab for nothing.
func TestForgedComments(t *testing.T) {
	e := newMREnv(t)
	iid, _ := e.openMR("alice", http.StatusCreated)
	_, d := e.comment(iid, "alice", "thanks", http.StatusOK)
	e.fake.ResetCalls()
	post1 := func(h http.Header, body []byte) reply { return post(t, e.hookURL, h, body) }
	forge := func(mutate func(map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(d.Body, &m); err != nil {
			t.Fatal(err)
		}
		m["object_attributes"].(map[string]any)["note"] = "/retest force"
		m["object_attributes"].(map[string]any)["id"] = 999999
		mutate(m)
		b, _ := json.Marshal(m)
		return b
	}
	h := d.Header.Clone()
	h.Set("Idempotency-Key", newUUID())

	wrong := h.Clone()
	wrong.Set("X-Gitlab-Token", "guessed")
	if r := post1(wrong, forge(func(map[string]any) {})); r.status != http.StatusUnauthorized {
		t.Errorf("wrong token: %d %s", r.status, r.body)
	}
	other := forge(func(m map[string]any) { m["merge_request"].(map[string]any)["target_project_id"] = e.fork })
	if r := post1(h, other); r.status != http.StatusOK || !strings.Contains(r.answer.Reason, "another GitLab project") {
		t.Errorf("a comment on another project's MR: %d %s", r.status, r.body)
	}
	edited := forge(func(m map[string]any) { m["object_attributes"].(map[string]any)["action"] = "update" })
	if r := post1(h, edited); r.status != http.StatusOK || r.answer.Result != "ignored" {
		t.Errorf("an edited comment: %d %s", r.status, r.body)
	}
	//nolint:misspell // noteable_type is GitLab's field name
	issue := forge(func(m map[string]any) { m["object_attributes"].(map[string]any)["noteable_type"] = "Issue" })
	if r := post1(h, issue); r.status != http.StatusOK || !strings.Contains(r.answer.Reason, "a comment on Issue runs no command") {
		t.Errorf("an issue comment: %d %s", r.status, r.body)
	}
	huge := forge(func(m map[string]any) {
		m["object_attributes"].(map[string]any)["note"] = "/retest force\n" + strings.Repeat("x", testMaxBody)
	})
	if r := post1(h, huge); r.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a huge comment: %d %s", r.status, r.body)
	}
	for _, c := range e.fake.Calls() {
		t.Errorf("GitLab was called: %s %s", c.Method, c.Path)
	}
	if bs := e.builds(iid); len(bs) != 1 {
		t.Errorf("%d Builds after forged comments", len(bs))
	}
}

// TestSameCommitAgainReusesItsBuild: a second, distinct delivery of a commit that has a Build on
// the ref (a re-push, GitLab's "Test" button) reuses it and says so; a redelivery of the same
// delivery is "already received".
func TestSameCommitAgainReusesItsBuild(t *testing.T) {
	e := newMREnv(t)
	ctx := context.Background()
	d, err := e.fake.Push(ctx, e.gid, gitlabsim.PushSpec{Branch: "main", To: e.head, User: "alice"})
	if err != nil || d[0].Status != http.StatusCreated {
		t.Fatalf("push: %s %v", describe(d), err)
	}
	again, err := e.fake.Push(ctx, e.gid, gitlabsim.PushSpec{Branch: "main", To: e.head, User: "alice"})
	if err != nil || again[0].Status != http.StatusOK {
		t.Fatalf("push of the same commit: %s %v", describe(again), err)
	}
	if result, why := answerOf(t, again[0]); result != "reused" || !strings.Contains(why, "already has a Build on refs/heads/main") {
		t.Errorf("answer = %s", again[0].Response)
	}
	if r := e.fake.Redeliver(ctx, d[0]); !bytes.Contains(r.Response, []byte("already received")) {
		t.Errorf("redelivery: %d %s", r.Status, r.Response)
	}
	if bs := listBuilds(t, e.c, e.ns, "shop"); len(bs) != 1 {
		t.Errorf("%d Builds of one commit", len(bs))
	}
}
