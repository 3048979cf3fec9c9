package gitlabdeploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/gitlabdeploy"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// apiToken must never appear in a log line, event, condition or error.
const apiToken = "glpat-deployments-token-that-must-not-leak-7"

const uiURL = "https://ferry.example.com"

var logs *testutil.Logs

func TestMain(m *testing.M) {
	logs = testutil.CaptureLogs()
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{})
	os.Exit(logs.Leaked(code, "the GitLab token", apiToken))
}

// env is a namespace, a simulated GitLab with a populated repository, a Project, an Environment,
// a Build on main, and the manager running only the deployment reporter.
type env struct {
	t        *testing.T
	c        client.Client
	ns       string
	fake     *gitlabsim.Server
	gitlabID int64
	envName  string
	sha      string
	build    *ferryv1.Build
	stop     func()
}

func newEnv(t *testing.T, envAnnotations map[string]string) *env {
	t.Helper()
	hub := testutil.CurrentHub(t)
	fake := gitlabsim.New()
	t.Cleanup(fake.Close)
	fake.AddUser("ferry-bot", apiToken)
	e := &env{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), fake: fake}
	e.gitlabID = fake.AddProject(gitlabsim.Project{PathWithNamespace: "group/sub/shop"})
	sha, err := fake.AddCommit(e.gitlabID, gitlabsim.Commit{Message: "ship it"})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.SetBranch(e.gitlabID, "main", sha); err != nil {
		t.Fatal(err)
	}
	e.sha = sha
	ctx := context.Background()
	token := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "shop-gitlab"}, Data: map[string][]byte{"token": []byte(apiToken)}}
	if err := e.c.Create(ctx, token); err != nil {
		t.Fatal(err)
	}
	e.envName = releasetest.Unique("dev")
	environment := releasetest.Environment(e.envName, nil, "c1")
	environment.Annotations = envAnnotations
	releasetest.CreateCleanly(t, e.c, environment)
	p := releasetest.Project(e.ns, "shop", e.envName)
	p.Spec.GitLab.URL = fake.URL
	p.Spec.GitLab.ProjectPath = "group/sub/shop"
	p.Spec.GitLab.TokenSecretRef = &ferryv1.SecretKeyReference{Name: token.Name}
	if err := e.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "shop-1", Labels: map[string]string{ferryv1.ProjectLabel: "shop"}},
		Spec:       ferryv1.BuildSpec{Project: "shop", Revision: sha, Ref: "refs/heads/main", Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice"}},
	}
	if err := e.c.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	b.Status.Image = releasetest.Image(e.ns)
	e.build = b
	return e
}

