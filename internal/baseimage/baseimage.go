// Package baseimage builds Ferry's real base images from Debian's archive and the Go module
// proxy, keeps them in a cache directory per input, and pushes them to a registry, so that the
// images Ferry assembles run on real nodes:
//
//   - the debian-12 stack: `debootstrap --variant=minbase bookworm` from the Debian archive named
//     in this machine's apt sources, cleaned of what differs between builds, as one layer;
//   - the python-3.11 runtime: the stack plus Debian's python3 as one more layer (the stack's
//     layers are a prefix of the runtime's);
//   - the go-static runtime: the stack plus CA certificates, time zone data and the user nonroot
//     (65532), which it runs as;
//   - the builder images of the example pipelines, pushed as library/golang:1.26 and
//     library/python:3.11 so that a containerd that mirrors docker.io to the registry resolves
//     `golang:1.26` as Docker Hub would: the stack plus a Go release from the module proxy
//     (golang.org/toolchain) at /usr/local/go, and the python runtime plus python-is-python3;
//   - pause, the first process of every pod sandbox (containerd's sandbox_image).
//
// A first Build takes minutes (debootstrap, apt, downloads); later ones with the same inputs reuse
// every layer from the cache and push only what the registry lacks. Every layer is made like
// Ferry's application layers (sorted entries, fixed timestamps, numeric owners), so the same
// inputs give the same layers; what the archive serves can change under the same inputs, which is
// why the inputs, not the archive, key the cache.
package baseimage

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"

	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/supplychain"
)

// recipeVersion is part of every cache key: change it when a change to this package changes
// what an image contains, so that caches rebuild.
const recipeVersion = "1"

// Names of the images in the catalog and as builder references.
const (
	// StackName is the catalog name of the Debian stack.
	StackName = "debian-12"
	// GoStaticName is the catalog name of the runtime for statically linked programs.
	GoStaticName = "go-static"
	// PythonName is the catalog name of the Python runtime.
	PythonName = "python-3.11"
	// NonrootUID is the user (and group) go-static runs as.
	NonrootUID = 65532
)

// suite is the Debian release of the stack: Debian 12.
const suite = "bookworm"

// Repositories in the registry. The builders go where a docker.io mirror looks for Docker Hub's
// official images.
const (
	stackRepo         = "ferry/stacks/" + StackName
	goStaticRepo      = "ferry/runtimes/" + GoStaticName
	pythonRepo        = "ferry/runtimes/" + PythonName
	golangRepo        = "library/golang"
	pythonBuilderRepo = "library/python"
	pauseRepo         = "ferry/pause"
	defaultTag        = "latest"
)

// Options configure Build.
type Options struct {
	// CacheDir keeps everything expensive between builds, per input (e.g. <ferry dev data
	// dir>/images). Required. Builds using the same directory take turns.
	CacheDir string
	// Registry is host:port of the registry the images are pushed to. Required.
	Registry string
	// PlainHTTP pushes over HTTP: for a registry on loopback or on a node network (192.0.2.x)
	// without TLS. go-containerregistry already uses HTTP for loopback and private addresses.
	PlainHTTP bool
	// Remote are the options of the pushes: authentication, transport.
	Remote []remote.Option
	// Progress is told what is happening (a first build takes minutes): done of total steps.
	// Calls never overlap.
	Progress func(step string, done, total int)
	// Archive is the Debian archive URI the stack is bootstrapped from; default: the one in this
	// machine's apt sources. A snapshot.debian.org URI makes the packages fixed in time.
	Archive string
	// GoVersion is the Go release of the golang builder image (go1.26.8); default: the version
	// of the go command on this machine. The image is tagged golang:<major.minor> and
	// golang:<version>.
	GoVersion string
	// Log receives the output of debootstrap, apt and go; nil keeps it in CacheDir/logs.
	Log io.Writer

	// sourcesRoot is the root whose etc/apt is read for the archive ("/" when empty).
	sourcesRoot string
}

