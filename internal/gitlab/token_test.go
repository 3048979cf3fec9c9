package gitlab_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

func TestProjectToken(t *testing.T) {
	const secret = "glpat-do-not-leak"
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "gitlab"}, Data: map[string][]byte{"token": []byte(secret), "other": []byte("x" + secret)}},
	).Build()
	project := func(ref *ferryv1.SecretKeyReference) *ferryv1.Project {
		p := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "shop"}}
		p.Spec.GitLab.TokenSecretRef = ref
		return p
	}
	for _, tc := range []struct {
		name    string
		ref     *ferryv1.SecretKeyReference
		want    string
		missing string
	}{
		{name: "the default key", ref: &ferryv1.SecretKeyReference{Name: "gitlab"}, want: secret},
		{name: "a named key", ref: &ferryv1.SecretKeyReference{Name: "gitlab", Key: "other"}, want: "x" + secret},
		{name: "no tokenSecretRef", missing: "Project team-a/shop has no GitLab token (spec.gitlab.tokenSecretRef)"},
		{name: "no Secret", ref: &ferryv1.SecretKeyReference{Name: "nope"}, missing: "the GitLab token Secret team-a/nope of Project shop does not exist"},
		{name: "no key", ref: &ferryv1.SecretKeyReference{Name: "gitlab", Key: "api"}, missing: `the GitLab token Secret team-a/gitlab has no key "api"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := gitlab.ProjectToken(context.Background(), c, project(tc.ref))
			if tc.missing == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want the token", got, err)
				}
				return
			}
			var missing *gitlab.MissingTokenError
			if !errors.As(err, &missing) || err.Error() != tc.missing {
				t.Fatalf("got %q, %v; want a MissingTokenError %q", got, err, tc.missing)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the token: %v", err)
			}
		})
	}
}
