package release_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/release"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/supplychain"
	"github.com/ferryci/ferry/internal/testutil"
)

// signedImage pushes an image with content to repo and publishes its SBOM, provenance naming
// repository and revision, and signature with signer.
func signedImage(t *testing.T, repo, content, repository, revision string, signer *supplychain.Signer) string {
	t.Helper()
	d := releasetest.AppImage(t, repo, content)
	desc, err := supplychain.Describe(d, supplychain.DescribeOptions{Tool: "test"})
	if err != nil {
		t.Fatal(err)
	}
	prov := supplychain.Provenance{FerryVersion: "test", Repository: repository, Revision: revision, Build: "elsewhere/b", Executor: "local"}
	if _, err := supplychain.Publish(d, supplychain.PublishOptions{SBOM: desc.SBOM, Provenance: &prov, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// TestSupplyChainGate: an Environment that requires a signature, provenance and an SBOM rolls out
// an image built from the Release's repository and revision, refuses before its rollout one whose
// provenance names another commit, and one signed by an unknown key, saying what failed.
func TestSupplyChainGate(t *testing.T) {
	startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	reg, err := registry.StartMemory(registry.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	repo := reg.Host + "/team/shop"

	priv, pub, err := supplychain.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := supplychain.NewSigner(priv)
	unknownPriv, _, _ := supplychain.GenerateKey()
	unknown, _ := supplychain.NewSigner(unknownPriv)
	ns := testutil.Namespace(t, c)
	keyMap := "platform-key-" + ns
	releasetest.CreateCleanly(t, c, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: keyMap}, Data: map[string]string{"cosign.pub": string(pub)}})

	envName := releasetest.Unique("secure")
	env := releasetest.Environment(envName, nil, "east")
	env.Spec.SupplyChain = &ferryv1.SupplyChainPolicy{
		Keys:             []ferryv1.PublicKeySource{{ConfigMapRef: &ferryv1.SecretKeyReference{Name: keyMap}}},
		RequireSignature: true, RequireProvenance: true, RequireSBOM: true,
	}
	releasetest.CreateCleanly(t, c, env)
	p := releasetest.Project(ns, "shop", envName)
	p.Spec.Image.Repository = repo
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	startManager(t)

	// release1 creates a Build of the image (its revision is releasetest.Revision(relName)) and a
	// Release of it.
	release1 := func(relName, buildName, image string) {
		t.Helper()
		b := &ferryv1.Build{}
		rollback := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: buildName}, b) == nil
		if !rollback {
			b = releasetest.CreateBuild(t, c, ns, buildName, "shop", "refs/heads/main", image, "dave", releasetest.Deploy(1, nil))
		}
		rel := releasetest.Release(ns, relName, "shop", b)
		rel.Spec.Rollback = rollback
		if err := c.Create(ctx, rel); err != nil {
			t.Fatal(err)
		}
	}

	goodImage := signedImage(t, repo, "flask==3.0.3\n", p.Spec.Repository.CloneURL, releasetest.Revision("b1"), signer)
	start := time.Now()
	release1("r1", "b1", goodImage)
	rel1 := waitEnv(t, c, ns, "r1", envName, ferryv1.RolledOutCondition, metav1.ConditionTrue, ferryv1.HealthyReason)
	t.Logf("gate + rollout of a verified image: %s", time.Since(start).Round(time.Millisecond))
	// The gate's results are on the environment's status, not only in an event.
	sc := envOf(rel1, envName).SupplyChain
	switch {
	case sc == nil:
		t.Fatalf("r1: no status.environments[%s].supplyChain", envName)
	case sc.Digest != goodImage || sc.Result != ferryv1.SupplyChainPassed || sc.CheckedAt.IsZero():
		t.Errorf("r1: supplyChain = %+v, want %s Passed with checkedAt", sc, goodImage)
	case !strings.Contains(sc.SignedBy, keyMap):
		t.Errorf("r1: supplyChain.signedBy = %q, want the ConfigMap %s", sc.SignedBy, keyMap)
	case !sc.SBOM || sc.SBOMPackages < 1:
		t.Errorf("r1: supplyChain.sbom = %v with %d packages, want the SBOM with flask", sc.SBOM, sc.SBOMPackages)
	case sc.Provenance == nil || sc.Provenance.Revision != releasetest.Revision("b1") || sc.Provenance.BuildRef != "elsewhere/b" ||
		!supplychain.SameRepository(sc.Provenance.Repository, p.Spec.Repository.CloneURL) || !strings.Contains(sc.Provenance.Builder, "Ferry test"):
		t.Errorf("r1: supplyChain.provenance = %+v, want %s at %s built by Build elsewhere/b", sc.Provenance, p.Spec.Repository.CloneURL, releasetest.Revision("b1"))
	}
	if reasons := eventReasons(t, c, ns, "r1"); !strings.Contains(strings.Join(reasons, ","), release.SupplyChainVerifiedReason) {
		t.Errorf("events = %v, want %s", reasons, release.SupplyChainVerifiedReason)
	}

	for _, tc := range []struct {
		name, content, revision, want string
		signer                        *supplychain.Signer
	}{
		{"r2", "flask==3.0.4\n", releasetest.Revision("other"), "provenance: built from commit " + releasetest.Revision("other") + ", not the Release's revision", signer},
		{"r3", "flask==3.0.5\n", releasetest.Revision("b-r3"), "signature: no signature verifies with a trusted key", unknown},
	} {
		img := signedImage(t, repo, tc.content, p.Spec.Repository.CloneURL, tc.revision, tc.signer)
		release1(tc.name, "b-"+tc.name, img)
		rel := waitEnv(t, c, ns, tc.name, envName, ferryv1.ReadyCondition, metav1.ConditionFalse, release.SupplyChainRefusedReason)
		if msg := envCondition(rel, envName, ferryv1.ReadyCondition).Message; !strings.Contains(msg, tc.want) || !strings.Contains(msg, "before its rollout") {
			t.Errorf("%s: Ready message = %q, want %q", tc.name, msg, tc.want)
		}
		// What was refused is recorded too: the digest, and what its attestations say.
		if sc := envOf(rel, envName).SupplyChain; sc == nil || sc.Digest != img || sc.Result != ferryv1.SupplyChainRefused || !strings.Contains(sc.Message, tc.want) {
			t.Errorf("%s: supplyChain = %+v, want %s Refused with %q", tc.name, sc, img, tc.want)
		} else if tc.signer == signer && (sc.SignedBy == "" || sc.Provenance == nil || sc.Provenance.Revision != tc.revision) {
			t.Errorf("%s: supplyChain = %+v, want the trusted signer and the provenance's commit %s", tc.name, sc, tc.revision)
		} else if tc.signer == unknown && sc.SignedBy != "" {
			t.Errorf("%s: supplyChain.signedBy = %q for an image signed by an unknown key", tc.name, sc.SignedBy)
		}
		if len(envOf(rel, envName).Clusters) != 0 {
			t.Errorf("%s: a refused image started rolling out: %+v", tc.name, envOf(rel, envName).Clusters)
		}
	}
	if d := startTargets(t)["east"].deployment(t, "shop-"+envName, "shop"); d == nil || d.Spec.Template.Spec.Containers[0].Image != goodImage {
		t.Errorf("the deployment does not run the verified image")
	}

	// A newer verified image rolls out; a rollback to the older digest passes the same gate.
	newer := signedImage(t, repo, "flask==3.1.0\n", p.Spec.Repository.CloneURL, releasetest.Revision("b4"), signer)
	release1("r4", "b4", newer)
	waitEnv(t, c, ns, "r4", envName, ferryv1.RolledOutCondition, metav1.ConditionTrue, ferryv1.HealthyReason)
	release1("r5", "b1", goodImage)
	waitEnv(t, c, ns, "r5", envName, ferryv1.RolledOutCondition, metav1.ConditionTrue, ferryv1.HealthyReason)
	if d := startTargets(t)["east"].deployment(t, "shop-"+envName, "shop"); d == nil || d.Spec.Template.Spec.Containers[0].Image != goodImage {
		t.Errorf("the rollback did not deploy the older image")
	}
}

