package rollout

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// applier writes a workload's objects into one cluster, each at most once per content, and only
// into namespaces that belong to the workload's Project.
type applier struct {
	c client.Client
	// writes counts the requests that changed something, for callers that report them.
	writes int
	// cluster names the cluster in refusals; rules say which namespaces besides the Project's own
	// may be written into.
	cluster string
	rules   NamespaceRules
	// claimed are the namespaces found to belong to the Project during this Step.
	claimed map[string]bool
}

// claim checks, once per Step and namespace, that w's namespace belongs to w's Project (creating or
// adopting it as the rules allow) before the first write into it. A refusal is a *NamespaceError.
func (a *applier) claim(ctx context.Context, w *Workload) error {
	if a.claimed[w.Namespace] {
		return nil
	}
	created, err := claim(ctx, a.c, a.cluster, w, a.rules)
	if err != nil {
		return err
	}
	if created {
		a.writes++
	}
	if a.claimed == nil {
		a.claimed = map[string]bool{}
	}
	a.claimed[w.Namespace] = true
	return nil
}

// hashOf is the hash of an apply configuration, before the hash itself is added to it.
func hashOf(cfg any) (string, error) {
	data, err := json.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("failed to encode an apply configuration: %w", err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:16]), nil
}

// applyOnce applies cfg with Ferry's field manager unless live (read at key) already carries
// the hash of cfg in ferryv1.AppliedAnnotation. annotate adds the hash to cfg.
func (a *applier) applyOnce(ctx context.Context, key types.NamespacedName, live client.Object, cfg runtime.ApplyConfiguration, annotate func(hash string)) (bool, error) {
	hash, err := hashOf(cfg)
	if err != nil {
		return false, err
	}
	switch err := a.c.Get(ctx, key, live); {
	case err == nil:
		if live.GetAnnotations()[ferryv1.AppliedAnnotation] == hash {
			return false, nil
		}
	case !apierrors.IsNotFound(err):
		return false, fmt.Errorf("failed to read %s %s: %w", kindName(live), key, err)
	}
	annotate(hash)
	if err := a.c.Apply(ctx, cfg, client.FieldOwner(ferryv1.FieldManager), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("failed to apply %s %s: %w", kindName(live), key, err)
	}
	a.writes++
	return true, nil
}

// kindName names an object's kind for messages.
func kindName(obj client.Object) string {
	switch obj.(type) {
	case *appsv1.Deployment:
		return "Deployment"
	case *corev1.Service:
		return "Service"
	case *corev1.Namespace:
		return "Namespace"
	case *corev1.Secret:
		return "Secret"
	}
	return fmt.Sprintf("%T", obj)
}

// ensureEnvironment makes sure the namespace (with its labels and default ServiceAccount), the
// pull Secret and the Service exist as the workload wants them.
func (a *applier) ensureEnvironment(ctx context.Context, w *Workload) error {
	if err := a.claim(ctx, w); err != nil {
		return err
	}
	ns := w.renderNamespace()
	if _, err := a.applyOnce(ctx, types.NamespacedName{Name: w.Namespace}, &corev1.Namespace{}, ns, func(h string) {
		ns.WithAnnotations(map[string]string{ferryv1.AppliedAnnotation: h})
	}); err != nil {
		return err
	}
	// Pods need the default ServiceAccount; clusters without a token controller never create it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: w.Namespace, Name: "default"}}
	if err := a.c.Get(ctx, client.ObjectKeyFromObject(sa), sa); apierrors.IsNotFound(err) {
		if err := a.c.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("failed to create ServiceAccount %s/default: %w", w.Namespace, err)
		}
		a.writes++
	} else if err != nil {
		return fmt.Errorf("failed to read ServiceAccount %s/default: %w", w.Namespace, err)
	}
	if w.PullSecret != nil {
		secret := w.renderPullSecret()
		if _, err := a.applyOnce(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.PullSecret.Name}, &corev1.Secret{}, secret, func(h string) {
			secret.WithAnnotations(map[string]string{ferryv1.AppliedAnnotation: h})
		}); err != nil {
			return err
		}
	}
	if svc := w.renderService(); svc != nil {
		if _, err := a.applyOnce(ctx, types.NamespacedName{Namespace: w.Namespace, Name: w.Project}, &corev1.Service{}, svc, func(h string) {
			svc.WithAnnotations(map[string]string{ferryv1.AppliedAnnotation: h})
		}); err != nil {
			return err
		}
	}
	return nil
}

// applyDeployment applies one track's Deployment (after the namespace and the Service) unless it
// already holds exactly this, and returns the live Deployment and whether it was written.
func (a *applier) applyDeployment(ctx context.Context, w *Workload, track string, replicas int32, deadlineSeconds int32) (*appsv1.Deployment, bool, error) {
	cfg := w.renderDeployment(track, replicas, deadlineSeconds)
	hash, err := hashOf(cfg)
	if err != nil {
		return nil, false, err
	}
	key := types.NamespacedName{Namespace: w.Namespace, Name: DeploymentName(w.Project, track)}
	live := &appsv1.Deployment{}
	switch err := a.c.Get(ctx, key, live); {
	case err == nil:
		if live.Annotations[ferryv1.AppliedAnnotation] == hash {
			return live, false, nil
		}
	case !apierrors.IsNotFound(err):
		return nil, false, fmt.Errorf("failed to read Deployment %s: %w", key, err)
	}
	if err := a.ensureEnvironment(ctx, w); err != nil {
		return nil, false, err
	}
	cfg.WithAnnotations(map[string]string{ferryv1.AppliedAnnotation: hash})
	if err := a.c.Apply(ctx, cfg, client.FieldOwner(ferryv1.FieldManager), client.ForceOwnership); err != nil {
		return nil, false, fmt.Errorf("failed to apply Deployment %s: %w", key, err)
	}
	a.writes++
	if err := a.c.Get(ctx, key, live); err != nil {
		return nil, true, fmt.Errorf("failed to read Deployment %s: %w", key, err)
	}
	return live, true, nil
}

// getDeployment reads one track's Deployment; nil when it does not exist.
func (a *applier) getDeployment(ctx context.Context, w *Workload, track string) (*appsv1.Deployment, error) {
	key := types.NamespacedName{Namespace: w.Namespace, Name: DeploymentName(w.Project, track)}
	d := &appsv1.Deployment{}
	if err := a.c.Get(ctx, key, d); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("failed to read Deployment %s: %w", key, err)
	}
	return d, nil
}

// newReplicaSet finds a Deployment's current ReplicaSet while old pods are still around (nil when
// there are none, or it cannot be told).
func (a *applier) newReplicaSet(ctx context.Context, d *appsv1.Deployment) (*appsv1.ReplicaSet, error) {
	if d == nil || d.Status.Replicas <= d.Status.UpdatedReplicas || d.Spec.Selector == nil {
		return nil, nil
	}
	list := &appsv1.ReplicaSetList{}
	if err := a.c.List(ctx, list, client.InNamespace(d.Namespace), client.MatchingLabels(d.Spec.Selector.MatchLabels)); err != nil {
		return nil, fmt.Errorf("failed to list the ReplicaSets of Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	for i := range list.Items {
		if isNewReplicaSet(d, &list.Items[i]) {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// deleteCanary removes the canary Deployment if it exists.
func (a *applier) deleteCanary(ctx context.Context, w *Workload) error {
	d, err := a.getDeployment(ctx, w, CanaryTrack)
	if err != nil || d == nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return nil
	}
	if err := a.claim(ctx, w); err != nil {
		return err
	}
	if err := a.c.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("failed to delete Deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	a.writes++
	return nil
}