// start runs the manager with the deployment reporter alone, or with the named controllers
// (again after stop: a restart).
func (e *env) start(controllers ...string) {
	if len(controllers) == 0 {
		controllers = []string{"gitlabdeploy"}
	}
	hub := testutil.CurrentHub(e.t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
	if err := hub.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		e.t.Fatal(err)
	}
	m, err := manager.New(hub.Config, manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0",
		Controllers: controllers, UIBaseURL: uiURL,
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

// release creates a Release of the Build, with deploy settings when the release controller runs.
func (e *env) release(name string, annotations map[string]string, deploy ...*ferryv1.DeploySpec) *ferryv1.Release {
	e.t.Helper()
	rel := releasetest.Release(e.ns, name, "shop", e.build)
	rel.Annotations = annotations
	if len(deploy) > 0 {
		rel.Spec.Deploy = deploy[0]
	}
	if err := e.c.Create(context.Background(), rel); err != nil {
		e.t.Fatal(err)
	}
	return rel
}

// setEnv plays the release controller: it writes the environment's conditions.
func (e *env) setEnv(rel *ferryv1.Release, completed bool, conds ...metav1.Condition) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &ferryv1.Release{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), cur); err != nil {
			return err
		}
		es := ferryv1.ReleaseEnvironmentStatus{Name: e.envName}
		now := metav1.Now()
		es.StartTime = &now
		if completed {
			es.CompletionTime = &now
		}
		for _, c := range conds {
			c.LastTransitionTime = now
			meta.SetStatusCondition(&es.Conditions, c)
		}
		cur.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
		return e.c.Status().Update(context.Background(), cur)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func cond(t, status, reason string) metav1.Condition {
	return metav1.Condition{Type: t, Status: metav1.ConditionStatus(status), Reason: reason, Message: reason}
}

func (e *env) rollingOut(rel *ferryv1.Release) {
	e.setEnv(rel, false, cond(ferryv1.RolledOutCondition, "Unknown", ferryv1.RollingOutReason), cond(ferryv1.ReadyCondition, "Unknown", ferryv1.RollingOutReason))
}

func (e *env) succeeded(rel *ferryv1.Release) {
	e.setEnv(rel, true, cond(ferryv1.RolledOutCondition, "True", ferryv1.HealthyReason), cond(ferryv1.ReadyCondition, "True", ferryv1.SucceededReason))
}

// waitDeployments waits until the fake has exactly the wanted statuses, in order of creation.
func (e *env) waitDeployments(want ...string) []gitlabsim.Deployment {
	e.t.Helper()
	var got []gitlabsim.Deployment
	testutil.Eventually(e.t, fmt.Sprintf("GitLab deployments %v", want), func() (bool, error) {
		got = e.fake.Deployments(e.gitlabID)
		var statuses []string
		for _, d := range got {
			statuses = append(statuses, d.Status)
		}
		if strings.Join(statuses, ",") != strings.Join(want, ",") {
			return false, fmt.Errorf("deployments %v", statuses)
		}
		return true, nil
	})
	return got
}

// calls counts the fake's answered calls by method and a path part, by status; a part ending in
// "/deployments" matches only the collection.
func (e *env) calls(method, part string) map[int]int {
	out := map[int]int{}
	for _, c := range e.fake.Calls() {
		if c.Method == method && (strings.HasSuffix(c.Path, part) || (!strings.HasSuffix(part, "/deployments") && strings.Contains(c.Path, part))) {
			out[c.Status]++
		}
	}
	return out
}

func (e *env) records(rel *ferryv1.Release) gitlabdeploy.Records {
	e.t.Helper()
	cur := &ferryv1.Release{}
	if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), cur); err != nil {
		e.t.Fatal(err)
	}
	out := gitlabdeploy.Records{}
	if v := cur.Annotations[ferryv1.GitLabDeploymentsAnnotation]; v != "" {
		if err := json.Unmarshal([]byte(v), &out); err != nil {
			e.t.Fatal(err)
		}
	}
	return out
}

// TestRolloutRunningThenSuccess: the rollout's start creates one running deployment of the
// Build's branch and commit in the environment, the GitLab environment links to the Release's
// page, and the rollout's success updates the same deployment.
func TestRolloutRunningThenSuccess(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	rel := e.release("shop-1", nil)
	e.rollingOut(rel)
	got := e.waitDeployments("running")
	d := got[0]
	if d.Environment.Name != e.envName || d.Ref != "main" || d.SHA != e.sha || d.Tag || d.User.Username != "ferry-bot" {
		t.Errorf("deployment %+v: want environment %s, ref main, sha %s, not a tag, by ferry-bot", d, e.envName, e.sha)
	}
	wantURL := uiURL + "/releases/" + e.ns + "/shop-1"
	testutil.Eventually(t, "the environment's external URL", func() (bool, error) {
		envs := e.fake.Environments(e.gitlabID)
		if len(envs) != 1 || envs[0].ExternalURL == nil {
			return false, fmt.Errorf("environments %+v", envs)
		}
		return *envs[0].ExternalURL == wantURL, fmt.Errorf("external_url %s, want %s", *envs[0].ExternalURL, wantURL)
	})
	e.succeeded(rel)
	got = e.waitDeployments("success")
	if got[0].ID != d.ID {
		t.Errorf("the success went to deployment %d, not to the running one %d", got[0].ID, d.ID)
	}
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusCreated] != 1 || len(n) != 1 {
		t.Errorf("POST /deployments answers %v, want exactly one 201", n)
	}
	testutil.Eventually(t, "the success recorded on the Release", func() (bool, error) {
		rec := e.records(rel)[e.envName]
		return rec.ID == d.ID && rec.Status == gitlab.DeploymentSuccess, fmt.Errorf("record %+v, want deployment %d success", rec, d.ID)
	})
	testutil.Eventually(t, "the finalizer gone once no deployment is open", func() (bool, error) {
		cur := &ferryv1.Release{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), cur); err != nil {
			return false, err
		}
		return !slices.Contains(cur.Finalizers, ferryv1.GitLabDeploymentsFinalizer), fmt.Errorf("finalizers %v", cur.Finalizers)
	})
}

