package build_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_LOGS") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

const (
	ferryImage = "registry.example.com/ferry/ferry:test"
	imageRepo  = "registry.example.com/team/app"
	stackRef   = "registry.example.com/stacks/debian@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
	digest     = "sha256:4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c4d5e6f7a8b9c0d1e2f3a4b"
	lineage    = `{"stack":{"name":"` + stackRef + `","image":"` + stackRef + `","digest":"sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"},"appLayer":"sha256:1111111111111111111111111111111111111111111111111111111111111111"}`
	okFile     = "stack: " + stackRef + "\nbuild:\n  image: golang:1.26\n  steps:\n    - name: test\n      run: go test ./...\nports: [8080]\ndeploy: {replicas: 3}\n"
)

// env is one test's namespace, git repository and Project.
type env struct {
	t       testing.TB
	c       client.Client
	ns      string
	git     *gitserver.Server
	repo    string
	project *ferryv1.Project
}

func newEnv(t testing.TB, mutate ...func(*ferryv1.Project)) *env {
	t.Helper()
	hub := testutil.CurrentHub(t)
	e := &env{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), repo: "team/app"}
	var err error
	if e.git, err = gitserver.Start(gitserver.Options{Users: map[string]string{"deploy": gitPassword}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.git.Close() })
	if err := e.git.CreateRepo(e.repo, gitserver.RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	e.project = &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "app"},
		Spec: ferryv1.ProjectSpec{
			GitLab:     ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "team/app", WebhookSecretRef: ferryv1.LocalObjectReference{Name: "hook"}},
			Repository: ferryv1.Repository{CloneURL: e.git.RepoURL(e.repo)},
			Image:      ferryv1.ImageRepository{Repository: imageRepo, PushSecretRef: &ferryv1.LocalObjectReference{Name: "push"}},
		},
	}
	for _, m := range mutate {
		m(e.project)
	}
	if err := e.c.Create(context.Background(), e.project); err != nil {
		t.Fatal(err)
	}
	return e
}

const gitPassword = "deploy-t0ken-that-must-never-leak"

func startManager(t testing.TB) {
	t.Helper()
	testutil.StartManager(t, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage})
}

// commit adds a commit with a pipeline file on main and returns its SHA.
func (e *env) commit(pipelineFile string) string {
	e.t.Helper()
	sha, err := e.git.Commit(e.repo, gitserver.Commit{Files: map[string]string{".ferry.yaml": pipelineFile, "main.go": "package main\n"}})
	if err != nil {
		e.t.Fatal(err)
	}
	return sha
}

