// Command image builds Ferry's own image the way Ferry builds an app (`make image`): the real
// base images from internal/baseimage (cached in .cache/baseimage), the build steps of
// hack/image/ferry.yaml on this machine, and `ferry build` to assemble and push the result — no
// Dockerfile, no daemon. Without IMAGE_REGISTRY it pushes to a registry in this process and writes
// the image as an OCI layout into dist/image; with it, it pushes there (credentials from
// $DOCKER_CONFIG or ~/.docker), base images included.
//
//	go run ./hack/image -ferry bin/ferry [-registry HOST[:PORT]] [-repository ferry/ferry]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"sigs.k8s.io/yaml"

	"github.com/ferryci/ferry/internal/baseimage"
	"github.com/ferryci/ferry/internal/pipelinefile"
	"github.com/ferryci/ferry/internal/registry"
)

// pipelineFile is Ferry's own pipeline file, relative to the checkout.
const pipelineFile = "hack/image/ferry.yaml"

type options struct {
	ferry      string // the full ferry binary, which runs `ferry build`
	repoDir    string
	registry   string
	repository string
	cacheDir   string
	outDir     string
	// insecure allows plain HTTP to the registry, as on a node network (192.0.2.x) of tests.
	insecure bool
}

func main() {
	var o options
	flag.StringVar(&o.ferry, "ferry", "bin/ferry", "the ferry binary that assembles the image (`ferry build`)")
	flag.StringVar(&o.repoDir, "repo", ".", "Ferry's checkout")
	flag.StringVar(&o.registry, "registry", os.Getenv("IMAGE_REGISTRY"), "registry to push to (host[:port]); empty: a registry in this process, and the image as an OCI layout in -out")
	flag.StringVar(&o.repository, "repository", envOr("IMAGE_REPOSITORY", "ferry/ferry"), "repository of Ferry's image in the registry")
	flag.StringVar(&o.cacheDir, "cache", ".cache/baseimage", "cache of the base images")
	flag.StringVar(&o.outDir, "out", "dist/image", "where the OCI layout and the image reference are written")
	flag.BoolVar(&o.insecure, "insecure-registry", os.Getenv("IMAGE_INSECURE") != "", "push over plain HTTP (a registry on loopback never needs it)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "make image:", err)
		os.Exit(1)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// built is what run made.
type built struct {
	// Ref is the image by digest; Digest its digest.
	Ref    string
	Digest string
	// Binary is the ferry binary that went into it.
	Binary                  string
	BinaryBytes, ImageBytes int64
}

func run(ctx context.Context, o options) (*built, error) {
	start := time.Now()
	repo, err := filepath.Abs(o.repoDir)
	if err != nil {
		return nil, err
	}
	ferry, err := filepath.Abs(o.ferry)
	if err != nil {
		return nil, err
	}
	host := o.registry
	var ropts []remote.Option
	var dockerConfig []byte
	if host == "" {
		reg, err := registry.StartMemory(registry.MemoryOptions{})
		if err != nil {
			return nil, err
		}
		defer func() { _ = reg.Close() }()
		host = reg.Host
		dockerConfig = []byte(`{"auths":{}}`)
	} else {
		ropts = append(ropts, remote.WithAuthFromKeychain(authn.DefaultKeychain))
	}
	ropts = append(ropts, remote.WithContext(ctx))

	step(1, "base images (debian-12, go-static) from Debian's archive, cached in %s", o.cacheDir)
	base, err := baseimage.Build(ctx, baseimage.Options{
		CacheDir:  under(repo, o.cacheDir),
		Registry:  host,
		Remote:    ropts,
		PlainHTTP: o.insecure,
		Progress:  func(s string, done, total int) { fmt.Fprintf(os.Stderr, "      [%d/%d] %s\n", done, total, s) },
	})
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "ferry-image-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	catalogFile := filepath.Join(work, "catalog.yaml")
	data, err := yaml.Marshal(base.Catalog)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(catalogFile, data, 0o600); err != nil {
		return nil, err
	}

	step(2, "the build steps of %s", pipelineFile)
	file, err := pipelinefile.Load(repo, pipelineFile)
	if err != nil {
		return nil, err
	}
	for _, s := range file.Build.Steps {
		fmt.Fprintf(os.Stderr, "      %s: %s\n", s.Name, s.Run)
		cmd := exec.CommandContext(ctx, "sh", "-c", s.Run)
		cmd.Dir = repo
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		cmd.Env = append(os.Environ(), stepEnv(s.Env)...)
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("step %s of %s: %w", s.Name, pipelineFile, err)
		}
	}
	if len(file.Artifacts) != 1 {
		return nil, fmt.Errorf("%s: want one artifact, the ferry binary; got %q", pipelineFile, file.Artifacts)
	}
	binary := filepath.Join(repo, file.Artifacts[0])
	st, err := os.Stat(binary)
	if err != nil {
		return nil, err
	}

	step(3, "ferry build: the binary as one layer on go-static, pushed to %s/%s", host, o.repository)
	args := []string{"build", "--dir", repo, "--file", pipelineFile, "--image", host + "/" + o.repository, "--catalog", catalogFile}
	if dockerConfig != nil {
		if err := os.WriteFile(filepath.Join(work, "config.json"), dockerConfig, 0o600); err != nil {
			return nil, err
		}
		args = append(args, "--docker-config", work)
	}
	var nameOpts []name.Option
	if o.insecure {
		args = append(args, "--insecure-registry")
		nameOpts = append(nameOpts, name.Insecure)
	}
	cmd := exec.CommandContext(ctx, ferry, args...)
	cmd.Dir = repo
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ferry build: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	ref := lines[len(lines)-1]
	digest, err := name.NewDigest(ref, nameOpts...)
	if err != nil {
		return nil, fmt.Errorf("ferry build printed %q, not an image: %w", ref, err)
	}
	img, err := remote.Image(digest, ropts...)
	if err != nil {
		return nil, err
	}
	size, err := imageSize(img)
	if err != nil {
		return nil, err
	}

	out2 := under(repo, o.outDir)
	if err := os.MkdirAll(out2, 0o750); err != nil {
		return nil, err
	}
	summary := map[string]any{"image": ref, "digest": digest.DigestStr(), "binaryBytes": st.Size(), "imageBytes": size, "base": base.Catalog.Runtimes[baseimage.GoStaticName]}
	if o.registry == "" {
		// The labels name the base images in the registry of this process, whose port changes
		// from run to run: the exported image names them by repository alone, so that the same
		// commit gives the same digest.
		if img, err = withoutRegistryHost(img, host); err != nil {
			return nil, err
		}
		d, err := img.Digest()
		if err != nil {
			return nil, err
		}
		digest = digest.Context().Digest(d.String())
		ref = digest.Context().RepositoryStr() + "@" + d.String()
		summary["image"], summary["digest"] = ref, d.String()
		summary["base"] = strings.TrimPrefix(base.Catalog.Runtimes[baseimage.GoStaticName], host+"/")
		step(4, "the image as an OCI layout in %s/oci (push it with `skopeo copy oci:%s/oci docker://HARBOR/ferry/ferry:TAG` or run make image with IMAGE_REGISTRY)", o.outDir, o.outDir)
		if err := os.RemoveAll(filepath.Join(out2, "oci")); err != nil {
			return nil, err
		}
		p, err := layout.Write(filepath.Join(out2, "oci"), empty.Index)
		if err != nil {
			return nil, err
		}
		if err := p.AppendImage(img); err != nil {
			return nil, err
		}
		summary["ociLayout"] = filepath.Join(o.outDir, "oci")
	}
	js, err := json.MarshalIndent(summary, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(out2, "image.json"), append(js, '\n'), 0o600); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "Ferry's image %s (binary %.1f MB, image %.1f MB compressed) in %s; written to %s/image.json\n",
		digest.DigestStr(), mb(st.Size()), mb(size), time.Since(start).Round(100*time.Millisecond), o.outDir)
	fmt.Println(summary["image"])
	return &built{Ref: ref, Digest: digest.DigestStr(), Binary: binary, BinaryBytes: st.Size(), ImageBytes: size}, nil
}

// under is path, relative to dir unless it is absolute.
func under(dir, path string) string {
	if filepath.IsAbs(path) {
		return path
	}
	return filepath.Join(dir, path)
}

func step(n int, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%d/4] %s\n", n, fmt.Sprintf(format, args...))
}

func stepEnv(env map[string]string) []string {
	var out []string
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// withoutRegistryHost removes "host/" from the image's labels and manifest annotations.
func withoutRegistryHost(img v1.Image, host string) (v1.Image, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	for k, v := range cf.Config.Labels {
		cf.Config.Labels[k] = strings.ReplaceAll(v, host+"/", "")
	}
	annotations := map[string]string{}
	for k, v := range m.Annotations {
		annotations[k] = strings.ReplaceAll(v, host+"/", "")
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	out, ok := mutate.Annotations(img, annotations).(v1.Image)
	if !ok {
		return nil, fmt.Errorf("annotating the image gave no image")
	}
	return out, nil
}

// imageSize adds up the image's compressed layers.
func imageSize(img v1.Image) (int64, error) {
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	var size int64
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return 0, err
		}
		size += n
	}
	return size, nil
}
