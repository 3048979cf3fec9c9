package build

import (
	"strings"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

const (
	testRepo   = "registry.example.com/team/app"
	testDigest = "sha256:4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c4d5e6f7a8b9c0d1e2f3a4b"
	lineageRaw = `{"stack":{"name":"debian-12","image":"reg/stack@sha256:aa","digest":"sha256:aa"},"appLayer":"sha256:bb"}`
)

// goodResults are what `ferry assemble` reports: IMAGE_URL is the repository only.
func goodResults() map[string]string {
	return map[string]string{"IMAGE_URL": testRepo, "IMAGE_DIGEST": testDigest, "FERRY_LINEAGE": lineageRaw}
}

func pipelineRun(status corev1.ConditionStatus, reason, message string, results map[string]string) *pipelinev1.PipelineRun {
	pr := &pipelinev1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: "pr"}}
	if status != "" {
		pr.Status.Conditions = duckv1.Conditions{{Type: apis.ConditionSucceeded, Status: status, Reason: reason, Message: message}}
	}
	for k, v := range results {
		pr.Status.Results = append(pr.Status.Results, pipelinev1.PipelineRunResult{Name: k, Value: *pipelinev1.NewStructuredValues(v)})
	}
	return pr
}

// TestTektonReasons drives the mirror through Tekton's real reasons and status pairs
// (tekton_pipelinerun_status.md): the condition's status decides, the reason only says which.
func TestTektonReasons(t *testing.T) {
	cases := []struct {
		name                 string
		pr                   *pipelinev1.PipelineRun
		cancelled            bool
		cancelReason         string
		wantReady            metav1.ConditionStatus
		wantReason           string
		wantPipeline         metav1.ConditionStatus
		wantPipelineReason   string
		wantMessage          string
		wantImage, wantFinal bool
	}{
		{name: "no condition yet", pr: pipelineRun("", "", "", nil), wantReady: "Unknown", wantReason: "PipelineRunning", wantPipeline: "Unknown", wantPipelineReason: "PipelineRunning"},
		{name: "Started", pr: pipelineRun("Unknown", "Started", "", nil), wantReady: "Unknown", wantReason: "PipelineRunning", wantPipeline: "Unknown", wantPipelineReason: "PipelineRunning"},
		{name: "Running", pr: pipelineRun("Unknown", "Running", "Tasks Completed: 0 (Failed: 0, Cancelled 0), Skipped: 0", nil), wantReady: "Unknown", wantReason: "PipelineRunning", wantPipeline: "Unknown", wantPipelineReason: "PipelineRunning"},
		{name: "PipelineRunPending", pr: pipelineRun("Unknown", "PipelineRunPending", "", nil), wantReady: "Unknown", wantReason: "PipelineRunning", wantPipeline: "Unknown", wantPipelineReason: "PipelineRunning", wantMessage: "PipelineRunPending"},
		{name: "Cancelled while Unknown is still running", pr: pipelineRun("Unknown", "Cancelled", "cancelling", nil), cancelled: true, wantReady: "Unknown", wantReason: "PipelineRunning", wantPipeline: "Unknown", wantPipelineReason: "PipelineRunning", wantMessage: "Cancellation requested"},
		{name: "Succeeded", pr: pipelineRun("True", "Succeeded", "Tasks Completed: 1, Skipped: 0", goodResults()), wantReady: "True", wantReason: "Succeeded", wantPipeline: "True", wantPipelineReason: "Succeeded", wantImage: true, wantFinal: true},
		{name: "Completed is success too", pr: pipelineRun("True", "Completed", "Tasks Completed: 1 (Failed: 0, Cancelled 0), Skipped: 1", goodResults()), wantReady: "True", wantReason: "Succeeded", wantPipeline: "True", wantPipelineReason: "Succeeded", wantImage: true, wantFinal: true},
		{name: "IMAGE_URL with a tag", pr: pipelineRun("True", "Succeeded", "", map[string]string{"IMAGE_URL": testRepo + ":0123456789abcdef0123456789abcdef01234567", "IMAGE_DIGEST": testDigest, "FERRY_LINEAGE": lineageRaw}), wantReady: "True", wantReason: "Succeeded", wantPipeline: "True", wantPipelineReason: "Succeeded", wantImage: true, wantFinal: true},
		{name: "succeeded without results", pr: pipelineRun("True", "Succeeded", "", nil), wantReady: "False", wantReason: "ResultsMissing", wantPipeline: "True", wantPipelineReason: "Succeeded", wantMessage: "without reporting IMAGE_URL, IMAGE_DIGEST, FERRY_LINEAGE", wantFinal: true},
		{name: "succeeded with a bad digest", pr: pipelineRun("True", "Succeeded", "", map[string]string{"IMAGE_URL": testRepo, "IMAGE_DIGEST": "latest", "FERRY_LINEAGE": "{}"}), wantReady: "False", wantReason: "ResultsMissing", wantPipeline: "True", wantPipelineReason: "Succeeded", wantMessage: `"latest" is not a sha256 digest`, wantFinal: true},
		{name: "succeeded pushing elsewhere", pr: pipelineRun("True", "Succeeded", "", map[string]string{"IMAGE_URL": "evil.example.com/x:1", "IMAGE_DIGEST": testDigest, "FERRY_LINEAGE": "{}"}), wantReady: "False", wantReason: "ResultsMissing", wantPipeline: "True", wantPipelineReason: "Succeeded", wantMessage: "not the Project's repository", wantFinal: true},
		{name: "Failed", pr: pipelineRun("False", "Failed", "Tasks Completed: 1 (Failed: 1, Cancelled 0), Skipped: 0", nil), wantReady: "False", wantReason: "PipelineFailed", wantPipeline: "False", wantPipelineReason: "PipelineFailed", wantMessage: "Failed: Tasks Completed: 1 (Failed: 1", wantFinal: true},
		{name: "PipelineRunTimeout", pr: pipelineRun("False", "PipelineRunTimeout", `PipelineRun "pr" failed to finish within "1h0m0s"`, nil), wantReady: "False", wantReason: "PipelineTimeout", wantPipeline: "False", wantPipelineReason: "PipelineTimeout", wantMessage: "timed out", wantFinal: true},
		{name: "Cancelled", pr: pipelineRun("False", "Cancelled", `PipelineRun "pr" was cancelled`, nil), cancelled: true, cancelReason: "cancelled with ferry cancel by alice", wantReady: "False", wantReason: "Cancelled", wantPipeline: "False", wantPipelineReason: "Cancelled", wantMessage: "Cancelled: cancelled with ferry cancel by alice", wantFinal: true},
		{name: "Superseded", pr: pipelineRun("False", "Cancelled", "", nil), cancelled: true, cancelReason: "superseded by app-main-2", wantReady: "False", wantReason: "Superseded", wantPipeline: "False", wantPipelineReason: "Superseded", wantMessage: "superseded by app-main-2", wantFinal: true},
		{name: "cancelled by someone else", pr: pipelineRun("False", "Cancelled", "", nil), wantReady: "False", wantReason: "Cancelled", wantPipeline: "False", wantPipelineReason: "Cancelled", wantFinal: true},
		{name: "CreateRunFailed", pr: pipelineRun("False", "CreateRunFailed", "failed to create TaskRun", nil), wantReady: "False", wantReason: "PipelineFailed", wantPipeline: "False", wantPipelineReason: "PipelineFailed", wantMessage: "CreateRunFailed", wantFinal: true},
		{name: "validation failure", pr: pipelineRun("False", "PipelineValidationFailed", "[User error] invalid", nil), wantReady: "False", wantReason: "PipelineFailed", wantPipeline: "False", wantPipelineReason: "PipelineFailed", wantMessage: "PipelineValidationFailed: [User error] invalid", wantFinal: true},
		{name: "cancelled but it succeeded first", pr: pipelineRun("True", "Succeeded", "", goodResults()), cancelled: true, wantReady: "True", wantReason: "Succeeded", wantPipeline: "True", wantPipelineReason: "Succeeded", wantImage: true, wantFinal: true},
	}
	now := metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 2}}
			b.Spec.Revision = "0123456789abcdef0123456789abcdef01234567"
			b.Spec.Cancelled, b.Spec.CancelReason = tc.cancelled, tc.cancelReason
			setRunStatus(b, stateFromPipelineRun(tc.pr, nil), planFacts{repository: testRepo, tags: []string{b.Spec.Revision}}, now)
			ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
			pipeline := meta.FindStatusCondition(b.Status.Conditions, ferryv1.PipelineSucceededCondition)
			if ready == nil || ready.Status != tc.wantReady || ready.Reason != tc.wantReason || ready.ObservedGeneration != 2 {
				t.Errorf("Ready = %+v, want %s/%s", ready, tc.wantReady, tc.wantReason)
			}
			if pipeline == nil || pipeline.Status != tc.wantPipeline || pipeline.Reason != tc.wantPipelineReason {
				t.Errorf("PipelineSucceeded = %+v, want %s/%s", pipeline, tc.wantPipeline, tc.wantPipelineReason)
			}
			if !strings.Contains(ready.Message, tc.wantMessage) {
				t.Errorf("message %q does not contain %q", ready.Message, tc.wantMessage)
			}
			if (b.Status.Image != "") != tc.wantImage {
				t.Errorf("image = %q", b.Status.Image)
			}
			if tc.wantImage {
				if b.Status.Image != testRepo+"@"+testDigest || b.Status.Lineage.Stack.Name != "debian-12" || b.Status.Lineage.AppLayer != "sha256:bb" || len(b.Status.Tags) != 1 {
					t.Errorf("status = %+v lineage %+v", b.Status, b.Status.Lineage)
				}
				if c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ImagePushedCondition); c == nil || c.Status != "True" {
					t.Errorf("ImagePushed = %+v", c)
				}
			}
			if isFinished(b) != tc.wantFinal {
				t.Errorf("finished = %v", isFinished(b))
			}
			reconciling := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReconcilingCondition)
			if tc.wantFinal == (reconciling != nil) {
				t.Errorf("Reconciling = %+v with finished %v", reconciling, tc.wantFinal)
			}
			if meta.FindStatusCondition(b.Status.Conditions, ferryv1.StalledCondition) != nil {
				t.Error("a pipeline outcome is not stalled")
			}
		})
	}
}

