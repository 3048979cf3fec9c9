// Package assemble is `ferry assemble`: it reads the pipeline file, makes the application layer
// from the artifacts, puts it on the runtime (which must sit on the stack) with the config the
// file asks for, pushes the image by digest with the commit (and git tag) as tags, and writes the
// Tekton results IMAGE_URL, IMAGE_DIGEST and FERRY_LINEAGE. The Build controller's local executor
// calls Assemble in-process; the Tekton step runs the command.
package assemble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

// Tekton result names written to Options.ResultsDir.
const (
	// ResultImageURL is the image's repository, without tag or digest (Tekton Chains' IMAGE_URL).
	ResultImageURL = "IMAGE_URL"
	// ResultImageDigest is the manifest (or index) digest, sha256:… (Tekton Chains' IMAGE_DIGEST).
	ResultImageDigest = "IMAGE_DIGEST"
	// ResultLineage is the JSON of ferryv1.ImageLineage.
	ResultLineage = "FERRY_LINEAGE"
)

// maxResultsBytes keeps the results far below Tekton's 4096 bytes per TaskRun.
const maxResultsBytes = 3072

// Options say what to assemble and where to push it.
type Options struct {
	// Dir is the repository's checkout, where the pipeline file and the artifacts are.
	Dir string
	// Root, when set, is Dir opened already: the artifacts are read through it (see
	// image.LayerOptions.Root).
	Root *os.Root
	// ArtifactOwner, when set, is the only user whose files the image takes (see
	// image.LayerOptions.Owner).
	ArtifactOwner *int
	// PipelineFile is the pipeline file's path inside Dir; default .ferry.yaml.
	PipelineFile string
	// File is the parsed pipeline file; nil reads PipelineFile from Dir.
	File *pipelinefile.File
	// Image is the repository to push to, without tag or digest.
	Image string
	// Revision is the commit (40 hex digits, or 64 for SHA-256 repositories): a tag and the
	// org.opencontainers.image.revision label. Optional.
	Revision string
	// Tags are extra tags, e.g. the git tag of a tag build. `latest` is refused.
	Tags []string
	// SourceURL is the repository's URL, the org.opencontainers.image.source label; credentials,
	// query and fragment are removed from it.
	SourceURL string
	// StackImage and RuntimeImage are resolved references that override the file's stack and
	// runtime (the caller resolves catalog names with internal/catalog).
	StackImage, RuntimeImage string
	// DockerConfigDir is the directory with config.json; "" means $DOCKER_CONFIG or ~/.docker.
	DockerConfigDir string
	// DockerConfig, when set, is the config.json itself, never written to a file; it may not
	// name credential helpers. DockerConfigDir is then not read.
	DockerConfig []byte
	// Insecure allows plain HTTP and unverified TLS to any registry (loopback never needs it).
	Insecure bool
	// ResultsDir, when set, receives the Tekton results IMAGE_URL, IMAGE_DIGEST and FERRY_LINEAGE.
	ResultsDir string
	// Log receives progress for people; nil discards.
	Log io.Writer

	// Epoch is the timestamp of the layer's entries and the image; zero means $SOURCE_DATE_EPOCH,
	// else image.DefaultEpoch.
	Epoch time.Time
	// Backoff overrides how failed registry requests are retried (image.DefaultBackoff).
	Backoff *image.Backoff
}

// Result is the pushed image.
type Result struct {
	// Image is repository@sha256:….
	Image string `json:"image"`
	// Digest is sha256:….
	Digest string `json:"digest"`
	// Tags are the tags pushed.
	Tags []string `json:"tags,omitempty"`
	// Lineage is the stack, runtime and application layer the image is made of.
	Lineage ferryv1.ImageLineage `json:"lineage"`
	// Layer describes the application layer.
	Layer LayerInfo `json:"layer"`
	// Transfer is what was uploaded, mounted and found already in the registry.
	Transfer image.Transfer `json:"transfer"`
}

