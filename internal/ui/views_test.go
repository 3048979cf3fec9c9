package ui

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	localexecutor "github.com/ferryci/ferry/controllers/build/local"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/ui/auth"
)

func condition(t string, s metav1.ConditionStatus, reason string) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: reason + " message", LastTransitionTime: metav1.Now()}
}

func TestMayDecide(t *testing.T) {
	policy := &ferryv1.ApprovalPolicy{Users: []string{"olga"}, Groups: []string{"release-managers"}}
	subject := approval.Subject{RequestedBy: "dana", Triggers: []approval.Trigger{{Build: "shop-b1", Named: true, User: "dave"}}}
	cases := []struct {
		name            string
		policy          *ferryv1.ApprovalPolicy
		id              auth.Identity
		approve, reject bool
		why             string
	}{
		{"named user", policy, auth.Identity{User: "olga"}, true, true, ""},
		{"group member", policy, auth.Identity{User: "rita", Groups: []string{"release-managers"}}, true, true, ""},
		{"neither", policy, auth.Identity{User: "eve", Groups: []string{"developers"}}, false, false, "not eligible"},
		{"the Release's creator may only reject", &ferryv1.ApprovalPolicy{Users: []string{"dana"}}, auth.Identity{User: "dana"}, false, true, "created this Release"},
		{"the pusher may only reject", &ferryv1.ApprovalPolicy{Users: []string{"dave"}}, auth.Identity{User: "dave"}, false, true, "triggered the Build"},
		{"self-approval allowed", &ferryv1.ApprovalPolicy{Users: []string{"dana"}, ForbidSelfApproval: ptr.To(false)}, auth.Identity{User: "dana"}, true, true, ""},
		{"no policy (a batch gate)", nil, auth.Identity{User: "eve"}, true, true, ""},
	}
	for _, tc := range cases {
		approve, reject, why := mayDecide(tc.policy, "prod", tc.id, subject)
		if approve != tc.approve || reject != tc.reject || (tc.why == "") != (why == "") || !strings.Contains(why, tc.why) {
			t.Errorf("%s: approve %v reject %v why %q", tc.name, approve, reject, why)
		}
	}
}

func TestWaitingForMe(t *testing.T) {
	old := metav1.NewTime(time.Now().Add(-time.Hour))
	recent := metav1.NewTime(time.Now().Add(-time.Minute))
	expired := metav1.NewTime(time.Now().Add(-time.Second))
	waiting := func(env string, since metav1.Time, expires *metav1.Time) ferryv1.ReleaseEnvironmentStatus {
		return ferryv1.ReleaseEnvironmentStatus{Name: env, Conditions: []metav1.Condition{condition(ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)},
			Gate: &ferryv1.GateStatus{RequiredApprovals: 2, WaitingSince: &since, ExpiresAt: expires, Approvals: []ferryv1.ApprovalRecord{{Approval: "a", User: "carl", Decision: ferryv1.DecisionApprove}}}}
	}
	rel := func(name string, envs ...ferryv1.ReleaseEnvironmentStatus) ferryv1.Release {
		return ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name}, Spec: ferryv1.ReleaseSpec{Project: "shop", Build: name + "-build", Image: "r@sha256:" + strings.Repeat("a", 64), RequestedBy: "dana"},
			Status: ferryv1.ReleaseStatus{Environments: envs}}
	}
	batchWaiting := ferryv1.ReleaseEnvironmentStatus{Name: "prod", Conditions: []metav1.Condition{condition(ferryv1.ApprovedCondition, metav1.ConditionTrue, ferryv1.ApprovedReason), condition(ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.RollingOutReason)},
		Clusters: []ferryv1.ClusterRolloutStatus{
			{Cluster: "a", Batch: 1, Batches: 3, Conditions: []metav1.Condition{condition(ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)}},
			{Cluster: "b", Batch: 1, Batches: 3, Conditions: []metav1.Condition{condition(ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)}},
		}}
	finished := rel("done", waiting("prod", old, nil))
	finished.Status.CompletionTime = &old
	snap := &snapshot{
		envs: map[string]*ferryv1.Environment{
			"prod":    {ObjectMeta: metav1.ObjectMeta{Name: "prod"}, Spec: ferryv1.EnvironmentSpec{Approval: &ferryv1.ApprovalPolicy{Groups: []string{"release-managers"}, MinApprovals: 2}}},
			"staging": {ObjectMeta: metav1.ObjectMeta{Name: "staging"}, Spec: ferryv1.EnvironmentSpec{Approval: &ferryv1.ApprovalPolicy{Users: []string{"olga"}}}},
		},
		releases: []ferryv1.Release{
			rel("newer", waiting("prod", recent, nil)),
			rel("older", waiting("prod", old, nil)),
			rel("staging-only", waiting("staging", old, nil)),
			rel("mine-already", waiting("prod", old, nil)),
			rel("expired", waiting("prod", old, &expired)),
			rel("pushed-by-rita", waiting("prod", old, nil)),
			rel("batches", batchWaiting),
			finished,
			rel("rolled-out", ferryv1.ReleaseEnvironmentStatus{Name: "prod", Conditions: []metav1.Condition{condition(ferryv1.ApprovedCondition, metav1.ConditionTrue, ferryv1.ApprovedReason)}}),
		},
		approvals: []ferryv1.Approval{{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "x"}, Spec: ferryv1.ApprovalSpec{Release: "mine-already", Environment: "prod", Decision: ferryv1.DecisionApprove, Approver: &ferryv1.Approver{Username: "rita"}}}},
		builds:    []ferryv1.Build{{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "pushed-by-rita-build"}, Spec: ferryv1.BuildSpec{Trigger: ferryv1.BuildTrigger{User: "rita"}}}},
	}
	d := snap.waiting(auth.Identity{User: "rita", Groups: []string{"release-managers"}}, metav1.Now())
	var mine, others []string
	for _, g := range d.Mine {
		mine = append(mine, g.Release+"/"+g.Environment+"/"+string(rune('0'+g.Batch)))
	}
	for _, g := range d.Others {
		others = append(others, g.Release)
	}
	// Oldest first; the batch gate waits since its condition changed (now), so it comes last.
	if got, want := strings.Join(mine, " "), "older/prod/0 pushed-by-rita/prod/0 newer/prod/0 batches/prod/2"; got != want {
		t.Errorf("mine: %s, want %s", got, want)
	}
	if got, want := strings.Join(others, " "), "expired mine-already staging-only"; got != want {
		t.Errorf("others: %s, want %s", got, want)
	}
	for _, g := range d.Mine {
		switch g.Release {
		case "older":
			if g.Approvals != 1 || g.Required != 2 || !g.CanApprove || g.RequestedBy != "dana" {
				t.Errorf("older: %+v", g)
			}
		case "pushed-by-rita":
			if g.CanApprove || !g.CanReject || g.TriggeredBy != "rita" {
				t.Errorf("rita pushed it: she may only reject: %+v", g)
			}
		case "batches":
			if g.Required != 1 {
				t.Errorf("a batch gate needs one approval: %+v", g)
			}
		}
	}
}

