package main

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestReleaseTableShowsWave: ferry get releases shows the wave of an environment rolling out in
// waves, and nothing once it finished or when it rolls out all at once.
func TestReleaseTableShowsWave(t *testing.T) {
	rolling := []metav1.Condition{{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.RollingOutReason, Message: "wave 2 of 3 (west)"}}
	done := metav1.Now()
	rel := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: "r/shop@sha256:" + strings.Repeat("1", 64)}}
	rel.Name = "r1"
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "prod", Wave: 2, Waves: 3, Conditions: rolling},
		{Name: "staging", Conditions: rolling},
		{Name: "dev", Wave: 1, Waves: 1, CompletionTime: &done},
	}
	rows := releaseTable([]ferryv1.Release{rel})
	got := rows[1][5]
	if !strings.Contains(got, "prod:") || !strings.Contains(got, "(wave 2/3)") {
		t.Errorf("environments column %q does not show prod's wave", got)
	}
	if strings.Count(got, "wave") != 1 {
		t.Errorf("environments column %q shows a wave for an environment that is not rolling out in waves", got)
	}
}

// TestReleaseTableShowsVerifyingWave: while the checks of a healthy wave run, ferry get releases
// says which wave is verifying (and not a second verification word); once the next wave rolls
// out, it shows that wave again.
func TestReleaseTableShowsVerifyingWave(t *testing.T) {
	now := metav1.Now()
	rolling := []metav1.Condition{{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.RollingOutReason, Message: "verifying wave 2/3"}}
	healthy := []metav1.Condition{{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionTrue, Reason: ferryv1.HealthyReason}}
	rel := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: "r/shop@sha256:" + strings.Repeat("1", 64)}}
	rel.Name = "r1"
	es := ferryv1.ReleaseEnvironmentStatus{
		Name: "prod", Wave: 2, Waves: 3, Conditions: rolling,
		Clusters: []ferryv1.ClusterRolloutStatus{
			{Cluster: "east", Wave: 1, Conditions: healthy}, {Cluster: "west", Wave: 2, Conditions: healthy}, {Cluster: "north", Wave: 3},
		},
		Verification: &ferryv1.VerificationStatus{Run: 1, StartTime: &now, VerifiedWave: 1, Checks: []ferryv1.VerificationCheckStatus{
			{Name: "smoke", Source: ferryv1.EnvironmentCheck, Cluster: "east", Result: ferryv1.VerificationPassed},
			{Name: "smoke", Source: ferryv1.EnvironmentCheck, Cluster: "west"},
		}},
	}
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
	if got := releaseTable([]ferryv1.Release{rel})[1][5]; !strings.Contains(got, "(verifying wave 2/3)") || strings.Contains(got, "verifying(") {
		t.Errorf("environments column %q, want the verifying wave only", got)
	}
	// Wave 2 passed; wave 3 rolls out.
	es.Wave, es.Verification.VerifiedWave = 3, 2
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
	if got := releaseTable([]ferryv1.Release{rel})[1][5]; !strings.Contains(got, "(wave 3/3)") || strings.Contains(got, "verifying") {
		t.Errorf("environments column %q, want wave 3 rolling out", got)
	}
}