// TestDeletedMidRolloutIsCanceled: a Release deleted while its deployment runs has it canceled
// (through GitLab's 5xx answers) before it goes.
func TestDeletedMidRolloutIsCanceled(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	rel := e.release("shop-1", nil)
	e.rollingOut(rel)
	e.waitDeployments("running")
	testutil.Eventually(t, "the finalizer while the deployment runs", func() (bool, error) {
		cur := &ferryv1.Release{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), cur); err != nil {
			return false, err
		}
		return slices.Contains(cur.Finalizers, ferryv1.GitLabDeploymentsFinalizer), fmt.Errorf("finalizers %v", cur.Finalizers)
	})
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPut, PathContains: "/deployments/", Status: http.StatusServiceUnavailable, Times: 3})
	if err := e.c.Delete(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	e.waitDeployments("canceled")
	testutil.Eventually(t, "the Release gone", func() (bool, error) {
		err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), &ferryv1.Release{})
		return apierrors.IsNotFound(err), err
	})
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusCreated] != 1 {
		t.Errorf("POST /deployments answers %v, want exactly one 201", n)
	}
}

// TestRolloutOutcomes: a failed rollout is a failed deployment; a superseded or cancelled one is
// canceled; an environment whose rollout never started (waiting for a gate) has none.
func TestRolloutOutcomes(t *testing.T) {
	cases := []struct {
		name   string
		reason string
		want   string
	}{
		{"rolled back", ferryv1.RolledBackReason, gitlabsim.DeploymentFailed},
		{"rollout failed", ferryv1.RolloutFailedReason, gitlabsim.DeploymentFailed},
		{"superseded", ferryv1.SupersededReason, gitlabsim.DeploymentCanceled},
		{"cancelled", ferryv1.CancelledReason, gitlabsim.DeploymentCanceled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.start()
			rel := e.release("shop-1", nil)
			e.setEnv(rel, false, cond(ferryv1.ApprovedCondition, "Unknown", ferryv1.WaitingForApprovalReason), cond(ferryv1.ReadyCondition, "Unknown", ferryv1.WaitingForApprovalReason))
			e.rollingOut(rel)
			e.waitDeployments("running")
			e.setEnv(rel, true, cond(ferryv1.RolledOutCondition, "False", c.reason), cond(ferryv1.ReadyCondition, "False", c.reason))
			e.waitDeployments(c.want)
		})
	}
}

// TestWaitingForGateMakesNoDeployment: until the rollout starts there is nothing to report.
func TestWaitingForGateMakesNoDeployment(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	waiting := e.release("shop-1", nil)
	e.setEnv(waiting, false, cond(ferryv1.ApprovedCondition, "Unknown", ferryv1.WaitingForApprovalReason), cond(ferryv1.ReadyCondition, "Unknown", ferryv1.WaitingForApprovalReason))
	// A second Release that does roll out gives the reporter its turn at the first meanwhile; a
	// deployment for the waiting one would also break waitDeployments' exact list.
	other := e.release("shop-2", nil)
	e.rollingOut(other)
	e.waitDeployments("running")
	if rec, ok := e.records(waiting)[e.envName]; ok {
		t.Errorf("a Release waiting for its gate recorded %+v", rec)
	}
}

// TestRateLimitedThenSuccess: GitLab answering 429 with Retry-After delays the record; it is
// made once.
func TestRateLimitedThenSuccess(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/deployments", Status: http.StatusTooManyRequests, RetryAfter: "1", Times: 2})
	e.start()
	rel := e.release("shop-1", nil)
	e.rollingOut(rel)
	e.waitDeployments("running")
	e.succeeded(rel)
	e.waitDeployments("success")
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusTooManyRequests] != 2 || n[http.StatusCreated] != 1 {
		t.Errorf("POST /deployments answers %v, want two 429 then one 201", n)
	}
}

