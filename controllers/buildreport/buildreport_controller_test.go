package buildreport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// apiToken must never appear in a log line, event, condition or error.
const apiToken = "glpat-reporter-token-that-must-not-leak-42"

const uiURL = "https://ferry.example.com"

// logs collects everything the manager logs in this package's tests.
var logs *testutil.Logs

func TestMain(m *testing.M) {
	logs = testutil.CaptureLogs()
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{})
	os.Exit(logs.Leaked(code, "the GitLab token", apiToken))
}

// env is a namespace, a fake GitLab and the manager running the reporter.
type env struct {
	t    *testing.T
	c    client.Client
	ns   string
	fake *gitlabsim.Server
	// gitlabID is the fake GitLab project's ID.
	gitlabID int64
	stop     func()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	hub := testutil.CurrentHub(t)
	fake := gitlabsim.New()
	t.Cleanup(fake.Close)
	fake.AddUser("ferry-bot", apiToken)
	e := &env{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), fake: fake}
	e.gitlabID = fake.AddProject(gitlabsim.Project{PathWithNamespace: "group/sub/shop"})
	e.start()
	return e
}

// start runs the manager with only the reporter (again, after stop: a restart).
func (e *env) start() {
	hub := testutil.CurrentHub(e.t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
	if err := hub.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		e.t.Fatal(err)
	}
	m, err := manager.New(hub.Config, manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0",
		Controllers: []string{"buildreport"}, UIBaseURL: uiURL,
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
			e.t.Errorf("the manager stopped with: %v", err)
		}
	}
	e.t.Cleanup(e.stop)
}

// project creates a Project for the fake's GitLab project with an API token Secret.
func (e *env) project(name string, mutate func(*ferryv1.Project)) *ferryv1.Project {
	e.t.Helper()
	ctx := context.Background()
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name + "-gitlab"}, Data: map[string][]byte{"token": []byte(apiToken)}}
	if err := e.c.Create(ctx, token); client.IgnoreAlreadyExists(err) != nil {
		e.t.Fatal(err)
	}
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL:              e.fake.URL,
				ProjectPath:      "group/sub/shop",
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: name + "-webhook"},
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: token.Name},
			},
			Repository: ferryv1.Repository{CloneURL: e.fake.URL + "/group/sub/shop.git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/shop"},
		},
	}
	if mutate != nil {
		mutate(p)
	}
	if err := e.c.Create(ctx, p); err != nil {
		e.t.Fatal(err)
	}
	return p
}

var shaCounter atomic.Int64

// build creates a Build of the Project the way the receiver does.
func (e *env) build(project, ref string, mutate func(*ferryv1.Build)) *ferryv1.Build {
	e.t.Helper()
	n := shaCounter.Add(1)
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: fmt.Sprintf("%s-%d", project, n), Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec: ferryv1.BuildSpec{
			Project: project, Revision: fmt.Sprintf("%040x", n+0xabc000), Ref: ref,
			Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice"},
		},
	}
	if mutate != nil {
		mutate(b)
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// setConditions plays the Build controller: it writes the Build's conditions (and image).
func (e *env) setConditions(b *ferryv1.Build, image string, conds ...metav1.Condition) {
	e.t.Helper()
	// The reporter patches status.reportedState meanwhile: retry on conflicts, as a controller would.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return err
		}
		cur.Status.Conditions = nil
		for _, c := range conds {
			meta.SetStatusCondition(&cur.Status.Conditions, c)
		}
		cur.Status.Image = image
		return e.c.Status().Update(context.Background(), cur)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func running() metav1.Condition {
	return metav1.Condition{Type: ferryv1.PipelineSucceededCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.PipelineRunningReason, Message: "pipeline running"}
}

func ready(status metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: ferryv1.ReadyCondition, Status: status, Reason: reason, Message: msg}
}

// waitReported waits for the Build to record state and GitLab's latest ferry status to be it.
func (e *env) waitReported(b *ferryv1.Build, state gitlab.State) []gitlabsim.CommitStatus {
	e.t.Helper()
	var rows []gitlabsim.CommitStatus
	testutil.Eventually(e.t, fmt.Sprintf("Build %s reported %s", b.Name, state), func() (bool, error) {
		cur := &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return false, err
		}
		rows = e.fake.Statuses(e.gitlabID, b.Spec.Revision)
		if len(rows) == 0 {
			return false, fmt.Errorf("no status yet, reportedState %q", cur.Status.ReportedState)
		}
		last := rows[len(rows)-1]
		return cur.Status.ReportedState == string(state) && last.Status == string(state), fmt.Errorf("reportedState %q, GitLab %q", cur.Status.ReportedState, last.Status)
	})
	return rows
}

