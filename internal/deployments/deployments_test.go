package deployments

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/ptr"
)

func TestNotAvailable(t *testing.T) {
	for _, tc := range []struct {
		name   string
		gen    int64
		status appsv1.DeploymentStatus
		want   string
	}{
		{"not seen yet", 2, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}, "has not been seen by its controller yet"},
		{"rolling", 1, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 1, AvailableReplicas: 2}, "has 1 of 2 replicas updated"},
		{"starting", 1, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 1}, "has 1 of 2 replicas available"},
		{"an old replica left", 1, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 3, UpdatedReplicas: 2, AvailableReplicas: 2}, "still has 1 replicas of an older template"},
		{"rolled out", 1, appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: 2, UpdatedReplicas: 2, AvailableReplicas: 2}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](2)}, Status: tc.status}
			d.Generation = tc.gen
			if got := NotAvailable(d); got != tc.want {
				t.Errorf("NotAvailable = %q, want %q", got, tc.want)
			}
		})
	}
}
