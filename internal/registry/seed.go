package registry

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// SeedOptions say which base images SeedBaseImages pushes.
type SeedOptions struct {
	// Stack is the stack's repository on the registry, e.g. "ferry/stacks/debian".
	Stack string
	// Runtime is the runtime's repository, e.g. "ferry/runtimes/python"; "" pushes no runtime.
	Runtime string
	// Tag is the tag both images get; default "dev".
	Tag string
	// Platforms are os/arch[/variant] pairs; default linux/amd64. More than one pushes an index.
	Platforms []string
	// Salt is mixed into the layers' content: a different salt makes a different (say, patched)
	// stack and a runtime on it. The same options always give the same digests.
	Salt string
	// Username and Password authenticate the pushes; empty pushes anonymously.
	Username, Password string
	// StackLayers and RuntimeLayers are how many layers each image has of its own; default 2 and 1.
	StackLayers, RuntimeLayers int
}

// Seeded are the references, pinned by digest, of the pushed base images.
type Seeded struct {
	// Stack is repository@sha256:… of the stack.
	Stack string
	// Runtime is repository@sha256:… of the runtime, which sits on the stack; "" without one.
	Runtime string
}

// seedEpoch is the timestamp of everything SeedBaseImages makes, so that digests never change.
var seedEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// SeedBaseImages pushes a small OS stack and a language runtime built on it (its layers start with
// the stack's layers) to the registry at host, so that tests and `ferry dev` have base images
// without the internet. They hold a few text files, not a real OS: enough for image assembly,
// rebase and simulated clusters, not to run a process.
func SeedBaseImages(ctx context.Context, host string, opts SeedOptions) (*Seeded, error) {
	if opts.Stack == "" {
		return nil, fmt.Errorf("seed: the stack repository is required")
	}
	if opts.Tag == "" {
		opts.Tag = "dev"
	}
	if len(opts.Platforms) == 0 {
		opts.Platforms = []string{"linux/amd64"}
	}
	if opts.StackLayers <= 0 {
		opts.StackLayers = 2
	}
	if opts.RuntimeLayers <= 0 {
		opts.RuntimeLayers = 1
	}
	ropts := []remote.Option{remote.WithContext(ctx)}
	if opts.Username != "" {
		ropts = append(ropts, remote.WithAuth(&authn.Basic{Username: opts.Username, Password: opts.Password}))
	}
	var stacks, runtimes []mutate.IndexAddendum
	for _, p := range opts.Platforms {
		platform, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, fmt.Errorf("seed: platform %q: %w", p, err)
		}
		stack, err := seedStack(*platform, opts)
		if err != nil {
			return nil, err
		}
		stacks = append(stacks, mutate.IndexAddendum{Add: stack, Descriptor: v1.Descriptor{Platform: platform}})
		if opts.Runtime != "" {
			rt, err := seedRuntime(stack, *platform, opts)
			if err != nil {
				return nil, err
			}
			runtimes = append(runtimes, mutate.IndexAddendum{Add: rt, Descriptor: v1.Descriptor{Platform: platform}})
		}
	}
	out := &Seeded{}
	var err error
	if out.Stack, err = pushSeed(host+"/"+opts.Stack+":"+opts.Tag, stacks, ropts); err != nil {
		return nil, err
	}
	if opts.Runtime != "" {
		if out.Runtime, err = pushSeed(host+"/"+opts.Runtime+":"+opts.Tag, runtimes, ropts); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func seedStack(p v1.Platform, opts SeedOptions) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for i := range opts.StackLayers {
		files := map[string]string{
			"etc/os-release":                   fmt.Sprintf("ID=ferry\nNAME=\"Ferry seed stack\"\nVERSION_ID=%q\n", opts.Salt),
			fmt.Sprintf("usr/lib/stack/%d", i): fmt.Sprintf("stack layer %d for %s, salt %q\n", i, p.String(), opts.Salt),
		}
		l, err := TarLayer(files, types.OCILayer)
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: seedEpoch}, CreatedBy: "ferry seed stack"}})
		if err != nil {
			return nil, err
		}
	}
	return setConfig(img, p, func(c *v1.Config) {
		c.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		c.Cmd = []string{"/bin/sh"}
	})
}

