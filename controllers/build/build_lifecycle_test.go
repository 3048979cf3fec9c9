package build_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitserver"
	ftestutil "github.com/ferryci/ferry/internal/testutil"
)

func cancelBuild(t *testing.T, c client.Client, ns, name, reason string) {
	t.Helper()
	body := fmt.Sprintf(`{"spec":{"cancelled":true,"cancelReason":%q}}`, reason)
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := c.Patch(context.Background(), b, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
		t.Fatal(err)
	}
}

// waitCancelRequested waits for the PipelineRun's spec.status to say Cancelled.
func (e *env) waitCancelRequested(pr *pipelinev1.PipelineRun) {
	e.t.Helper()
	ftestutil.Eventually(e.t, "PipelineRun "+pr.Name+" spec.status Cancelled", func() (bool, error) {
		cur := &pipelinev1.PipelineRun{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(pr), cur); err != nil {
			return false, err
		}
		return cur.Spec.Status == pipelinev1.PipelineRunSpecStatusCancelled, fmt.Errorf("spec.status %q", cur.Spec.Status)
	})
}

// TestCancel: cancelling a running Build cancels its PipelineRun; the Build is Cancelled once
// Tekton stopped it. A Build cancelled before it ran never gets a PipelineRun.
func TestCancel(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("running", sha, "refs/heads/main")
	pr := e.waitPipelineRun("running")
	e.tekton(pr, corev1.ConditionUnknown, "Running", "", nil)
	e.waitReady("running", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)

	cancelBuild(t, e.c, e.ns, "running", "cancelled with ferry cancel")
	e.waitCancelRequested(pr)
	// Tekton says Cancelled with Unknown while it stops the pods: still running.
	e.tekton(pr, corev1.ConditionUnknown, "Cancelled", "PipelineRun is being cancelled", nil)
	b := e.waitReady("running", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "Cancellation requested") {
		t.Errorf("message %q", msg)
	}
	e.tekton(pr, corev1.ConditionFalse, "Cancelled", `PipelineRun "x" was cancelled`, nil)
	b = e.waitReady("running", metav1.ConditionFalse, ferryv1.CancelledReason)
	if condition(b, ferryv1.PipelineSucceededCondition) != "False/Cancelled" || !strings.Contains(conditionMessage(b, ferryv1.ReadyCondition), "cancelled with ferry cancel") {
		t.Errorf("conditions = %+v", b.Status.Conditions)
	}

	// Cancelled before the controller saw it: no PipelineRun at all.
	b = &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "early"},
		Spec:       ferryv1.BuildSpec{Project: "app", Revision: sha, Ref: "refs/heads/main", Cancelled: true, CancelReason: "not wanted"},
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	e.waitReady("early", metav1.ConditionFalse, ferryv1.CancelledReason)
	if n := len(e.pipelineRuns("early")); n != 0 {
		t.Errorf("%d PipelineRuns for a Build cancelled before it ran", n)
	}
}

// TestSupersede: with supersede on, a newer Build of the same ref cancels the older running one
// (reason Superseded, naming the newer Build); other refs are left alone.
func TestSupersede(t *testing.T) {
	e := newEnv(t, func(p *ferryv1.Project) { p.Spec.Triggers.Supersede = true })
	sha1 := e.commit(okFile)
	startManager(t)
	e.createBuild("old", sha1, "refs/heads/main")
	e.createBuild("feature", sha1, "refs/heads/feature")
	oldRun := e.waitPipelineRun("old")
	e.waitPipelineRun("feature")
	e.waitReady("old", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)

	sha2 := e.commit(okFile + "# second\n")
	// Creation times count whole seconds: "new" must be created in a later second to be newer.
	oldCreated := e.build("old").CreationTimestamp
	ftestutil.Eventually(t, "the next second", func() (bool, error) {
		return time.Now().Truncate(time.Second).After(oldCreated.Time), nil
	})
	e.createBuild("new", sha2, "refs/heads/main")
	e.waitPipelineRun("new")
	e.waitCancelRequested(oldRun)
	old := e.build("old")
	if !old.Spec.Cancelled || old.Spec.CancelReason != "superseded by new" {
		t.Errorf("old spec = %+v", old.Spec)
	}
	e.tekton(oldRun, corev1.ConditionFalse, "Cancelled", "", nil)
	old = e.waitReady("old", metav1.ConditionFalse, ferryv1.SupersededReason)
	if msg := conditionMessage(old, ferryv1.ReadyCondition); !strings.Contains(msg, "superseded by new") {
		t.Errorf("message %q", msg)
	}
	for _, name := range []string{"new", "feature"} {
		if b := e.build(name); b.Spec.Cancelled {
			t.Errorf("Build %s was cancelled", name)
		}
	}
}