// Result says what Build pushed.
type Result struct {
	// Catalog names the stack (debian-12) and the runtimes (go-static, python-3.11), pinned by
	// digest.
	Catalog *catalog.Catalog
	// Builders maps the references pipeline files use ("golang:1.26", "golang:1.26.8",
	// "python:3.11", "python:3.11.2") to the pushed images, pinned by digest.
	Builders map[string]string
	// Pause is the pause image, pinned by digest (containerd's sandbox_image).
	Pause string
	// Archive is the Debian archive the stack came from; GoVersion the Go release of golang:*.
	Archive   string
	GoVersion string
	// Images describe every pushed image, Steps every layer step (built now or cached).
	Images []Image
	Steps  []Step
	// PushDuration is how long pushing took (checking what the registry has, uploading the rest).
	PushDuration time.Duration
}

// Image is one pushed image.
type Image struct {
	// Name is its catalog or builder name (debian-12, golang:1.26, pause).
	Name string
	// Ref is repository@sha256:… in the registry.
	Ref string
	// Layers are the digests of its layers, bottom first.
	Layers []string
	// Size and UncompressedSize add up its layers (compressed, and as tar streams).
	Size, UncompressedSize int64
	// SBOM is the digest of the SBOM that refers to a stack or runtime (made once: an image that
	// has one keeps it), so that the application images built on it only catalogue their own
	// layer.
	SBOM string
}

// Step is one layer of the build.
type Step struct {
	// Name says which layer (debian-12, python-3.11, go-toolchain, ...).
	Name string
	// Cached is true when the layer came from the cache.
	Cached bool
	// Duration is how long the step took now; BuildDuration how long building it took (now, or
	// when it was cached).
	Duration, BuildDuration time.Duration
	// Layer is the layer's digest; Size and UncompressedSize its sizes.
	Layer                  string
	Size, UncompressedSize int64
}

//go:embed pause/main.go
var pauseSource []byte

// totalSteps is the number of progress steps: six layers and the push.
const totalSteps = 7

// builder runs one Build.
type builder struct {
	opts      Options
	cache     *cache
	epoch     time.Time
	arch      string // Debian's name (amd64)
	goarch    string
	archive   string
	goVersion string
	env       []string

	mu    sync.Mutex
	done  int
	steps []Step
}

// Build makes the base images (from the cache when their inputs have not changed) and pushes
// them to opts.Registry.
func Build(ctx context.Context, opts Options) (*Result, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	if opts.Registry == "" {
		return nil, errors.New("baseimage: Options.Registry (host:port) is required")
	}
	arch, err := debianArch(goruntime.GOARCH)
	if err != nil {
		return nil, err
	}
	c, err := openCache(opts.CacheDir)
	if err != nil {
		return nil, err
	}
	b := &builder{opts: opts, cache: c, epoch: image.DefaultEpoch, arch: arch, goarch: goruntime.GOARCH}
	b.env = commandEnv(b.epoch)
	unlock, err := c.lock(ctx, func() { b.progress("waiting for another build that uses "+c.dir, false) })
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := c.cleanWork(); err != nil {
		return nil, err
	}
	if b.archive = opts.Archive; b.archive == "" {
		root := opts.sourcesRoot
		if root == "" {
			root = "/"
		}
		sources, err := ReadAptSources(root)
		if err != nil {
			return nil, err
		}
		if b.archive, err = ArchiveURI(sources, suite); err != nil {
			return nil, err
		}
	} else if why := unusableURI(b.archive); why != "" {
		return nil, fmt.Errorf("baseimage: Options.Archive: %s", why)
	}
	if b.goVersion = opts.GoVersion; b.goVersion == "" {
		if b.goVersion, err = machineGoVersion(ctx); err != nil {
			return nil, err
		}
	}
	if _, err := goMinor(b.goVersion); err != nil {
		return nil, err
	}

	var stack, goStatic, python, pythonBuilder, toolchain, pause *layerRecord
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		var aptLists string
		var err error
		if stack, aptLists, err = b.stack(gctx); err != nil {
			return err
		}
		if goStatic, err = b.derived(gctx, GoStaticName, []*layerRecord{stack}, aptLists, goStaticRecipe); err != nil {
			return err
		}
		if python, err = b.derived(gctx, PythonName, []*layerRecord{stack}, aptLists, pythonRecipe); err != nil {
			return err
		}
		pythonBuilder, err = b.derived(gctx, "python:3.11 builder", []*layerRecord{stack, python}, aptLists, pythonBuilderRecipe)
		return err
	})
	g.Go(func() error {
		var err error
		if toolchain, err = b.toolchain(gctx); err != nil {
			return err
		}
		pause, err = b.pause(gctx)
		return err
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}

	specs := b.imageSpecs(stack, goStatic, python, pythonBuilder, toolchain, pause)
	b.progress(fmt.Sprintf("pushing %d images to %s (only what it lacks)", len(specs), opts.Registry), false)
	start := time.Now()
	p := &pusher{opts: append(slices.Clone(opts.Remote), remote.WithContext(ctx)), plainHTTP: opts.PlainHTTP, from: map[v1.Hash]name.Repository{}}
	res := &Result{
		Catalog:   &catalog.Catalog{Stacks: map[string]string{}, Runtimes: map[string]string{}},
		Builders:  map[string]string{},
		Archive:   redactURI(b.archive),
		GoVersion: b.goVersion,
	}
	var stackRef name.Digest
	for _, s := range specs {
		img, err := p.push(b, s)
		if err != nil {
			return nil, err
		}
		if s.kind == catalog.Stack || s.kind == catalog.Runtime {
			if img.SBOM, err = p.describe(img, s.kind, &stackRef); err != nil {
				return nil, err
			}
		}
		res.Images = append(res.Images, img)
		switch s.kind {
		case catalog.Stack:
			res.Catalog.Stacks[s.name] = img.Ref
		case catalog.Runtime:
			res.Catalog.Runtimes[s.name] = img.Ref
		case kindBuilder:
			for _, t := range s.tags {
				res.Builders[builderName(s.repo)+":"+t] = img.Ref
			}
		case kindPause:
			res.Pause = img.Ref
		}
	}
	res.PushDuration = time.Since(start)
	b.progress(fmt.Sprintf("pushed %d images to %s in %s", len(specs), opts.Registry, res.PushDuration.Round(100*time.Millisecond)), true)
	res.Steps = b.steps
	return res, nil
}

