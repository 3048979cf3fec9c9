package main

import (
	"bytes"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestReleaseWideTable: ferry get releases -o wide shows who signed the image, where it was
// built, its SBOM, each environment's gate result and the packages it changes; a record of another digest (an environment
// that checked an earlier image) does not lend this one its signature.
func TestReleaseWideTable(t *testing.T) {
	img := "r/shop@sha256:" + strings.Repeat("1", 64)
	now := metav1.Now()
	rel := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: img}}
	rel.Name = "r1"
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "staging", SupplyChain: &ferryv1.SupplyChainResult{Digest: img, Result: ferryv1.SupplyChainPassed, CheckedAt: now,
			SignedBy: "configmap ferry-system/key key cosign.pub", SBOM: true, SBOMPackages: 12,
			Provenance: &ferryv1.ProvenanceSummary{Repository: "https://gitlab.example.com/team/shop.git", Revision: strings.Repeat("a", 40)}}},
		{Name: "prod", SupplyChain: &ferryv1.SupplyChainResult{Digest: img, Result: ferryv1.SupplyChainRefused, CheckedAt: now, Message: "harbor scan: severity High",
			Packages: &ferryv1.PackageDiff{From: "r/shop@sha256:" + strings.Repeat("0", 64), Added: 3, Removed: 1, Upgraded: 5}}},
		{Name: "dr"},
	}
	rel.Status.Environments[0].SupplyChain.Packages = &ferryv1.PackageDiff{From: "r/shop@sha256:" + strings.Repeat("0", 64), Unavailable: "no SBOM for shop@sha256:000000000000"}
	other := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: img}}
	other.Name = "r2"
	other.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: "prod", SupplyChain: &ferryv1.SupplyChainResult{
		Digest: "r/shop@sha256:" + strings.Repeat("2", 64), Result: ferryv1.SupplyChainPassed, SignedBy: "someone", SBOM: true, CheckedAt: now,
		Packages: &ferryv1.PackageDiff{From: img, Downgraded: 2}}}}
	unavailable := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: img}}
	unavailable.Name = "r4"
	unavailable.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: "staging", SupplyChain: &ferryv1.SupplyChainResult{Digest: img, Result: ferryv1.SupplyChainPassed, CheckedAt: now,
		Packages: &ferryv1.PackageDiff{From: "r/shop@sha256:" + strings.Repeat("0", 64), Unavailable: "cannot read the SBOM of shop@sha256:000000000000: 503"}}}}
	plain := ferryv1.Release{Spec: ferryv1.ReleaseSpec{Project: "shop", Image: img}}
	plain.Name = "r3"

	rows := releaseWideTable([]ferryv1.Release{rel, other, plain, unavailable})
	if got, want := strings.Join(rows[0][len(rows[0])-5:], " "), "SIGNED-BY PROVENANCE SBOM SUPPLY-CHAIN PACKAGES"; got != want {
		t.Fatalf("header ends with %q, want %q", got, want)
	}
	if len(rows[0]) != len(releaseTable(nil)[0])+5 {
		t.Errorf("the wide table does not keep the table's columns: %v", rows[0])
	}
	// The packages column is the last environment's diff (prod's, not staging's unavailable one),
	// of this Release's digest only.
	for i, want := range [][]string{
		{"configmap ferry-system/key key cosign.pub", "https://gitlab.example.com/team/shop.git@aaaaaaaaaaaa", "yes(12)", "staging:passed prod:refused", "+3 −1 ↑5"},
		{"<none>", "<none>", "<none>", "prod:passed", "<none>"},
		{"<none>", "<none>", "<none>", "<none>", "<none>"},
		{"<none>", "<none>", "<none>", "staging:passed", "unavailable"},
	} {
		row := rows[i+1]
		if got := row[len(row)-5:]; strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("%s: wide columns = %q, want %q", row[0], got, want)
		}
	}
}

// TestGetWideOnlyForReleases: -o wide for another kind is refused, naming the option.
func TestGetWideOnlyForReleases(t *testing.T) {
	cmd := newGetCommand(&globalFlags{})
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"builds", "-o", "wide"})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "-o wide is for releases") {
		t.Errorf("ferry get builds -o wide: error %v, want one saying -o wide is for releases", err)
	}
}
