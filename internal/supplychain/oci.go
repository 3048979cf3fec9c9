package supplychain

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// emptyConfig is the OCI empty descriptor's content, the config of artifact manifests.
var emptyConfig = []byte("{}")

const emptyMediaType = "application/vnd.oci.empty.v1+json"

// artifactManifest is an OCI image manifest of an artifact that refers to a subject.
type artifactManifest struct {
	raw       []byte
	mediaType types.MediaType
}

func (m artifactManifest) RawManifest() ([]byte, error)        { return m.raw, nil }
func (m artifactManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

// AttachSBOM pushes the SBOM as an OCI artifact (artifactType application/spdx+json, the OCI empty
// config, the document as its one layer) whose subject is the image, and returns its digest. A
// registry with the referrers API indexes it; for others go-containerregistry adds it to the
// image index at the referrers tag sha256-<hex> (the OCI tag schema fallback).
func AttachSBOM(subject name.Digest, subjectDesc v1.Descriptor, doc []byte, opts ...remote.Option) (v1.Hash, error) {
	repo := subject.Context()
	cfg := static.NewLayer(emptyConfig, emptyMediaType)
	layer := static.NewLayer(doc, SPDXMediaType)
	for _, l := range []v1.Layer{cfg, layer} {
		if err := remote.WriteLayer(repo, l, opts...); err != nil {
			return v1.Hash{}, fmt.Errorf("failed to upload the SBOM to %s: %w", repo, err)
		}
	}
	cd, _ := cfg.Digest()
	ld, _ := layer.Digest()
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  SPDXMediaType,
		Config:        v1.Descriptor{MediaType: emptyMediaType, Size: int64(len(emptyConfig)), Digest: cd, Data: emptyConfig},
		Layers:        []v1.Descriptor{{MediaType: SPDXMediaType, Size: int64(len(doc)), Digest: ld}},
		Subject:       &v1.Descriptor{MediaType: subjectDesc.MediaType, Size: subjectDesc.Size, Digest: subjectDesc.Digest},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return v1.Hash{}, err
	}
	am := artifactManifest{raw: raw, mediaType: types.OCIManifestSchema1}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Put(repo.Digest(h.String()), am, opts...); err != nil {
		return v1.Hash{}, fmt.Errorf("failed to push the SBOM's manifest to %s: %w", repo, err)
	}
	return h, nil
}

// ErrNoSBOM says that no SBOM refers to an image.
var ErrNoSBOM = errors.New("no SBOM refers to the image")

// FetchSBOM reads the SBOM that refers to the image (through the referrers API, or the tag schema
// fallback) and checks that it describes that image: an SBOM of another digest is refused. It
// returns the SBOM and the digest of its artifact manifest.
func FetchSBOM(subject name.Digest, opts ...remote.Option) (*SBOM, string, error) {
	idx, err := remote.Referrers(subject, append(opts, remote.WithFilter("artifactType", SPDXMediaType))...)
	if err != nil {
		return nil, "", fmt.Errorf("failed to list the referrers of %s: %w", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, "", err
	}
	var lastErr error
	for _, d := range im.Manifests {
		if d.ArtifactType != SPDXMediaType {
			continue
		}
		doc, err := fetchSBOMDocument(subject, d.Digest, opts)
		if err != nil {
			lastErr = err
			continue
		}
		s, err := ParseSPDX(doc)
		if err != nil {
			lastErr = fmt.Errorf("SBOM %s: %w", d.Digest, err)
			continue
		}
		if s.Digest != subject.DigestStr() {
			lastErr = fmt.Errorf("SBOM %s describes %s, not the image %s", d.Digest, s.Digest, subject.DigestStr())
			continue
		}
		return s, d.Digest.String(), nil
	}
	if lastErr != nil {
		return nil, "", lastErr
	}
	return nil, "", ErrNoSBOM
}

func fetchSBOMDocument(subject name.Digest, h v1.Hash, opts []remote.Option) ([]byte, error) {
	img, err := remote.Image(subject.Context().Digest(h.String()), opts...)
	if err != nil {
		return nil, fmt.Errorf("failed to read SBOM %s: %w", h, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("failed to read SBOM %s: %w", h, err)
	}
	if m.Subject == nil || m.Subject.Digest.String() != subject.DigestStr() {
		return nil, fmt.Errorf("SBOM %s does not name %s as its subject", h, subject.DigestStr())
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != SPDXMediaType {
		return nil, fmt.Errorf("SBOM %s: want one %s layer", h, SPDXMediaType)
	}
	l, err := img.LayerByDigest(m.Layers[0].Digest)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed() // the blob as stored: verified against its digest while read
	if err != nil {
		return nil, fmt.Errorf("failed to read SBOM %s: %w", h, err)
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(io.LimitReader(rc, maxTextFile))
	if err != nil {
		return nil, fmt.Errorf("failed to read SBOM %s: %w", h, err)
	}
	return b, nil
}
