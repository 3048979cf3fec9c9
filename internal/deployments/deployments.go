// Package deployments says whether a Deployment has rolled out and, when it has not, what its
// pods wait for, in words for people: installers waiting for what they applied (Tekton, Ferry
// itself) print it while they wait and in their errors.
package deployments

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NotAvailable says why a Deployment is not rolled out, "" when every replica runs its current
// template, is available, and no replica of an older template is left.
func NotAvailable(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	switch {
	case d.Status.ObservedGeneration < d.Generation:
		return "has not been seen by its controller yet"
	case d.Status.UpdatedReplicas < want:
		return fmt.Sprintf("has %d of %d replicas updated", d.Status.UpdatedReplicas, want)
	case d.Status.AvailableReplicas < want:
		return fmt.Sprintf("has %d of %d replicas available", d.Status.AvailableReplicas, want)
	case d.Status.Replicas > d.Status.UpdatedReplicas:
		return fmt.Sprintf("still has %d replicas of an older template", d.Status.Replicas-d.Status.UpdatedReplicas)
	}
	return ""
}

// PodsSay is what the pods of a Deployment wait for (an image pull, a crash), as " (…)", or "".
func PodsSay(ctx context.Context, c client.Reader, d *appsv1.Deployment) string {
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
		return ""
	}
	var says []string
	for _, p := range pods.Items {
		for _, s := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
			switch {
			case s.State.Waiting != nil && s.State.Waiting.Reason != "":
				says = append(says, fmt.Sprintf("%s: %s %s", s.Name, s.State.Waiting.Reason, s.State.Waiting.Message))
			case s.LastTerminationState.Terminated != nil:
				t := s.LastTerminationState.Terminated
				says = append(says, fmt.Sprintf("%s: exited %d (%s) %s", s.Name, t.ExitCode, t.Reason, t.Message))
			}
		}
	}
	if len(says) == 0 {
		return ""
	}
	return " (" + strings.Join(says, "; ") + ")"
}
