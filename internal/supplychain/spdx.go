package supplychain

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// SPDXMediaType is the media type (and OCI artifactType) of Ferry's SBOMs.
const SPDXMediaType = "application/spdx+json"

// Layer roles.
const (
	RoleStack   = "stack"
	RoleRuntime = "runtime"
	RoleApp     = "app"
)

// SBOM is what Ferry's SPDX documents say: the image, its layers in order (bottom first) and the
// packages each layer adds.
type SBOM struct {
	// Name is the image's repository.
	Name string
	// Digest is the image's manifest digest, sha256:….
	Digest string
	// Created is when the image was made (the build's epoch: SBOMs are reproducible).
	Created time.Time
	// Tool names the program that made the SBOM, e.g. ferry-v0.4.0.
	Tool string
	// Layers are the image's layers, bottom first.
	Layers []SBOMLayer
}

// SBOMLayer is one layer of the image and what it adds.
type SBOMLayer struct {
	// Digest is the compressed layer's digest.
	Digest string
	// Role is stack, runtime or app.
	Role string
	// Packages are the packages the layer adds.
	Packages []Package
}

// Packages are all packages of the image, bottom layer first.
func (s *SBOM) Packages() []Package {
	var out []Package
	for _, l := range s.Layers {
		out = append(out, l.Packages...)
	}
	return out
}

type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID                string            `json:"SPDXID"`
	Name                  string            `json:"name"`
	VersionInfo           string            `json:"versionInfo,omitempty"`
	DownloadLocation      string            `json:"downloadLocation"`
	FilesAnalyzed         bool              `json:"filesAnalyzed"`
	PrimaryPackagePurpose string            `json:"primaryPackagePurpose,omitempty"`
	Checksums             []spdxChecksum    `json:"checksums,omitempty"`
	SourceInfo            string            `json:"sourceInfo,omitempty"`
	Comment               string            `json:"comment,omitempty"`
	ExternalRefs          []spdxExternalRef `json:"externalRefs,omitempty"`
}

type spdxChecksum struct {
	Algorithm     string `json:"algorithm"`
	ChecksumValue string `json:"checksumValue"`
}

type spdxExternalRef struct {
	ReferenceCategory string `json:"referenceCategory"`
	ReferenceType     string `json:"referenceType"`
	ReferenceLocator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	SPDXElementID      string `json:"spdxElementId"`
	RelationshipType   string `json:"relationshipType"`
	RelatedSPDXElement string `json:"relatedSpdxElement"`
}

const (
	imageID     = "SPDXRef-Image"
	layerPrefix = "layer "
)

// MarshalSPDX writes the SBOM as an SPDX 2.3 JSON document: a CONTAINER package for the image
// (its manifest digest as SHA256 checksum), one package per layer that the image CONTAINS (its
// digest as checksum, its role as comment), and the layer's packages, each with its purl, that the
// layer CONTAINS.
func (s *SBOM) MarshalSPDX() ([]byte, error) {
	hex, ok := strings.CutPrefix(s.Digest, "sha256:")
	if !ok || len(hex) != 64 {
		return nil, fmt.Errorf("image digest %q: want sha256:<64 hex digits>", s.Digest)
	}
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              s.Name + "@" + s.Digest,
		DocumentNamespace: "https://ferryci.dev/spdx/" + s.Name + "/" + hex,
		CreationInfo:      spdxCreationInfo{Created: s.Created.UTC().Format(time.RFC3339), Creators: []string{"Tool: " + s.Tool, "Organization: Ferry"}},
		Packages: []spdxPackage{{
			SPDXID: imageID, Name: s.Name, VersionInfo: s.Digest, DownloadLocation: "NOASSERTION",
			PrimaryPackagePurpose: "CONTAINER",
			Checksums:             []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: hex}},
			ExternalRefs:          []spdxExternalRef{{"PACKAGE-MANAGER", "purl", "pkg:oci/" + lastSegment(s.Name) + "@" + strings.ReplaceAll(s.Digest, ":", "%3A")}},
		}},
		Relationships: []spdxRelationship{{"SPDXRef-DOCUMENT", "DESCRIBES", imageID}},
	}
	for i, l := range s.Layers {
		lhex, ok := strings.CutPrefix(l.Digest, "sha256:")
		if !ok || len(lhex) != 64 {
			return nil, fmt.Errorf("layer %d digest %q: want sha256:<64 hex digits>", i, l.Digest)
		}
		lid := fmt.Sprintf("SPDXRef-Layer-%d", i)
		doc.Packages = append(doc.Packages, spdxPackage{
			SPDXID: lid, Name: layerPrefix + l.Digest, DownloadLocation: "NOASSERTION",
			PrimaryPackagePurpose: "ARCHIVE", Comment: l.Role,
			Checksums: []spdxChecksum{{Algorithm: "SHA256", ChecksumValue: lhex}},
		})
		doc.Relationships = append(doc.Relationships, spdxRelationship{imageID, "CONTAINS", lid})
		for j, p := range l.Packages {
			pid := fmt.Sprintf("SPDXRef-Package-%d-%d", i, j)
			doc.Packages = append(doc.Packages, spdxPackage{
				SPDXID: pid, Name: p.Name, VersionInfo: p.Version, DownloadLocation: "NOASSERTION",
				PrimaryPackagePurpose: "LIBRARY", SourceInfo: "read from " + p.Location,
				ExternalRefs: []spdxExternalRef{{"PACKAGE-MANAGER", "purl", p.PURL()}},
			})
			doc.Relationships = append(doc.Relationships, spdxRelationship{lid, "CONTAINS", pid})
		}
	}
	return json.MarshalIndent(doc, "", " ")
}