func (e *env) createBuild(name, sha, ref string) *ferryv1.Build {
	e.t.Helper()
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec:       ferryv1.BuildSpec{Project: e.project.Name, Revision: sha, Ref: ref, Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice"}},
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

func (e *env) build(name string) *ferryv1.Build {
	e.t.Helper()
	b := &ferryv1.Build{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// waitReady waits for the Build's Ready condition to have a status and reason.
func (e *env) waitReady(name string, status metav1.ConditionStatus, reason string) *ferryv1.Build {
	e.t.Helper()
	var got *ferryv1.Build
	testutil.Eventually(e.t, fmt.Sprintf("Build %s Ready=%s/%s", name, status, reason), func() (bool, error) {
		got = &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, got); err != nil {
			return false, err
		}
		c := meta.FindStatusCondition(got.Status.Conditions, ferryv1.ReadyCondition)
		if c == nil {
			return false, fmt.Errorf("no Ready condition")
		}
		return c.Status == status && c.Reason == reason, fmt.Errorf("Ready=%s/%s: %s", c.Status, c.Reason, c.Message)
	})
	return got
}

// pipelineRuns lists the PipelineRuns of a Build.
func (e *env) pipelineRuns(build string) []pipelinev1.PipelineRun {
	e.t.Helper()
	list := &pipelinev1.PipelineRunList{}
	if err := e.c.List(context.Background(), list, client.InNamespace(e.ns), client.MatchingLabels{ferryv1.BuildLabel: build}); err != nil {
		e.t.Fatal(err)
	}
	return list.Items
}

// createTaskRun creates the TaskRun Tekton makes for the PipelineRun's one task.
func (e *env) createTaskRun(pr *pipelinev1.PipelineRun) *pipelinev1.TaskRun {
	e.t.Helper()
	tr := &pipelinev1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: pr.Name + "-build", Labels: pr.Labels},
		Spec:       pipelinev1.TaskRunSpec{TaskSpec: &pr.Spec.PipelineSpec.Tasks[0].TaskSpec.TaskSpec},
	}
	if err := e.c.Create(context.Background(), tr); err != nil {
		e.t.Fatal(err)
	}
	return tr
}

// waitPipelineRun waits for the Build's one PipelineRun.
func (e *env) waitPipelineRun(build string) *pipelinev1.PipelineRun {
	e.t.Helper()
	var pr *pipelinev1.PipelineRun
	testutil.Eventually(e.t, "the PipelineRun of Build "+build, func() (bool, error) {
		prs := e.pipelineRuns(build)
		if len(prs) == 1 {
			pr = &prs[0]
		}
		return len(prs) == 1, fmt.Errorf("%d PipelineRuns", len(prs))
	})
	return pr
}

// tekton sets a PipelineRun's status the way Tekton's controller does: the Succeeded condition,
// start and completion times, and results on success.
func (e *env) tekton(pr *pipelinev1.PipelineRun, status corev1.ConditionStatus, reason, message string, results map[string]string) {
	e.t.Helper()
	testutil.Eventually(e.t, "PipelineRun "+pr.Name+" status "+reason, func() (bool, error) {
		cur := &pipelinev1.PipelineRun{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(pr), cur); err != nil {
			return false, err
		}
		now := metav1.Now()
		if cur.Status.StartTime == nil {
			cur.Status.StartTime = &now
		}
		cur.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: status, Reason: reason, Message: message, LastTransitionTime: apis.VolatileTime{Inner: now}}}
		if status != corev1.ConditionUnknown {
			cur.Status.CompletionTime = &now
		}
		cur.Status.Results = nil
		for _, name := range []string{"IMAGE_URL", "IMAGE_DIGEST", "FERRY_LINEAGE"} {
			if v, ok := results[name]; ok {
				cur.Status.Results = append(cur.Status.Results, pipelinev1.PipelineRunResult{Name: name, Value: *pipelinev1.NewStructuredValues(v)})
			}
		}
		err := e.c.Status().Update(context.Background(), cur)
		return err == nil, err
	})
}

// successResults are what `ferry assemble` reports: IMAGE_URL is the repository only.
func successResults(string) map[string]string {
	return map[string]string{"IMAGE_URL": imageRepo, "IMAGE_DIGEST": digest, "FERRY_LINEAGE": lineage}
}

func condition(b *ferryv1.Build, typ string) string {
	c := meta.FindStatusCondition(b.Status.Conditions, typ)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

// events lists the events about a Build.
func (e *env) events(build string) []string {
	e.t.Helper()
	list := &corev1.EventList{}
	if err := e.c.List(context.Background(), list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, ev := range list.Items {
		if ev.InvolvedObject.Name == build {
			out = append(out, ev.Type+"/"+ev.Reason+": "+ev.Message)
		}
	}
	return out
}

// assertNoLeak checks a Build's status and events for a secret.
func (e *env) assertNoLeak(build, secret string) {
	e.t.Helper()
	b := e.build(build)
	if s := fmt.Sprintf("%+v", b.Status); strings.Contains(s, secret) {
		e.t.Errorf("status of Build %s contains the secret: %s", build, s)
	}
	for _, ev := range e.events(build) {
		if strings.Contains(ev, secret) {
			e.t.Errorf("event contains the secret: %s", ev)
		}
	}
}

// startStoppableManager runs the manager until the returned function is called.
func startStoppableManager(t *testing.T) func() {
	t.Helper()
	h := testutil.CurrentHub(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
	if err := h.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	m, err := manager.New(h.Config, manager.Options{Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"build"}, FerryImage: ferryImage})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

func metav1ObjectMeta(namespace, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: name}
}