// opening gives an environment status the time its deploy windows open.
func opening(es *ferryv1.ReleaseEnvironmentStatus) *ferryv1.ReleaseEnvironmentStatus {
	t := metav1.NewTime(time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC))
	es.WindowOpensAt = &t
	return es
}

func TestStates(t *testing.T) {
	env := func(conds ...metav1.Condition) *ferryv1.ReleaseEnvironmentStatus {
		return &ferryv1.ReleaseEnvironmentStatus{Conditions: conds}
	}
	cases := []struct {
		es    *ferryv1.ReleaseEnvironmentStatus
		label string
		tone  tone
	}{
		{env(), "Pending", toneIdle},
		{env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.WaitingForPreviousEnvironmentReason)), "Waiting for previous environment", toneIdle},
		{env(condition(ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)), "Waiting for approval", toneWait},
		{env(condition(ferryv1.ApprovedCondition, metav1.ConditionFalse, ferryv1.RejectedReason)), "Rejected", toneBad},
		{env(condition(ferryv1.ApprovedCondition, metav1.ConditionFalse, ferryv1.ExpiredReason)), "Approval expired", toneBad},
		{env(condition(ferryv1.ApprovedCondition, metav1.ConditionTrue, ferryv1.ApprovedReason), condition(ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.RollingOutReason)), "Rolling out", toneBusy},
		{env(condition(ferryv1.ApprovedCondition, metav1.ConditionTrue, ferryv1.ApprovedReason), condition(ferryv1.RolledOutCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)), "Waiting for approval between batches", toneWait},
		{env(condition(ferryv1.RolledOutCondition, metav1.ConditionFalse, ferryv1.RolledBackReason)), "Rolled back", toneBad},
		{env(condition(ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason)), "Rolled out", toneOK},
		{opening(env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.WaitingForWindowReason))), "Waiting for window, opens at 2026-11-23 22:00 UTC", toneWait},
		{env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.WaitingForWindowReason)), "Waiting for window", toneWait},
		{opening(env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason))), "Frozen, opens at 2026-11-23 22:00 UTC", toneWait},
		{env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason)), "Frozen", toneWait},
		{env(condition(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentLockedReason)), "Environment locked", toneIdle},
	}
	for _, tc := range cases {
		if got := envState(tc.es); got.Label != tc.label || got.Tone != tc.tone {
			t.Errorf("%v: %+v, want %s/%s", tc.es.Conditions, got, tc.label, tc.tone)
		}
	}
	if got := splitCamel("RolloutFailed"); got != "Rollout failed" {
		t.Errorf("splitCamel: %q", got)
	}
}