// TestHistory: a Project keeps its newest finished Builds up to buildHistoryLimit; older ones are
// deleted with their PipelineRuns. Unfinished Builds are never deleted.
func TestHistory(t *testing.T) {
	e := newEnv(t, func(p *ferryv1.Project) { p.Spec.BuildHistoryLimit = 2 })
	sha := e.commit(okFile)
	startManager(t)
	names := []string{"b1", "b2", "b3", "b4"}
	runs := map[string]*pipelinev1.PipelineRun{}
	for _, n := range names {
		e.createBuild(n, sha, "refs/heads/main")
		runs[n] = e.waitPipelineRun(n)
	}
	e.createBuild("running", sha, "refs/heads/main")
	e.waitPipelineRun("running")
	for _, n := range names {
		e.tekton(runs[n], corev1.ConditionTrue, "Succeeded", "", successResults(sha))
		e.waitReadyOrGone(n)
	}
	ftestutil.Eventually(t, "history pruned to 2 finished Builds", func() (bool, error) {
		list := &ferryv1.BuildList{}
		if err := e.c.List(context.Background(), list, client.InNamespace(e.ns)); err != nil {
			return false, err
		}
		var got []string
		for _, b := range list.Items {
			got = append(got, b.Name)
		}
		return strings.Join(got, ",") == "b3,b4,running", fmt.Errorf("Builds %v", got)
	})
	for n, pr := range runs {
		err := e.c.Get(context.Background(), client.ObjectKeyFromObject(pr), &pipelinev1.PipelineRun{})
		gone := client.IgnoreNotFound(err) == nil && err != nil
		if want := n == "b1" || n == "b2"; gone != want {
			t.Errorf("PipelineRun of %s gone = %v, want %v (%v)", n, gone, want, err)
		}
	}
}

// waitReadyOrGone waits for a Build to finish successfully, or to be deleted by the history limit.
func (e *env) waitReadyOrGone(name string) {
	e.t.Helper()
	ftestutil.Eventually(e.t, "Build "+name+" succeeded or pruned", func() (bool, error) {
		b := &ferryv1.Build{}
		err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, b)
		if client.IgnoreNotFound(err) == nil && err != nil {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return condition(b, ferryv1.ReadyCondition) == "True/Succeeded", fmt.Errorf("Ready %s", condition(b, ferryv1.ReadyCondition))
	})
}

