package main

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func TestSoakLeft(t *testing.T) {
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{-time.Minute, "0s"}, {0, "0s"}, {42 * time.Second, "42s"}, {90*time.Minute + 30*time.Second, "1h30m"}, {25 * time.Hour, "25h0m"}} {
		if got := soakLeft(now.Add(tc.d), now); got != tc.want {
			t.Errorf("soakLeft(%s) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// TestReleaseTableShowsSoak: ferry get releases shows the time a soaking environment has left.
func TestReleaseTableShowsSoak(t *testing.T) {
	now := time.Date(2026, 6, 1, 9, 0, 0, 0, time.UTC)
	clock = func() time.Time { return now }
	t.Cleanup(func() { clock = time.Now })
	ends := metav1.NewTime(now.Add(2*time.Hour + 30*time.Second))
	rel := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: "r/shop@sha256:" + strings.Repeat("1", 64)}}
	rel.Name = "r1"
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: "prod", SoakEndsAt: &ends,
		Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.SoakingReason, Message: "soaking"}}}}
	rows := releaseTable([]ferryv1.Release{rel})
	if got := rows[1][5]; got != "prod:soaking(2h0m left)" {
		t.Errorf("environments column = %q", got)
	}
}