func TestStepsFromTaskRun(t *testing.T) {
	pr := &pipelinev1.PipelineRun{Spec: pipelinev1.PipelineRunSpec{PipelineSpec: &pipelinev1.PipelineSpec{Tasks: []pipelinev1.PipelineTask{{
		Name: "build", TaskSpec: &pipelinev1.EmbeddedTask{TaskSpec: pipelinev1.TaskSpec{Steps: []pipelinev1.Step{{Name: "clone"}, {Name: "test"}, {Name: "lint"}, {Name: "assemble"}}}},
	}}}}}
	start := metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	tr := &pipelinev1.TaskRun{}
	tr.Status.Steps = []pipelinev1.StepState{
		{Name: "clone", ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, StartedAt: start, FinishedAt: start}}},
		{Name: "test", ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, StartedAt: start, FinishedAt: start}}},
		{Name: "lint", TerminationReason: "Skipped", ContainerState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1}}},
	}
	steps := stepsFromTaskRun(pr, tr)
	var got []string
	for _, s := range steps {
		got = append(got, s.Name+"="+s.State)
	}
	if strings.Join(got, ",") != "clone=Succeeded,test=Failed,lint=Skipped,assemble=Waiting" || *steps[1].ExitCode != 2 || !steps[0].StartTime.Equal(&start) {
		t.Errorf("steps = %v", got)
	}
	if msg := failedStep(tr); msg != "test (exit code 2)" {
		t.Errorf("failedStep = %q", msg)
	}
	tr.Status.Steps[1].ContainerState = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: start}}
	if s := stepsFromTaskRun(pr, tr)[1]; s.State != "Running" || s.StartTime == nil {
		t.Errorf("running step = %+v", s)
	}
}

