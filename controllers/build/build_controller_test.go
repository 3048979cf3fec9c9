package build_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/gitserver"
	ftestutil "github.com/ferryci/ferry/internal/testutil"
)

// TestBuildRunsOnePipelineRun: a Build becomes exactly one PipelineRun, owned by the Build, and the
// Build mirrors it until it succeeds with the image, its tags, lineage and deploy settings.
func TestBuildRunsOnePipelineRun(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("app-main-1", sha, "refs/heads/main")

	pr := e.waitPipelineRun("app-main-1")
	b := e.waitReady("app-main-1", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	if !metav1.IsControlledBy(pr, b) || pr.Labels[ferryv1.ProjectLabel] != "app" {
		t.Errorf("PipelineRun %s: owners %v labels %v", pr.Name, pr.OwnerReferences, pr.Labels)
	}
	if b.Status.Executor != "tekton" || b.Status.PipelineRunRef == nil || b.Status.PipelineRunRef.Name != pr.Name || b.Status.ObservedGeneration != b.Generation {
		t.Errorf("status = %+v", b.Status)
	}
	if condition(b, ferryv1.SourceResolvedCondition) != "True/Succeeded" || condition(b, ferryv1.PipelineSucceededCondition) != "Unknown/PipelineRunning" || condition(b, ferryv1.ReconcilingCondition) != "True/PipelineRunning" {
		t.Errorf("conditions = %+v", b.Status.Conditions)
	}
	var steps []string
	for _, s := range b.Status.Steps {
		steps = append(steps, s.Name+"="+s.State)
	}
	if !slices.Equal(steps, []string{"clone=Waiting", "test=Waiting", "assemble=Waiting"}) {
		t.Errorf("steps = %v", steps)
	}
	if d := b.Status.Deploy; d == nil || *d.Replicas != 3 || !slices.Equal(d.Ports, []int32{8080}) {
		t.Errorf("deploy = %+v", b.Status.Deploy)
	}
	// The steps run the ferry image the manager was given.
	task := pr.Spec.PipelineSpec.Tasks[0].TaskSpec
	if task.Steps[0].Image != ferryImage || task.Steps[2].Args[0] != "assemble" {
		t.Errorf("steps = %+v", task.Steps)
	}
	// The Project records its newest Build.
	ftestutil.Eventually(t, "Project lastBuild", func() (bool, error) {
		p := &ferryv1.Project{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(e.project), p); err != nil {
			return false, err
		}
		lb := p.Status.LastBuild
		return lb != nil && lb.Name == "app-main-1" && lb.Revision == sha && lb.Ref == "refs/heads/main", fmt.Errorf("lastBuild %+v", lb)
	})

	before := metric(t, "ferry_builds_total", map[string]string{"result": "Succeeded"})
	queued := metric(t, "ferry_build_queue_seconds", nil)
	e.tekton(pr, corev1.ConditionTrue, "Succeeded", "Tasks Completed: 1, Skipped: 0", successResults(sha))
	b = e.waitReady("app-main-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	if b.Status.Image != imageRepo+"@"+digest || !slices.Equal(b.Status.Tags, []string{sha}) || b.Status.Lineage == nil || b.Status.Lineage.Stack.Image != stackRef {
		t.Errorf("status = %+v", b.Status)
	}
	if b.Status.StartTime == nil || b.Status.CompletionTime == nil || condition(b, ferryv1.ImagePushedCondition) != "True/Succeeded" || condition(b, ferryv1.ReconcilingCondition) != "<none>" {
		t.Errorf("status = %+v", b.Status)
	}
	if got := len(e.pipelineRuns("app-main-1")); got != 1 {
		t.Errorf("%d PipelineRuns, want 1", got)
	}
	if after := metric(t, "ferry_builds_total", map[string]string{"result": "Succeeded"}); after != before+1 {
		t.Errorf("ferry_builds_total{result=Succeeded} went from %v to %v", before, after)
	}
	if after := metric(t, "ferry_build_queue_seconds", nil); after != queued+1 {
		t.Errorf("ferry_build_queue_seconds observed %v times, want %v", after, queued+1)
	}
	if n := metric(t, "ferry_build_duration_seconds", map[string]string{"result": "Succeeded"}); n < 1 {
		t.Errorf("ferry_build_duration_seconds has no sample")
	}
	ftestutil.Eventually(t, "events", func() (bool, error) {
		ev := strings.Join(e.events("app-main-1"), "\n")
		return strings.Contains(ev, "Normal/PipelineRunning") && strings.Contains(ev, "Normal/Succeeded: Built and pushed "+imageRepo+"@"+digest), fmt.Errorf("events: %s", ev)
	})
}

// metric reads a counter or a histogram's sample count from controller-runtime's registry.
func metric(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if want, ok := labels[l.GetName()]; ok && want != l.GetValue() {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				total += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				total += float64(m.GetHistogram().GetSampleCount())
			case m.GetGauge() != nil:
				total += m.GetGauge().GetValue()
			}
		}
	}
	return total
}