// TestServerErrorsThenSuccess: 5xx answers to the create and to the update delay the records;
// none is lost or doubled.
func TestServerErrorsThenSuccess(t *testing.T) {
	e := newEnv(t, nil)
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/deployments", Status: http.StatusBadGateway, Times: 3})
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPut, PathContains: "/deployments/", Status: http.StatusServiceUnavailable, Times: 2})
	e.start()
	rel := e.release("shop-1", nil)
	e.rollingOut(rel)
	e.waitDeployments("running")
	e.succeeded(rel)
	e.waitDeployments("success")
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusBadGateway] != 3 || n[http.StatusCreated] != 1 {
		t.Errorf("POST /deployments answers %v, want three 502 then one 201", n)
	}
	if n := e.calls(http.MethodPut, "/deployments/"); n[http.StatusServiceUnavailable] != 2 || n[http.StatusOK] != 1 {
		t.Errorf("PUT answers %v, want two 503 then one 200", n)
	}
}

// TestRestartMakesNoDuplicate: a new manager (new reconciler, same cluster state) updates the
// deployment the first one created instead of creating another.
func TestRestartMakesNoDuplicate(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	rel := e.release("shop-1", nil)
	e.rollingOut(rel)
	first := e.waitDeployments("running")[0]
	testutil.Eventually(t, "the deployment recorded on the Release", func() (bool, error) {
		rec := e.records(rel)[e.envName]
		return rec.ID == first.ID && rec.URL != "", fmt.Errorf("record %+v", rec)
	})
	e.stop()
	e.succeeded(rel)
	e.start()
	got := e.waitDeployments("success")
	if got[0].ID != first.ID {
		t.Errorf("after the restart deployment %d succeeded, not %d", got[0].ID, first.ID)
	}
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusCreated] != 1 {
		t.Errorf("POST /deployments answers %v, want exactly one 201", n)
	}
}

// TestCrashBetweenCreateAndRecord: a manager that created the deployment and stopped before
// recording its ID left only the ID GitLab's list stood at; the next one finds the deployment
// (same environment, ref and commit, newer than that ID) and creates none, and an older
// deployment of the same commit is left alone.
func TestCrashBetweenCreateAndRecord(t *testing.T) {
	e := newEnv(t, nil)
	api, err := gitlab.New(e.fake.URL, apiToken, gitlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	project := gitlab.ProjectRef{Path: "group/sub/shop"}
	older, err := api.CreateDeployment(ctx, project, gitlab.NewDeployment{Environment: e.envName, Ref: "main", SHA: e.sha, Status: gitlab.DeploymentSuccess})
	if err != nil {
		t.Fatal(err)
	}
	crashed, err := api.CreateDeployment(ctx, project, gitlab.NewDeployment{Environment: e.envName, Ref: "main", SHA: e.sha, Status: gitlab.DeploymentRunning})
	if err != nil {
		t.Fatal(err)
	}
	record, _ := json.Marshal(gitlabdeploy.Records{e.envName: {After: older.ID, Status: "creating"}})
	rel := e.release("shop-1", map[string]string{ferryv1.GitLabDeploymentsAnnotation: string(record)})
	e.rollingOut(rel)
	e.fake.ResetCalls()
	e.start()
	e.succeeded(rel)
	got := e.waitDeployments("success", "success")
	if got[1].ID != crashed.ID || got[0].ID != older.ID {
		t.Errorf("deployments %+v: want the older %d untouched and the crashed one %d succeeded", got, older.ID, crashed.ID)
	}
	if n := e.calls(http.MethodPost, "/deployments"); len(n) != 0 {
		t.Errorf("the reporter created a deployment (%v) instead of finding its own", n)
	}
	testutil.Eventually(t, "the found deployment recorded", func() (bool, error) {
		rec := e.records(rel)[e.envName]
		return rec.ID == crashed.ID && rec.Status == gitlab.DeploymentSuccess, fmt.Errorf("record %+v", rec)
	})
}

// TestExternalURL: an Environment's application URL becomes the GitLab environment's external
// URL; a javascript: or credential-carrying one is refused with an event naming the annotation,
// and GitLab links to the Release instead.
func TestExternalURL(t *testing.T) {
	cases := []struct {
		name, annotation, want string
	}{
		{"app URL", "https://shop.dev.example.com/", "https://shop.dev.example.com/"},
		{"javascript", "javascript:alert(document.cookie)", ""},
		{"credentials", "https://admin:hunter2@shop.example.com/", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, map[string]string{ferryv1.GitLabExternalURLAnnotation: c.annotation})
			e.start()
			rel := e.release("shop-1", nil)
			e.rollingOut(rel)
			e.waitDeployments("running")
			want := c.want
			if want == "" {
				want = uiURL + "/releases/" + e.ns + "/shop-1"
			}
			testutil.Eventually(t, "the environment's external URL", func() (bool, error) {
				envs := e.fake.Environments(e.gitlabID)
				if len(envs) != 1 || envs[0].ExternalURL == nil {
					return false, fmt.Errorf("environments %+v", envs)
				}
				return *envs[0].ExternalURL == want, fmt.Errorf("external_url %s, want %s", *envs[0].ExternalURL, want)
			})
			if c.want != "" {
				return
			}
			testutil.Eventually(t, "an event naming the annotation", func() (bool, error) {
				var list eventsv1.EventList
				if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
					return false, err
				}
				for _, ev := range list.Items {
					if ev.Reason == ferryv1.GitLabReportFailedReason && strings.Contains(ev.Note, ferryv1.GitLabExternalURLAnnotation) {
						if strings.Contains(ev.Note, "hunter2") {
							return false, fmt.Errorf("the event shows the password: %s", ev.Note)
						}
						return true, nil
					}
				}
				return false, fmt.Errorf("%d events, none about the annotation", len(list.Items))
			})
		})
	}
}