// builderName returns the short name of a builder repository: library/golang → golang.
func builderName(repo string) string { return strings.TrimPrefix(repo, "library/") }

// debianArch maps a Go architecture to Debian's.
func debianArch(goarch string) (string, error) {
	switch goarch {
	case "amd64", "arm64", "riscv64", "s390x":
		return goarch, nil
	case "ppc64le":
		return "ppc64el", nil
	}
	return "", fmt.Errorf("baseimage: no Debian architecture for %s", goarch)
}

// progress reports a message; finished counts one more step done.
func (b *builder) progress(msg string, finished bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if finished {
		b.done++
	}
	if b.opts.Progress != nil {
		b.opts.Progress(msg, b.done, totalSteps)
	}
}

// logFor returns where a step's command output goes: Options.Log, or CacheDir/logs/<name>.log.
func (b *builder) logFor(stepName string) (io.Writer, func(), error) {
	if b.opts.Log != nil {
		return b.opts.Log, func() {}, nil
	}
	dir := filepath.Join(b.cache.dir, "logs")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, nil, err
	}
	f, err := os.Create(filepath.Join(dir, strings.NewReplacer(":", "-", " ", "-").Replace(stepName)+".log"))
	if err != nil {
		return nil, nil, fmt.Errorf("failed to create the log of %s: %w", stepName, err)
	}
	return f, func() { _ = f.Close() }, nil
}

// run returns the cached layer of key, or makes it with make and caches it.
func (b *builder) run(ctx context.Context, stepName, key, doing string, build func(ctx context.Context, log io.Writer) (*layerRecord, error)) (*layerRecord, error) {
	start := time.Now()
	rec, err := b.cache.step(key)
	if err != nil {
		return nil, err
	}
	cached := rec != nil
	if !cached {
		b.progress(stepName+": "+doing, false)
		log, closeLog, err := b.logFor(stepName)
		if err != nil {
			return nil, err
		}
		rec, err = build(ctx, log)
		closeLog()
		if err != nil {
			return nil, err
		}
		rec.BuildSeconds = since(start)
		if err := b.cache.putStep(key, rec); err != nil {
			return nil, err
		}
	}
	s := Step{
		Name: stepName, Cached: cached, Duration: time.Since(start),
		BuildDuration: time.Duration(rec.BuildSeconds * float64(time.Second)),
		Layer:         rec.Digest.String(), Size: rec.Size, UncompressedSize: rec.UncompressedSize,
	}
	b.mu.Lock()
	b.steps = append(b.steps, s)
	b.mu.Unlock()
	how := fmt.Sprintf("built in %s", s.Duration.Round(time.Second))
	if cached {
		how = "cached"
	}
	b.progress(fmt.Sprintf("%s: layer %s, %s (%s)", stepName, shortDigest(rec.Digest), megabytes(rec.Size), how), true)
	return rec, nil
}