// TestRestartBetweenCreateAndStatusPatch: a manager that created the PipelineRun and died before
// recording it leaves a Build with no status; the next manager adopts the PipelineRun instead of
// creating a second.
func TestRestartBetweenCreateAndStatusPatch(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	ctx := context.Background()

	// First manager: runs until the Build records its PipelineRun, then stops.
	stop := startStoppableManager(t)
	e.createBuild("app-main-1", sha, "refs/heads/main")
	first := e.waitPipelineRun("app-main-1")
	e.waitReady("app-main-1", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	stop()

	// The status write is lost, as if the manager crashed right after creating the PipelineRun.
	b := e.build("app-main-1")
	b.Status = ferryv1.BuildStatus{}
	if err := e.c.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	if len(e.build("app-main-1").Status.Conditions) != 0 {
		t.Fatal("the status was not cleared")
	}

	// Second manager: adopts the PipelineRun.
	startManager(t)
	b = e.waitReady("app-main-1", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
	prs := e.pipelineRuns("app-main-1")
	if len(prs) != 1 || prs[0].UID != first.UID || b.Status.PipelineRunRef == nil || b.Status.PipelineRunRef.Name != first.Name {
		t.Fatalf("%d PipelineRuns (first %s), status ref %+v", len(prs), first.UID, b.Status.PipelineRunRef)
	}
	// What the lost write held comes back from the PipelineRun itself.
	if b.Status.Deploy == nil || *b.Status.Deploy.Replicas != 3 || b.Status.Executor != "tekton" {
		t.Errorf("status = %+v", b.Status)
	}
	e.tekton(&prs[0], corev1.ConditionTrue, "Succeeded", "", successResults(sha))
	e.waitReady("app-main-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	if n := len(e.pipelineRuns("app-main-1")); n != 1 {
		t.Errorf("%d PipelineRuns, want 1", n)
	}
}

// TestPipelineRunStatusMirrored drives one PipelineRun per case through Tekton's real reasons.
func TestPipelineRunStatusMirrored(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	cases := []struct {
		name        string
		steps       [][4]string // status, reason, message, "results" to report results
		wantReady   metav1.ConditionStatus
		wantReason  string
		wantMessage string
	}{
		{"succeeded", [][4]string{{"Unknown", "Started"}, {"Unknown", "Running"}, {"True", "Succeeded", "Tasks Completed: 1, Skipped: 0", "results"}}, "True", "Succeeded", "Built and pushed"},
		{"completed", [][4]string{{"Unknown", "Running"}, {"True", "Completed", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1", "results"}}, "True", "Succeeded", "Built and pushed"},
		{"no-results", [][4]string{{"True", "Succeeded", "Tasks Completed: 1, Skipped: 0"}}, "False", "ResultsMissing", "without reporting IMAGE_URL"},
		{"failed", [][4]string{{"Unknown", "Running"}, {"False", "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0"}}, "False", "PipelineFailed", "Tasks Completed: 1 (Failed: 1"},
		{"timeout", [][4]string{{"Unknown", "Running"}, {"False", "PipelineRunTimeout", `PipelineRun "x" failed to finish within "1h0m0s"`}}, "False", "PipelineTimeout", "timed out"},
		{"cancelled-elsewhere", [][4]string{{"Unknown", "Cancelled", "cancelling"}, {"False", "Cancelled", "PipelineRun was cancelled"}}, "False", "Cancelled", "Cancelled"},
		{"create-run-failed", [][4]string{{"False", "CreateRunFailed", "failed to create TaskRun"}}, "False", "PipelineFailed", "CreateRunFailed: failed to create TaskRun"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.createBuild(tc.name, sha, "refs/heads/main")
			pr := e.waitPipelineRun(tc.name)
			for _, s := range tc.steps {
				var results map[string]string
				if s[3] == "results" {
					results = successResults(sha)
				}
				e.tekton(pr, corev1.ConditionStatus(s[0]), s[1], s[2], results)
				if s[0] == "Unknown" {
					e.waitReady(tc.name, metav1.ConditionUnknown, ferryv1.PipelineRunningReason)
				}
			}
			b := e.waitReady(tc.name, tc.wantReady, tc.wantReason)
			ready := conditionMessage(b, ferryv1.ReadyCondition)
			if !strings.Contains(ready, tc.wantMessage) {
				t.Errorf("Ready message %q does not contain %q", ready, tc.wantMessage)
			}
			if b.Status.CompletionTime == nil {
				t.Error("no completionTime")
			}
			if tc.wantReady == "True" && b.Status.Image != imageRepo+"@"+digest {
				t.Errorf("image = %q", b.Status.Image)
			}
			if tc.wantReady == "False" && b.Status.Image != "" {
				t.Errorf("a failed Build records image %q", b.Status.Image)
			}
		})
	}
}

// TestStepsFromTheTaskRun: the Build lists its steps' states from the TaskRun Tekton made.
func TestStepsFromTheTaskRun(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("steps", sha, "refs/heads/main")
	pr := e.waitPipelineRun("steps")
	ctx := context.Background()
	tr := e.createTaskRun(pr)
	now := metav1.Now()
	tr.Status.Steps = []pipelinev1.StepState{
		{Name: "clone", ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, StartedAt: now, FinishedAt: now}}},
		{Name: "test", ContainerState: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
	}
	if err := e.c.Status().Update(ctx, tr); err != nil {
		t.Fatal(err)
	}
	testutilPatchChildRef(t, e, pr, tr.Name)
	ftestutil.Eventually(t, "steps from the TaskRun", func() (bool, error) {
		b := e.build("steps")
		var got []string
		for _, s := range b.Status.Steps {
			got = append(got, s.Name+"="+s.State)
		}
		return strings.Join(got, ",") == "clone=Succeeded,test=Running,assemble=Waiting", fmt.Errorf("steps %v", got)
	})
	// A step fails: the TaskRun says so, and so does the Build once Tekton fails the run.
	tr = &pipelinev1.TaskRun{}
	if err := e.c.Get(ctx, types.NamespacedName{Namespace: e.ns, Name: pr.Name + "-build"}, tr); err != nil {
		t.Fatal(err)
	}
	tr.Status.Steps[1].ContainerState = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, StartedAt: now, FinishedAt: now}}
	tr.Status.Steps = append(tr.Status.Steps, pipelinev1.StepState{Name: "assemble", TerminationReason: "Skipped", ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}})
	if err := e.c.Status().Update(ctx, tr); err != nil {
		t.Fatal(err)
	}
	e.tekton(pr, corev1.ConditionFalse, "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", nil)
	b := e.waitReady("steps", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "step test (exit code 2) failed") {
		t.Errorf("message %q does not name the failed step", msg)
	}
	var got []string
	for _, s := range b.Status.Steps {
		got = append(got, s.Name+"="+s.State)
	}
	if strings.Join(got, ",") != "clone=Succeeded,test=Failed,assemble=Skipped" {
		t.Errorf("steps = %v", got)
	}
}