func TestLocalPath(t *testing.T) {
	for in, want := range map[string]string{
		"/releases/a/b?x=1": "/releases/a/b?x=1",
		"":                  "/",
		"//evil.example":    "/",
		"/\\evil.example":   "/",
		"https://evil":      "/",
		"releases":          "/",
	} {
		if got := localPath(in); got != want {
			t.Errorf("localPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAPIRefusal(t *testing.T) {
	denied := apierrors.NewForbidden(schema.GroupResource{Group: "ferry.dev", Resource: "approvals"}, "", errors.New(`admission webhook "vapprovals.ferry.dev" denied the request: no`))
	code, msg := apiRefusal(denied)
	if code != http.StatusForbidden || msg != denied.Error() {
		t.Errorf("%d %q", code, msg)
	}
	if code, _ := apiRefusal(errors.New("connection refused")); code != http.StatusBadGateway {
		t.Errorf("a transport error: %d", code)
	}
}

// TestLogsComeFromTheBuildNotItsStatus: whoever may write a Build's status cannot make the UI
// show another Build's log or any file: the local executor's log is found from the Build's
// namespace, name and UID under the log directory, a Tekton Build's pod from the PipelineRun
// named after the Build.
func TestLogsComeFromTheBuildNotItsStatus(t *testing.T) {
	dir := t.TempDir()
	build := func(name, uid, executor string) *ferryv1.Build {
		return &ferryv1.Build{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, UID: types.UID(uid)},
			Status:     ferryv1.BuildStatus{Executor: executor, Steps: []ferryv1.StepStatus{{Name: "test", State: "Succeeded"}}},
		}
	}
	write := func(path, text string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	l := &logReader{logDir: dir}

	// The local executor: a's log is a's; b pointing its status at a's log, at a file elsewhere
	// or at /etc/passwd shows nothing of them.
	a, b := build("a", "uid-a", localexecutor.Name), build("b", "uid-b", localexecutor.Name)
	aLog := localexecutor.LogPath(dir, a)
	write(aLog, "==> test\nA's SECRET output\n")
	if _, whole, note := l.read(context.Background(), a); whole == nil || !strings.Contains(whole.Text, "A's SECRET output") {
		t.Fatalf("a's own log: %+v (%s)", whole, note)
	}
	outside := filepath.Join(t.TempDir(), "secret.log")
	write(outside, "SECRET elsewhere")
	for _, u := range []string{"file://" + aLog, "file://" + filepath.Dir(aLog), "file://" + outside, "file:///etc/passwd", "file://" + dir + "/../" + outside} {
		b.Status.LogURL = u
		steps, whole, note := l.read(context.Background(), b)
		if whole != nil || len(steps) > 0 || strings.Contains(note, "SECRET") || strings.Contains(note, "root:") {
			t.Errorf("status.logURL %s showed %+v %+v %q", u, steps, whole, note)
		}
	}
	// A log that is a symbolic link (to another Build's log) is not followed.
	if err := os.Symlink(aLog, localexecutor.LogPath(dir, b)); err != nil {
		t.Fatal(err)
	}
	if _, whole, note := l.read(context.Background(), b); whole != nil || !strings.Contains(note, "not a regular file") {
		t.Errorf("a symlinked log was read: %+v (%s)", whole, note)
	}
	// A big log is its last maxLogBytes.
	c := build("c", "uid-c", localexecutor.Name)
	write(localexecutor.LogPath(dir, c), strings.Repeat("x", maxLogBytes)+"THE END")
	if _, whole, _ := l.read(context.Background(), c); whole == nil || !whole.Truncated || !strings.HasSuffix(whole.Text, "THE END") || len(whole.Text) != maxLogBytes {
		t.Errorf("a big log is not its last %d bytes", maxLogBytes)
	}
	if _, whole, note := (&logReader{}).read(context.Background(), a); whole != nil || note == "" {
		t.Error("without a log directory, file logs must not be read")
	}

	// Tekton: b naming a's PipelineRun in its status gets nothing of a's pod.
	a, b = build("a", "uid-a", tektonExecutor), build("b", "uid-b", tektonExecutor)
	aRun := buildplan.PipelineRunName(a.Name, a.UID)
	tr := &pipelinev1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: aRun + "-build", Labels: map[string]string{"tekton.dev/pipelineRun": aRun},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "tekton.dev/v1", Kind: "PipelineRun", Name: aRun, UID: "pr-a", Controller: ptr.To(true)}}},
		Status: pipelinev1.TaskRunStatus{TaskRunStatusFields: pipelinev1.TaskRunStatusFields{PodName: "a-pod"}},
	}
	scheme := testScheme(t)
	if err := pipelinev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	l = &logReader{reader: fake.NewClientBuilder().WithScheme(scheme).WithObjects(tr).Build(), clientset: kubefake.NewClientset()}
	if steps, _, _ := l.read(context.Background(), a); len(steps) != 1 || steps[0].Text != "fake logs" {
		t.Fatalf("a's own step log: %+v", steps)
	}
	b.Status.PipelineRunRef = &ferryv1.LocalObjectReference{Name: aRun}
	if steps, _, _ := l.read(context.Background(), b); len(steps) != 1 || steps[0].Text != "" || strings.Contains(steps[0].Note, "a-pod") {
		t.Errorf("b, naming a's PipelineRun in its status, shows %+v", steps)
	}
}

