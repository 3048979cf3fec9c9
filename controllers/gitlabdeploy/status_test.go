package gitlabdeploy

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

func TestDesiredStatus(t *testing.T) {
	now := metav1.Now()
	c := func(t, s, reason string) metav1.Condition {
		return metav1.Condition{Type: t, Status: metav1.ConditionStatus(s), Reason: reason}
	}
	cases := []struct {
		name  string
		done  bool
		conds []metav1.Condition
		want  gitlab.DeploymentStatus
	}{
		{"waiting for the gate", false, []metav1.Condition{c("Approved", "Unknown", ferryv1.WaitingForApprovalReason), c("Ready", "Unknown", ferryv1.WaitingForApprovalReason)}, ""},
		{"superseded before rolling out", true, []metav1.Condition{c("Ready", "False", ferryv1.SupersededReason)}, ""},
		{"rolling out", false, []metav1.Condition{c("RolledOut", "Unknown", ferryv1.RollingOutReason), c("Ready", "Unknown", ferryv1.RollingOutReason)}, gitlab.DeploymentRunning},
		{"rolling back", false, []metav1.Condition{c("RolledOut", "False", ferryv1.RollingBackReason), c("Ready", "False", ferryv1.RollingBackReason)}, gitlab.DeploymentRunning},
		{"healthy", true, []metav1.Condition{c("RolledOut", "True", ferryv1.HealthyReason), c("Ready", "True", ferryv1.SucceededReason)}, gitlab.DeploymentSuccess},
		{"rolled back", true, []metav1.Condition{c("RolledOut", "False", ferryv1.RolledBackReason), c("Ready", "False", ferryv1.RolledBackReason)}, gitlab.DeploymentFailed},
		{"superseded", true, []metav1.Condition{c("RolledOut", "Unknown", ferryv1.RollingOutReason), c("Ready", "False", ferryv1.SupersededReason)}, gitlab.DeploymentCanceled},
		{"cancelled", true, []metav1.Condition{c("RolledOut", "False", ferryv1.CancelledReason), c("Ready", "False", ferryv1.CancelledReason)}, gitlab.DeploymentCanceled},
	}
	for _, tc := range cases {
		es := &ferryv1.ReleaseEnvironmentStatus{Name: "dev", Conditions: tc.conds}
		if tc.done {
			es.CompletionTime = &now
		}
		if got := DesiredStatus(es); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRefName(t *testing.T) {
	cases := []struct {
		ref, sourceBranch, want string
		tag                     bool
	}{
		{"refs/heads/main", "", "main", false},
		{"refs/heads/feature/x", "", "feature/x", false},
		{"refs/tags/v1.2.0", "", "v1.2.0", true},
		{"refs/merge-requests/7/head", "feature/y", "feature/y", false},
		{"refs/merge-requests/7/head", "", "", false},
		{"refs/pipelines/3", "", "", false},
	}
	for _, c := range cases {
		b := &ferryv1.Build{Spec: ferryv1.BuildSpec{Ref: c.ref}}
		if c.sourceBranch != "" {
			b.Annotations = map[string]string{ferryv1.GitLabSourceBranchAnnotation: c.sourceBranch}
		}
		if got, tag := RefName(b); got != c.want || tag != c.tag {
			t.Errorf("%s: %q %v, want %q %v", c.ref, got, tag, c.want, c.tag)
		}
	}
}

func TestCheckURL(t *testing.T) {
	for v, bad := range map[string]bool{
		"https://shop.example.com/":        false,
		"http://10.0.0.1:8080":             false,
		"javascript:alert(1)":              true,
		"https://user:pw@shop.example.com": true,
		"/relative":                        true,
		"":                                 true,
		"https://" + string(make([]byte, 300)) + ".io": true,
	} {
		if got := checkURL(v) != ""; got != bad {
			t.Errorf("%q: refused %v, want %v", v, got, bad)
		}
	}
}