// statusPosts are the reporter's commit-status requests for a commit.
func (e *env) statusPosts(sha string) []gitlabsim.Call {
	var out []gitlabsim.Call
	for _, c := range e.fake.Calls() {
		if c.Method == http.MethodPost && strings.HasSuffix(c.Path, "/statuses/"+sha) {
			out = append(out, c)
		}
	}
	return out
}

func TestReportsTheBuildLifecycle(t *testing.T) {
	e := newEnv(t)
	e.project("shop", nil)
	b := e.build("shop", "refs/heads/main", nil)

	rows := e.waitReported(b, gitlab.StatePending)
	st := rows[0]
	if st.Name != "ferry" || st.Ref != "main" || st.TargetURL == nil || *st.TargetURL != uiURL+"/builds/"+e.ns+"/"+b.Name || *st.Description != "Build queued" {
		t.Errorf("pending status = %+v", st)
	}
	e.setConditions(b, "", running())
	e.waitReported(b, gitlab.StateRunning)
	image := "harbor.example.com/team/shop@sha256:" + strings.Repeat("b", 64)
	e.setConditions(b, image, ready(metav1.ConditionTrue, ferryv1.SucceededReason, "image pushed"),
		metav1.Condition{Type: ferryv1.PipelineSucceededCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason})
	rows = e.waitReported(b, gitlab.StateSuccess)
	if len(rows) != 1 || *rows[0].Description != "Image pushed: "+image {
		t.Errorf("GitLab keeps one status row through pending → running → success: %+v", rows)
	}

	// More events on a finished Build report nothing.
	e.setConditions(b, image, ready(metav1.ConditionTrue, ferryv1.SucceededReason, "image pushed again"))
	e.touch(b)
	posts := e.settledPosts(b.Spec.Revision, 3)
	for _, p := range posts {
		if p.Status != http.StatusCreated || p.User != "ferry-bot" || p.Host != e.fake.Host() {
			t.Errorf("status post %+v", p)
		}
	}
}

// touch changes the Build's metadata so that the reporter looks at it again.
func (e *env) touch(b *ferryv1.Build) {
	e.t.Helper()
	patch := fmt.Appendf(nil, `{"metadata":{"labels":{"touched":"%d"}}}`, time.Now().UnixNano())
	if err := e.c.Patch(context.Background(), b, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		e.t.Fatal(err)
	}
}

// settledPosts waits until the reporter has seen the Build's latest version and returns the
// status posts, failing when there are not exactly want.
func (e *env) settledPosts(sha string, want int) []gitlabsim.Call {
	e.t.Helper()
	// The reporter handles events in order: a Build created after the touched one and reported
	// proves the touch was processed.
	marker := e.build("shop", "refs/heads/marker", nil)
	e.waitReported(marker, gitlab.StatePending)
	posts := e.statusPosts(sha)
	if len(posts) != want {
		var bodies []string
		for _, p := range posts {
			bodies = append(bodies, string(p.Body))
		}
		e.t.Errorf("%d status posts, want %d: %s", len(posts), want, strings.Join(bodies, "; "))
	}
	return posts
}

func TestNeverGoesBackOrRepeats(t *testing.T) {
	e := newEnv(t)
	e.project("shop", nil)
	b := e.build("shop", "refs/heads/main", nil)
	e.setConditions(b, "", running())
	e.waitReported(b, gitlab.StateRunning)
	// The pipeline run is re-created: the Build looks pending again. GitLab refuses running →
	// pending, so Ferry does not send it.
	e.setConditions(b, "")
	e.touch(b)
	// pending (or not, if the Build ran before the first report) and running, never pending again.
	posts := e.statusPosts(b.Spec.Revision)
	e.settledPosts(b.Spec.Revision, len(posts))
	if last := posts[len(posts)-1]; !strings.Contains(string(last.Body), `"state":"running"`) {
		t.Errorf("the last post is %s", last.Body)
	}
	for _, c := range e.fake.Calls() {
		if c.Status == http.StatusBadRequest {
			t.Errorf("GitLab refused a post: %+v %s", c, c.Body)
		}
	}
	cur := &ferryv1.Build{}
	_ = e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur)
	if cur.Status.ReportedState != "running" {
		t.Errorf("reportedState = %q", cur.Status.ReportedState)
	}
}

func TestCancelledAndFailed(t *testing.T) {
	e := newEnv(t)
	e.project("shop", nil)
	superseded := e.build("shop", "refs/heads/main", nil)
	e.setConditions(superseded, "", running(), ready(metav1.ConditionFalse, ferryv1.SupersededReason, "superseded by shop-99"))
	rows := e.waitReported(superseded, gitlab.StateCanceled)
	if *rows[len(rows)-1].Description != "Build cancelled: superseded by shop-99" {
		t.Errorf("description %q", *rows[len(rows)-1].Description)
	}
	tag := e.build("shop", "refs/tags/v1.2.0", nil)
	e.setConditions(tag, "", ready(metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason, ".ferry.yaml:3:1: unknown field \"stak\""))
	rows = e.waitReported(tag, gitlab.StateFailed)
	if rows[0].Ref != "v1.2.0" || !strings.Contains(*rows[0].Description, ".ferry.yaml:3:1") {
		t.Errorf("tag status %+v", rows[0])
	}
}

