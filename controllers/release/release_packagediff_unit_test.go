package release

import (
	"fmt"
	"testing"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
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