func seedRuntime(stack v1.Image, p v1.Platform, opts SeedOptions) (v1.Image, error) {
	img := stack
	for i := range opts.RuntimeLayers {
		files := map[string]string{
			fmt.Sprintf("usr/local/lib/runtime/%d", i): fmt.Sprintf("runtime layer %d for %s, salt %q\n", i, p.String(), opts.Salt),
		}
		l, err := TarLayer(files, types.OCILayer)
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{Created: v1.Time{Time: seedEpoch}, CreatedBy: "ferry seed runtime"}})
		if err != nil {
			return nil, err
		}
	}
	return setConfig(img, p, func(c *v1.Config) {
		c.Env = append(c.Env, "RUNTIME_VERSION=seed"+opts.Salt)
		c.Cmd = []string{"runtime"}
	})
}

func setConfig(img v1.Image, p v1.Platform, edit func(*v1.Config)) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Created = v1.Time{Time: seedEpoch}
	edit(&cf.Config)
	return mutate.ConfigFile(img, cf)
}

// pushSeed pushes one image, or an index when there are several platforms, and returns it by digest.
func pushSeed(ref string, adds []mutate.IndexAddendum, ropts []remote.Option) (string, error) {
	tag, err := name.NewTag(ref)
	if err != nil {
		return "", fmt.Errorf("seed: %w", err)
	}
	var digest v1.Hash
	if len(adds) == 1 {
		img := adds[0].Add.(v1.Image)
		if err := remote.Write(tag, img, ropts...); err != nil {
			return "", fmt.Errorf("seed: failed to push %s: %w", ref, err)
		}
		if digest, err = img.Digest(); err != nil {
			return "", err
		}
	} else {
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
		if err := remote.WriteIndex(tag, idx, ropts...); err != nil {
			return "", fmt.Errorf("seed: failed to push %s: %w", ref, err)
		}
		if digest, err = idx.Digest(); err != nil {
			return "", err
		}
	}
	return tag.Context().Digest(digest.String()).String(), nil
}

// TarLayer makes a gzip-compressed layer of the given files (path → content), reproducibly:
// sorted entries, a fixed timestamp, owner 0:0, mode 0644, and the parent directories (0755).
// mediaType is the layer's media type (types.OCILayer or types.DockerLayer).
func TarLayer(files map[string]string, mediaType types.MediaType) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var names []string
	for p := range files {
		names = append(names, p)
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			dirs[d+"/"] = true
		}
	}
	for d := range dirs {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, p := range names {
		hdr := &tar.Header{Name: p, ModTime: seedEpoch, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(files[p])), Format: tar.FormatPAX}
		if strings.HasSuffix(p, "/") {
			hdr.Mode, hdr.Typeflag, hdr.Size = 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, files[p]); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(mediaType))
}

// DockerConfigJSON returns a Docker config.json (also the .dockerconfigjson key of a
// kubernetes.io/dockerconfigjson Secret) with credentials for one registry host.
func DockerConfigJSON(host, username, password string) []byte {
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	data, _ := json.Marshal(map[string]any{
		"auths": map[string]any{host: map[string]string{"username": username, "password": password, "auth": auth}},
	})
	return data
}

// WriteDockerConfig writes DockerConfigJSON as config.json into dir (mode 0600), creating dir.
func WriteDockerConfig(dir, host, username, password string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create the Docker config directory %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), DockerConfigJSON(host, username, password), 0o600); err != nil {
		return fmt.Errorf("failed to write the Docker config in %s: %w", dir, err)
	}
	return nil
}
