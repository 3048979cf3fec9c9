package rollout

import (
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// Progress is what a Deployment reports about a rollout to one image.
type Progress struct {
	// Replicas is the number of replicas the Deployment wants.
	Replicas int32
	// Updated is the number of pods running the wanted template.
	Updated int32
	// Available is the number of available pods.
	Available int32
	// Healthy is true when every replica is updated and available and no old pod is left.
	Healthy bool
	// Message says where the rollout stands, for conditions.
	Message string
}

// progressOf reads a Deployment's rollout to image. A Deployment that runs another image, or
// whose latest spec the Deployment controller has not seen yet, is not healthy. newRS, when
// known, is the Deployment's current ReplicaSet: it tells how many updated pods are available
// (the Deployment's own count includes old pods).
func progressOf(d *appsv1.Deployment, image string, newRS *appsv1.ReplicaSet) Progress {
	if d == nil {
		return Progress{Message: "the Deployment does not exist"}
	}
	p := Progress{Replicas: 1, Updated: d.Status.UpdatedReplicas, Available: d.Status.AvailableReplicas}
	if d.Spec.Replicas != nil {
		p.Replicas = *d.Spec.Replicas
	}
	if got := containerImage(d); got != image {
		p.Message = fmt.Sprintf("Deployment %s runs %s, not %s", d.Name, ShortImage(got), ShortImage(image))
		return p
	}
	if d.Status.ObservedGeneration < d.Generation {
		p.Message = fmt.Sprintf("waiting for the Deployment controller to observe Deployment %s (generation %d)", d.Name, d.Generation)
		return p
	}
	p.Healthy = p.Updated == p.Replicas && p.Available >= p.Replicas && d.Status.Replicas == p.Replicas
	switch {
	case newRS != nil && d.Status.Replicas > p.Updated:
		p.Message = fmt.Sprintf("%d of %d replicas updated, %d of them available", p.Updated, p.Replicas, newRS.Status.AvailableReplicas)
	default:
		p.Message = fmt.Sprintf("%d of %d replicas updated, %d available", p.Updated, p.Replicas, min(p.Available, p.Replicas))
	}
	if old := d.Status.Replicas - p.Updated; old > 0 && p.Updated == p.Replicas {
		p.Message += fmt.Sprintf(", %d old replicas terminating", old)
	}
	if !p.Healthy {
		if cond := deploymentCondition(d, appsv1.DeploymentProgressing); cond != nil && cond.Status == corev1.ConditionFalse {
			p.Message += "; " + cond.Message
		}
	}
	return p
}

// revisionAnnotation is the Deployment controller's revision number on a Deployment and its
// ReplicaSets.
const revisionAnnotation = "deployment.kubernetes.io/revision"

// isNewReplicaSet reports whether rs is the Deployment's current ReplicaSet.
func isNewReplicaSet(d *appsv1.Deployment, rs *appsv1.ReplicaSet) bool {
	if rs.Annotations[revisionAnnotation] == "" || rs.Annotations[revisionAnnotation] != d.Annotations[revisionAnnotation] {
		return false
	}
	for _, ref := range rs.OwnerReferences {
		if ref.UID == d.UID && ref.Controller != nil && *ref.Controller {
			return true
		}
	}
	return false
}

// containerImage is the image of the application container in the Deployment's template.
func containerImage(d *appsv1.Deployment) string {
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == ContainerName {
			return c.Image
		}
	}
	return ""
}

func deploymentCondition(d *appsv1.Deployment, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range d.Status.Conditions {
		if d.Status.Conditions[i].Type == t {
			return &d.Status.Conditions[i]
		}
	}
	return nil
}