func TestMarkInvalidPipelineFile(t *testing.T) {
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	markSourceUnavailable(b, ferryv1.SourceUnavailableReason, "try again", metav1.Now())
	markInvalidPipelineFile(b, ".ferry.yaml:3:5: build.steps[0].name: bad", metav1.Now())
	for typ, want := range map[string]string{
		ferryv1.ReadyCondition:          "False/InvalidPipelineFile",
		ferryv1.SourceResolvedCondition: "False/InvalidPipelineFile",
		ferryv1.StalledCondition:        "True/InvalidPipelineFile",
	} {
		c := meta.FindStatusCondition(b.Status.Conditions, typ)
		if c == nil || string(c.Status)+"/"+c.Reason != want || c.Message != ".ferry.yaml:3:5: build.steps[0].name: bad" {
			t.Errorf("%s = %+v, want %s", typ, c, want)
		}
	}
	if meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReconcilingCondition) != nil || !isFinished(b) {
		t.Errorf("conditions = %+v", b.Status.Conditions)
	}
}

func TestNewer(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Second))
	a := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: t1}}
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: t0}}
	c := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "c", CreationTimestamp: t0}}
	if !newer(a, b) || newer(b, a) || !newer(c, b) || newer(b, c) {
		t.Error("newer orders by creation, then name")
	}
}