// testutilPatchChildRef records the TaskRun in the PipelineRun's status, as Tekton does.
func testutilPatchChildRef(t *testing.T, e *env, pr *pipelinev1.PipelineRun, taskRun string) {
	t.Helper()
	ftestutil.Eventually(t, "child reference", func() (bool, error) {
		cur := &pipelinev1.PipelineRun{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(pr), cur); err != nil {
			return false, err
		}
		cur.Status.ChildReferences = []pipelinev1.ChildStatusReference{{Name: taskRun, PipelineTaskName: "build"}}
		cur.Status.ChildReferences[0].APIVersion, cur.Status.ChildReferences[0].Kind = "tekton.dev/v1", "TaskRun"
		err := e.c.Status().Update(context.Background(), cur)
		return err == nil, err
	})
}

// TestInvalidPipelineFile: a broken pipeline file fails the Build with a message naming the file,
// line and field, and nothing runs.
func TestInvalidPipelineFile(t *testing.T) {
	e := newEnv(t)
	startManager(t)
	cases := []struct {
		name, file, want string
	}{
		{"bad-step-name", "stack: " + stackRef + "\nbuild:\n  image: golang\n  steps:\n    - name: Unit Tests\n      run: go test\n", `.ferry.yaml:5:13: build.steps[0].name: "Unit Tests" must be lower-case letters`},
		{"unknown-field", "stack: " + stackRef + "\nports: [8080]\nreplicas: 2\n", ".ferry.yaml:3:1: replicas: unknown field"},
		{"syntax", "stack: [\n", ".ferry.yaml:2: invalid YAML: did not find expected node content"},
		{"unknown-stack", "# catalog names need a catalog\nstack: debian-13\n", `.ferry.yaml:2:8: stack: stack "debian-13" is not in the catalog`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sha := e.commit(tc.file)
			e.createBuild(tc.name, sha, "refs/heads/main")
			b := e.waitReady(tc.name, metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason)
			if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.HasPrefix(msg, tc.want) {
				t.Errorf("message %q does not start with %q", msg, tc.want)
			}
			if condition(b, ferryv1.StalledCondition) != "True/InvalidPipelineFile" || condition(b, ferryv1.SourceResolvedCondition) != "False/InvalidPipelineFile" || b.Status.CompletionTime == nil {
				t.Errorf("conditions %+v", b.Status.Conditions)
			}
			if n := len(e.pipelineRuns(tc.name)); n != 0 {
				t.Errorf("%d PipelineRuns for an invalid pipeline file", n)
			}
		})
	}
	t.Run("missing-file", func(t *testing.T) {
		sha, err := e.git.Commit(e.repo, gitserver.Commit{Files: map[string]string{"README": "x"}, Delete: []string{".ferry.yaml"}})
		if err != nil {
			t.Fatal(err)
		}
		e.createBuild("missing-file", sha, "refs/heads/main")
		b := e.waitReady("missing-file", metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason)
		if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.HasPrefix(msg, ".ferry.yaml: no pipeline file in the repository at "+sha[:12]) {
			t.Errorf("message %q", msg)
		}
	})
}