// TestRefusedDeploymentIsAnEvent: GitLab refusing the deployment for good (a branch it does not
// have) is an event on the Release, not a retry loop, and the token stays out of it.
func TestRefusedDeploymentIsAnEvent(t *testing.T) {
	e := newEnv(t, nil)
	if err := e.c.Delete(context.Background(), e.build); err != nil {
		t.Fatal(err)
	}
	b := e.build.DeepCopy()
	b.ObjectMeta = metav1.ObjectMeta{Namespace: e.ns, Name: "shop-2", Labels: b.Labels}
	b.Spec.Ref = "refs/heads/gone"
	if err := e.c.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b.Status.Image = e.build.Status.Image
	e.build = b
	e.start()
	rel := e.release("shop-2", nil)
	e.rollingOut(rel)
	testutil.Eventually(t, "a GitLabReportFailed event", func() (bool, error) {
		var list eventsv1.EventList
		if err := e.c.List(context.Background(), &list, client.InNamespace(e.ns)); err != nil {
			return false, err
		}
		for _, ev := range list.Items {
			if ev.Reason == ferryv1.GitLabReportFailedReason && strings.Contains(ev.Note, "The branch or tag does not exist") {
				if strings.Contains(ev.Note, apiToken) {
					return false, fmt.Errorf("the event shows the token")
				}
				return true, nil
			}
		}
		return false, fmt.Errorf("%d events", len(list.Items))
	})
	if got := e.fake.Deployments(e.gitlabID); len(got) != 0 {
		t.Errorf("deployments %+v, want none", got)
	}
	if n := e.calls(http.MethodPost, "/deployments"); n[http.StatusBadRequest] != 1 {
		t.Errorf("POST /deployments answers %v, want one 400 and no retry", n)
	}
	// GitLab saved nothing: the Release is not held for a deployment that does not exist.
	testutil.Eventually(t, "no finalizer", func() (bool, error) {
		cur := &ferryv1.Release{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(rel), cur); err != nil {
			return false, err
		}
		return !slices.Contains(cur.Finalizers, ferryv1.GitLabDeploymentsFinalizer), fmt.Errorf("finalizers %v", cur.Finalizers)
	})
}