func TestImageRepository(t *testing.T) {
	for in, want := range map[string]string{
		"reg:5000/team/app:abc":      "reg:5000/team/app",
		"reg:5000/team/app@sha256:x": "reg:5000/team/app",
		"reg/team/app":               "reg/team/app",
		"reg:5000/team/app":          "reg:5000/team/app",
	} {
		if got := imageRepository(in); got != want {
			t.Errorf("imageRepository(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestLocalRunStates: a local run's states (queued, running a step, failed, timed out, cancelled,
// succeeded) give the same conditions as a PipelineRun's, plus Queued while it waits for a slot.
func TestLocalRunStates(t *testing.T) {
	cases := []struct {
		name              string
		state             RunState
		cancelled         bool
		wantReady         string
		wantPipeline      string
		wantMessage       string
		wantFinal         bool
		wantImage         bool
		wantReconciling   bool
		wantPipelineRunRf bool
	}{
		{name: "queued", state: RunState{Phase: PhaseQueued, Message: "waiting for a free slot"}, wantReady: "Unknown/Queued", wantPipeline: "Unknown/Queued", wantMessage: "Local run x is queued: waiting for a free slot", wantReconciling: true},
		{name: "queued and cancelled", state: RunState{Phase: PhaseQueued}, cancelled: true, wantReady: "Unknown/Queued", wantPipeline: "Unknown/Queued", wantMessage: "Cancellation requested; waiting for Local run x to leave the queue", wantReconciling: true},
		{name: "running a step", state: RunState{Phase: PhaseRunning, Message: "step test is running"}, wantReady: "Unknown/PipelineRunning", wantPipeline: "Unknown/PipelineRunning", wantMessage: "Local run x is running: step test is running", wantReconciling: true},
		{name: "failed", state: RunState{Phase: PhaseFailed, Message: "step test failed (exit code 3): the script failed"}, wantReady: "False/PipelineFailed", wantPipeline: "False/PipelineFailed", wantMessage: "Local run x failed: step test failed (exit code 3)", wantFinal: true},
		{name: "timed out", state: RunState{Phase: PhaseTimedOut, Message: "the Build did not finish within 4s"}, wantReady: "False/PipelineTimeout", wantPipeline: "False/PipelineTimeout", wantMessage: "Local run x timed out: the Build did not finish within 4s", wantFinal: true},
		{name: "cancelled", state: RunState{Phase: PhaseCancelled}, cancelled: true, wantReady: "False/Cancelled", wantPipeline: "False/Cancelled", wantMessage: "Cancelled: by alice (Local run x stopped)", wantFinal: true},
		{name: "succeeded", state: RunState{Phase: PhaseSucceeded, Results: goodResults()}, wantReady: "True/Succeeded", wantPipeline: "True/Succeeded", wantMessage: "Built and pushed " + testRepo + "@" + testDigest, wantFinal: true, wantImage: true},
	}
	now := metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "b", Generation: 1}}
			b.Spec.Revision = "0123456789abcdef0123456789abcdef01234567"
			if tc.cancelled {
				b.Spec.Cancelled, b.Spec.CancelReason = true, "by alice"
			}
			s := tc.state
			s.Exists, s.Name, s.Kind, s.LogURL = true, "x", "Local run", "file:///var/log/ferry/x.log"
			setRunStatus(b, &s, planFacts{repository: testRepo, tags: []string{b.Spec.Revision}}, now)
			got := func(typ string) string {
				c := meta.FindStatusCondition(b.Status.Conditions, typ)
				if c == nil {
					return "<none>"
				}
				return string(c.Status) + "/" + c.Reason
			}
			if got(ferryv1.ReadyCondition) != tc.wantReady || got(ferryv1.PipelineSucceededCondition) != tc.wantPipeline {
				t.Errorf("Ready %s PipelineSucceeded %s, want %s and %s", got(ferryv1.ReadyCondition), got(ferryv1.PipelineSucceededCondition), tc.wantReady, tc.wantPipeline)
			}
			if msg := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, tc.wantMessage) {
				t.Errorf("message %q does not contain %q", msg, tc.wantMessage)
			}
			if isFinished(b) != tc.wantFinal || (got(ferryv1.ReconcilingCondition) != "<none>") != tc.wantReconciling {
				t.Errorf("finished %v, Reconciling %s", isFinished(b), got(ferryv1.ReconcilingCondition))
			}
			if (b.Status.Image != "") != tc.wantImage || b.Status.PipelineRunRef != nil || b.Status.LogURL != s.LogURL {
				t.Errorf("status = %+v", b.Status)
			}
			if s.Done() != tc.wantFinal {
				t.Errorf("Done() = %v", s.Done())
			}
		})
	}
}

