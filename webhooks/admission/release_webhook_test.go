package admission_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/webhooks/admission"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{FerryWebhooks: true}))
}

// releaseFixture is a Project shop on the path dev → staging (gated) → prod (gated), another
// Project, and successful Builds x and y of shop and o of the other.
type releaseFixture struct {
	ns, dev, staging, prod string
	x, y, o                *ferryv1.Build
}

func setupReleaseFixture(t *testing.T) releaseFixture {
	t.Helper()
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	f := releaseFixture{ns: testutil.Namespace(t, c), dev: releasetest.Unique("dev"), staging: releasetest.Unique("staging"), prod: releasetest.Unique("prod")}
	gate := releasetest.Gate(1, nil, []string{"release-managers"})
	releasetest.CreateCleanly(t, c, releasetest.Environment(f.dev, nil, "cluster-a"))
	releasetest.CreateCleanly(t, c, releasetest.Environment(f.staging, gate, "cluster-a"))
	releasetest.CreateCleanly(t, c, releasetest.Environment(f.prod, gate, "cluster-a"))
	other := releasetest.Project(f.ns, "other", f.dev)
	other.Spec.Image.Repository = "harbor.example.com/team/other"
	for _, p := range []*ferryv1.Project{releasetest.Project(f.ns, "shop", f.dev, f.staging, f.prod), other} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	f.x = releasetest.CreateBuild(t, c, f.ns, "x", "shop", "refs/heads/main", releasetest.Image("x"), "dave", releasetest.Deploy(1, nil))
	f.y = releasetest.CreateBuild(t, c, f.ns, "y", "shop", "refs/heads/main", releasetest.Image("y"), "dave", releasetest.Deploy(1, nil))
	f.o = releasetest.CreateBuild(t, c, f.ns, "o", "other", "refs/heads/main", "harbor.example.com/team/other@sha256:"+strings.Repeat("0", 64), "dave", releasetest.Deploy(1, nil))
	grant(t, c, f.ns, "release-creator", []rbacv1.PolicyRule{ferryRule([]string{"releases"}, "create", "get")}, "ann", "bob")
	return f
}

// release is a Release of Build x on the whole path, changed by mutate.
func (f releaseFixture) release(mutate func(*ferryv1.Release)) *ferryv1.Release {
	r := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, GenerateName: "r-"},
		Spec:       ferryv1.ReleaseSpec{Project: "shop", Build: f.x.Name, Image: f.x.Status.Image},
	}
	if mutate != nil {
		mutate(r)
	}
	return r
}

