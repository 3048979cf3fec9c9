package supplychain

import (
	"fmt"
	"slices"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Base is an image the described image is built on, pinned by digest, and the role of the layers
// it adds (stack or runtime).
type Base struct {
	Role  string
	Image name.Digest
}

// DescribeOptions say how to describe an image.
type DescribeOptions struct {
	// Bases are the images it is built on, bottom first (the stack, then the runtime); each must
	// be a prefix of the next and of the image.
	Bases []Base
	// Role is the role of the layers above the bases: app by default; stack or runtime when the
	// image described is itself a base.
	Role string
	// Tool names the program that writes the SBOM, e.g. ferry-v0.4.0.
	Tool string
	// Remote are the registry options.
	Remote []remote.Option
}

// Described is an image's SBOM and how it was made.
type Described struct {
	SBOM *SBOM
	// Linked are the bases whose own SBOMs were reused instead of cataloguing their layers.
	Linked []string
	// Catalogued counts the layers read.
	Catalogued int
}

// Describe makes the SBOM of an image from the registry: the layers of each base come from the
// base's own SBOM (made once, when the base was built) when it has one that lists exactly those
// layers, else they are catalogued; the layers above the bases are always catalogued.
func Describe(img name.Digest, opts DescribeOptions) (*Described, error) {
	ropts, err := session(opts.Remote)
	if err != nil {
		return nil, err
	}
	opts.Remote = ropts
	image, err := remote.Image(img, opts.Remote...)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", img, err)
	}
	layers, err := image.Layers()
	if err != nil {
		return nil, fmt.Errorf("failed to read the layers of %s: %w", img, err)
	}
	digests, err := layerDigests(layers)
	if err != nil {
		return nil, err
	}
	cf, err := image.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("failed to read the config of %s: %w", img, err)
	}
	out := &Described{SBOM: &SBOM{Name: img.Context().String(), Digest: img.DigestStr(), Created: cf.Created.Time, Tool: opts.Tool}}
	// Each base's layers must be a prefix of the image's (and so of the next base's): ends[i] is
	// where base i's layers end.
	ends := make([]int, len(opts.Bases))
	for i, b := range opts.Bases {
		bimg, err := remote.Image(b.Image, opts.Remote...)
		if err != nil {
			return nil, fmt.Errorf("failed to read the %s %s: %w", b.Role, b.Image, err)
		}
		bl, err := bimg.Layers()
		if err != nil {
			return nil, fmt.Errorf("failed to read the layers of the %s %s: %w", b.Role, b.Image, err)
		}
		bd, err := layerDigests(bl)
		if err != nil {
			return nil, err
		}
		if len(bd) > len(digests) || !slices.Equal(bd, digests[:len(bd)]) {
			return nil, fmt.Errorf("%s is not built on the %s %s: its layers are not a prefix", img, b.Role, b.Image)
		}
		ends[i] = len(bd)
	}
	// The highest base with its own SBOM of exactly its layers covers everything below it (a
	// runtime's SBOM links its stack's): the bases are tried from the top, so the usual case asks
	// the registry for one SBOM.
	covered, from := 0, 0
	for i := len(opts.Bases) - 1; i >= 0; i-- {
		b := opts.Bases[i]
		if sb, _, err := FetchSBOM(b.Image, opts.Remote...); err == nil && slices.Equal(sbomLayerDigests(sb), digests[:ends[i]]) {
			out.SBOM.Layers = sb.Layers
			out.Linked = append(out.Linked, b.Image.String())
			covered, from = ends[i], i+1
			break
		}
	}
	for i := from; i < len(opts.Bases); i++ {
		if ends[i] <= covered {
			continue
		}
		if err := out.catalog(layers, covered, ends[i], opts.Bases[i].Role); err != nil {
			return nil, err
		}
		covered = ends[i]
	}
	role := opts.Role
	if role == "" {
		role = RoleApp
	}
	if err := out.catalog(layers, covered, len(layers), role); err != nil {
		return nil, err
	}
	return out, nil
}

func (d *Described) catalog(layers []v1.Layer, from, to int, role string) error {
	for _, l := range layers[from:to] {
		pkgs, err := CatalogLayer(l, d.SBOM.Packages())
		if err != nil {
			return err
		}
		h, _ := l.Digest()
		d.SBOM.Layers = append(d.SBOM.Layers, SBOMLayer{Digest: h.String(), Role: role, Packages: pkgs})
		d.Catalogued++
	}
	return nil
}

