package gitlab

import (
	"context"
	"fmt"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// DefaultTokenKey is the key of a Project's token Secret when its tokenSecretRef names none.
const DefaultTokenKey = "token"

// MissingTokenError says a Project's token Secret, or its key, does not exist: a person has to
// create it, and asking again sooner than a minute or so does not help.
type MissingTokenError struct{ msg string }

func (e *MissingTokenError) Error() string { return e.msg }

// ProjectRefOf is how the Project names its GitLab project.
func ProjectRefOf(p *ferryv1.Project) ProjectRef {
	return ProjectRef{ID: p.Spec.GitLab.ProjectID, Path: p.Spec.GitLab.ProjectPath}
}

// ProjectToken reads the Project's GitLab API token from its Secret with r (an API reader: the
// manager caches no Secrets). A Project without a tokenSecretRef, a missing Secret and a missing
// key are a *MissingTokenError. The token never appears in an error.
func ProjectToken(ctx context.Context, r client.Reader, p *ferryv1.Project) (string, error) {
	ref := p.Spec.GitLab.TokenSecretRef
	if ref == nil {
		return "", &MissingTokenError{msg: fmt.Sprintf("Project %s/%s has no GitLab token (spec.gitlab.tokenSecretRef)", p.Namespace, p.Name)}
	}
	key := ref.Key
	if key == "" {
		key = DefaultTokenKey
	}
	s := &corev1.Secret{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return "", &MissingTokenError{msg: fmt.Sprintf("the GitLab token Secret %s/%s of Project %s does not exist", p.Namespace, ref.Name, p.Name)}
		}
		return "", fmt.Errorf("failed to read the GitLab token Secret %s/%s: %w", p.Namespace, ref.Name, err)
	}
	token := string(s.Data[key])
	if token == "" {
		return "", &MissingTokenError{msg: fmt.Sprintf("the GitLab token Secret %s/%s has no key %s", p.Namespace, ref.Name, strconv.Quote(key))}
	}
	return token, nil
}
