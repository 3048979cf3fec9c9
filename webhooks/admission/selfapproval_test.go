package admission_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestSelfApprovalAcrossIdentities: the person who pushed cannot approve their own change under
// a Kubernetes name that is not their GitLab username (an OIDC prefix, an e-mail or user ID
// claim), and when the Build's GitLab identity cannot be mapped nobody's approval counts.
func TestSelfApprovalAcrossIdentities(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	ns := testutil.Namespace(t, c)
	prod := releasetest.Unique("prod")
	releasetest.CreateCleanly(t, c, releasetest.Environment(prod, releasetest.Gate(1, nil, []string{"release-managers"}), "cluster-a"))
	if err := c.Create(ctx, releasetest.Project(ns, "shop", prod)); err != nil {
		t.Fatal(err)
	}
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})

	// dave pushed twice, as the receiver records it: with his GitLab user ID, and with his
	// e-mail address only when GitLab sent it.
	withMail := pushBuild(ns, "with-mail", "refs/heads/main", ferryv1.BuildTrigger{User: "dave", UserID: 42, UserEmail: "dave@example.com"})
	noMail := pushBuild(ns, "no-mail", "refs/heads/main", ferryv1.BuildTrigger{User: "dave", UserID: 42})
	releases := map[string]*ferryv1.Release{}
	// The manager that admits the fixture stops before each case starts its own.
	fixture := func(t *testing.T) {
		testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
		ann := hub.UserClient(t, "ann", "release-managers")
		for _, b := range []*ferryv1.Build{withMail, noMail} {
			if err := c.Create(ctx, b); err != nil {
				t.Fatal(err)
			}
			succeed(t, c, b, releasetest.Image(b.Name))
			rel := releasetest.Release(ns, "r-"+b.Name, "shop", b)
			if err := ann.Create(ctx, rel); err != nil {
				t.Fatal(err)
			}
			releases[b.Name] = rel
		}
		// ann releases dave's image without naming the Build.
		byImage := &ferryv1.Release{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "r-by-image"},
			Spec:       ferryv1.ReleaseSpec{Project: "shop", Image: withMail.Status.Image, Deploy: releasetest.Deploy(1, nil)},
		}
		if err := ann.Create(ctx, byImage); err != nil {
			t.Fatal(err)
		}
		releases["by-image"] = byImage
	}
	if !t.Run("fixture", fixture) {
		t.FailNow()
	}

	cases := []struct {
		name, claim, prefix, approver, release string
		refused                                []string
	}{
		{name: "username behind an OIDC prefix", prefix: "oidc:", approver: "oidc:dave", release: "with-mail",
			refused: []string{`user "oidc:dave" triggered the Build of this Release (with-mail)`, "forbids self-approval"}},
		{name: "someone else behind the prefix", prefix: "oidc:", approver: "oidc:bob", release: "with-mail"},
		{name: "e-mail claim", claim: "email", approver: "dave@example.com", release: "with-mail", refused: []string{"triggered the Build of this Release"}},
		{name: "e-mail claim, no address sent: nobody's approval counts", claim: "email", approver: "carol@example.com", release: "no-mail",
			refused: []string{`whether user "carol@example.com" triggered the Build of this Release (no-mail) cannot be checked`, "whose e-mail address the event did not carry", "--gitlab-identity-claim=sub"}},
		{name: "user ID claim", claim: "sub", prefix: "gitlab:", approver: "gitlab:42", release: "no-mail", refused: []string{`user "gitlab:42" triggered the Build of this Release`}},
		{name: "a Release that names no Build, judged by its image", prefix: "oidc:", approver: "oidc:dave", release: "by-image",
			refused: []string{`user "oidc:dave" triggered Build with-mail, which made this Release's image`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := approval.NewIdentityMapping(tc.claim, tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}, GitLabIdentity: m})
			rel := releases[tc.release]
			err = createApproval(t, hub.UserClient(t, tc.approver, "release-managers"), releasetest.Approval(ns, rel.Name, prod, ferryv1.DecisionApprove, ""))
			if len(tc.refused) == 0 {
				if err != nil {
					t.Errorf("%s's approval was refused: %v", tc.approver, err)
				}
				return
			}
			wantRefused(t, err, tc.refused...)
		})
	}
}