func TestMarkInvalidImageTag(t *testing.T) {
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Generation: 1}}
	markInvalidImageTag(b, `The git tag cannot be an image tag: tag "release/1.0": …`, metav1.Now())
	c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != ferryv1.InvalidImageTagReason || !strings.Contains(c.Message, "release/1.0") {
		t.Errorf("Ready = %+v", c)
	}
	if !isFinished(b) || meta.FindStatusCondition(b.Status.Conditions, ferryv1.StalledCondition) != nil || meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReconcilingCondition) != nil {
		t.Errorf("conditions = %+v", b.Status.Conditions)
	}
}

// TestImageFromResultsRepository: the results must name the Project's repository; registry
// defaults are applied before comparing, and the Build records the Project's spelling.
func TestImageFromResultsRepository(t *testing.T) {
	cases := []struct{ project, url, want, wantErr string }{
		{project: "harbor.example.com/team/app", url: "harbor.example.com/team/app", want: "harbor.example.com/team/app@" + testDigest},
		{project: "harbor.example.com/team/app", url: "harbor.example.com/team/app:v1", want: "harbor.example.com/team/app@" + testDigest},
		{project: "docker.io/team/app", url: "index.docker.io/team/app", want: "docker.io/team/app@" + testDigest},
		{project: "127.0.0.1:5000/team/app", url: "127.0.0.1:5000/team/app", want: "127.0.0.1:5000/team/app@" + testDigest},
		{project: "harbor.example.com/team/app", url: "harbor.example.com/team/other", wantErr: "not the Project's repository"},
		{project: "harbor.example.com/team/app", url: "other.example.com/team/app", wantErr: "not the Project's repository"},
	}
	for _, tc := range cases {
		image, _, err := imageFromResults(map[string]string{"IMAGE_URL": tc.url, "IMAGE_DIGEST": testDigest, "FERRY_LINEAGE": lineageRaw}, tc.project)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s for %s: error %v, want %q", tc.url, tc.project, err, tc.wantErr)
			}
			continue
		}
		if err != nil || image != tc.want {
			t.Errorf("%s for %s: %q, %v; want %q", tc.url, tc.project, image, err, tc.want)
		}
	}
}
