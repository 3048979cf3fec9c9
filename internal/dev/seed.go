package dev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/registry"
)

// seedEpoch is the creation time of the seeded images, so that the same files give the same
// digests at every start.
var seedEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Repositories of the base images in the registry: the platform team's Harbor project "ferry".
const (
	stackRepository   = "ferry/stacks/"
	runtimeRepository = "ferry/runtimes/"
	seedTag           = "dev"
)

// baseImage is a stack or runtime of the catalog, made from files of this machine.
type baseImage struct {
	name        string
	description string
	// files are the image's own files: path in the image → path on this machine. Missing host
	// files are left out; an image with none of its files fails.
	files map[string]string
	// generated are files written as given (path → content).
	generated map[string]string
	env       []string
}

// stackImages and runtimeImages are the catalog of the local environment. The example apps name
// debian-12, go-static and python-3.11 in their pipeline files.
func stackImages() []baseImage {
	return []baseImage{{
		name:        "debian-12",
		description: "OS stack of ferry dev, made from this machine's /etc/os-release, CA certificates and name service configuration",
		files: map[string]string{
			"etc/os-release":                    "/etc/os-release",
			"etc/debian_version":                "/etc/debian_version",
			"etc/nsswitch.conf":                 "/etc/nsswitch.conf",
			"etc/ssl/certs/ca-certificates.crt": "/etc/ssl/certs/ca-certificates.crt",
			"usr/share/zoneinfo/UTC":            "/usr/share/zoneinfo/UTC",
			"usr/share/zoneinfo/Etc/UTC":        "/usr/share/zoneinfo/Etc/UTC",
		},
		generated: map[string]string{ //nolint:gosec // G101: account entries without passwords ("x")
			"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
			"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
		},
		env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
	}}
}

func runtimeImages() []baseImage {
	return []baseImage{
		{
			name:        "go-static",
			description: "runtime of ferry dev for statically linked programs (Go with CGO_ENABLED=0): the stack plus a runtime note",
			generated: map[string]string{
				"usr/local/share/ferry/runtime": "go-static: statically linked programs need nothing but the stack's CA certificates and time zones.\nBuilt with " + goVersion() + " on this machine.\n",
			},
		},
		{
			name:        "python-3.11",
			description: "runtime of ferry dev for Python 3.11: the stack plus this machine's Python version record (no interpreter: simulated clusters run no containers)",
			generated: map[string]string{
				"usr/local/share/ferry/runtime": "python-3.11: " + pythonVersion() + " on this machine.\n",
			},
			env: []string{"PYTHONUNBUFFERED=1", "PYTHON_VERSION=3.11"},
		},
	}
}

func goVersion() string { return goruntime.Version() }

// pythonVersion is what `python3 --version` says here, or that there is none.
func pythonVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "--version").CombinedOutput()
	if err != nil {
		return "no python3"
	}
	return strings.TrimSpace(string(out))
}

// seedBaseImages pushes the stacks, and the runtimes on the stack, to the registry at host and
// returns the catalog that names them by digest. The same files give the same digests, and blobs
// already in the registry are not uploaded again, so later starts only check.
func seedBaseImages(ctx context.Context, host string, auth authn.Authenticator) (*catalog.Catalog, int64, error) {
	cat := &catalog.Catalog{Stacks: map[string]string{}, Runtimes: map[string]string{}}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuth(auth)}
	var size int64
	var stack v1.Image
	for _, b := range stackImages() {
		img, err := b.image(empty.Image)
		if err != nil {
			return nil, 0, err
		}
		ref, n, err := pushImage(host+"/"+stackRepository+b.name+":"+seedTag, img, opts)
		if err != nil {
			return nil, 0, err
		}
		cat.Stacks[b.name], size, stack = ref, size+n, img
	}
	for _, b := range runtimeImages() {
		img, err := b.image(stack)
		if err != nil {
			return nil, 0, err
		}
		ref, n, err := pushImage(host+"/"+runtimeRepository+b.name+":"+seedTag, img, opts)
		if err != nil {
			return nil, 0, err
		}
		cat.Runtimes[b.name], size = ref, size+n
	}
	return cat, size, nil
}

// image appends one reproducible layer with the base image's files to base.
func (b baseImage) image(base v1.Image) (v1.Image, error) {
	files := map[string]string{}
	var sources []string
	for dst, src := range b.files {
		data, err := os.ReadFile(src)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read %s for the %s image: %w", src, b.name, err)
		}
		files[dst] = string(data)
		sources = append(sources, src)
	}
	if len(b.files) > 0 && len(sources) == 0 {
		return nil, fmt.Errorf("none of the files of the %s image exist on this machine", b.name)
	}
	for p, content := range b.generated {
		files[p] = content
	}
	layer, err := registry.TarLayer(files, types.OCILayer)
	if err != nil {
		return nil, err
	}
	if base == empty.Image {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: seedEpoch}, CreatedBy: "ferry dev: " + b.name}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goruntime.GOARCH
	cf.Created = v1.Time{Time: seedEpoch}
	cf.Config.Env = mergeEnv(cf.Config.Env, b.env)
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels["org.opencontainers.image.title"] = b.name
	cf.Config.Labels["org.opencontainers.image.description"] = b.description
	return mutate.ConfigFile(img, cf)
}

// mergeEnv sets each NAME=value of add in env, replacing an earlier value of NAME.
func mergeEnv(env, add []string) []string {
	out := append([]string(nil), env...)
	for _, kv := range add {
		name, _, _ := strings.Cut(kv, "=")
		replaced := false
		for i, old := range out {
			if strings.HasPrefix(old, name+"=") {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// pushImage pushes img to a tag and returns it pinned by digest, with its compressed size. The
// registry of ferry dev speaks plain HTTP, on loopback or on the host's address for real nodes.
func pushImage(ref string, img v1.Image, opts []remote.Option) (string, int64, error) {
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return "", 0, fmt.Errorf("invalid image reference %s: %w", ref, err)
	}
	if err := remote.Write(tag, img, opts...); err != nil {
		return "", 0, fmt.Errorf("failed to push %s: %w", ref, err)
	}
	digest, err := img.Digest()
	if err != nil {
		return "", 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return "", 0, err
	}
	var size int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return "", 0, err
		}
		size += n
	}
	return tag.Context().Digest(digest.String()).String(), size, nil
}
