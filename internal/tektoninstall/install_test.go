package tektoninstall

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"knative.dev/pkg/apis"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil/realnode"
)

// Tekton installed from its own manifests runs on a real node: its webhook refuses an invalid Task
// and converts v1beta1, and its controller takes a PipelineRun whose step runs a script in the
// shell image to Succeeded with the step's result. Installing again changes nothing.
func TestInstallRunsAPipelineRunOnARealNode(t *testing.T) {
	ctrl.SetLogger(logr.Discard())
	env := realnode.NewEnv(t)
	cluster := env.StartCluster(t, controlplane.APIServerOptions{Name: "tekton"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	begin := time.Now()
	installed, err := Install(ctx, Options{Config: cluster.Config, Registry: env.Registry.Host, Remote: env.Remote, Progress: func(s string) { t.Log(s) }})
	if err != nil {
		t.Fatalf("%v\n%s", err, cluster.NodeDiagnostics(ctx))
	}
	t.Logf("Tekton %s installed in %s: %d objects", installed.Version, time.Since(begin).Round(100*time.Millisecond), installed.Objects)

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(pipelinev1.AddToScheme(scheme))
	c, err := client.New(cluster.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "builds"}}
	if err := c.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}

	// The webhook validates: a Task without steps is refused with Tekton's own words.
	bad := &pipelinev1.Task{ObjectMeta: metav1.ObjectMeta{Name: "no-steps", Namespace: ns.Name}}
	err = c.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "validation.webhook.pipeline.tekton.dev") {
		t.Errorf("a Task without steps gave %v, want a refusal by Tekton's validating webhook", err)
	}

	pr := &pipelinev1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "hello", Namespace: ns.Name},
		Spec: pipelinev1.PipelineRunSpec{PipelineSpec: &pipelinev1.PipelineSpec{
			Tasks: []pipelinev1.PipelineTask{{Name: "greet", TaskSpec: &pipelinev1.EmbeddedTask{TaskSpec: pipelinev1.TaskSpec{
				Results: []pipelinev1.TaskResult{{Name: "greeting"}},
				Steps: []pipelinev1.Step{{
					Name:   "greet",
					Image:  installed.Images["shell"],
					Script: "#!/bin/sh\nset -e\nprintf 'hello from %s' \"$(cat /etc/hostname)\" > $(results.greeting.path)\n",
				}},
			}}}},
			Results: []pipelinev1.PipelineResult{{Name: "greeting", Value: *pipelinev1.NewStructuredValues("$(tasks.greet.results.greeting)")}},
		}},
	}
	if err := c.Create(ctx, pr); err != nil {
		t.Fatal(err)
	}
	var last string
	for {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pr), pr); err != nil {
			t.Fatal(err)
		}
		cond := pr.Status.GetCondition(apis.ConditionSucceeded)
		if cond != nil {
			last = fmt.Sprintf("%s %s: %s", cond.Status, cond.Reason, cond.Message)
		}
		if cond != nil && cond.Status != corev1.ConditionUnknown {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the PipelineRun did not finish: %s\n%s", last, cluster.NodeDiagnostics(context.Background()))
		case <-time.After(200 * time.Millisecond):
		}
	}
	if cond := pr.Status.GetCondition(apis.ConditionSucceeded); !cond.IsTrue() {
		t.Fatalf("the PipelineRun did not succeed: %s\n%s", last, cluster.NodeDiagnostics(ctx))
	}
	t.Logf("PipelineRun succeeded %s after its creation", pr.Status.CompletionTime.Sub(pr.CreationTimestamp.Time))
	if len(pr.Status.Results) != 1 || !strings.HasPrefix(pr.Status.Results[0].Value.StringVal, "hello from hello-greet-pod") {
		t.Errorf("the PipelineRun's results are %+v, want the step's greeting from its pod", pr.Status.Results)
	}

	// The conversion webhook serves v1beta1 reads of what is stored as v1.
	old := &unstructured.Unstructured{}
	old.SetAPIVersion("tekton.dev/v1beta1")
	old.SetKind("PipelineRun")
	if err := c.Get(ctx, client.ObjectKeyFromObject(pr), old); err != nil {
		t.Errorf("reading the PipelineRun as v1beta1: %v", err)
	}

	begin = time.Now()
	if _, err := Install(ctx, Options{Config: cluster.Config, Registry: env.Registry.Host, Remote: env.Remote}); err != nil {
		t.Fatalf("installing again: %v", err)
	}
	t.Logf("installing again took %s", time.Since(begin).Round(100*time.Millisecond))
}
