package rollout

import (
	"fmt"
	"maps"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	metav1ac "k8s.io/client-go/applyconfigurations/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// revisionHistoryLimit keeps a few old ReplicaSets for people who look; Ferry itself rolls back
// by applying the previous version, not by ReplicaSet history.
const revisionHistoryLimit = 5

// namespaceLabels are the labels of a project's namespace in an environment.
func (w *Workload) namespaceLabels() map[string]string {
	return map[string]string{
		ferryv1.ProjectLabel:     w.Project,
		ferryv1.EnvironmentLabel: w.Environment,
		ferryv1.ManagedByLabel:   ferryv1.ManagedByValue,
	}
}

// selector is what a track's Deployment selects; it never changes once the Deployment exists.
func (w *Workload) selector(track string) map[string]string {
	return map[string]string{NameLabel: w.Project, ferryv1.TrackLabel: track}
}

// renderNamespace is the namespace with its labels and the ownership record.
func (w *Workload) renderNamespace() *corev1ac.NamespaceApplyConfiguration {
	return corev1ac.Namespace(w.Namespace).
		WithLabels(w.targetNamespaceLabels()).
		WithAnnotations(map[string]string{ferryv1.OwnerAnnotation: w.Owner.String()})
}

// renderPullSecret is the copy of the Project's pull Secret.
func (w *Workload) renderPullSecret() *corev1ac.SecretApplyConfiguration {
	return corev1ac.Secret(w.PullSecret.Name, w.Namespace).
		WithLabels(w.namespaceLabels()).
		WithType(corev1.SecretTypeDockerConfigJson).
		WithData(map[string][]byte{corev1.DockerConfigJsonKey: w.PullSecret.DockerConfigJSON})
}

// renderService is the Service in front of both tracks, or nil when the application listens on
// no port.
func (w *Workload) renderService() *corev1ac.ServiceApplyConfiguration {
	if len(w.Deploy.Ports) == 0 {
		return nil
	}
	svc := corev1ac.ServiceSpec().WithSelector(map[string]string{NameLabel: w.Project})
	for _, p := range w.Deploy.Ports {
		svc.WithPorts(corev1ac.ServicePort().
			WithName(fmt.Sprintf("tcp-%d", p)).
			WithProtocol(corev1.ProtocolTCP).
			WithPort(p).
			WithTargetPort(intstr.FromInt32(p)))
	}
	labels := w.namespaceLabels()
	labels[NameLabel] = w.Project
	return corev1ac.Service(w.Project, w.Namespace).WithLabels(labels).WithSpec(svc)
}

// renderDeployment is one track's Deployment with the given number of replicas.
func (w *Workload) renderDeployment(track string, replicas int32, progressDeadlineSeconds int32) *appsv1ac.DeploymentApplyConfiguration {
	selector := w.selector(track)
	labels := w.namespaceLabels()
	maps.Copy(labels, selector)
	labels[ferryv1.ReleaseLabel] = w.Release

	container := corev1ac.Container().
		WithName(ContainerName).
		WithImage(w.Image)
	for _, p := range w.Deploy.Ports {
		container.WithPorts(corev1ac.ContainerPort().WithName(fmt.Sprintf("tcp-%d", p)).WithContainerPort(p).WithProtocol(corev1.ProtocolTCP))
	}
	if hc := w.Deploy.HealthCheck; hc != nil {
		probe := func() *corev1ac.ProbeApplyConfiguration {
			return corev1ac.Probe().
				WithHTTPGet(corev1ac.HTTPGetAction().WithPath(hc.Path).WithPort(intstr.FromInt32(hc.Port))).
				WithInitialDelaySeconds(hc.InitialDelaySeconds)
		}
		container.WithReadinessProbe(probe()).WithLivenessProbe(probe().WithFailureThreshold(6))
	}
	if r := w.Deploy.Resources; r != nil && (len(r.Requests) > 0 || len(r.Limits) > 0) {
		res := corev1ac.ResourceRequirements()
		if len(r.Requests) > 0 {
			res.WithRequests(r.Requests)
		}
		if len(r.Limits) > 0 {
			res.WithLimits(r.Limits)
		}
		container.WithResources(res)
	}

	pod := corev1ac.PodSpec().WithContainers(container)
	if w.PullSecret != nil {
		pod.WithImagePullSecrets(corev1ac.LocalObjectReference().WithName(w.PullSecret.Name))
	}
	template := corev1ac.PodTemplateSpec().
		WithLabels(selector).
		WithSpec(pod)
	if len(w.Deploy.PodAnnotations) > 0 {
		// Sorted for a stable hash (maps marshal sorted anyway; this keeps the intent visible).
		annotations := make(map[string]string, len(w.Deploy.PodAnnotations))
		for _, k := range slices.Sorted(maps.Keys(w.Deploy.PodAnnotations)) {
			annotations[k] = w.Deploy.PodAnnotations[k]
		}
		template.WithAnnotations(annotations)
	}

	return appsv1ac.Deployment(DeploymentName(w.Project, track), w.Namespace).
		WithLabels(labels).
		WithAnnotations(map[string]string{ferryv1.ImageAnnotation: w.Image}).
		WithSpec(appsv1ac.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1ac.LabelSelector().WithMatchLabels(selector)).
			WithRevisionHistoryLimit(revisionHistoryLimit).
			// A new pod must be ready before an old one goes: a version that never becomes healthy
			// never takes a serving pod away, and its rollback loses no request.
			WithStrategy(appsv1ac.DeploymentStrategy().
				WithType(appsv1.RollingUpdateDeploymentStrategyType).
				WithRollingUpdate(appsv1ac.RollingUpdateDeployment().
					WithMaxUnavailable(intstr.FromInt32(0)).
					WithMaxSurge(intstr.FromString("25%")))).
			WithProgressDeadlineSeconds(progressDeadlineSeconds).
			WithTemplate(template))
}