func TestMergeRequestNoteOnce(t *testing.T) {
	e := newEnv(t)
	e.project("shop", func(p *ferryv1.Project) { p.Spec.GitLab.ProjectID = e.gitlabID })
	iid, err := e.fake.AddMergeRequest(e.gitlabID, gitlabsim.MergeRequest{SourceBranch: "feat/x", Title: "Add x"})
	if err != nil {
		t.Fatal(err)
	}
	b := e.build("shop", fmt.Sprintf("refs/merge-requests/%d/head", iid), func(b *ferryv1.Build) {
		b.Spec.Trigger = ferryv1.BuildTrigger{Kind: ferryv1.TriggerMergeRequest, MergeRequestIID: iid, User: "bob"}
		b.Annotations = map[string]string{ferryv1.GitLabSourceBranchAnnotation: "feat/x"}
	})
	rows := e.waitReported(b, gitlab.StatePending)
	if rows[0].Ref != "feat/x" {
		t.Errorf("an MR status names the source branch, got %q", rows[0].Ref)
	}
	if n := len(e.fake.Notes(e.gitlabID, iid)); n != 0 {
		t.Fatalf("%d notes before the Build finished", n)
	}
	e.setConditions(b, "", ready(metav1.ConditionFalse, ferryv1.PipelineFailedReason, "step test failed: exit code 1\n/merge"))
	e.waitReported(b, gitlab.StateFailed)
	waitNoted(t, e, b)
	notes := e.fake.Notes(e.gitlabID, iid)
	if len(notes) != 1 || !strings.Contains(notes[0].Body, "failed") || len(notes[0].QuickActions) != 0 {
		t.Fatalf("notes = %+v", notes)
	}

	// Further events, a restart, and even a lost annotation (a crash between posting the note and
	// recording it) post no second note.
	e.touch(b)
	e.stop()
	cur := &ferryv1.Build{}
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
		t.Fatal(err)
	}
	delete(cur.Annotations, ferryv1.GitLabNoteAnnotation)
	if err := e.c.Update(context.Background(), cur); err != nil {
		t.Fatal(err)
	}
	e.start()
	waitNoted(t, e, b)
	if n := len(e.fake.Notes(e.gitlabID, iid)); n != 1 {
		t.Fatalf("%d notes, want exactly 1", n)
	}
}

func waitNoted(t *testing.T, e *env, b *ferryv1.Build) {
	t.Helper()
	testutil.Eventually(t, "the note to be recorded on the Build", func() (bool, error) {
		cur := &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return false, err
		}
		return cur.Annotations[ferryv1.GitLabNoteAnnotation] != "", nil
	})
}

func TestRetriesGitLabFailures(t *testing.T) {
	e := newEnv(t)
	e.project("shop", nil)
	// A short outage: the client retries within the reconcile.
	e.fake.Inject(gitlabsim.Fault{PathContains: "/statuses/", Status: http.StatusServiceUnavailable, Times: 2})
	e.fake.Inject(gitlabsim.Fault{PathContains: "/statuses/", Status: http.StatusTooManyRequests, Times: 1, RetryAfter: "1"})
	b := e.build("shop", "refs/heads/main", nil)
	e.waitReported(b, gitlab.StatePending)
	if posts := e.statusPosts(b.Spec.Revision); len(posts) != 4 {
		t.Errorf("%d posts, want 2×503, 1×429, then success", len(posts))
	}

	// A long outage: reporting keeps failing, the Build is untouched, and once GitLab is back the
	// newest state is reported.
	e.fake.Inject(gitlabsim.Fault{PathContains: "/statuses/", Status: http.StatusBadGateway})
	e.setConditions(b, "", running())
	testutil.Eventually(t, "failed attempts", func() (bool, error) {
		return len(e.statusPosts(b.Spec.Revision)) >= 8, nil
	})
	cur := &ferryv1.Build{}
	_ = e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur)
	if cur.Status.ReportedState != "pending" || len(cur.Status.Conditions) != 1 || cur.Status.Conditions[0].Type != ferryv1.PipelineSucceededCondition {
		t.Errorf("the outage changed the Build: %+v", cur.Status)
	}
	e.setConditions(b, "", ready(metav1.ConditionTrue, ferryv1.SucceededReason, "done"))
	e.fake.ClearFaults()
	e.waitReported(b, gitlab.StateSuccess)
}

