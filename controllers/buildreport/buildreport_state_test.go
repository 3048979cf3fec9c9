package buildreport

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

func cond(t string, s metav1.ConditionStatus, reason, msg string) metav1.Condition {
	return metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg}
}

func build(conds ...metav1.Condition) *ferryv1.Build {
	return &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-da15608-1a2b3c4d"},
		Spec:       ferryv1.BuildSpec{Project: "shop", Revision: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", Ref: "refs/heads/main"},
		Status:     ferryv1.BuildStatus{Conditions: conds},
	}
}

func TestDesiredState(t *testing.T) {
	running := cond(ferryv1.PipelineSucceededCondition, metav1.ConditionUnknown, ferryv1.PipelineRunningReason, "")
	cases := []struct {
		name string
		b    *ferryv1.Build
		want gitlab.State
	}{
		{"new", build(), gitlab.StatePending},
		{"source resolving", build(cond(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.ProgressingReason, "")), gitlab.StatePending},
		{"pipeline created, not running", build(cond(ferryv1.PipelineSucceededCondition, metav1.ConditionUnknown, ferryv1.ProgressingReason, "")), gitlab.StatePending},
		{"pipeline running", build(running), gitlab.StateRunning},
		{"running, Ready unknown", build(running, cond(ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.ProgressingReason, "")), gitlab.StateRunning},
		{"succeeded", build(cond(ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason, "")), gitlab.StateSuccess},
		{"failed", build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.PipelineFailedReason, "")), gitlab.StateFailed},
		{"invalid pipeline file", build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason, "")), gitlab.StateFailed},
		{"timed out while running", build(running, cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.PipelineTimeoutReason, "")), gitlab.StateFailed},
		{"cancelled", build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.CancelledReason, "")), gitlab.StateCanceled},
		{"superseded", build(running, cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.SupersededReason, "")), gitlab.StateCanceled},
	}
	for _, c := range cases {
		if got := DesiredState(c.b); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestDescription(t *testing.T) {
	failed := build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason, ".ferry.yaml:12:3: field stak not found\nmore detail"))
	succeeded := build(cond(ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason, "done"))
	succeeded.Status.Image = "harbor.example.com/team/shop@sha256:" + strings.Repeat("a", 64)
	superseded := build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.SupersededReason, "superseded by shop-0123456-abcdef01"))
	long := build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.PipelineFailedReason, strings.Repeat("x", 400)))
	cases := []struct {
		b     *ferryv1.Build
		state gitlab.State
		want  string
	}{
		{build(), gitlab.StatePending, "Build queued"},
		{build(), gitlab.StateRunning, "Pipeline running"},
		{failed, gitlab.StateFailed, "Build failed: .ferry.yaml:12:3: field stak not found"},
		{succeeded, gitlab.StateSuccess, "Image pushed: harbor.example.com/team/shop@sha256:" + strings.Repeat("a", 64)},
		{superseded, gitlab.StateCanceled, "Build cancelled: superseded by shop-0123456-abcdef01"},
	}
	for _, c := range cases {
		if got := Description(c.b, c.state); got != c.want {
			t.Errorf("Description(%s) = %q, want %q", c.state, got, c.want)
		}
	}
	if d := Description(long, gitlab.StateFailed); len([]rune(d)) != 255 {
		t.Errorf("a long message must be cut to 255 characters, got %d", len([]rune(d)))
	}
}

func TestStatusRefAndURL(t *testing.T) {
	b := build()
	if got := StatusRef(b); got != "main" {
		t.Errorf("branch: %q", got)
	}
	b.Spec.Ref = "refs/tags/v1.2.0"
	if got := StatusRef(b); got != "v1.2.0" {
		t.Errorf("tag: %q", got)
	}
	b.Spec.Ref = "refs/merge-requests/7/head"
	if got := StatusRef(b); got != "" {
		t.Errorf("MR without source branch: %q", got)
	}
	b.Annotations = map[string]string{ferryv1.GitLabSourceBranchAnnotation: "feat/x"}
	if got := StatusRef(b); got != "feat/x" {
		t.Errorf("MR: %q", got)
	}
	if got := BuildURL("https://ferry.example.com/", b); got != "https://ferry.example.com/builds/team/shop-da15608-1a2b3c4d" {
		t.Errorf("URL: %q", got)
	}
	if got := BuildURL("", b); got != "" {
		t.Errorf("no UI: %q", got)
	}
}

func TestNoteBody(t *testing.T) {
	failed := build(cond(ferryv1.ReadyCondition, metav1.ConditionFalse, ferryv1.PipelineFailedReason, "step test failed\n/merge\n/approve"))
	body := NoteBody(failed, gitlab.StateFailed, "https://ferry.example.com/builds/team/x")
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "/") {
			t.Errorf("line %q would run as a GitLab quick action", line)
		}
	}
	for _, want := range []string{"failed", "da156088", "> step test failed", "[View the build in Ferry](https://ferry.example.com/builds/team/x)", "<!-- ferry:build team/shop-da15608-1a2b3c4d -->"} {
		if !strings.Contains(body, want) {
			t.Errorf("note lacks %q:\n%s", want, body)
		}
	}
	ok := build(cond(ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason, "ok"))
	ok.Status.Image = "harbor.example.com/team/shop@sha256:abc"
	if body := NoteBody(ok, gitlab.StateSuccess, ""); !strings.Contains(body, "succeeded") || !strings.Contains(body, "`harbor.example.com/team/shop@sha256:abc`") || strings.Contains(body, "View the build") {
		t.Errorf("success note:\n%s", body)
	}
}
