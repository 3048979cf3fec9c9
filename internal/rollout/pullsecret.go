package rollout

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// MissingPullSecretError says that a Project's pull Secret does not exist or holds no
// .dockerconfigjson: nothing can pull its images until someone fixes that.
type MissingPullSecretError struct {
	Namespace, Name, Why string
}

func (e *MissingPullSecretError) Error() string {
	return fmt.Sprintf("pull Secret %s/%s %s", e.Namespace, e.Name, e.Why)
}

// ReadPullSecret reads a Project's pull Secret (in the Project's namespace), to copy into the
// namespaces its images run in. Its content never appears in an error.
func ReadPullSecret(ctx context.Context, r client.Reader, namespace, name string) (*PullSecret, error) {
	s := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &MissingPullSecretError{Namespace: namespace, Name: name, Why: "not found"}
		}
		return nil, fmt.Errorf("failed to read pull Secret %s/%s: %w", namespace, name, err)
	}
	data, ok := s.Data[corev1.DockerConfigJsonKey]
	if !ok || len(data) == 0 {
		return nil, &MissingPullSecretError{Namespace: namespace, Name: name, Why: "has no key " + corev1.DockerConfigJsonKey}
	}
	return &PullSecret{Name: name, DockerConfigJSON: data}, nil
}