// TestReleaseRequestedByComesFromTheRequest: whatever a client writes into requestedBy, the Release
// records the authenticated user who created it.
func TestReleaseRequestedByComesFromTheRequest(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupReleaseFixture(t)
	ann := hub.UserClient(t, "ann", "developers")
	for _, forged := range []string{"", "mallory"} {
		r := f.release(func(r *ferryv1.Release) { r.Spec.RequestedBy = forged })
		if err := ann.Create(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		if r.Spec.RequestedBy != "ann" {
			t.Errorf("requestedBy = %q after sending %q, want ann", r.Spec.RequestedBy, forged)
		}
	}
}

// TestReleaseShowsWhatItDeploys: a Release cannot show approvers one Build, commit or image and
// deploy another, nor deploy an image from outside its Project's repository.
func TestReleaseShowsWhatItDeploys(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupReleaseFixture(t)
	ctx := context.Background()
	ann := hub.UserClient(t, "ann", "developers")
	running := pushBuild(f.ns, "running", "refs/heads/main", ferryv1.BuildTrigger{User: "dave"})
	if err := hub.Client.Create(ctx, running); err != nil {
		t.Fatal(err)
	}
	_, xDigest, _ := strings.Cut(f.x.Status.Image, "@")

	refused := []struct {
		name   string
		mutate func(*ferryv1.Release)
		want   []string
	}{
		{"Build x with Build y's image", func(r *ferryv1.Release) { r.Spec.Image = f.y.Status.Image },
			[]string{"spec.image " + f.y.Status.Image + " is not the image of Build x (" + f.x.Status.Image + ")"}},
		{"Build x with Build y's commit", func(r *ferryv1.Release) { r.Spec.Revision = f.y.Spec.Revision },
			[]string{"spec.revision " + f.y.Spec.Revision + " is not the commit Build x was made from (" + f.x.Spec.Revision + ")"}},
		{"a Build of another Project", func(r *ferryv1.Release) { r.Spec.Build, r.Spec.Image = "o", f.o.Status.Image },
			[]string{"build o belongs to project other, not shop"}},
		{"a Build that has not finished", func(r *ferryv1.Release) { r.Spec.Build = "running" },
			[]string{"build running has not finished: only the image of a successful Build can be released"}},
		{"a Build that does not exist", func(r *ferryv1.Release) { r.Spec.Build = "gone" },
			[]string{"build gone not found in namespace " + f.ns}},
		{"a foreign repository, with a Build", func(r *ferryv1.Release) { r.Spec.Image = "registry.evil.example/team/app@" + xDigest },
			[]string{"spec.image registry.evil.example/team/app@" + xDigest + " is not in repository " + releasetest.Repository + " of project shop"}},
		{"a foreign repository, without a Build", func(r *ferryv1.Release) {
			r.Spec.Build, r.Spec.Image, r.Spec.Deploy = "", "docker.io/library/nginx@"+xDigest, releasetest.Deploy(1, nil)
		}, []string{"is not in repository " + releasetest.Repository}},
		{"another Project's repository", func(r *ferryv1.Release) {
			r.Spec.Build, r.Spec.Image, r.Spec.Deploy = "", f.o.Status.Image, releasetest.Deploy(1, nil)
		},
			[]string{"is not in repository " + releasetest.Repository}},
		{"a commit claimed for an image no Build made", func(r *ferryv1.Release) {
			r.Spec.Build, r.Spec.Image, r.Spec.Revision, r.Spec.Deploy = "", releasetest.Image("unknown"), f.x.Spec.Revision, releasetest.Deploy(1, nil)
		}, []string{"spec.revision " + f.x.Spec.Revision + " cannot be checked: no Build or Release of project shop records image"}},
		{"another commit for Build x's image", func(r *ferryv1.Release) { r.Spec.Build, r.Spec.Revision = "", f.y.Spec.Revision },
			[]string{"spec.revision " + f.y.Spec.Revision + " is not the commit Build x made image " + f.x.Status.Image + " from"}},
		{"no such Project", func(r *ferryv1.Release) { r.Spec.Project = "nope" }, []string{"project nope not found in namespace " + f.ns}},
		{"an environment off the path", func(r *ferryv1.Release) { r.Spec.Environments = []string{"elsewhere"} },
			[]string{"environment elsewhere is not on the promotion path of project shop (" + f.dev + " → " + f.staging + " → " + f.prod + ")"}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			wantRefused(t, ann.Create(ctx, f.release(tc.mutate)), tc.want...)
		})
	}

	t.Run("the Build's commit is filled in", func(t *testing.T) {
		r := f.release(nil)
		if err := ann.Create(ctx, r); err != nil {
			t.Fatal(err)
		}
		if r.Spec.Revision != f.x.Spec.Revision {
			t.Errorf("revision = %q, want Build x's %q", r.Spec.Revision, f.x.Spec.Revision)
		}
	})
	t.Run("no Build named", func(t *testing.T) {
		for _, r := range []*ferryv1.Release{
			// The commit of the Build that made the image.
			f.release(func(r *ferryv1.Release) {
				r.Spec.Build, r.Spec.Revision, r.Spec.Deploy = "", f.x.Spec.Revision, releasetest.Deploy(1, nil)
			}),
			// An image of the repository no Build made, with a tag before the digest, claiming no commit.
			f.release(func(r *ferryv1.Release) {
				r.Spec.Build, r.Spec.Image, r.Spec.Deploy = "", releasetest.Repository+":v9@"+strings.TrimPrefix(releasetest.Image("hotfix"), releasetest.Repository+"@"), releasetest.Deploy(1, nil)
			}),
		} {
			if err := ann.Create(ctx, r); err != nil {
				t.Errorf("%+v: %v", r.Spec, err)
			}
		}
	})
}

