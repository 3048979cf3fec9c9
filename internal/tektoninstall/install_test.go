package tektoninstall

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"knative.dev/pkg/apis"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/pipelinefile"
	"github.com/ferryci/ferry/internal/testutil"
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
	if cond := waitPipelineRun(ctx, t, c, pr); !cond.IsTrue() {
		t.Fatalf("the PipelineRun did not succeed: %s %s: %s\n%s", cond.Status, cond.Reason, cond.Message, cluster.NodeDiagnostics(ctx))
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

	builds := newFerryBuilds(ctx, t, c, env, installed.Images["shell"])
	runFerryBuild(ctx, t, builds, installed)
	checkStepCache(ctx, t, builds, installed)

	// A step whose image cannot be pulled: Tekton fails its TaskRun with TaskRunImagePullFailed,
	// naming the step and the image (what the Build controller passes on to the Build).
	missing := env.Registry.Host + "/nothing/here@sha256:" + strings.Repeat("0", 64)
	unpullable := &pipelinev1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "unpullable", Namespace: ns.Name},
		Spec: pipelinev1.PipelineRunSpec{PipelineSpec: &pipelinev1.PipelineSpec{
			Tasks: []pipelinev1.PipelineTask{{Name: "build", TaskSpec: &pipelinev1.EmbeddedTask{TaskSpec: pipelinev1.TaskSpec{
				Steps: []pipelinev1.Step{{Name: "compile", Image: missing, Command: []string{"/bin/true"}}},
			}}}},
		}},
	}
	if err := c.Create(ctx, unpullable); err != nil {
		t.Fatal(err)
	}
	if cond := waitPipelineRun(ctx, t, c, unpullable); !cond.IsFalse() {
		t.Fatalf("a PipelineRun whose image cannot be pulled ended %s %s: %s", cond.Status, cond.Reason, cond.Message)
	}
	if len(unpullable.Status.ChildReferences) != 1 {
		t.Fatalf("child references %+v", unpullable.Status.ChildReferences)
	}
	tr := &pipelinev1.TaskRun{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: unpullable.Status.ChildReferences[0].Name}, tr); err != nil {
		t.Fatal(err)
	}
	tc := tr.Status.GetCondition(apis.ConditionSucceeded)
	if tc == nil || tc.Reason != string(pipelinev1.TaskRunReasonImagePullFailed) || !strings.Contains(tc.Message, `the step "compile"`) || !strings.Contains(tc.Message, missing) {
		t.Errorf("the TaskRun of an unpullable step says %+v; want TaskRunImagePullFailed naming the step and the image", tc)
	}
	t.Logf("an unpullable step's TaskRun failed %s after its creation: %s: %s", tr.Status.CompletionTime.Sub(tr.CreationTimestamp.Time), tc.Reason, tc.Message)

	// A run past its timeout: Tekton ends it PipelineRunTimeout (what the Build controller maps to
	// PipelineTimeout) and stops the step's container, which would otherwise sleep on.
	slow := &pipelinev1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "slow", Namespace: ns.Name},
		Spec: pipelinev1.PipelineRunSpec{
			Timeouts: &pipelinev1.TimeoutFields{Pipeline: &metav1.Duration{Duration: 10 * time.Second}},
			PipelineSpec: &pipelinev1.PipelineSpec{
				Tasks: []pipelinev1.PipelineTask{{Name: "build", TaskSpec: &pipelinev1.EmbeddedTask{TaskSpec: pipelinev1.TaskSpec{
					Steps: []pipelinev1.Step{{Name: "compile", Image: installed.Images["shell"], Script: "#!/bin/sh\nsleep 600\n"}},
				}}}},
			},
		},
	}
	if err := c.Create(ctx, slow); err != nil {
		t.Fatal(err)
	}
	if cond := waitPipelineRun(ctx, t, c, slow); !cond.IsFalse() || cond.Reason != string(pipelinev1.PipelineRunReasonTimedOut) {
		t.Fatalf("a PipelineRun past its timeout ended %s %s: %s", cond.Status, cond.Reason, cond.Message)
	}
	testutil.EventuallyWithin(t, time.Minute, "the timed-out step's container to stop", func() (bool, error) {
		pods := &corev1.PodList{}
		if err := c.List(ctx, pods, client.InNamespace(ns.Name), client.MatchingLabels{"tekton.dev/pipelineRun": slow.Name}); err != nil {
			return false, err
		}
		for _, p := range pods.Items {
			for _, cs := range p.Status.ContainerStatuses {
				if cs.State.Running != nil {
					return false, fmt.Errorf("container %s of pod %s still runs", cs.Name, p.Name)
				}
			}
		}
		return true, nil
	})
	t.Logf("a PipelineRun timed out %s after its creation; its step's container stopped", slow.Status.CompletionTime.Sub(slow.CreationTimestamp.Time))

	begin = time.Now()
	if _, err := Install(ctx, Options{Config: cluster.Config, Registry: env.Registry.Host, Remote: env.Remote}); err != nil {
		t.Fatalf("installing again: %v", err)
	}
	t.Logf("installing again took %s", time.Since(begin).Round(100*time.Millisecond))
}

