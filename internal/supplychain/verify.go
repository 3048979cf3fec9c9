package supplychain

import (
	"bytes"

	"crypto"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// maxCosignLayer is the largest signature payload or attestation envelope read.
const maxCosignLayer = 4 << 20

// ErrNotSigned says that the image has no signature or attestation at all.
var ErrNotSigned = errors.New("not signed")

// Key is a trusted public key and a name for it in messages (e.g. the Secret it came from).
type Key struct {
	Name string
	Key  *ecdsa.PublicKey
}

type namedVerifier struct {
	name string
	v    signature.Verifier
}

func verifiers(keys []Key) ([]namedVerifier, error) {
	out := make([]namedVerifier, 0, len(keys))
	for _, k := range keys {
		v, err := signature.LoadECDSAVerifier(k.Key, crypto.SHA256)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", k.Name, err)
		}
		out = append(out, namedVerifier{name: k.Name, v: v})
	}
	return out, nil
}

// VerifySignature checks the image's cosign signatures (tag .sig) and returns the name of the
// first key one of them verifies with. A signature whose payload names another digest, or that no
// key verifies, does not count; the error says which.
func VerifySignature(img name.Digest, keys []Key, opts ...remote.Option) (string, error) {
	vs, err := verifiers(keys)
	if err != nil {
		return "", err
	}
	layers, err := cosignLayers(TagFor(img, SignatureTagSuffix), SimpleSigningMediaType, opts)
	if err != nil {
		return "", fmt.Errorf("signature: %w", err)
	}
	problem := "no signature verifies with a trusted key (signed by an unknown key, or tampered)"
	for _, l := range layers {
		sig, err := base64.StdEncoding.DecodeString(l.annotations[SignatureAnnotation])
		if err != nil || len(sig) == 0 {
			continue
		}
		for _, nv := range vs {
			if nv.v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(l.content)) != nil {
				continue
			}
			var p payload.Cosign
			if err := json.Unmarshal(l.content, &p); err != nil {
				problem = fmt.Sprintf("a signature by %s has a payload that is not cosign's: %v", nv.name, err)
				continue
			}
			if p.Image.DigestStr() != img.DigestStr() {
				problem = fmt.Sprintf("a signature by %s signs %s, not %s", nv.name, p.Image.DigestStr(), img.DigestStr())
				continue
			}
			return nv.name, nil
		}
	}
	return "", fmt.Errorf("signature: %s", problem)
}

// VerifyProvenance checks the image's attestations (tag .att): the first DSSE envelope that a
// trusted key verifies and whose statement is SLSA v1 provenance about this digest gives the
// provenance. The error says what failed: no attestation, a signature that does not verify (an
// altered statement, an unknown key), or a statement about something else.
func VerifyProvenance(img name.Digest, keys []Key, opts ...remote.Option) (*Provenance, string, error) {
	vs, err := verifiers(keys)
	if err != nil {
		return nil, "", err
	}
	layers, err := cosignLayers(TagFor(img, AttestationTagSuffix), DSSEMediaType, opts)
	if err != nil {
		return nil, "", fmt.Errorf("provenance: %w", err)
	}
	problem := "no attestation verifies with a trusted key (tampered, or signed by an unknown key)"
	for _, l := range layers {
		if l.annotations[PredicateTypeAnnotation] != SLSAProvenanceType {
			continue
		}
		for _, nv := range vs {
			var statement []byte
			dv := dsse.WrapVerifier(nv.v, dsse.WithExpectedPayloadType(InTotoPayloadType), dsse.WithDecodedPayload(&statement))
			if dv.VerifySignature(bytes.NewReader(l.content), nil) != nil {
				continue
			}
			p, err := ParseProvenance(statement, img)
			if err != nil {
				problem = fmt.Sprintf("an attestation by %s: %v", nv.name, err)
				continue
			}
			return p, nv.name, nil
		}
	}
	return nil, "", fmt.Errorf("provenance: %s", problem)
}

type cosignLayer struct {
	content     []byte
	annotations map[string]string
}

// cosignLayers reads the layers of the given media type of the cosign image at tag, their content
// checked against their digests.
func cosignLayers(tag name.Tag, mediaType string, opts []remote.Option) ([]cosignLayer, error) {
	img, err := remote.Image(tag, opts...)
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: nothing at %s", ErrNotSigned, tag.TagStr())
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", tag, err)
	}
	var out []cosignLayer
	for _, ld := range m.Layers {
		if string(ld.MediaType) != mediaType || ld.Size > maxCosignLayer {
			continue
		}
		b, err := readBlob(img, ld.Digest)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s layer %s: %w", tag, ld.Digest, err)
		}
		out = append(out, cosignLayer{content: b, annotations: ld.Annotations})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no %s layer at %s", ErrNotSigned, mediaType, tag.TagStr())
	}
	return out, nil
}

func readBlob(img v1.Image, h v1.Hash) ([]byte, error) {
	l, err := img.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rc.Close() }()
	return io.ReadAll(io.LimitReader(rc, maxCosignLayer+1))
}