// TestSkippingAGateNeedsRBAC: spec.environments cannot leave out a gated environment before one
// the Release goes to, unless the image already passed that gate or RBAC grants the skip verb on
// that environment.
func TestSkippingAGateNeedsRBAC(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}})
	f := setupReleaseFixture(t)
	ann := hub.UserClient(t, "ann", "developers")
	envs := func(names ...string) func(*ferryv1.Release) {
		return func(r *ferryv1.Release) { r.Spec.Environments = names }
	}

	wantRefused(t, ann.Create(ctx, f.release(envs(f.prod))),
		"spec.environments leave out environment "+f.staging+", which comes before "+f.prod, "has an approval gate that image "+f.x.Status.Image+" has not passed",
		`user "ann" may not skip it (RBAC verb "skip" on environments/`+f.staging+" of group ferry.dev in namespace "+f.ns+")")
	wantRefused(t, ann.Create(ctx, f.release(envs(f.dev, f.prod))), "leave out environment "+f.staging)
	// Leaving out what has no gate, or what comes last, skips no gate.
	for _, ok := range [][]string{{f.dev}, {f.staging, f.prod}, {f.dev, f.staging}} {
		if err := ann.Create(ctx, f.release(envs(ok...))); err != nil {
			t.Errorf("environments %v: %v", ok, err)
		}
	}

	// The right to skip is per environment.
	skip := func(name, env string) {
		grant(t, c, f.ns, name, []rbacv1.PolicyRule{{APIGroups: []string{"ferry.dev"}, Resources: []string{"environments"}, Verbs: []string{admission.SkipVerb}, ResourceNames: []string{env}}}, "ann")
	}
	skip("skip-prod", f.prod)
	wantRefused(t, ann.Create(ctx, f.release(envs(f.prod))), "may not skip it")
	skip("skip-staging", f.staging)
	if err := ann.Create(ctx, f.release(envs(f.prod))); err != nil {
		t.Errorf("with the skip verb on %s: %v", f.staging, err)
	}

	// bob may not skip, but an image that passed staging's gate need not pass it again.
	bob := hub.UserClient(t, "bob", "developers")
	wantRefused(t, bob.Create(ctx, f.release(envs(f.prod))), `user "bob" may not skip it`)
	passed := f.release(nil)
	if err := c.Create(ctx, passed); err != nil {
		t.Fatal(err)
	}
	meta.SetStatusCondition(&passed.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.WaitingForApprovalReason, Message: "waiting"})
	es := ferryv1.ReleaseEnvironmentStatus{Name: f.staging}
	meta.SetStatusCondition(&es.Conditions, metav1.Condition{Type: ferryv1.ApprovedCondition, Status: metav1.ConditionTrue, Reason: ferryv1.ApprovedReason, Message: "approved by carol"})
	passed.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
	if err := c.Status().Update(ctx, passed); err != nil {
		t.Fatal(err)
	}
	if err := bob.Create(ctx, f.release(envs(f.prod))); err != nil {
		t.Errorf("Build x's image passed %s: %v", f.staging, err)
	}
	wantRefused(t, bob.Create(ctx, f.release(func(r *ferryv1.Release) {
		r.Spec.Build, r.Spec.Image, r.Spec.Environments = f.y.Name, f.y.Status.Image, []string{f.prod}
	})), "image "+f.y.Status.Image+" has not passed")

	// An environment on the path that does not exist yet may get a gate: leaving it out is a skip.
	ghost := releasetest.Project(f.ns, "ghost", releasetest.Unique("missing"), f.dev)
	if err := c.Create(ctx, ghost); err != nil {
		t.Fatal(err)
	}
	b := releasetest.CreateBuild(t, c, f.ns, "g", "ghost", "refs/heads/main", releasetest.Image("g"), "dave", releasetest.Deploy(1, nil))
	wantRefused(t, bob.Create(ctx, f.release(func(r *ferryv1.Release) {
		r.Spec.Project, r.Spec.Build, r.Spec.Image, r.Spec.Environments = "ghost", b.Name, b.Status.Image, []string{f.dev}
	})), "leave out environment "+ghost.Spec.Promotion.Environments[0])
}

// TestGateSkipperRole: the example role in config/rbac grants the skip verb the webhook asks for,
// on environments only, and nothing that edit or admin would pass on.
func TestGateSkipperRole(t *testing.T) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "gate_skipper_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatalf("config/rbac/gate_skipper_role.yaml: %v", err)
	}
	if role.AggregationRule != nil || len(role.Labels) > 0 {
		t.Errorf("the gate-skipper role aggregates or is aggregated: %+v", role.ObjectMeta)
	}
	if len(role.Rules) != 1 || strings.Join(role.Rules[0].Verbs, ",") != admission.SkipVerb || strings.Join(role.Rules[0].Resources, ",") != "environments" ||
		strings.Join(role.Rules[0].APIGroups, ",") != ferryv1.GroupVersion.Group {
		t.Errorf("rules = %+v, want only verb %q on environments of ferry.dev", role.Rules, admission.SkipVerb)
	}
}