func lastSegment(repo string) string {
	return repo[strings.LastIndex(repo, "/")+1:]
}

// ParseSPDX reads an SBOM that MarshalSPDX wrote. It refuses documents that are not SPDX 2.3 or
// that do not describe exactly one container image with a sha256 checksum.
func ParseSPDX(b []byte) (*SBOM, error) {
	var doc spdxDocument
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("the SBOM is not SPDX JSON: %w", err)
	}
	if doc.SPDXVersion != "SPDX-2.3" {
		return nil, fmt.Errorf("the SBOM's spdxVersion is %q, want SPDX-2.3", doc.SPDXVersion)
	}
	byID := map[string]*spdxPackage{}
	for i := range doc.Packages {
		byID[doc.Packages[i].SPDXID] = &doc.Packages[i]
	}
	contains := map[string][]string{}
	var described []string
	for _, r := range doc.Relationships {
		switch {
		case r.SPDXElementID == "SPDXRef-DOCUMENT" && r.RelationshipType == "DESCRIBES":
			described = append(described, r.RelatedSPDXElement)
		case r.RelationshipType == "CONTAINS":
			contains[r.SPDXElementID] = append(contains[r.SPDXElementID], r.RelatedSPDXElement)
		}
	}
	if len(described) != 1 || byID[described[0]] == nil {
		return nil, errors.New("the SBOM does not describe exactly one package")
	}
	img := byID[described[0]]
	hex := sha256Of(img.Checksums)
	if img.PrimaryPackagePurpose != "CONTAINER" || hex == "" {
		return nil, errors.New("the SBOM does not describe a container image with a SHA256 checksum")
	}
	s := &SBOM{Name: img.Name, Digest: "sha256:" + hex}
	if t, err := time.Parse(time.RFC3339, doc.CreationInfo.Created); err == nil {
		s.Created = t
	}
	for _, c := range doc.CreationInfo.Creators {
		if v, ok := strings.CutPrefix(c, "Tool: "); ok {
			s.Tool = v
		}
	}
	for _, lid := range contains[img.SPDXID] {
		lp := byID[lid]
		if lp == nil {
			return nil, fmt.Errorf("the SBOM's image contains %s, which it does not define", lid)
		}
		l := SBOMLayer{Digest: "sha256:" + sha256Of(lp.Checksums), Role: lp.Comment}
		for _, pid := range contains[lid] {
			pp := byID[pid]
			if pp == nil {
				return nil, fmt.Errorf("the SBOM's layer %s contains %s, which it does not define", l.Digest, pid)
			}
			p := Package{Name: pp.Name, Version: pp.VersionInfo, Layer: l.Digest, Location: strings.TrimPrefix(pp.SourceInfo, "read from ")}
			for _, r := range pp.ExternalRefs {
				if r.ReferenceType == "purl" {
					t, _, _ := strings.Cut(strings.TrimPrefix(r.ReferenceLocator, "pkg:"), "/")
					p.Type = t
				}
			}
			l.Packages = append(l.Packages, p)
		}
		s.Layers = append(s.Layers, l)
	}
	return s, nil
}

func sha256Of(cs []spdxChecksum) string {
	for _, c := range cs {
		if c.Algorithm == "SHA256" && len(c.ChecksumValue) == 64 {
			return strings.ToLower(c.ChecksumValue)
		}
	}
	return ""
}

// Change is a package whose version differs between two SBOMs.
type Change struct {
	Type, Name string
	From, To   string
}

// Diff is what changed in packages from one image to another.
type Diff struct {
	Added, Removed []Package
	Changed        []Change
}

// DiffPackages compares the packages of two images by type and name (a package found in several
// places counts once, with its versions joined).
func DiffPackages(from, to []Package) Diff {
	index := func(ps []Package) map[string]Package {
		m := map[string]Package{}
		for _, p := range ps {
			if q, ok := m[p.Key()]; ok && q.Version != p.Version && !slices.Contains(strings.Split(q.Version, ","), p.Version) {
				p.Version = q.Version + "," + p.Version
			}
			m[p.Key()] = p
		}
		return m
	}
	a, b := index(from), index(to)
	var d Diff
	for k, p := range b {
		q, ok := a[k]
		switch {
		case !ok:
			d.Added = append(d.Added, p)
		case q.Version != p.Version:
			d.Changed = append(d.Changed, Change{Type: p.Type, Name: p.Name, From: q.Version, To: p.Version})
		}
	}
	for k, p := range a {
		if _, ok := b[k]; !ok {
			d.Removed = append(d.Removed, p)
		}
	}
	byKey := func(x, y Package) int { return strings.Compare(x.Key(), y.Key()) }
	slices.SortFunc(d.Added, byKey)
	slices.SortFunc(d.Removed, byKey)
	slices.SortFunc(d.Changed, func(x, y Change) int { return strings.Compare(x.Type+"/"+x.Name, y.Type+"/"+y.Name) })
	return d
}
