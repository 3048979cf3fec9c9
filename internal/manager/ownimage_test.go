package manager

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestOwnImage(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	pod := func(containers []corev1.Container, statuses []corev1.ContainerStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: "ferry-manager-abc"},
			Spec:       corev1.PodSpec{Containers: containers},
			Status:     corev1.PodStatus{ContainerStatuses: statuses},
		}
	}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		want    string
		wantErr string
	}{
		{
			name: "pinned in the pod's spec, as kustomize sets it",
			pod:  pod([]corev1.Container{{Name: "manager", Image: "harbor.example.com/ferry/ferry@" + digest}}, nil),
			want: "harbor.example.com/ferry/ferry@" + digest,
		},
		{
			name: "a tag in the spec: the digest the node pulled",
			pod: pod([]corev1.Container{{Name: "manager", Image: "harbor.example.com/ferry/ferry:v1"}},
				[]corev1.ContainerStatus{{Name: "manager", ImageID: "harbor.example.com/ferry/ferry@" + digest}}),
			want: "harbor.example.com/ferry/ferry@" + digest,
		},
		{
			name: "Docker's prefix on the image ID",
			pod: pod([]corev1.Container{{Name: "manager", Image: "ferry:v1"}},
				[]corev1.ContainerStatus{{Name: "manager", ImageID: "docker-pullable://harbor.example.com/ferry/ferry@" + digest}}),
			want: "harbor.example.com/ferry/ferry@" + digest,
		},
		{
			name: "a tag not pulled yet: the tag",
			pod:  pod([]corev1.Container{{Name: "manager", Image: "harbor.example.com/ferry/ferry:v1"}}, nil),
			want: "harbor.example.com/ferry/ferry:v1",
		},
		{
			name: "the manager among sidecars",
			pod:  pod([]corev1.Container{{Name: "proxy", Image: "envoy@" + digest}, {Name: "manager", Image: "ferry@" + digest}, {Name: "log", Image: "fluent"}}, nil),
			want: "ferry@" + digest,
		},
		{
			name:    "no container named manager among several",
			pod:     pod([]corev1.Container{{Name: "a", Image: "a"}, {Name: "b", Image: "b"}}, nil),
			wantErr: "pod ferry-system/ferry-manager-abc has no container named manager",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithObjects(tc.pod).Build()
			got, err := OwnImage(t.Context(), c, "ferry-system", "ferry-manager-abc")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %q, %v; want error %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	t.Run("a pod that is not there", func(t *testing.T) {
		_, err := OwnImage(t.Context(), fake.NewClientBuilder().Build(), "ferry-system", "gone")
		if err == nil || !strings.Contains(err.Error(), "failed to read pod ferry-system/gone") {
			t.Fatalf("got %v", err)
		}
	})
}
