package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/dev"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestPushThroughTekton runs a push through the real Tekton path: `ferry dev --executor=tekton`
// installs Tekton on the hub's real node, a push becomes a PipelineRun whose pod clones the
// commit, runs the pipeline file's tests in the builder image and assembles and pushes the
// image; the Build takes the image from Tekton's results, the step logs are the pod's, and the
// Release rolls the image out to dev, where it answers. A Build cancelled while it runs stops its
// PipelineRun and the pod goes.
func TestPushThroughTekton(t *testing.T) {
	if os.Getenv("FERRY_E2E") == "" {
		t.Skip("the end-to-end test runs with make e2e (FERRY_E2E=1)")
	}
	root, ferry := tektonPrerequisites(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	d := startDev(t, ferry, root, dataDir, "--executor=tekton")
	ep := d.endpoints
	t.Logf("first start of ferry dev with Tekton: %.1fs", ep.StartSeconds)
	hub := kubeClient(t, ep.Kubeconfig)
	nonprod := kubeClient(t, ep.Clusters["nonprod"].Kubeconfig)
	tekton := tektonClient(t, ep.Kubeconfig)
	const project = "python-web"
	p := ep.Projects[project]

	pushed := time.Now()
	runFerry(t, ferry, root, "dev", "push", project, "--data-dir", dataDir, "-m", "e2e: through Tekton")
	sha := remoteHead(t, p.RepoURL)
	b := onlyBuild(t, hub, project)
	b = waitBuildSucceeded(t, hub, b)
	t.Logf("push to image through Tekton: %s", time.Since(pushed).Round(100*time.Millisecond))
	if b.Status.Executor != "tekton" {
		t.Errorf("Build %s ran on executor %q, want tekton", b.Name, b.Status.Executor)
	}
	checkImage(t, hub, ep, b.Status.Image, sha)

	pr := &pipelinev1.PipelineRun{}
	if err := tekton.Get(context.Background(), client.ObjectKey{Namespace: b.Namespace, Name: buildplan.PipelineRunName(b.Name, b.UID)}, pr); err != nil {
		t.Fatalf("the Build's PipelineRun: %v", err)
	}
	if !pr.Status.GetCondition(apis.ConditionSucceeded).IsTrue() {
		t.Errorf("PipelineRun %s is not Succeeded: %+v", pr.Name, pr.Status.Conditions)
	}
	results := map[string]string{}
	for _, r := range pr.Status.Results {
		results[r.Name] = r.Value.StringVal
	}
	if got := results[buildplan.ResultImageURL] + "@" + results[buildplan.ResultImageDigest]; got != b.Status.Image {
		t.Errorf("Tekton's results name %s, the Build %s", got, b.Status.Image)
	}
	// The test step's output is in its pod's log.
	if log := stepLog(t, ep.Kubeconfig, b.Namespace, pr.Name, "test"); !strings.Contains(log, "OK") {
		t.Errorf("the test step's log does not show the tests passing:\n%s", log)
	}
	// The UI shows it to a person who may read the Build's logs, from the pod through the API server.
	ui := newBrowser(t, ep.UIURL)
	ui.signIn(ep.Users["alice"].UISignInURL)
	ui.do(chromedp.Navigate(ep.UIURL + "/builds/" + b.Namespace + "/" + b.Name))
	// A person opens the step that succeeded (failed and running steps open by themselves).
	ui.do(chromedp.Click(chromedp.Search(`//summary[span[@class="step-name" and text()="test"]]`)))
	ui.waitText(`pre[aria-label="Log of step test"]`, "OK", time.Minute)
	ui.screenshot(root, "build-through-tekton")

	waitEnvironment(t, hub, b.Name, "dev", ferryv1.SucceededReason)
	waitDeployment(t, nonprod, p.Namespaces["dev"], project, b.Status.Image)
	waitAppAnswers(t, p.AppURLs["dev"], "")
	t.Logf("push to dev rollout through Tekton: %s", time.Since(pushed).Round(100*time.Millisecond))

	// A Build cancelled while its pod runs: Tekton cancels the PipelineRun and its pod goes.
	runFerry(t, ferry, root, "dev", "push", project, "--data-dir", dataDir, "-m", "e2e: to cancel")
	var running *ferryv1.Build
	testutil.EventuallyWithin(t, 2*time.Minute, "a second Build with a running pod", func() (bool, error) {
		var list ferryv1.BuildList
		if err := hub.List(context.Background(), &list, client.InNamespace(dev.Namespace), client.MatchingLabels{ferryv1.ProjectLabel: project}); err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].Name != b.Name {
				running = &list.Items[i]
			}
		}
		if running == nil {
			return false, nil
		}
		pods := &corev1.PodList{}
		if err := tekton.List(context.Background(), pods, client.InNamespace(running.Namespace), client.MatchingLabels{ferryv1.TektonPipelineRunLabel: buildplan.PipelineRunName(running.Name, running.UID)}, taskRunPods); err != nil {
			return false, err
		}
		return len(pods.Items) == 1 && pods.Items[0].Status.Phase == corev1.PodRunning, nil
	})
	runFerry(t, ferry, root, "cancel", running.Name, "--kubeconfig", ep.Kubeconfig)
	testutil.EventuallyWithin(t, 2*time.Minute, "the cancelled Build's PipelineRun cancelled and its pod gone", func() (bool, error) {
		cur := &pipelinev1.PipelineRun{}
		if err := tekton.Get(context.Background(), client.ObjectKey{Namespace: running.Namespace, Name: buildplan.PipelineRunName(running.Name, running.UID)}, cur); err != nil {
			return false, err
		}
		c := cur.Status.GetCondition(apis.ConditionSucceeded)
		if c == nil || !c.IsFalse() {
			return false, nil
		}
		pods := &corev1.PodList{}
		if err := tekton.List(context.Background(), pods, client.InNamespace(running.Namespace), client.MatchingLabels{ferryv1.TektonPipelineRunLabel: cur.Name}, taskRunPods); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				return false, nil
			}
		}
		return strings.Contains(c.Reason, "Cancelled"), nil
	})
	d.stop(t)
}

