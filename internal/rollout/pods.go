package rollout

import (
	"context"
	"fmt"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// waitingReasons are the kubelet's reasons for a container that does not run, which a person must
// see to know why a rollout does not progress: the image cannot be pulled, the container cannot be
// created or keeps crashing.
var waitingReasons = map[string]bool{
	"ErrImagePull": true, "ImagePullBackOff": true, "InvalidImageName": true, "ErrImageNeverPull": true,
	"CreateContainerConfigError": true, "CreateContainerError": true, "RunContainerError": true,
	"CrashLoopBackOff": true, "PreCreateHookError": true, "PostStartHookError": true,
}

// podProblem is what keeps one pod of a rollout from being ready, in the kubelet's words.
type podProblem struct {
	pod     string
	message string
}

// podProblems explains why the pods running image in a Deployment are not ready: the waiting
// reason of the application container (an image that cannot be pulled, a crash loop), its last
// exit, a failing readiness probe (the kubelet's event), or why the pod is not scheduled. It reads
// the pods only when the rollout is not healthy, and one pod's events at most.
func (a *applier) podProblems(ctx context.Context, d *appsv1.Deployment, image string) ([]podProblem, error) {
	if d == nil || d.Spec.Selector == nil {
		return nil, nil
	}
	pods := &corev1.PodList{}
	if err := a.c.List(ctx, pods, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
		return nil, fmt.Errorf("failed to list the pods of Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
	var problems []podProblem
	var unready *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil || podImage(p) != image {
			continue
		}
		if msg := podProblemMessage(p); msg != "" {
			problems = append(problems, podProblem{pod: p.Name, message: msg})
		} else if !podReady(p) && p.Status.Phase == corev1.PodRunning && unready == nil {
			unready = p
		}
	}
	if len(problems) == 0 && unready != nil {
		msg := "running but not ready"
		if probe := a.lastProbeFailure(ctx, unready); probe != "" {
			msg += ": " + probe
		}
		problems = append(problems, podProblem{pod: unready.Name, message: msg})
	}
	return problems, nil
}

// podProblemMessage is what the pod's status says is wrong, "" when nothing is.
func podProblemMessage(p *corev1.Pod) string {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name != ContainerName {
			continue
		}
		if w := cs.State.Waiting; w != nil && waitingReasons[w.Reason] {
			msg := w.Reason
			if w.Message != "" {
				msg += ": " + w.Message
			}
			if t := cs.LastTerminationState.Terminated; t != nil && w.Reason == "CrashLoopBackOff" {
				msg = fmt.Sprintf("CrashLoopBackOff: exited with code %d (%s) %d times", t.ExitCode, t.Reason, cs.RestartCount)
			}
			return msg
		}
		if t := cs.State.Terminated; t != nil && t.ExitCode != 0 {
			return fmt.Sprintf("exited with code %d (%s)", t.ExitCode, t.Reason)
		}
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Message != "" {
			return "not scheduled: " + c.Message
		}
	}
	return ""
}

// lastProbeFailure is the kubelet's last message about a failing probe of the pod (event reason
// Unhealthy), "" when there is none.
func (a *applier) lastProbeFailure(ctx context.Context, p *corev1.Pod) string {
	events := &corev1.EventList{}
	if err := a.c.List(ctx, events, client.InNamespace(p.Namespace), client.MatchingFields{"involvedObject.name": p.Name, "reason": "Unhealthy"}); err != nil {
		return ""
	}
	var last *corev1.Event
	for i := range events.Items {
		e := &events.Items[i]
		if last == nil || e.LastTimestamp.After(last.LastTimestamp.Time) {
			last = e
		}
	}
	if last == nil {
		return ""
	}
	return strings.TrimSpace(last.Message)
}

// describePodProblems says what is wrong with the first pod, and how many more have problems.
func describePodProblems(problems []podProblem) string {
	if len(problems) == 0 {
		return ""
	}
	msg := "pod " + problems[0].pod + ": " + problems[0].message
	if n := len(problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more pods)", n)
	}
	return msg
}

func podImage(p *corev1.Pod) string {
	for _, c := range p.Spec.Containers {
		if c.Name == ContainerName {
			return c.Image
		}
	}
	return ""
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
