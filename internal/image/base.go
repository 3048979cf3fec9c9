package image

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Base is a stack or runtime image as fetched from its registry: one image, or an index of
// platform images.
type Base struct {
	// Name is the catalog name or reference as the pipeline file wrote it.
	Name string
	// Ref is the reference it was fetched by.
	Ref name.Reference
	// Digest is the digest of its top manifest (the index for a multi-platform image).
	Digest v1.Hash
	// MediaType is the top manifest's media type.
	MediaType types.MediaType

	image v1.Image
	index v1.ImageIndex
}

// Pinned returns repository@sha256:… of the base.
func (b *Base) Pinned() string {
	return b.Ref.Context().Digest(b.Digest.String()).String()
}

// IsIndex reports whether the base is a multi-platform index.
func (b *Base) IsIndex() bool { return b.index != nil }

// Fetch reads the manifest of a stack or runtime image; nameAsWritten is what the pipeline file
// said (a catalog name or the reference itself).
func (c *Client) Fetch(ctx context.Context, nameAsWritten, ref string) (*Base, error) {
	r, err := c.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, c.remoteOptions(ctx)...)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch %s: %w", ref, err)
	}
	b := &Base{Name: nameAsWritten, Ref: r, Digest: desc.Digest, MediaType: desc.MediaType}
	switch {
	case desc.MediaType.IsIndex():
		b.index, err = desc.ImageIndex()
	case desc.MediaType.IsImage():
		b.image, err = desc.Image()
	default:
		return nil, fmt.Errorf("%s is a %s, not an image or an image index", ref, desc.MediaType)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", ref, err)
	}
	return b, nil
}

// platformImage is one platform's image of a Base.
type platformImage struct {
	platform v1.Platform
	image    v1.Image
	digest   v1.Hash
	desc     v1.Descriptor
}

// platforms lists the images of a base: the children of an index (leaving out attestation and
// other non-image entries), or the one image with the platform of its config.
func (b *Base) platforms() ([]platformImage, error) {
	if b.index == nil {
		p, err := imagePlatform(b.image)
		if err != nil {
			return nil, fmt.Errorf("failed to read the config of %s: %w", b.Ref, err)
		}
		return []platformImage{{platform: p, image: b.image, digest: b.Digest}}, nil
	}
	im, err := b.index.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("failed to read the index of %s: %w", b.Ref, err)
	}
	var out []platformImage
	for _, d := range im.Manifests {
		if !d.MediaType.IsImage() || d.Platform == nil || d.Platform.OS == "unknown" || d.Platform.Architecture == "unknown" {
			continue
		}
		img, err := b.index.Image(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("failed to read %s of %s: %w", d.Platform, b.Ref, err)
		}
		out = append(out, platformImage{platform: *d.Platform, image: img, digest: d.Digest, desc: d})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("the index %s lists no platform image", b.Pinned())
	}
	return out, nil
}

// forPlatform returns the base's image for a platform.
func (b *Base) forPlatform(p v1.Platform) (platformImage, error) {
	all, err := b.platforms()
	if err != nil {
		return platformImage{}, err
	}
	var have []string
	for _, pi := range all {
		if samePlatform(pi.platform, p) {
			return pi, nil
		}
		have = append(have, platformString(pi.platform))
	}
	return platformImage{}, fmt.Errorf("%s (%s) has no image for %s (it has %s)", b.Name, b.Pinned(), platformString(p), strings.Join(have, ", "))
}

// imagePlatform reads an image's platform from its config.
func imagePlatform(img v1.Image) (v1.Platform, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return v1.Platform{}, err
	}
	if p := cf.Platform(); p != nil {
		return *p, nil
	}
	return v1.Platform{OS: cf.OS, Architecture: cf.Architecture, Variant: cf.Variant}, nil
}

// samePlatform compares OS, architecture and variant; arm64's variant v8 is its default.
func samePlatform(a, b v1.Platform) bool {
	norm := func(p v1.Platform) string {
		v := p.Variant
		if p.Architecture == "arm64" && v == "v8" {
			v = ""
		}
		return p.OS + "/" + p.Architecture + "/" + v
	}
	return norm(a) == norm(b)
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// layerDigests lists an image's layer digests, bottom first.
func layerDigests(img v1.Image) ([]v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Hash, 0, len(m.Layers))
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out, nil
}

// hasPrefix reports whether layers start with prefix.
func hasPrefix(layers, prefix []v1.Hash) bool {
	if len(prefix) > len(layers) {
		return false
	}
	for i := range prefix {
		if layers[i] != prefix[i] {
			return false
		}
	}
	return true
}

// checkSitsOn verifies that upper's layers start with lower's, and explains it when they do not.
func checkSitsOn(upper, lower *Base, up, low platformImage) error {
	ul, err := layerDigests(up.image)
	if err != nil {
		return fmt.Errorf("failed to read the manifest of %s: %w", upper.Pinned(), err)
	}
	ll, err := layerDigests(low.image)
	if err != nil {
		return fmt.Errorf("failed to read the manifest of %s: %w", lower.Pinned(), err)
	}
	if hasPrefix(ul, ll) {
		return nil
	}
	return fmt.Errorf("runtime %s (%s) does not sit on stack %s (%s) for %s: its %d layers do not start with the stack's %d layers; build the runtime on this stack or pick the stack it was built on",
		upper.Name, up.digest, lower.Name, low.digest, platformString(up.platform), len(ul), len(ll))
}