// taskRunPods selects the pods of TaskRuns, leaving out the affinity assistant Tekton runs beside a
// PipelineRun whose workspace is a claim (the step cache).
var taskRunPods = client.HasLabels{"tekton.dev/taskRun"}

func tektonClient(t testing.TB, kubeconfig string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(pipelinev1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stepLog is the log of a step of a PipelineRun's pod, read through the API server from the node.
func stepLog(t testing.TB, kubeconfig, namespace, pipelineRun, step string) string {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The TaskRun's pod: with the step cache (a claim) Tekton also runs an affinity assistant pod
	// for the PipelineRun, which has no TaskRun.
	pods, err := cs.CoreV1().Pods(namespace).List(context.Background(), metav1.ListOptions{LabelSelector: ferryv1.TektonPipelineRunLabel + "=" + pipelineRun + ",tekton.dev/taskRun"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("pods of PipelineRun %s: %v (%d)", pipelineRun, err, len(pods.Items))
	}
	data, err := cs.CoreV1().Pods(namespace).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: "step-" + step}).DoRaw(context.Background())
	if err != nil {
		t.Fatalf("log of step %s: %v", step, err)
	}
	return string(data)
}

// tektonPrerequisites skips where real nodes, and so Tekton, cannot run; else it returns the
// checkout and the ferry binary built from it, as make build builds it.
func tektonPrerequisites(t testing.TB) (root, ferry string) {
	t.Helper()
	if err := controlplane.RealNodesAvailable(); err != nil {
		t.Skipf("Tekton runs on real nodes, which this machine cannot run: %v", err)
	}
	ctrllog.SetLogger(logr.Discard())
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root, buildFerry(t, root)
}