func shortDigest(h v1.Hash) string {
	if len(h.Hex) < 12 {
		return h.String()
	}
	return h.Algorithm + ":" + h.Hex[:12]
}

func megabytes(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

// stack bootstraps Debian and returns its layer and the directory of the package index it was
// bootstrapped from.
func (b *builder) stack(ctx context.Context) (*layerRecord, string, error) {
	key := cacheKey(struct {
		Recipe, Step, Suite, Variant, Archive, Arch string
		Epoch                                       int64
	}{recipeVersion, "debian-stack", suite, "minbase", b.archive, b.arch, b.epoch.Unix()})
	aptLists := filepath.Join(b.cache.dir, "apt", key)
	doing := fmt.Sprintf("debootstrap --variant=minbase %s from %s (a few minutes the first time)", suite, redactURI(b.archive))
	rec, err := b.run(ctx, StackName, key, doing, func(ctx context.Context, log io.Writer) (*layerRecord, error) {
		work, err := b.cache.workDir("stack")
		if err != nil {
			return nil, err
		}
		defer func() { _ = removeTree(work) }()
		rootfs := filepath.Join(work, "rootfs")
		phases := &debootstrapPhases{report: func(s string) { b.progress(StackName+": "+s, false) }}
		if err := debootstrap(ctx, io.MultiWriter(log, phases), b.env, b.arch, suite, rootfs, b.archive); err != nil {
			return nil, err
		}
		if err := saveAptLists(rootfs, aptLists); err != nil {
			return nil, err
		}
		pkgs, err := installedPackages(rootfs)
		if err != nil {
			return nil, err
		}
		version, _ := os.ReadFile(filepath.Join(rootfs, "etc/debian_version"))
		if err := normalise(rootfs, b.epoch); err != nil {
			return nil, err
		}
		b.progress(StackName+": writing the layer", false)
		var stats layerStats
		rec, err := b.cache.writeBlob(func(w io.Writer) error {
			var err error
			stats, err = writeRootfsLayer(ctx, rootfs, nil, b.epoch, w)
			return err
		})
		if err != nil {
			return nil, err
		}
		rec.Entries = stats.Entries
		rec.CreatedBy = fmt.Sprintf("debootstrap --variant=minbase --arch=%s %s / %s", b.arch, suite, redactURI(b.archive))
		rec.Facts = map[string]string{
			"packages":       packageList(pkgs),
			"debian-version": strings.TrimSpace(string(version)),
			"release-date":   releaseDate(aptLists),
		}
		return rec, nil
	})
	return rec, aptLists, err
}

// recipe is what a layer on a Debian root file system installs.
type recipe struct {
	// Packages are installed with apt-get install --no-install-recommends.
	Packages []string
	// Commands run in the root file system after that.
	Commands [][]string
	// Versions are the packages whose versions the image states (label and tag).
	Versions []string
}

var (
	goStaticRecipe = recipe{
		Packages: []string{"ca-certificates", "tzdata"},
		Commands: [][]string{
			{"groupadd", "--gid", "65532", "nonroot"},
			// --no-log-init: no sparse 19 MB lastlog entry for uid 65532.
			{"useradd", "--uid", "65532", "--gid", "65532", "--create-home", "--home-dir", "/home/nonroot", "--shell", "/usr/sbin/nologin", "--no-log-init", "nonroot"},
		},
		Versions: []string{"ca-certificates", "tzdata"},
	}
	pythonRecipe        = recipe{Packages: []string{"python3"}, Versions: []string{"python3", "python3.11"}}
	pythonBuilderRecipe = recipe{Packages: []string{"python-is-python3"}, Versions: []string{"python3", "python3.11"}}
)

// derived installs a recipe on the root file system of base's layers and returns the layer of
// what changed.
func (b *builder) derived(ctx context.Context, stepName string, base []*layerRecord, aptLists string, r recipe) (*layerRecord, error) {
	var baseDigests []string
	for _, l := range base {
		baseDigests = append(baseDigests, l.Digest.String())
	}
	key := cacheKey(struct {
		Recipe, Step string
		Base         []string
		Packages     []string
		Commands     [][]string
		Epoch        int64
	}{recipeVersion, stepName, baseDigests, r.Packages, r.Commands, b.epoch.Unix()})
	doing := "apt-get install " + strings.Join(r.Packages, " ")
	return b.run(ctx, stepName, key, doing, func(ctx context.Context, log io.Writer) (*layerRecord, error) {
		work, err := b.cache.workDir("layer")
		if err != nil {
			return nil, err
		}
		defer func() { _ = removeTree(work) }()
		rootfs := filepath.Join(work, "rootfs")
		// The root of the file system: apt's _apt user must get through it.
		if err := os.Mkdir(rootfs, 0o755); err != nil { //nolint:gosec // G301: a root file system's / is 0755
			return nil, err
		}
		lower := tree{}
		for _, l := range base {
			if err := b.unpack(ctx, rootfs, l, lower); err != nil {
				return nil, err
			}
		}
		before, err := installedPackages(rootfs)
		if err != nil {
			return nil, err
		}
		haveLists := true
		if _, err := os.Stat(aptLists); err != nil {
			haveLists = false
			aptLists = filepath.Join(work, "no-lists")
			if err := os.Mkdir(aptLists, 0o750); err != nil {
				return nil, err
			}
		}
		if err := prepareRoot(rootfs, aptLists); err != nil {
			return nil, err
		}
		install := append([]string{"apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Use-Pty=0"}, r.Packages...)
		update := []string{"apt-get", "update", "-o", "Acquire::Languages=none"}
		if !haveLists {
			if err := runInRoot(ctx, log, rootfs, b.env, update...); err != nil {
				return nil, fmt.Errorf("failed to fetch the package index for %s: %w", stepName, err)
			}
		}
		if err := runInRoot(ctx, log, rootfs, b.env, install...); err != nil {
			if !haveLists {
				return nil, fmt.Errorf("failed to install %s for %s: %w", strings.Join(r.Packages, " "), stepName, err)
			}
			// The archive has moved on since the stack was bootstrapped (superseded packages
			// leave it): install from its current index instead.
			b.progress(stepName+": the archive changed since the stack was built; installing from its current index", false)
			if err := runInRoot(ctx, log, rootfs, b.env, update...); err != nil {
				return nil, fmt.Errorf("failed to fetch the package index for %s: %w", stepName, err)
			}
			if err := runInRoot(ctx, log, rootfs, b.env, install...); err != nil {
				return nil, fmt.Errorf("failed to install %s for %s: %w", strings.Join(r.Packages, " "), stepName, err)
			}
		}
		for _, c := range r.Commands {
			if err := runInRoot(ctx, log, rootfs, b.env, c...); err != nil {
				return nil, fmt.Errorf("failed to run %s for %s: %w", c[0], stepName, err)
			}
		}
		after, err := installedPackages(rootfs)
		if err != nil {
			return nil, err
		}
		if err := normalise(rootfs, b.epoch); err != nil {
			return nil, err
		}
		b.progress(stepName+": writing the layer", false)
		var stats layerStats
		rec, err := b.cache.writeBlob(func(w io.Writer) error {
			var err error
			stats, err = writeRootfsLayer(ctx, rootfs, lower, b.epoch, w)
			return err
		})
		if err != nil {
			return nil, err
		}
		rec.Entries, rec.Whiteouts = stats.Entries, stats.Whiteouts
		added := addedPackages(before, after)
		rec.CreatedBy = "apt-get install --no-install-recommends " + strings.Join(r.Packages, " ")
		for _, c := range r.Commands {
			rec.CreatedBy += " && " + strings.Join(c, " ")
		}
		rec.Facts = map[string]string{"packages": packageList(after), "added": packageList(added)}
		for _, p := range r.Versions {
			rec.Facts["version."+p] = after[p]
		}
		return rec, nil
	})
}

// unpack applies a cached layer to rootfs, recording its paths in idx.
func (b *builder) unpack(ctx context.Context, rootfs string, l *layerRecord, idx tree) error {
	rc, err := gunzipFile(b.cache.blobPath(l.Digest))
	if err != nil {
		return err
	}
	defer func() { _ = rc.Close() }()
	if err := unpackLayer(ctx, rootfs, rc, idx); err != nil {
		return fmt.Errorf("failed to unpack the layer %s: %w", l.Digest, err)
	}
	return nil
}

// toolchain makes the layer of the Go release: GOROOT at /usr/local/go and GOPATH=/go.
func (b *builder) toolchain(ctx context.Context) (*layerRecord, error) {
	key := cacheKey(struct {
		Recipe, Step, Version, Arch string
		Epoch                       int64
	}{recipeVersion, "go-toolchain", b.goVersion, b.goarch, b.epoch.Unix()})
	mod := toolchainModule(b.goVersion, b.goarch)
	minor, _ := goMinor(b.goVersion)
	return b.run(ctx, "golang:"+minor, key, "go mod download "+mod, func(ctx context.Context, _ io.Writer) (*layerRecord, error) {
		m, err := downloadToolchain(ctx, b.goVersion, b.goarch)
		if err != nil {
			return nil, err
		}
		b.progress("golang:"+minor+": writing the layer", false)
		// GOPATH as Docker Hub's golang images have it: world-writable with the sticky bit, so
		// that steps running as any user can fill the module cache.
		extra := []dirEntry{{"go", 0o1777}, {"go/bin", 0o1777}, {"go/src", 0o1777}}
		var stats layerStats
		rec, err := b.cache.writeBlob(func(w io.Writer) error {
			var err error
			stats, err = writeTreeLayer(ctx, w, m.Dir, "usr/local/go", extra, goExecutable, b.epoch)
			return err
		})
		if err != nil {
			return nil, err
		}
		rec.Entries = stats.Entries
		rec.CreatedBy = fmt.Sprintf("go mod download %s (%s) at /usr/local/go", mod, m.Sum)
		rec.Facts = map[string]string{"go-version": b.goVersion, "module": mod, "module-sum": m.Sum}
		return rec, nil
	})
}

// pause makes the layer of the pause program, built with the Go release.
func (b *builder) pause(ctx context.Context) (*layerRecord, error) {
	key := cacheKey(struct {
		Recipe, Step, Version, Arch string
		Source                      []byte
	}{recipeVersion, "pause", b.goVersion, b.goarch, pauseSource})
	return b.run(ctx, "pause", key, "go build (static) with "+b.goVersion, func(ctx context.Context, _ io.Writer) (*layerRecord, error) {
		work, err := b.cache.workDir("pause")
		if err != nil {
			return nil, err
		}
		defer func() { _ = removeTree(work) }()
		bin, err := buildPause(ctx, work, b.goVersion, b.goarch)
		if err != nil {
			return nil, err
		}
		rec, err := b.cache.writeBlob(func(w io.Writer) error {
			_, err := fileLayer(w, bin, "pause", 0o755, b.epoch)
			return err
		})
		if err != nil {
			return nil, err
		}
		rec.Entries = 1
		rec.CreatedBy = "go build -trimpath (CGO_ENABLED=0) of Ferry's pause with " + b.goVersion
		rec.Facts = map[string]string{"go-version": b.goVersion}
		return rec, nil
	})
}

// Kinds of images besides catalog.Stack and catalog.Runtime.
const (
	kindBuilder catalog.Kind = "builder"
	kindPause   catalog.Kind = "pause"
)

// imageSpec is one image to push.
type imageSpec struct {
	kind   catalog.Kind
	name   string
	repo   string
	tags   []string
	layers []*layerRecord
	config v1.Config
}

// imageSpecs describes the images from their layers, in push order (the stack first, so that
// the others mount its layer instead of uploading it again).
func (b *builder) imageSpecs(stack, goStatic, python, pythonBuilder, toolchain, pause *layerRecord) []imageSpec {
	archive := redactURI(b.archive)
	stackLabels := map[string]string{
		"org.opencontainers.image.title":       StackName,
		"org.opencontainers.image.description": "Debian 12 (" + suite + "), minimal base system (debootstrap --variant=minbase), built by Ferry",
		"org.opencontainers.image.version":     stack.Facts["debian-version"],
		"dev.ferry.baseimage.recipe":           recipeVersion,
		"dev.ferry.debian.suite":               suite,
		"dev.ferry.debian.archive":             archive,
		"dev.ferry.debian.release-date":        stack.Facts["release-date"],
		"dev.ferry.debian.packages":            stack.Facts["packages"],
	}
	with := func(base map[string]string, add map[string]string) map[string]string {
		out := maps.Clone(base)
		maps.Copy(out, add)
		return out
	}
	stackEnv := []string{"PATH=" + rootPATH}
	pythonVersion := debianUpstream(python.Facts["version.python3.11"])
	minor, _ := goMinor(b.goVersion)
	goPatch := strings.TrimPrefix(b.goVersion, "go")

	pythonEnv := append(slices.Clone(stackEnv), "LANG=C.UTF-8", "PYTHON_VERSION="+pythonVersion)
	return []imageSpec{
		{
			kind: catalog.Stack, name: StackName, repo: stackRepo, tags: []string{defaultTag},
			layers: []*layerRecord{stack},
			config: v1.Config{Env: stackEnv, Cmd: []string{"bash"}, Labels: stackLabels},
		},
		{
			kind: catalog.Runtime, name: GoStaticName, repo: goStaticRepo, tags: []string{defaultTag},
			layers: []*layerRecord{stack, goStatic},
			config: v1.Config{
				Env: stackEnv, User: fmt.Sprintf("%d:%d", NonrootUID, NonrootUID), Cmd: []string{"bash"},
				Labels: with(stackLabels, map[string]string{
					"org.opencontainers.image.title":       GoStaticName,
					"org.opencontainers.image.description": "Runtime for statically linked programs (Go with CGO_ENABLED=0): " + StackName + " with CA certificates, time zone data and the user nonroot (65532), which it runs as",
					"dev.ferry.debian.packages":            goStatic.Facts["packages"],
					"dev.ferry.stack":                      StackName,
				}),
			},
		},
		{
			kind: catalog.Runtime, name: PythonName, repo: pythonRepo, tags: []string{defaultTag},
			layers: []*layerRecord{stack, python},
			config: v1.Config{
				Env: pythonEnv, Cmd: []string{"python3"},
				Labels: with(stackLabels, map[string]string{
					"org.opencontainers.image.title":       PythonName,
					"org.opencontainers.image.description": "Python " + pythonVersion + " runtime: " + StackName + " with Debian's python3",
					"org.opencontainers.image.version":     pythonVersion,
					"dev.ferry.debian.packages":            python.Facts["packages"],
					"dev.ferry.stack":                      StackName,
				}),
			},
		},
		{
			kind: kindBuilder, name: "golang:" + minor, repo: golangRepo, tags: []string{minor, goPatch},
			layers: []*layerRecord{stack, toolchain},
			config: v1.Config{
				Env: []string{
					"PATH=/go/bin:/usr/local/go/bin:" + rootPATH,
					"GOLANG_VERSION=" + goPatch, "GOTOOLCHAIN=local", "GOPATH=/go",
				},
				WorkingDir: "/go",
				Cmd:        []string{"bash"},
				Labels: with(stackLabels, map[string]string{
					"org.opencontainers.image.title":       "golang:" + minor,
					"org.opencontainers.image.description": "Go " + goPatch + " (golang.org/toolchain from the Go module proxy) at /usr/local/go on " + StackName + ", for build steps",
					"org.opencontainers.image.version":     goPatch,
					"dev.ferry.go.module":                  toolchain.Facts["module"] + " " + toolchain.Facts["module-sum"],
					"dev.ferry.stack":                      StackName,
				}),
			},
		},
		{
			kind: kindBuilder, name: "python:3.11", repo: pythonBuilderRepo, tags: []string{"3.11", pythonVersion},
			layers: []*layerRecord{stack, python, pythonBuilder},
			config: v1.Config{
				Env: pythonEnv, Cmd: []string{"python3"},
				Labels: with(stackLabels, map[string]string{
					"org.opencontainers.image.title":       "python:3.11",
					"org.opencontainers.image.description": "Python " + pythonVersion + " for build steps: the " + PythonName + " runtime with python-is-python3",
					"org.opencontainers.image.version":     pythonVersion,
					"dev.ferry.debian.packages":            pythonBuilder.Facts["packages"],
					"dev.ferry.stack":                      StackName,
				}),
			},
		},
		{
			kind: kindPause, name: "pause", repo: pauseRepo, tags: []string{defaultTag},
			layers: []*layerRecord{pause},
			config: v1.Config{
				Entrypoint: []string{"/pause"},
				User:       "65535:65535",
				Labels: map[string]string{
					"org.opencontainers.image.title":       "pause",
					"org.opencontainers.image.description": "Ferry's pause: the first process of a pod sandbox (reaps orphans, exits on SIGTERM)",
					"dev.ferry.baseimage.recipe":           recipeVersion,
					"dev.ferry.go.version":                 b.goVersion,
				},
			},
		},
	}
}

// debianUpstream returns the upstream part of a Debian version: 3.11.2 of 3.11.2-6+deb12u6.
func debianUpstream(v string) string {
	if _, rest, ok := strings.Cut(v, ":"); ok {
		v = rest
	}
	if i := strings.LastIndex(v, "-"); i > 0 {
		v = v[:i]
	}
	return v
}

// pusher pushes images, mounting layers already pushed to another repository of the registry
// instead of uploading them again.
type pusher struct {
	opts      []remote.Option
	plainHTTP bool
	// from maps a layer to a repository that has it.
	from map[v1.Hash]name.Repository
}

// describe attaches the SBOM of a stack or a runtime (on stackRef, the stack pushed before it),
// unless the image has one already, and returns the SBOM's digest.
func (p *pusher) describe(img Image, kind catalog.Kind, stackRef *name.Digest) (string, error) {
	var nameOpts []name.Option
	if p.plainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	ref, err := name.NewDigest(img.Ref, nameOpts...)
	if err != nil {
		return "", err
	}
	role, bases := supplychain.RoleStack, []supplychain.Base(nil)
	if kind == catalog.Stack {
		*stackRef = ref
	} else {
		role, bases = supplychain.RoleRuntime, []supplychain.Base{{Role: supplychain.RoleStack, Image: *stackRef}}
	}
	if _, existing, err := supplychain.FetchSBOM(ref, p.opts...); err == nil {
		return existing, nil
	}
	d, err := supplychain.Describe(ref, supplychain.DescribeOptions{Bases: bases, Role: role, Tool: "ferry-baseimage-" + recipeVersion, Remote: p.opts})
	if err != nil {
		return "", fmt.Errorf("baseimage: SBOM of %s: %w", img.Name, err)
	}
	pub, err := supplychain.Publish(ref, supplychain.PublishOptions{SBOM: d.SBOM, Remote: p.opts})
	if err != nil {
		return "", fmt.Errorf("baseimage: SBOM of %s: %w", img.Name, err)
	}
	return pub.SBOM, nil
}

// push assembles and pushes one image under its tags, unless the registry has it already.
func (p *pusher) push(b *builder, s imageSpec) (Image, error) {
	var nameOpts []name.Option
	if p.plainHTTP {
		nameOpts = append(nameOpts, name.Insecure)
	}
	repo, err := name.NewRepository(b.opts.Registry+"/"+s.repo, nameOpts...)
	if err != nil {
		return Image{}, fmt.Errorf("baseimage: registry %q: %w", b.opts.Registry, err)
	}
	out := Image{Name: s.name}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for _, l := range s.layers {
		var layer = b.cache.layer(l)
		if other, ok := p.from[l.Digest]; ok && other != repo {
			layer = &remote.MountableLayer{Layer: layer, Reference: other.Digest(l.Digest.String())}
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     layer,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: b.epoch}, CreatedBy: l.CreatedBy, Comment: "ferry baseimage recipe " + recipeVersion},
		})
		if err != nil {
			return Image{}, err
		}
		out.Layers = append(out.Layers, l.Digest.String())
		out.Size += l.Size
		out.UncompressedSize += l.UncompressedSize
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", b.goarch
	cf.Created = v1.Time{Time: b.epoch}
	cf.Config = s.config
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return Image{}, err
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	for i, t := range s.tags {
		tag := repo.Tag(t)
		if desc, err := remote.Head(tag, p.opts...); err == nil && desc.Digest == digest {
			continue
		}
		if i == 0 {
			err = remote.Write(tag, img, p.opts...)
		} else {
			err = remote.Tag(tag, img, p.opts...)
		}
		if err != nil {
			return Image{}, fmt.Errorf("failed to push %s: %w", tag, err)
		}
	}
	for _, l := range s.layers {
		if _, ok := p.from[l.Digest]; !ok {
			p.from[l.Digest] = repo
		}
	}
	out.Ref = repo.Digest(digest.String()).String()
	return out, nil
}