type fakeComparer struct {
	calls int
	err   error
}

func (f *fakeComparer) Compare(_ context.Context, p gitlab.ProjectRef, from, to string) (*gitlab.Comparison, error) {
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	return &gitlab.Comparison{Commits: []gitlab.Commit{{ID: to, Title: "from " + from + " in " + p.String()}}}, nil
}

func TestWhatChanges(t *testing.T) {
	ns := "team"
	lin := func(runtime, app string) *ferryv1.ImageLineage {
		return &ferryv1.ImageLineage{Stack: &ferryv1.LayerSource{Name: "debian-12", Digest: "sha256:s"}, Runtime: &ferryv1.LayerSource{Name: "python", Digest: "sha256:" + runtime}, AppLayer: "sha256:" + app}
	}
	imgA, imgB := "r@sha256:"+strings.Repeat("a", 64), "r@sha256:"+strings.Repeat("b", 64)
	objs := []client.Object{
		&ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b1"}, Spec: ferryv1.BuildSpec{Project: "shop", Revision: "rev1"}, Status: ferryv1.BuildStatus{Image: imgA, Lineage: lin("1", "x")}},
		&ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "b2"}, Spec: ferryv1.BuildSpec{Project: "shop", Revision: "rev2"}, Status: ferryv1.BuildStatus{Image: imgB, Lineage: lin("1", "y")}},
	}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).Build()
	fc := &fakeComparer{}
	f := newChangeFinder(c, c)
	f.newComparer = func(string, string) (comparer, error) { return fc, nil }
	p := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"}, Spec: ferryv1.ProjectSpec{GitLab: ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "team/shop", ProjectID: 42}},
		Status: ferryv1.ProjectStatus{Environments: []ferryv1.ProjectEnvironmentStatus{{Name: "prod", Image: imgA, Release: "r1"}}}}
	rel := &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r2"}, Spec: ferryv1.ReleaseSpec{Project: "shop", Build: "b2", Image: imgB, Revision: "rev2"}}

	v := f.find(context.Background(), rel, p, nil, "prod")
	if v.From.Revision != "rev1" || v.From.Build != "b1" || len(v.Commits) != 1 || v.Commits[0].Title != "from rev1 in 42" {
		t.Fatalf("changes: %+v", v)
	}
	changed := map[string]bool{}
	for _, l := range v.Layers {
		changed[l.Layer] = l.Changed
	}
	if changed["Stack"] || changed["Runtime"] || !changed["Application"] {
		t.Errorf("layers: %+v", v.Layers)
	}
	f.find(context.Background(), rel, p, nil, "prod")
	if fc.calls != 1 {
		t.Errorf("GitLab was asked %d times; the answer should be cached", fc.calls)
	}
	// Nothing ran before; the same image; GitLab failing says so.
	if v := f.find(context.Background(), rel, p, nil, "staging"); !v.Nothing {
		t.Errorf("first deployment: %+v", v)
	}
	if v := f.find(context.Background(), rel, p, &ferryv1.ReleaseEnvironmentStatus{PreviousImage: imgB}, "prod"); !v.Same {
		t.Errorf("same image: %+v", v)
	}
	fc.err = errors.New("GitLab answered 401: 401 Unauthorized")
	f.cache = map[string]cachedComparison{}
	if v := f.find(context.Background(), rel, p, nil, "prod"); !strings.Contains(v.CommitsNote, "401") || len(v.Layers) != 3 {
		t.Errorf("GitLab failing: %+v", v)
	}
}

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := ferryv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}
