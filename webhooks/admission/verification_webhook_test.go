package admission_test

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestVerificationWebhook: from the platform team's side, an Environment's verification check
// whose path would leave the Service's proxy (reaching the member cluster's API with the
// manager's credentials) or whose bodyMatch does not compile is refused at admission, on create
// and update, with the field named; a valid check is accepted.
func TestVerificationWebhook(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	webhooksOnly(t)

	env := releasetest.Environment(releasetest.Unique("prod"), nil, "cluster-a")
	env.Spec.Verification = []ferryv1.VerificationCheck{{Name: "smoke", HTTP: &ferryv1.HTTPCheck{Path: "/healthz", BodyMatch: `^ok\s*$`}}}
	releasetest.CreateCleanly(t, c, env)

	for _, tc := range []struct {
		name  string
		check ferryv1.HTTPCheck
		want  []string
	}{
		{"dot segments", ferryv1.HTTPCheck{Path: "/../../../api/v1/namespaces/kube-system/secrets"}, []string{"spec.verification[0].http.path", "may not contain '.' or '..' segments"}},
		{"dot segments before a query", ferryv1.HTTPCheck{Path: "/a/..?x=1"}, []string{"spec.verification[0].http.path"}},
		{"a bodyMatch that does not compile", ferryv1.HTTPCheck{Path: "/", BodyMatch: "(unclosed"}, []string{"spec.verification[0].http.bodyMatch", "not a regular expression"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checks := []ferryv1.VerificationCheck{{Name: "bad", HTTP: &tc.check}}
			bad := releasetest.Environment(releasetest.Unique("bad"), nil, "cluster-a")
			bad.Spec.Verification = checks
			err := c.Create(ctx, bad)
			if err == nil {
				_ = c.Delete(ctx, bad)
			}
			wantRefused(t, err, tc.want...)

			update := &ferryv1.Environment{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(env), update); err != nil {
				t.Fatal(err)
			}
			update.Spec.Verification = checks
			wantRefused(t, c.Update(ctx, update), tc.want...)
		})
	}
}