func layerDigests(ls []v1.Layer) ([]string, error) {
	out := make([]string, len(ls))
	for i, l := range ls {
		h, err := l.Digest()
		if err != nil {
			return nil, err
		}
		out[i] = h.String()
	}
	return out, nil
}

func sbomLayerDigests(s *SBOM) []string {
	out := make([]string, len(s.Layers))
	for i, l := range s.Layers {
		out[i] = l.Digest
	}
	return out
}

// PublishOptions say what to publish about an image.
type PublishOptions struct {
	// SBOM is the image's SBOM; nil publishes none.
	SBOM *SBOM
	// Provenance, with Signer, is attested; nil attests nothing.
	Provenance *Provenance
	// Signer signs the provenance and the image; nil signs nothing.
	Signer *Signer
	// Remote are the registry options.
	Remote []remote.Option
}

// Published is what was published about an image.
type Published struct {
	// SBOM is the digest of the SBOM's artifact manifest.
	SBOM string `json:"sbom,omitempty"`
	// SBOMBytes is the SBOM document's size.
	SBOMBytes int `json:"sbomBytes,omitempty"`
	// Packages counts the packages of the SBOM.
	Packages int `json:"packages,omitempty"`
	// Attested says that the provenance was pushed at the .att tag.
	Attested bool `json:"attested,omitempty"`
	// Signed says that the signature was pushed at the .sig tag.
	Signed bool `json:"signed,omitempty"`
	// Duration is how long it took.
	Duration time.Duration `json:"duration"`
}

// Publish attaches the SBOM and the signed provenance side by side, then the image signature: the
// signature goes last, so an image that verifies as signed has its SBOM and provenance in the
// registry. A failure stops it and is returned, with what was published before it; the signature
// is never pushed after a failure.
func Publish(img name.Digest, opts PublishOptions) (*Published, error) {
	start := time.Now()
	out := &Published{}
	defer func() { out.Duration = time.Since(start) }()
	ropts, err := session(opts.Remote)
	if err != nil {
		return out, err
	}
	var sbom, statement []byte
	if opts.SBOM != nil {
		if opts.SBOM.Digest != img.DigestStr() {
			return out, fmt.Errorf("the SBOM describes %s, not %s", opts.SBOM.Digest, img.DigestStr())
		}
		if sbom, err = opts.SBOM.MarshalSPDX(); err != nil {
			return out, err
		}
	}
	if opts.Signer != nil && opts.Provenance != nil {
		if statement, err = opts.Provenance.MarshalStatement(img); err != nil {
			return out, err
		}
	}
	// The SBOM and the attestation go to different manifests (a referrer, the .att tag), so
	// neither waits for the other; each sets only its own fields of out.
	var g errgroup.Group
	if sbom != nil {
		g.Go(func() error {
			desc, err := remote.Head(img, ropts...)
			if err != nil {
				return fmt.Errorf("failed to read %s: %w", img, err)
			}
			h, err := AttachSBOM(img, *desc, sbom, ropts...)
			if err != nil {
				return err
			}
			out.SBOM, out.SBOMBytes, out.Packages = h.String(), len(sbom), len(opts.SBOM.Packages())
			return nil
		})
	}
	if statement != nil {
		g.Go(func() error {
			if err := opts.Signer.Attest(img, statement, SLSAProvenanceType, ropts...); err != nil {
				return err
			}
			out.Attested = true
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return out, err
	}
	if opts.Signer == nil {
		return out, nil
	}
	if err := opts.Signer.Sign(img, ropts...); err != nil {
		return out, err
	}
	out.Signed = true
	return out, nil
}

// session makes the registry calls of one Describe or Publish share their connections, their
// token exchanges and what they learnt about blobs: without it each call pings the registry and
// asks for a token again (a third of a publish's requests, and against Harbor each token is a
// round trip to its core).
func session(opts []remote.Option) ([]remote.Option, error) {
	puller, err := remote.NewPuller(opts...)
	if err != nil {
		return nil, err
	}
	pusher, err := remote.NewPusher(opts...)
	if err != nil {
		return nil, err
	}
	return append(slices.Clip(opts), remote.Reuse(puller), remote.Reuse(pusher)), nil
}