// TestSupplyChainPackageDiff: before each rollout the manager compares the SBOMs of the image
// running in the environment and the Release's image, with a supplyChain policy that requires
// nothing, and records the diff on the Release: added, removed and upgraded packages. A running
// image without an SBOM, or the registry answering 503 for its SBOM, does not hold the rollout: the
// diff says it is unavailable and why.
func TestSupplyChainPackageDiff(t *testing.T) {
	startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	reg, err := registry.StartMemory(registry.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	proxy, err := registry.StartProxy(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	repo := proxy.Host + "/team/shop"
	priv, _, err := supplychain.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := supplychain.NewSigner(priv)

	ns := testutil.Namespace(t, c)
	envName := releasetest.Unique("sbomdiff")
	env := releasetest.Environment(envName, nil, "east")
	env.Spec.SupplyChain = &ferryv1.SupplyChainPolicy{}
	releasetest.CreateCleanly(t, c, env)
	p := releasetest.Project(ns, "shop", envName)
	p.Spec.Image.Repository = repo
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	startManager(t)

	// rollOut releases image and waits until it runs in the environment and the Project says so.
	rollOut := func(relName, image string) *ferryv1.SupplyChainResult {
		t.Helper()
		b := releasetest.CreateBuild(t, c, ns, "b-"+relName, "shop", "refs/heads/main", image, "dave", releasetest.Deploy(1, nil))
		if err := c.Create(ctx, releasetest.Release(ns, relName, "shop", b)); err != nil {
			t.Fatal(err)
		}
		rel := waitEnv(t, c, ns, relName, envName, ferryv1.RolledOutCondition, metav1.ConditionTrue, ferryv1.HealthyReason)
		within(t, rolloutTimeout, "the Project records "+relName+" in "+envName, func() (bool, error) {
			proj := &ferryv1.Project{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(p), proj); err != nil {
				return false, err
			}
			for _, pe := range proj.Status.Environments {
				if pe.Name == envName {
					return pe.Image == image, fmt.Errorf("the Project says %s runs %s", envName, pe.Image)
				}
			}
			return false, fmt.Errorf("the Project says nothing runs in %s", envName)
		})
		sc := envOf(rel, envName).SupplyChain
		if sc == nil || sc.Digest != image || sc.Result != ferryv1.SupplyChainPassed {
			t.Fatalf("%s: supplyChain = %+v, want %s Passed", relName, sc, image)
		}
		return sc
	}

	first := signedImage(t, repo, "flask==3.0.3\nrequests==2.31.0\n", p.Spec.Repository.CloneURL, releasetest.Revision("b-r1"), signer)
	if sc := rollOut("r1", first); sc.Packages != nil {
		t.Errorf("r1: packages = %+v for the first deployment, want none", sc.Packages)
	}

	second := signedImage(t, repo, "flask==3.1.0\nclick==8.1.7\n", p.Spec.Repository.CloneURL, releasetest.Revision("b-r2"), signer)
	sc := rollOut("r2", second)
	want := &ferryv1.PackageDiff{From: first, Added: 1, Removed: 1, Upgraded: 1, Changes: []ferryv1.PackageChange{
		{Kind: "Added", Type: "pypi", Name: "click", To: "8.1.7"},
		{Kind: "Removed", Type: "pypi", Name: "requests", From: "2.31.0"},
		{Kind: "Upgraded", Type: "pypi", Name: "flask", From: "3.0.3", To: "3.1.0"},
	}}
	if d := sc.Packages; d == nil || fmt.Sprintf("%+v", *d) != fmt.Sprintf("%+v", *want) {
		t.Errorf("r2: packages = %+v, want %+v", d, want)
	}

	// The registry answers 503 for the referrers of the running image (the API and the tag
	// fallback), every time: the rollout goes on without the diff.
	hex := strings.TrimPrefix(second[strings.Index(second, "@")+1:], "sha256:")
	proxy.Inject(registry.Fault{Status: http.StatusServiceUnavailable, Times: -1, Match: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/referrers/sha256:"+hex) || strings.Contains(r.URL.Path, "/manifests/sha256-"+hex)
	}})
	third := signedImage(t, repo, "flask==3.1.1\n", p.Spec.Repository.CloneURL, releasetest.Revision("b-r3"), signer)
	sc = rollOut("r3", third)
	proxy.ClearFaults()
	if d := sc.Packages; d == nil || d.From != second || !strings.Contains(d.Unavailable, "cannot read the SBOM of "+rollout.ShortImage(second)) || !strings.Contains(d.Unavailable, "the registry answered 503 Service Unavailable") || d.Total() != 0 {
		t.Errorf("r3: packages = %+v, want the diff from %s unavailable, naming the registry's 503", d, second)
	}

	// An image without an SBOM rolls out too (nothing requires one); the diff says which has none.
	bare := releasetest.AppImage(t, repo, "flask==3.1.2\n").String()
	sc = rollOut("r4", bare)
	if d := sc.Packages; d == nil || d.From != third || d.Unavailable != "no SBOM for "+rollout.ShortImage(bare) {
		t.Errorf("r4: packages = %+v, want the diff from %s unavailable: no SBOM for %s", d, third, rollout.ShortImage(bare))
	}
}