// LayerInfo describes the application layer.
type LayerInfo struct {
	// Digest is the compressed layer's digest.
	Digest string `json:"digest"`
	// Size is the compressed size.
	Size int64 `json:"size"`
	// UncompressedSize is the tar stream's size.
	UncompressedSize int64 `json:"uncompressedSize"`
	// Entries counts directories, files and links.
	Entries int `json:"entries"`
	// Files counts regular files.
	Files int `json:"files"`
	// Dropped are special files (sockets, pipes, devices) that were left out.
	Dropped []string `json:"dropped,omitempty"`
}

var revisionRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// Assemble builds the image and pushes it.
func Assemble(ctx context.Context, opts Options) (*Result, error) {
	start := time.Now()
	tags, err := tagsOf(opts)
	if err != nil {
		return nil, err
	}
	f := opts.File
	if f == nil {
		if f, err = pipelinefile.Load(opts.Dir, opts.PipelineFile); err != nil {
			return nil, err
		}
	}
	stackRef, runtimeRef, err := baseRefs(f, opts)
	if err != nil {
		return nil, err
	}
	epoch := opts.Epoch
	if epoch.IsZero() {
		if epoch, err = image.EpochFromEnv(); err != nil {
			return nil, err
		}
	}
	c, err := image.NewClient(image.ClientOptions{DockerConfigDir: opts.DockerConfigDir, DockerConfig: opts.DockerConfig, Insecure: opts.Insecure, Backoff: opts.Backoff, Log: opts.Log})
	if err != nil {
		return nil, err
	}
	repo, err := c.ParseRepository(opts.Image)
	if err != nil {
		return nil, err
	}
	log := c.Log()
	workdir := f.Workdir
	if workdir == "" {
		workdir = pipelinefile.DefaultWorkdir
	}
	_, _ = fmt.Fprintf(log, "Assembling %s from %s\n", repo, opts.Dir)

	// Read the bases from the registry while the layer is being made. The bases keep the context
	// they were fetched with for their later reads, so they get ctx, not the group's.
	var stack, runtime *image.Base
	var layer *image.Layer
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var err error
		stack, err = c.Fetch(ctx, f.Stack, stackRef)
		return err
	})
	if runtimeRef != "" {
		g.Go(func() error {
			var err error
			runtime, err = c.Fetch(ctx, cmpOr(f.Runtime, runtimeRef), runtimeRef)
			return err
		})
	}
	g.Go(func() error {
		var err error
		layer, err = image.BuildLayer(gctx, image.LayerOptions{Dir: opts.Dir, Root: opts.Root, Owner: opts.ArtifactOwner, Artifacts: f.Artifacts, Workdir: workdir, Epoch: epoch, Log: log})
		return err
	})
	if err := g.Wait(); err != nil {
		if layer != nil {
			_ = layer.Close()
		}
		return nil, err
	}
	defer func() { _ = layer.Close() }()
	_, _ = fmt.Fprintf(log, "  stack    %s = %s\n", stack.Name, stack.Pinned())
	if runtime != nil {
		_, _ = fmt.Fprintf(log, "  runtime  %s = %s\n", runtime.Name, runtime.Pinned())
	}
	lsize, _ := layer.Size()
	ldigest, _ := layer.Digest()
	_, _ = fmt.Fprintf(log, "  app layer %s: %d files, %d entries, %s (%s uncompressed), made in %s\n",
		ldigest, layer.Files, layer.Entries, humanBytes(lsize), humanBytes(layer.UncompressedSize), time.Since(start).Round(time.Millisecond))

	art, err := image.Compose(stack, runtime, layer, image.Spec{
		Entrypoint: f.Entrypoint,
		Cmd:        f.Cmd,
		Env:        f.Env,
		Workdir:    workdir,
		Ports:      f.Ports,
		User:       f.User,
		Source:     SanitizeSourceURL(opts.SourceURL),
		Revision:   opts.Revision,
		Created:    epoch,
	})
	if err != nil {
		return nil, err
	}
	tagNote := "by digest only"
	if len(tags) > 0 {
		tagNote = "tags " + strings.Join(tags, ", ")
	}
	_, _ = fmt.Fprintf(log, "Pushing %s (%s)\n", repo, tagNote)
	ref, err := c.Push(ctx, repo, art, tags)
	if err != nil {
		return nil, err
	}
	t := c.Transfer()
	_, _ = fmt.Fprintf(log, "Pushed %s in %s: %d blobs uploaded (%s), %d mounted, %d already there, %d manifests\n",
		ref, time.Since(start).Round(time.Millisecond), len(t.Uploaded), humanBytes(t.UploadedBytes()), len(t.Mounted), len(t.Existing), t.Manifests)
	res := &Result{
		Image:    ref.String(),
		Digest:   ref.DigestStr(),
		Tags:     tags,
		Lineage:  art.Lineage,
		Transfer: t,
		Layer: LayerInfo{
			Digest: ldigest.String(), Size: lsize, UncompressedSize: layer.UncompressedSize,
			Entries: layer.Entries, Files: layer.Files, Dropped: layer.Dropped,
		},
	}
	if opts.ResultsDir != "" {
		if err := WriteResults(opts.ResultsDir, repo.String(), res); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// tagsOf validates the revision and tags and returns the tags to push: the revision first.
func tagsOf(opts Options) ([]string, error) {
	if opts.Image == "" {
		return nil, errors.New("the image repository is required (--image)")
	}
	var tags []string
	if opts.Revision != "" {
		if !revisionRE.MatchString(opts.Revision) {
			return nil, fmt.Errorf("revision %q: want the full commit hash (40 lower-case hex digits)", opts.Revision)
		}
		tags = append(tags, opts.Revision)
	}
	for _, t := range opts.Tags {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	if err := image.ValidateTags(tags); err != nil {
		return nil, err
	}
	return tags, nil
}

// baseRefs returns the image references of the stack and runtime: the overrides, else the file's
// values when they are references. Catalog names must have been resolved by the caller.
func baseRefs(f *pipelinefile.File, opts Options) (stack, runtime string, err error) {
	stack = opts.StackImage
	if stack == "" {
		if !catalog.IsReference(f.Stack) {
			return "", "", fmt.Errorf("stack %q is a catalog name: resolve it to an image (ferry build --catalog FILE, or --stack-image)", f.Stack)
		}
		stack = f.Stack
	}
	runtime = opts.RuntimeImage
	if runtime == "" && f.Runtime != "" {
		if !catalog.IsReference(f.Runtime) {
			return "", "", fmt.Errorf("runtime %q is a catalog name: resolve it to an image (ferry build --catalog FILE, or --runtime-image)", f.Runtime)
		}
		runtime = f.Runtime
	}
	return stack, runtime, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// SanitizeSourceURL removes what must not be published in an image label from a repository URL:
// user and password (`https://user:token@host/…`), query (`?private_token=…`) and fragment.
func SanitizeSourceURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		// scp-like git@host:path has a user name but never a password; anything else unparseable
		// is dropped rather than risked.
		if strings.Contains(s, "://") || strings.ContainsAny(s, "?#") {
			return ""
		}
		return s
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment = nil, "", "", ""
	return u.String()
}

// WriteResults writes the Tekton results (no trailing newline) for a pushed image of repository.
func WriteResults(dir, repository string, res *Result) error {
	lineage, err := json.Marshal(res.Lineage)
	if err != nil {
		return err
	}
	results := map[string][]byte{
		ResultImageURL:    []byte(repository),
		ResultImageDigest: []byte(res.Digest),
		ResultLineage:     lineage,
	}
	total := 0
	for _, v := range results {
		total += len(v)
	}
	if total > maxResultsBytes {
		return fmt.Errorf("the results would take %d bytes, more than the %d Ferry allows itself of Tekton's 4096 per TaskRun", total, maxResultsBytes)
	}
	for k, v := range results {
		if err := os.WriteFile(filepath.Join(dir, k), v, 0o644); err != nil {
			return fmt.Errorf("failed to write the result %s: %w", k, err)
		}
	}
	return nil
}

// humanBytes formats a size for people.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