// TestPrivateRepository: the Project's basic-auth Secret reads a private repository; the
// PipelineRun mounts it for the clone step only; wrong credentials are reported without the password.
func TestPrivateRepository(t *testing.T) {
	e := newEnv(t, func(p *ferryv1.Project) {
		p.Spec.Repository.CredentialsSecretRef = &ferryv1.LocalObjectReference{Name: "git"}
		p.Spec.BuildTimeout = &metav1.Duration{Duration: 30 * time.Minute}
		p.Spec.ServiceAccountName = "builder"
	})
	if err := e.git.CreateRepo("team/private", gitserver.RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	e.repo = "team/private"
	e.patchProject(fmt.Sprintf(`{"spec":{"repository":{"cloneURL":%q}}}`, e.git.RepoURL("team/private")))
	sha := e.commit(okFile)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "git"},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"username": []byte("deploy"), "password": []byte("wrong-" + gitPassword)},
	}
	if err := e.c.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	startManager(t)
	e.createBuild("private", sha, "refs/heads/main")
	ftestutil.Eventually(t, "SourceResolved=False/SourceUnavailable", func() (bool, error) {
		b := e.build("private")
		return condition(b, ferryv1.SourceResolvedCondition) == "False/SourceUnavailable", fmt.Errorf("%s: %s", condition(b, ferryv1.SourceResolvedCondition), conditionMessage(b, ferryv1.SourceResolvedCondition))
	})
	b := e.build("private")
	if msg := conditionMessage(b, ferryv1.SourceResolvedCondition); !strings.Contains(msg, "refused the credentials") || condition(b, ferryv1.ReadyCondition) != "Unknown/SourceUnavailable" {
		t.Errorf("Ready %s, message %q", condition(b, ferryv1.ReadyCondition), msg)
	}
	e.assertNoLeak("private", gitPassword)

	// The right password, in another Secret the Project now names: the Build proceeds (the
	// Project changes, so waiting Builds are retried). Only a reconcile that read the changed
	// Project can fetch, so the run has its new service account too.
	right := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "git2"},
		Type:       corev1.SecretTypeBasicAuth,
		Data:       map[string][]byte{"username": []byte("deploy"), "password": []byte(gitPassword)},
	}
	if err := e.c.Create(context.Background(), right); err != nil {
		t.Fatal(err)
	}
	e.patchProject(`{"spec":{"serviceAccountName":"builder2","repository":{"credentialsSecretRef":{"name":"git2"}}}}`)
	pr := e.waitPipelineRun("private")
	task := pr.Spec.PipelineSpec.Tasks[0].TaskSpec
	if task.Volumes[0].Secret.SecretName != "git2" || len(task.Steps[0].VolumeMounts) != 1 || len(task.Steps[1].VolumeMounts) != 0 {
		t.Errorf("volumes %+v, clone mounts %+v, user mounts %+v", task.Volumes, task.Steps[0].VolumeMounts, task.Steps[1].VolumeMounts)
	}
	if pr.Spec.Timeouts.Pipeline.Minutes() != 30 || pr.Spec.TaskRunTemplate.ServiceAccountName != "builder2" || ptr.Deref(pr.Spec.TaskRunTemplate.PodTemplate.AutomountServiceAccountToken, true) {
		t.Errorf("spec = %+v", pr.Spec)
	}
	e.assertNoLeak("private", gitPassword)
}

func (e *env) patchProject(body string) {
	e.t.Helper()
	if err := e.c.Patch(context.Background(), e.project, client.RawPatch(types.MergePatchType, []byte(body))); err != nil {
		e.t.Fatal(err)
	}
}

// TestProjectNotFound: a Build whose Project does not exist waits, stalled, and starts once the
// Project is created.
func TestProjectNotFound(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "orphan"},
		Spec:       ferryv1.BuildSpec{Project: "later", Revision: sha, Ref: "refs/heads/main"},
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	got := e.waitReady("orphan", metav1.ConditionFalse, ferryv1.ProjectNotFoundReason)
	if condition(got, ferryv1.StalledCondition) != "True/ProjectNotFound" || got.Status.CompletionTime != nil {
		t.Errorf("status = %+v", got.Status)
	}
	// Worded as the Release controller and the admission webhook word it.
	if msg := conditionMessage(got, ferryv1.ReadyCondition); msg != "project later not found in namespace "+e.ns {
		t.Errorf("Ready says %q", msg)
	}
	later := e.project.DeepCopy()
	later.ObjectMeta = metav1.ObjectMeta{Namespace: e.ns, Name: "later"}
	later.Status = ferryv1.ProjectStatus{}
	if err := e.c.Create(context.Background(), later); err != nil {
		t.Fatal(err)
	}
	e.waitPipelineRun("orphan")
	got = e.waitReady("orphan", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	if condition(got, ferryv1.StalledCondition) != "<none>" {
		t.Errorf("still stalled: %+v", got.Status.Conditions)
	}
}
