package admission_test

import (
	"context"
	"os"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{FerryWebhooks: true}))
}

// TestReleaseRequestedByComesFromTheRequest: whatever a client writes into requestedBy, the Release
// records the authenticated user who created it.
func TestReleaseRequestedByComesFromTheRequest(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	ns := testutil.Namespace(t, hub.Client)
	ctx := context.Background()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "release-creator"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{"ferry.dev"}, Resources: []string{"releases"}, Verbs: []string{"create", "get"}}},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "release-creator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "ann", APIGroup: "rbac.authorization.k8s.io"}},
	}
	if err := hub.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := hub.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	ann := hub.UserClient(t, "ann", "developers")

	for _, forged := range []string{"", "mallory"} {
		r := &ferryv1.Release{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: "r-"},
			Spec: ferryv1.ReleaseSpec{
				Project:     "app",
				Image:       "harbor.example.com/group/app@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b",
				RequestedBy: forged,
			},
		}
		if err := ann.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.Spec.RequestedBy != "ann" {
			t.Errorf("requestedBy = %q after sending %q, want ann", r.Spec.RequestedBy, forged)
		}
	}
}
