package rollout

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestPodProblemMessage(t *testing.T) {
	waiting := func(reason, message string) corev1.ContainerStatus {
		return corev1.ContainerStatus{Name: ContainerName, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: message}}}
	}
	for _, tc := range []struct {
		name string
		pod  corev1.PodStatus
		want string
	}{
		{"image pull", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ImagePullBackOff", `Back-off pulling image "r/app@sha256:00"`)}},
			`ImagePullBackOff: Back-off pulling image "r/app@sha256:00"`},
		{"crash loop", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: ContainerName, RestartCount: 3,
			State:                corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 40s"}},
			LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error"}},
		}}}, "CrashLoopBackOff: exited with code 2 (Error) 3 times"},
		{"exited", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: ContainerName, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error"}}}}},
			"exited with code 1 (Error)"},
		{"not scheduled", corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/1 nodes are available: 1 Insufficient memory."}}},
			"not scheduled: 0/1 nodes are available: 1 Insufficient memory."},
		{"creating", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{waiting("ContainerCreating", "")}}, ""},
		{"another container", corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "sidecar", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := podProblemMessage(&corev1.Pod{Status: tc.pod}); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDescribePodProblems(t *testing.T) {
	if got := describePodProblems(nil); got != "" {
		t.Errorf("no problems described as %q", got)
	}
	got := describePodProblems([]podProblem{{pod: "app-1", message: "ErrImagePull: not found"}, {pod: "app-2", message: "ErrImagePull: not found"}})
	if got != "pod app-1: ErrImagePull: not found (and 1 more pods)" {
		t.Errorf("got %q", got)
	}
}
