package supplychain

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// in-toto and SLSA identifiers.
const (
	StatementType      = "https://in-toto.io/Statement/v1"
	SLSAProvenanceType = "https://slsa.dev/provenance/v1"
	// BuilderID identifies Ferry as the builder in provenance.
	BuilderID = "https://ferryci.dev/builder"
	// BuildType is the SLSA buildType of Ferry's builds.
	BuildType = "https://ferryci.dev/build/v1"
)

// Provenance is what Ferry vouches for about an image.
type Provenance struct {
	// FerryVersion is the builder's version.
	FerryVersion string
	// Repository is the Project's repository URL (without credentials) and Revision the exact
	// commit built.
	Repository, Revision string
	// PipelineFile is the pipeline file's path and PipelineFileDigest its sha256:….
	PipelineFile, PipelineFileDigest string
	// Stack and Runtime are the base images, pinned (repo@sha256:…); Runtime may be "".
	Stack, Runtime string
	// Build is the Build's identity: namespace/name, and BuildUID its UID.
	Build, BuildUID string
	// Executor is tekton or local.
	Executor string
	// StartedOn and FinishedOn bound the build.
	StartedOn, FinishedOn time.Time
}

// Statement is an in-toto v1 statement.
type Statement struct {
	Type          string          `json:"_type"`
	Subject       []Subject       `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

// Subject is an artifact the statement is about.
type Subject struct {
	Name   string            `json:"name"`
	Digest map[string]string `json:"digest"`
}

// SLSA v1 provenance.
type slsaProvenance struct {
	BuildDefinition slsaBuildDefinition `json:"buildDefinition"`
	RunDetails      slsaRunDetails      `json:"runDetails"`
}

type slsaBuildDefinition struct {
	BuildType            string               `json:"buildType"`
	ExternalParameters   map[string]string    `json:"externalParameters"`
	InternalParameters   map[string]string    `json:"internalParameters,omitempty"`
	ResolvedDependencies []resourceDescriptor `json:"resolvedDependencies"`
}

type resourceDescriptor struct {
	Name   string            `json:"name"`
	URI    string            `json:"uri"`
	Digest map[string]string `json:"digest"`
}

type slsaRunDetails struct {
	Builder  slsaBuilder  `json:"builder"`
	Metadata slsaMetadata `json:"metadata"`
}

type slsaBuilder struct {
	ID      string            `json:"id"`
	Version map[string]string `json:"version,omitempty"`
}

type slsaMetadata struct {
	InvocationID string `json:"invocationId,omitempty"`
	StartedOn    string `json:"startedOn,omitempty"`
	FinishedOn   string `json:"finishedOn,omitempty"`
}

// MarshalStatement writes the in-toto statement with SLSA v1 provenance about the image.
func (p Provenance) MarshalStatement(img name.Digest) ([]byte, error) {
	if p.Repository == "" || p.Revision == "" {
		return nil, errors.New("provenance needs the repository and the revision")
	}
	deps := []resourceDescriptor{{Name: "source", URI: "git+" + p.Repository, Digest: map[string]string{"gitCommit": p.Revision}}}
	if hex, ok := strings.CutPrefix(p.PipelineFileDigest, "sha256:"); ok {
		deps = append(deps, resourceDescriptor{Name: "pipelineFile", URI: p.PipelineFile, Digest: map[string]string{"sha256": hex}})
	}
	for _, b := range []struct{ role, ref string }{{RoleStack, p.Stack}, {RoleRuntime, p.Runtime}} {
		if b.ref == "" {
			continue
		}
		d, err := name.NewDigest(b.ref)
		if err != nil {
			return nil, fmt.Errorf("%s %q is not pinned by digest: %w", b.role, b.ref, err)
		}
		deps = append(deps, resourceDescriptor{Name: b.role, URI: "oci://" + d.Context().String(), Digest: map[string]string{"sha256": strings.TrimPrefix(d.DigestStr(), "sha256:")}})
	}
	pred := slsaProvenance{
		BuildDefinition: slsaBuildDefinition{
			BuildType:            BuildType,
			ExternalParameters:   map[string]string{"repository": p.Repository, "revision": p.Revision, "pipelineFile": p.PipelineFile},
			InternalParameters:   map[string]string{"build": p.Build, "executor": p.Executor},
			ResolvedDependencies: deps,
		},
		RunDetails: slsaRunDetails{
			Builder:  slsaBuilder{ID: BuilderID, Version: map[string]string{"ferry": p.FerryVersion}},
			Metadata: slsaMetadata{InvocationID: p.BuildUID, StartedOn: rfc3339(p.StartedOn), FinishedOn: rfc3339(p.FinishedOn)},
		},
	}
	raw, err := json.Marshal(pred)
	if err != nil {
		return nil, err
	}
	return json.Marshal(Statement{
		Type:          StatementType,
		Subject:       []Subject{{Name: img.Context().String(), Digest: map[string]string{"sha256": strings.TrimPrefix(img.DigestStr(), "sha256:")}}},
		PredicateType: SLSAProvenanceType,
		Predicate:     raw,
	})
}

func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// ParseProvenance reads the provenance out of a statement whose subject is the image: a
// statement about another digest, or not SLSA v1 provenance, is refused.
func ParseProvenance(statement []byte, img name.Digest) (*Provenance, error) {
	var st Statement
	if err := json.Unmarshal(statement, &st); err != nil {
		return nil, fmt.Errorf("the attestation's statement is not JSON: %w", err)
	}
	if st.Type != StatementType || st.PredicateType != SLSAProvenanceType {
		return nil, fmt.Errorf("the attestation is a %q statement of %q, want %s of %s", st.Type, st.PredicateType, StatementType, SLSAProvenanceType)
	}
	hex := strings.TrimPrefix(img.DigestStr(), "sha256:")
	found := false
	for _, s := range st.Subject {
		if s.Digest["sha256"] == hex {
			found = true
		}
	}
	if !found {
		return nil, fmt.Errorf("the attestation's subject is not %s", img.DigestStr())
	}
	var pred slsaProvenance
	if err := json.Unmarshal(st.Predicate, &pred); err != nil {
		return nil, fmt.Errorf("the attestation's predicate is not SLSA v1 provenance: %w", err)
	}
	if pred.RunDetails.Builder.ID != BuilderID {
		return nil, fmt.Errorf("the attestation names the builder %q, not Ferry (%s)", pred.RunDetails.Builder.ID, BuilderID)
	}
	ep, ip := pred.BuildDefinition.ExternalParameters, pred.BuildDefinition.InternalParameters
	p := &Provenance{
		FerryVersion: pred.RunDetails.Builder.Version["ferry"],
		Repository:   ep["repository"], Revision: ep["revision"], PipelineFile: ep["pipelineFile"],
		Build: ip["build"], Executor: ip["executor"], BuildUID: pred.RunDetails.Metadata.InvocationID,
	}
	p.StartedOn, _ = time.Parse(time.RFC3339, pred.RunDetails.Metadata.StartedOn)
	p.FinishedOn, _ = time.Parse(time.RFC3339, pred.RunDetails.Metadata.FinishedOn)
	for _, d := range pred.BuildDefinition.ResolvedDependencies {
		ref := strings.TrimPrefix(d.URI, "oci://") + "@sha256:" + d.Digest["sha256"]
		switch d.Name {
		case "pipelineFile":
			p.PipelineFileDigest = "sha256:" + d.Digest["sha256"]
		case RoleStack:
			p.Stack = ref
		case RoleRuntime:
			p.Runtime = ref
		}
	}
	return p, nil
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}
