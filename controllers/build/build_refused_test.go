package build_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestPipelineRunRefusedByAQuota: a namespace whose quota allows no PipelineRun refuses the
// Build's: the Build fails at once with the quota's own words, and nothing retries it.
func TestPipelineRunRefusedByAQuota(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "no-pipelineruns"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/pipelineruns.tekton.dev": resource.MustParse("0")}},
	}
	if err := e.c.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	// What the quota controller of a cluster writes.
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{"count/pipelineruns.tekton.dev": resource.MustParse("0")}}
	if err := e.c.Status().Update(ctx, quota); err != nil {
		t.Fatal(err)
	}
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("refused", sha, "refs/heads/main")

	b := e.waitReady("refused", metav1.ConditionFalse, ferryv1.PipelineRunRefusedReason)
	ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	if !strings.Contains(ready.Message, "exceeded quota: no-pipelineruns") {
		t.Errorf("Ready says %q; want the quota's words", ready.Message)
	}
	if c := condition(b, ferryv1.PipelineSucceededCondition); c != "False/"+ferryv1.PipelineRunRefusedReason {
		t.Errorf("PipelineSucceeded = %s", c)
	}
	if c := condition(b, ferryv1.StalledCondition); c != "<none>" || b.Status.CompletionTime == nil {
		t.Errorf("a refused Build is finished, not stalled: Stalled %s, completion %v", c, b.Status.CompletionTime)
	}
	if n := len(e.pipelineRuns("refused")); n != 0 {
		t.Errorf("%d PipelineRuns of a refused Build", n)
	}
}

// TestPipelineRunWaitsForTektonsWebhook: while a webhook that PipelineRuns must pass does not
// answer (Tekton's, during an upgrade), the Build waits and says why; once it answers, the Build
// gets exactly one PipelineRun.
func TestPipelineRunWaitsForTektonsWebhook(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// An address where nothing listens.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	_ = l.Close()
	hook := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "tekton-down-" + e.ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name:                    "validation.webhook.pipeline.tekton.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To("https://" + down + "/validate")},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{"tekton.dev"}, APIVersions: []string{"*"}, Resources: []string{"pipelineruns"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": e.ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](2),
		}},
	}
	if err := e.c.Create(ctx, hook); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.c.Delete(context.Background(), hook) })
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("waits", sha, "refs/heads/main")

	b := e.waitReady("waits", metav1.ConditionUnknown, ferryv1.WaitingForExecutorReason)
	if msg := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "failed calling webhook") {
		t.Errorf("Ready says %q; want why the run waits", msg)
	}
	if n := len(e.pipelineRuns("waits")); n != 0 {
		t.Fatalf("%d PipelineRuns while the webhook is down", n)
	}
	if err := e.c.Delete(ctx, hook); err != nil {
		t.Fatal(err)
	}
	e.waitPipelineRun("waits")
	e.waitReady("waits", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	testutil.Eventually(t, "one PipelineRun", func() (bool, error) {
		n := len(e.pipelineRuns("waits"))
		return n == 1, fmt.Errorf("%d PipelineRuns", n)
	})
	list := &ferryv1.BuildList{}
	if err := e.c.List(ctx, list, client.InNamespace(e.ns)); err != nil || len(list.Items) != 1 {
		t.Fatalf("Builds: %d, %v", len(list.Items), err)
	}
}

// TestRunFailedWithTektonsReason: a PipelineRun that failed because its TaskRun could not run (an
// image that cannot be pulled) fails the Build with the TaskRun's reason and message, as Tekton
// writes them, not only the PipelineRun's count of failed tasks.
func TestRunFailedWithTektonsReason(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("pull", sha, "refs/heads/main")
	pr := e.waitPipelineRun("pull")
	ctx := context.Background()
	tr := e.createTaskRun(pr)
	// Tekton v1.15.1's words for a step whose image cannot be pulled, as a real node gave them
	// (TestInstallRunsAPipelineRunOnARealNode in internal/tektoninstall): the image is named in
	// the pod's message, the image ID is empty.
	missing := "registry.example.com/nothing/here@sha256:" + strings.Repeat("0", 64)
	pullMessage := `the step "test" in TaskRun "` + tr.Name + `" failed to pull the image "". The pod errored with the message: "Back-off pulling image "` + missing +
		`": ErrImagePull: rpc error: code = NotFound desc = failed to pull and unpack image "` + missing + `": failed to resolve reference "` + missing + `": not found."`
	tr.Status.SetCondition(&apis.Condition{Type: apis.ConditionSucceeded, Status: corev1.ConditionFalse, Reason: string(pipelinev1.TaskRunReasonImagePullFailed), Message: pullMessage})
	if err := e.c.Status().Update(ctx, tr); err != nil {
		t.Fatal(err)
	}
	testutilPatchChildRef(t, e, pr, tr.Name)
	e.tekton(pr, corev1.ConditionFalse, "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", nil)
	b := e.waitReady("pull", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "TaskRunImagePullFailed: "+pullMessage) {
		t.Errorf("Ready says %q; want the TaskRun's reason and message", msg)
	}
}
