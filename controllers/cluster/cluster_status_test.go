package cluster

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
)

func TestSetStatus(t *testing.T) {
	now := metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))
	cases := []struct {
		name        string
		result      probeResult
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage string
		wantVersion string
	}{
		{
			name:        "reachable",
			result:      probeResult{host: "https://10.0.0.1:6443", version: "v1.35.4", time: now},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ferryv1.ClusterReachableReason,
			wantMessage: "API server at https://10.0.0.1:6443 answered, version v1.35.4",
			wantVersion: "v1.35.4",
		},
		{
			name:        "secret missing",
			result:      probeResult{err: &clusters.Error{Reason: ferryv1.SecretNotFoundReason, Message: "Secret ferry-system/x not found"}, time: now},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.SecretNotFoundReason,
			wantMessage: "Secret ferry-system/x not found",
			wantVersion: "v1.34.0",
		},
		{
			name:        "plain error is unreachable",
			result:      probeResult{err: errors.New("context deadline exceeded"), time: now},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.ClusterUnreachableReason,
			wantMessage: "context deadline exceeded",
			wantVersion: "v1.34.0",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Generation: 3}}
			// The last version seen is kept while the cluster is unreachable.
			c.Status.ServerVersion = "v1.34.0"
			setStatus(c, tc.result)
			if len(c.Status.Conditions) != 1 {
				t.Fatalf("conditions = %+v", c.Status.Conditions)
			}
			got := c.Status.Conditions[0]
			if got.Type != ferryv1.ReadyCondition || got.Status != tc.wantStatus || got.Reason != tc.wantReason || got.Message != tc.wantMessage || got.ObservedGeneration != 3 {
				t.Errorf("condition = %+v", got)
			}
			if c.Status.ServerVersion != tc.wantVersion || c.Status.ObservedGeneration != 3 || !c.Status.LastProbeTime.Equal(&now) {
				t.Errorf("status = %+v", c.Status)
			}
		})
	}
}