// ferryBuilds runs Ferry Builds' PipelineRuns, as the Build controller renders them, through the
// installed Tekton: `ferry git-clone` at a commit from a git server, the pipeline file's steps in
// their builder image, and `ferry assemble` pushing the image with the push Secret.
type ferryBuilds struct {
	t          *testing.T
	c          client.Client
	env        *realnode.Env
	git        *gitserver.Server
	ferryImage string
	push       string
	// stack is the stack image every Build assembles on.
	stack string
	n     int
}

func newFerryBuilds(ctx context.Context, t *testing.T, c client.Client, env *realnode.Env, stack string) *ferryBuilds {
	t.Helper()
	git, err := gitserver.Start(gitserver.Options{Addr: env.Host.IP.String() + ":0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = git.Close() })
	if err := git.CreateRepo("team/hello", gitserver.RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	ferryImage := env.Push(t, realnode.StaticBinary(t, "github.com/ferryci/ferry/cmd/ferry", "ferry_nodev"), "ferry/ferry:test", "/usr/local/bin/ferry")
	dockerConfig, err := json.Marshal(map[string]any{"auths": map[string]any{env.Registry.Host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(env.User + ":" + env.Password)),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	push := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "push", Namespace: "builds"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: dockerConfig},
	}
	if err := c.Create(ctx, push); err != nil {
		t.Fatal(err)
	}
	return &ferryBuilds{t: t, c: c, env: env, git: git, ferryImage: ferryImage, push: push.Name, stack: stack}
}

// run commits the pipeline file and runs the Build of that commit to its end.
func (f *ferryBuilds) run(ctx context.Context, file string, cache buildplan.Cache) (*pipelinev1.PipelineRun, string, *apis.Condition) {
	t := f.t
	t.Helper()
	f.n++
	sha, err := f.git.Commit("team/hello", gitserver.Commit{Message: "hello", Files: map[string]string{".ferry.yaml": file, "REVISION_NOTE": fmt.Sprintf("commit %d\n", f.n)}})
	if err != nil {
		t.Fatal(err)
	}
	pf, err := pipelinefile.Parse(".ferry.yaml", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	plan, err := buildplan.New(pf, buildplan.Inputs{
		BuildName: fmt.Sprintf("hello-%d", f.n), BuildUID: types.UID(fmt.Sprintf("0c0ffee0-0000-4000-8000-%012d", f.n)), Namespace: "builds", Project: "hello",
		CloneURL: f.git.RepoURL("team/hello"), Revision: sha, Ref: "refs/heads/main", PipelineFile: ".ferry.yaml",
		Image: f.env.Registry.Host + "/team/hello", Insecure: true, StackImage: f.stack,
		PushSecret: f.push, FerryImage: f.ferryImage, Cache: cache,
	})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := plan.PipelineRun()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.c.Create(ctx, pr); err != nil {
		t.Fatal(err)
	}
	return pr, sha, waitPipelineRun(ctx, t, f.c, pr)
}

// runFerryBuild runs a Ferry Build through the installed Tekton; Tekton's results name the pushed
// image, which the registry then serves.
func runFerryBuild(ctx context.Context, t *testing.T, builds *ferryBuilds, installed *Installed) {
	t.Helper()
	shell := installed.Images["shell"]
	file := fmt.Sprintf(`stack: busybox
build:
  image: %s
  steps:
    - name: compile
      run: mkdir -p out && echo "built at $(cat REVISION_NOTE)" > out/hello.txt
artifacts: ["out/hello.txt"]
workdir: /app
entrypoint: ["/bin/cat", "/app/out/hello.txt"]
`, shell)
	begin := time.Now()
	pr, sha, cond := builds.run(ctx, file, buildplan.Cache{})
	if !cond.IsTrue() {
		t.Fatalf("the Build's PipelineRun did not succeed: %s %s: %s\n%s", cond.Status, cond.Reason, cond.Message, podLogs(ctx, builds.c, pr))
	}
	t.Logf("the Build's PipelineRun (clone, compile, assemble and push) succeeded in %s", time.Since(begin).Round(100*time.Millisecond))
	env := builds.env
	results := map[string]string{}
	for _, r := range pr.Status.Results {
		results[r.Name] = r.Value.StringVal
	}
	url, digest := results[buildplan.ResultImageURL], results[buildplan.ResultImageDigest]
	if url != env.Registry.Host+"/team/hello" || !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("results %v do not name the pushed image", results)
	}
	ref, err := name.NewDigest(url+"@"+digest, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, env.Remote...)
	if err != nil {
		t.Fatalf("the registry does not serve the image the results name: %v", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Config.Entrypoint, " "); got != "/bin/cat /app/out/hello.txt" {
		t.Errorf("the image's entrypoint is %q", got)
	}
	if cfg.Config.Labels["org.opencontainers.image.revision"] != sha {
		t.Errorf("the image's labels %v do not name the commit %s", cfg.Config.Labels, sha)
	}
}

// checkStepCache: a Project's step cache, a claim of the real node's default StorageClass, keeps
// what one Build's user step wrote in $GOCACHE for the next Build's; another claim (another
// Project's) starts empty; a deleted claim's volume and directory go.
func checkStepCache(ctx context.Context, t *testing.T, builds *ferryBuilds, installed *Installed) {
	t.Helper()
	c := builds.c
	claim := func(name string) *corev1.PersistentVolumeClaim {
		pvc := &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: "builds", Name: name},
			Spec: corev1.PersistentVolumeClaimSpec{
				AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
			},
		}
		if err := c.Create(ctx, pvc); err != nil {
			t.Fatal(err)
		}
		return pvc
	}
	mine, theirs := claim("ferry-cache-hello"), claim("ferry-cache-other")
	shell := installed.Images["shell"]
	file := func(script string) string {
		return fmt.Sprintf("stack: busybox\nbuild:\n  image: %s\n  steps:\n    - name: compile\n      run: %q\nartifacts: [\"REVISION_NOTE\"]\nworkdir: /app\nentrypoint: [\"/bin/cat\", \"/app/REVISION_NOTE\"]\n", shell, script)
	}
	vars := []string{"GOCACHE"}
	var used []*pipelinev1.PipelineRun
	for i, tc := range []struct{ claim, script string }{
		{mine.Name, `test ! -e "$GOCACHE/seen" && mkdir -p "$GOCACHE" && cat REVISION_NOTE > "$GOCACHE/seen"`},
		{mine.Name, `test "$GOCACHE" = /ferry/cache/GOCACHE && grep -q "commit" "$GOCACHE/seen"`},
		{theirs.Name, `test ! -e "$GOCACHE/seen"`},
	} {
		begin := time.Now()
		pr, _, cond := builds.run(ctx, file(tc.script), buildplan.Cache{Claim: tc.claim, Vars: vars})
		if !cond.IsTrue() {
			t.Fatalf("Build %d with the cache %s: %s %s: %s\n%s", i+1, tc.claim, cond.Status, cond.Reason, cond.Message, podLogs(ctx, c, pr))
		}
		t.Logf("Build %d with the step cache %s succeeded in %s", i+1, tc.claim, time.Since(begin).Round(100*time.Millisecond))
		if tc.claim == mine.Name {
			used = append(used, pr)
		}
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mine), mine); err != nil {
		t.Fatal(err)
	}
	if mine.Spec.StorageClassName == nil || *mine.Spec.StorageClassName != controlplane.StorageClassName {
		t.Errorf("the claim's class is %v, want the default %s", mine.Spec.StorageClassName, controlplane.StorageClassName)
	}
	pv := &corev1.PersistentVolume{}
	if err := c.Get(ctx, client.ObjectKey{Name: mine.Spec.VolumeName}, pv); err != nil || pv.Spec.HostPath == nil {
		t.Fatalf("the claim's volume %q: %v %+v", mine.Spec.VolumeName, err, pv.Spec)
	}
	dir := pv.Spec.HostPath.Path
	if _, err := os.Stat(filepath.Join(dir, "GOCACHE", "seen")); err != nil {
		t.Errorf("the cache's directory on the machine: %v", err)
	}
	// As when the Project is deleted: its claim, and its Builds with their runs and pods, which
	// hold the claim until they are gone.
	if err := c.Delete(ctx, mine); err != nil {
		t.Fatal(err)
	}
	for _, pr := range used {
		if err := c.Delete(ctx, pr, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatal(err)
		}
	}
	testutil.EventuallyWithin(t, 2*time.Minute, "the deleted claim's volume and directory to go", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pv), pv); !apierrors.IsNotFound(err) {
			claimErr := c.Get(ctx, client.ObjectKeyFromObject(mine), mine)
			return false, fmt.Errorf("volume %s is %s (%w); its claim: %w, finalizers %v", pv.Name, pv.Status.Phase, err, claimErr, mine.Finalizers)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return false, fmt.Errorf("directory %s: %w", dir, err)
		}
		return true, nil
	})
}

// waitPipelineRun waits until a PipelineRun finishes and returns its Succeeded condition.
func waitPipelineRun(ctx context.Context, t *testing.T, c client.Client, pr *pipelinev1.PipelineRun) *apis.Condition {
	t.Helper()
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
			return cond
		}
		select {
		case <-ctx.Done():
			t.Fatalf("PipelineRun %s did not finish: %s\n%s", pr.Name, last, podLogs(context.Background(), c, pr))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// podLogs are the states of a PipelineRun's pods' containers, for a failure's message.
func podLogs(ctx context.Context, c client.Client, pr *pipelinev1.PipelineRun) string {
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(pr.Namespace), client.MatchingLabels{"tekton.dev/pipelineRun": pr.Name}); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "%s/%s: %+v\n", p.Name, s.Name, s.State)
		}
	}
	return b.String()
}