func TestTokenOnlyGoesToTheProjectsGitLab(t *testing.T) {
	e := newEnv(t)
	var leaked atomic.Int32
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("PRIVATE-TOKEN") != "" || r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte(`{"id":1}`))
	}))
	defer elsewhere.Close()
	e.project("shop", nil)
	e.fake.Inject(gitlabsim.Fault{PathContains: "/statuses/", Status: http.StatusTemporaryRedirect, Location: elsewhere.URL + "/api/v4/projects/1/statuses/x"})
	b := e.build("shop", "refs/heads/main", nil)
	testutil.Eventually(t, "a warning event on the Build", func() (bool, error) {
		ev := findEvent(t, e, b)
		return ev != nil && strings.Contains(ev.Note, "refusing to send the GitLab token to another host"), nil
	})
	if leaked.Load() != 0 {
		t.Fatalf("the token reached another host %d times", leaked.Load())
	}
	assertNoToken(t, e)
}

func TestProjectsWithoutTokenAndMissingSecrets(t *testing.T) {
	e := newEnv(t)
	e.project("quiet", func(p *ferryv1.Project) { p.Spec.GitLab.TokenSecretRef = nil })
	e.project("shop", nil)
	e.project("nosecret", func(p *ferryv1.Project) {
		p.Spec.GitLab.TokenSecretRef = &ferryv1.SecretKeyReference{Name: "missing", Key: "api"}
	})
	quiet := e.build("quiet", "refs/heads/main", nil)
	nosecret := e.build("nosecret", "refs/heads/main", nil)
	e.waitReported(e.build("shop", "refs/heads/main", nil), gitlab.StatePending)
	testutil.Eventually(t, "a warning about the missing Secret", func() (bool, error) {
		ev := findEvent(t, e, nosecret)
		return ev != nil && strings.Contains(ev.Note, "the GitLab token Secret "+e.ns+"/missing of Project nosecret does not exist"), nil
	})
	for _, b := range []*ferryv1.Build{quiet, nosecret} {
		if posts := e.statusPosts(b.Spec.Revision); len(posts) != 0 {
			t.Errorf("%s: %d posts", b.Name, len(posts))
		}
	}
	// The Secret appears; the next change of the Build is reported.
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "missing"}, Data: map[string][]byte{"api": []byte(apiToken)}}
	if err := e.c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	e.setConditions(nosecret, "", running())
	e.waitReported(nosecret, gitlab.StateRunning)
	assertNoToken(t, e)
}

func TestForkMergeRequestStatusGoesToTheFork(t *testing.T) {
	e := newEnv(t)
	fork := e.fake.AddProject(gitlabsim.Project{PathWithNamespace: "contributor/shop"})
	e.project("shop", nil)
	iid, _ := e.fake.AddMergeRequest(e.gitlabID, gitlabsim.MergeRequest{SourceBranch: "fix", SourceProjectID: fork})
	b := e.build("shop", fmt.Sprintf("refs/merge-requests/%d/head", iid), func(b *ferryv1.Build) {
		b.Spec.Trigger = ferryv1.BuildTrigger{Kind: ferryv1.TriggerMergeRequest, MergeRequestIID: iid}
		b.Annotations = map[string]string{ferryv1.GitLabSourceBranchAnnotation: "fix", ferryv1.GitLabSourceProjectAnnotation: fmt.Sprint(fork)}
	})
	e.setConditions(b, "", ready(metav1.ConditionTrue, ferryv1.SucceededReason, "ok"))
	waitNoted(t, e, b)
	if rows := e.fake.Statuses(fork, b.Spec.Revision); len(rows) != 1 || rows[0].Status != "success" || rows[0].Ref != "fix" {
		t.Errorf("fork statuses = %+v", rows)
	}
	if n := len(e.fake.Notes(e.gitlabID, iid)); n != 1 {
		t.Errorf("the note goes to the target project's MR: %d notes", n)
	}
}

func findEvent(t *testing.T, e *env, b *ferryv1.Build) *eventsv1.Event {
	t.Helper()
	var list eventsv1.EventList
	if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		ev := &list.Items[i]
		if ev.Regarding.Name == b.Name && ev.Type == corev1.EventTypeWarning && ev.Reason == ferryv1.GitLabReportFailedReason {
			return ev
		}
	}
	return nil
}

// assertNoToken checks the namespace's events and Builds for the token.
func assertNoToken(t *testing.T, e *env) {
	t.Helper()
	var events eventsv1.EventList
	var builds ferryv1.BuildList
	if err := e.c.List(context.Background(), &events, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	if err := e.c.List(context.Background(), &builds, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	for _, obj := range []any{events.Items, builds.Items} {
		b, _ := json.Marshal(obj)
		if strings.Contains(string(b), apiToken) {
			t.Errorf("the token appears in %T", obj)
		}
	}
}