// TestCatalog: stack and runtime names resolve through the ferry-catalog ConfigMap in Ferry's
// namespace to images pinned by digest.
func TestCatalog(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: ftestutil.FerryNamespace, Name: catalog.ConfigMapName},
		Data:       map[string]string{catalog.ConfigMapKey: "stacks:\n  debian-12: " + stackRef + "\nruntimes:\n  python-3.12: registry.example.com/runtimes/python@" + digest + "\n"},
	}
	startManager(t) // creates Ferry's namespace
	if err := e.c.Create(ctx, cm); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.c.Delete(ctx, cm) })
	sha := e.commit("stack: debian-12\nruntime: python-3.12\n")
	e.createBuild("named", sha, "refs/heads/main")
	pr := e.waitPipelineRun("named")
	args := strings.Join(pr.Spec.PipelineSpec.Tasks[0].TaskSpec.Steps[1].Args, " ")
	if !strings.Contains(args, "--stack-image "+stackRef+" --runtime-image registry.example.com/runtimes/python@"+digest) {
		t.Errorf("assemble args = %s", args)
	}
	sha = e.commit("stack: debian-12\nruntime: node-22\n")
	e.createBuild("unknown-runtime", sha, "refs/heads/main")
	b := e.waitReady("unknown-runtime", metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); msg != `.ferry.yaml:2:10: runtime: runtime "node-22" is not in the catalog (known runtimes: python-3.12)` {
		t.Errorf("message %q", msg)
	}
}

func conditionMessage(b *ferryv1.Build, typ string) string {
	for _, c := range b.Status.Conditions {
		if c.Type == typ {
			return c.Message
		}
	}
	return ""
}

// TestInvalidImageTag: a tag Build whose git tag cannot be an image tag fails at once, saying
// which tag, and never gets a PipelineRun.
func TestInvalidImageTag(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	startManager(t)
	e.createBuild("release-1-0", sha, "refs/tags/release/1.0")
	b := e.waitReady("release-1-0", metav1.ConditionFalse, ferryv1.InvalidImageTagReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, `tag "release/1.0"`) {
		t.Errorf("message %q", msg)
	}
	if n := len(e.pipelineRuns("release-1-0")); n != 0 || b.Status.CompletionTime == nil {
		t.Errorf("%d PipelineRuns, status %+v", n, b.Status)
	}
	e.createBuild("v1-0", sha, "refs/tags/v1.0")
	e.waitPipelineRun("v1-0")
}
