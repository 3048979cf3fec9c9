package supplychain

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/payload"
)

// cosign's formats (github.com/sigstore/cosign/v2/pkg/oci/static, pkg/types): what `cosign
// verify` and `cosign verify-attestation` read at the tags sha256-<hex>.sig and .att.
const (
	SimpleSigningMediaType  = "application/vnd.dev.cosign.simplesigning.v1+json"
	DSSEMediaType           = "application/vnd.dsse.envelope.v1+json"
	InTotoPayloadType       = "application/vnd.in-toto+json"
	SignatureAnnotation     = "dev.cosignproject.cosign/signature"
	PredicateTypeAnnotation = "predicateType"
	SignatureTagSuffix      = ".sig"
	AttestationTagSuffix    = ".att"
)

// Signer signs images with the platform's ECDSA P-256 key.
type Signer struct {
	sv signature.SignerVerifier
}

// NewSigner reads a PEM private key (PKCS #8 or SEC 1, unencrypted): an ECDSA P-256 key, the
// kind cosign generates. Errors never contain the key.
func NewSigner(privatePEM []byte) (*Signer, error) {
	k, err := cryptoutils.UnmarshalPEMToPrivateKey(privatePEM, cryptoutils.SkipPassword)
	if err != nil {
		return nil, errors.New("the signing key is not an unencrypted PEM private key")
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("the signing key is not an ECDSA P-256 key")
	}
	sv, err := signature.LoadECDSASignerVerifier(ek, crypto.SHA256)
	if err != nil {
		return nil, errors.New("the signing key cannot sign")
	}
	return &Signer{sv: sv}, nil
}

// PublicKeyPEM is the signer's public key as PEM (PKIX), what `cosign verify --key` takes.
func (s *Signer) PublicKeyPEM() ([]byte, error) {
	pub, err := s.sv.PublicKey()
	if err != nil {
		return nil, err
	}
	return cryptoutils.MarshalPublicKeyToPEM(pub)
}

// GenerateKey makes a new ECDSA P-256 key pair as PEM: the private key unencrypted (PKCS #8), for
// a Secret, and the public key.
func GenerateKey() (privatePEM, publicPEM []byte, err error) {
	return cryptoutils.GeneratePEMEncodedECDSAKeyPair(elliptic.P256(), cryptoutils.SkipPassword)
}

// ParsePublicKey reads a PEM public key; only ECDSA P-256 keys are accepted.
func ParsePublicKey(pemBytes []byte) (*ecdsa.PublicKey, error) {
	k, err := cryptoutils.UnmarshalPEMToPublicKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, errors.New("not an ECDSA P-256 public key")
	}
	return ek, nil
}

// TagFor is the cosign tag of an image's signatures (.sig) or attestations (.att):
// sha256-<hex><suffix> in the image's repository.
func TagFor(img name.Digest, suffix string) name.Tag {
	return img.Context().Tag(strings.Replace(img.DigestStr(), ":", "-", 1) + suffix)
}

// SimpleSigningPayload is cosign's payload for an image signature.
func SimpleSigningPayload(img name.Digest) ([]byte, error) {
	return json.Marshal(payload.Cosign{Image: img})
}

// Sign signs the image as `cosign sign --key` does: the simple-signing payload, its ECDSA
// signature in the layer's annotation, added to the image at the .sig tag (signatures already
// there are kept).
func (s *Signer) Sign(img name.Digest, opts ...remote.Option) error {
	p, err := SimpleSigningPayload(img)
	if err != nil {
		return err
	}
	sig, err := s.sv.SignMessage(bytes.NewReader(p))
	if err != nil {
		return fmt.Errorf("failed to sign %s: %w", img, err)
	}
	l := static.NewLayer(p, SimpleSigningMediaType)
	already := func(content []byte, ann map[string]string) bool {
		old, err := base64.StdEncoding.DecodeString(ann[SignatureAnnotation])
		return err == nil && bytes.Equal(content, p) && s.sv.VerifySignature(bytes.NewReader(old), bytes.NewReader(p)) == nil
	}
	return appendCosignLayer(TagFor(img, SignatureTagSuffix), l, map[string]string{SignatureAnnotation: base64.StdEncoding.EncodeToString(sig)}, already, opts)
}

// Attest signs the in-toto statement as a DSSE envelope and adds it to the image at the .att tag,
// as `cosign attest --key` does.
func (s *Signer) Attest(img name.Digest, statement []byte, predicateType string, opts ...remote.Option) error {
	env, err := dsse.WrapSigner(s.sv, InTotoPayloadType).SignMessage(bytes.NewReader(statement))
	if err != nil {
		return fmt.Errorf("failed to sign the attestation of %s: %w", img, err)
	}
	l := static.NewLayer(env, DSSEMediaType)
	already := func(content []byte, ann map[string]string) bool {
		var got []byte
		v := dsse.WrapVerifier(s.sv, dsse.WithExpectedPayloadType(InTotoPayloadType), dsse.WithDecodedPayload(&got))
		return ann[PredicateTypeAnnotation] == predicateType && v.VerifySignature(bytes.NewReader(content), nil) == nil && bytes.Equal(got, statement)
	}
	return appendCosignLayer(TagFor(img, AttestationTagSuffix), l, map[string]string{SignatureAnnotation: "", PredicateTypeAnnotation: predicateType}, already, opts)
}

// appendCosignLayer adds a layer to the cosign image at tag, creating it when there is none, and
// leaves it alone when a layer of the same media type is already what would be added (ECDSA
// signatures differ each time: already compares content and checks the old signature).
func appendCosignLayer(tag name.Tag, l v1.Layer, ann map[string]string, already func([]byte, map[string]string) bool, opts []remote.Option) error {
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	if old, err := remote.Image(tag, opts...); err == nil {
		m, err := old.Manifest()
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", tag, err)
		}
		mt, _ := l.MediaType()
		for _, ld := range m.Layers {
			if ld.MediaType != mt || ld.Size > maxCosignLayer {
				continue
			}
			if b, err := readBlob(old, ld.Digest); err == nil && already(b, ld.Annotations) {
				return nil
			}
		}
		base = old
	} else if !isNotFound(err) {
		return fmt.Errorf("failed to read %s: %w", tag, err)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: l, Annotations: ann})
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return fmt.Errorf("failed to push %s: %w", tag, err)
	}
	return nil
}
