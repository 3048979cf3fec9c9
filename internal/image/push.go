package image

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// tagRE is the distribution spec's tag grammar.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)

// ValidateTags refuses tags the registry would refuse, and `latest`, which Ferry never pushes: an
// image is named by its digest, and tagged with its commit (and git tag).
func ValidateTags(tags []string) error {
	for _, t := range tags {
		if t == "latest" {
			return fmt.Errorf("tag %q: Ferry never pushes latest; images are tagged with their commit and git tag, and deployed by digest", t)
		}
		if !tagRE.MatchString(t) {
			return fmt.Errorf("tag %q: a tag is 1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", t)
		}
	}
	return nil
}

// Push uploads an artifact into repo and returns repo@sha256:…. For every blob it asks first
// (HEAD) and uploads only what the repository lacks, mounting blobs that live in another
// repository of the same registry; then it puts the manifest — of each platform image, then of
// the index — under its first tag, or under its digest when there are no tags, and finally the
// other tags. A manifest never goes before its blobs, so a failed push leaves no manifest behind.
func (c *Client) Push(ctx context.Context, repo name.Repository, art *Artifact, tags []string) (name.Digest, error) {
	if err := ValidateTags(tags); err != nil {
		return name.Digest{}, err
	}
	digest, err := art.Digest()
	if err != nil {
		return name.Digest{}, fmt.Errorf("failed to compute the image digest: %w", err)
	}
	byDigest := repo.Digest(digest.String())
	refs := []name.Reference{byDigest}
	if len(tags) > 0 {
		refs = refs[:0]
		for _, t := range tags {
			refs = append(refs, repo.Tag(t))
		}
	}
	pusher, err := remote.NewPusher(c.remoteOptions(ctx)...)
	if err != nil {
		return name.Digest{}, err
	}
	stop := c.reportProgress()
	defer stop()
	for i, ref := range refs {
		if err := pusher.Push(ctx, ref, art.taggable()); err != nil {
			if i == 0 {
				return name.Digest{}, fmt.Errorf("failed to push %s: %w", byDigest, err)
			}
			return name.Digest{}, fmt.Errorf("pushed %s, but failed to tag it %s: %w", byDigest, ref.Identifier(), err)
		}
	}
	return byDigest, nil
}

// reportProgress prints how much has been sent every few seconds while a push runs.
func (c *Client) reportProgress() (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		last := c.observer.sent.Load()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if n := c.observer.sent.Load(); n != last {
					last = n
					c.observer.logf("  … %s sent\n", humanBytes(n))
				}
			}
		}
	}()
	return func() { close(done) }
}
