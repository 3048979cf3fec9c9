package release

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/supplychain"
)

// TestSummarizeDiffUnit: the recorded diff counts every change by kind, upgrades and downgrades
// told apart by version order, and lists at most MaxPackageChanges of them, added ones first.
func TestSummarizeDiffUnit(t *testing.T) {
	var from, to []supplychain.Package
	for i := range 60 {
		to = append(to, supplychain.Package{Type: supplychain.TypePyPI, Name: fmt.Sprintf("new-%02d", i), Version: "1.0"})
	}
	from = append(from, supplychain.Package{Type: supplychain.TypeDeb, Name: "gone", Version: "1"},
		supplychain.Package{Type: supplychain.TypeDeb, Name: "libc6", Version: "2.36-9"},
		supplychain.Package{Type: supplychain.TypeGolang, Name: "golang.org/x/net", Version: "v0.10.0"})
	to = append(to, supplychain.Package{Type: supplychain.TypeDeb, Name: "libc6", Version: "2.36-10"},
		supplychain.Package{Type: supplychain.TypeGolang, Name: "golang.org/x/net", Version: "v0.9.0"})

	d := &ferryv1.PackageDiff{From: "r/shop@sha256:1"}
	summarizeDiff(d, supplychain.DiffPackages(from, to))
	if d.Added != 60 || d.Removed != 1 || d.Upgraded != 1 || d.Downgraded != 1 || d.Changed != 0 {
		t.Errorf("counts = +%d −%d ↑%d ↓%d ~%d, want +60 −1 ↑1 ↓1 ~0", d.Added, d.Removed, d.Upgraded, d.Downgraded, d.Changed)
	}
	if len(d.Changes) != ferryv1.MaxPackageChanges {
		t.Fatalf("%d changes listed, want the first %d", len(d.Changes), ferryv1.MaxPackageChanges)
	}
	if first, last := d.Changes[0], d.Changes[len(d.Changes)-1]; first.Name != "new-00" || first.Kind != supplychain.ChangeAdded || first.To != "1.0" || last.Name != "new-49" {
		t.Errorf("changes run from %+v to %+v, want the added packages new-00 … new-49", first, last)
	}
	if got := d.Total() - len(d.Changes); got != 13 {
		t.Errorf("%d changes left out of the list, want 13", got)
	}

	// A small diff lists everything, each kind with its versions.
	d = &ferryv1.PackageDiff{From: "r/shop@sha256:1"}
	summarizeDiff(d, supplychain.DiffPackages(from, to[60:]))
	want := []ferryv1.PackageChange{
		{Kind: supplychain.ChangeRemoved, Type: supplychain.TypeDeb, Name: "gone", From: "1"},
		{Kind: supplychain.ChangeUpgraded, Type: supplychain.TypeDeb, Name: "libc6", From: "2.36-9", To: "2.36-10"},
		{Kind: supplychain.ChangeDowngraded, Type: supplychain.TypeGolang, Name: "golang.org/x/net", From: "v0.10.0", To: "v0.9.0"},
	}
	if fmt.Sprint(d.Changes) != fmt.Sprint(want) {
		t.Errorf("changes = %+v, want %+v", d.Changes, want)
	}
}

// pushRequirements pushes an image whose one layer is app/requirements.txt with content and, with
// sbom, its SBOM as a referrer.
func pushRequirements(t *testing.T, repo, content string, sbom bool) string {
	t.Helper()
	d := releasetest.AppImage(t, repo, content)
	if sbom {
		desc, err := supplychain.Describe(d, supplychain.DescribeOptions{Tool: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := supplychain.Publish(d, supplychain.PublishOptions{SBOM: desc.SBOM}); err != nil {
			t.Fatal(err)
		}
	}
	return d.String()
}

// TestPackageDiffUnit: the manager compares the SBOMs of the image running in the environment and
// the Release's image through a real registry; nothing is compared for a first deployment or the
// same image; an image without an SBOM, or the registry answering 503 for the running image's
// SBOM, makes the diff unavailable with the reason and nothing else.
func TestPackageDiffUnit(t *testing.T) {
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
	running := pushRequirements(t, repo, "flask==3.0.3\nrequests==2.31.0\n", true)
	next := pushRequirements(t, repo, "flask==3.1.0\nclick==8.1.7\n", true)
	bare := pushRequirements(t, repo, "flask==3.1.1\n", false)
	r := unitReconciler(t)
	ctx := context.Background()

	diff := func(deployed, image string) *ferryv1.PackageDiff {
		var p *plan
		if deployed == "" {
			p = unitPlan()
		} else {
			p = unitPlan(ferryv1.ProjectEnvironmentStatus{Name: "prod", Image: deployed})
		}
		p.image = image
		return r.packageDiff(ctx, p, "prod", nil)
	}
	if d := diff("", next); d != nil {
		t.Errorf("a first deployment: packages = %+v, want none", d)
	}
	if d := diff(next, next); d != nil {
		t.Errorf("the image already running: packages = %+v, want none", d)
	}
	d := diff(running, next)
	want := &ferryv1.PackageDiff{From: running, Added: 1, Removed: 1, Upgraded: 1, Changes: []ferryv1.PackageChange{
		{Kind: "Added", Type: "pypi", Name: "click", To: "8.1.7"},
		{Kind: "Removed", Type: "pypi", Name: "requests", From: "2.31.0"},
		{Kind: "Upgraded", Type: "pypi", Name: "flask", From: "3.0.3", To: "3.1.0"},
	}}
	if d == nil || fmt.Sprintf("%+v", *d) != fmt.Sprintf("%+v", *want) {
		t.Errorf("packages = %+v, want %+v", d, want)
	}

	if d := diff(running, bare); d == nil || d.From != running || d.Unavailable != "no SBOM for "+rollout.ShortImage(bare) || d.Total() != 0 || d.Changes != nil {
		t.Errorf("an image without an SBOM: packages = %+v, want unavailable: no SBOM for %s", d, rollout.ShortImage(bare))
	}

	hex := strings.TrimPrefix(running[strings.Index(running, "@")+1:], "sha256:")
	proxy.Inject(registry.Fault{Status: http.StatusServiceUnavailable, Times: -1, Match: func(r *http.Request) bool {
		return strings.Contains(r.URL.Path, "/referrers/sha256:"+hex) || strings.Contains(r.URL.Path, "/manifests/sha256-"+hex)
	}})
	d = diff(running, next)
	if d == nil || d.From != running || d.Total() != 0 || d.Changes != nil ||
		!strings.Contains(d.Unavailable, "cannot read the SBOM of "+rollout.ShortImage(running)+": the registry answered 503 Service Unavailable") {
		t.Errorf("a registry answering 503: packages = %+v, want the diff unavailable, naming the 503", d)
	}
	t.Logf("unavailable: %s", d.Unavailable)
	if proxy.Stats().Faults == 0 {
		t.Error("the fault was not used: the test does not test a failing registry")
	}
}
