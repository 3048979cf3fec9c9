package main

import (
	"fmt"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// releaseWideTable is `ferry get releases -o wide`: the table, plus what the supply-chain gates
// found (issue 17) — who signed the image, where it was built, whether it has an SBOM (and how
// many packages it lists; <none> when no gate checked one), each environment's gate result, and
// the packages that change from the image running there (added, removed, upgraded: "+3 −1 ↑5").
func releaseWideTable(items []ferryv1.Release) [][]string {
	rows := releaseTable(items)
	rows[0] = append(rows[0], "SIGNED-BY", "PROVENANCE", "SBOM", "SUPPLY-CHAIN", "PACKAGES")
	for i, r := range items {
		var signedBy, provenance, sbom, packages string
		var gates []string
		for _, es := range r.Status.Environments {
			sc := es.SupplyChain
			if sc == nil {
				continue
			}
			gates = append(gates, es.Name+":"+strings.ToLower(sc.Result))
			if sc.Digest != r.Spec.Image {
				continue
			}
			signedBy = cmpOr(signedBy, sc.SignedBy)
			if p := sc.Provenance; p != nil && provenance == "" {
				provenance = p.Repository + "@" + shortRevision(p.Revision)
			}
			if sc.SBOM && sbom == "" {
				sbom = fmt.Sprintf("yes(%d)", sc.SBOMPackages)
			}
			if sc.Packages != nil {
				packages = packagesColumn(sc.Packages) // the last environment reached: what the Release changes now
			}
		}
		rows[i+1] = append(rows[i+1], orNone(signedBy), orNone(provenance), orNone(sbom), orNone(strings.Join(gates, " ")), orNone(packages))
	}
	return rows
}

// packagesColumn is a package diff in short; why it is missing is in -o yaml and the UI.
func packagesColumn(d *ferryv1.PackageDiff) string {
	if d.Unavailable != "" {
		return "unavailable"
	}
	return d.Counts()
}

func shortRevision(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
