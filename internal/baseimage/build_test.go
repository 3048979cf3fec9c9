package baseimage

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"sigs.k8s.io/yaml"

	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/supplychain"
	"github.com/ferryci/ferry/internal/testutil"
)

// testCacheDir is where the tests keep the base images between runs: <repository>/.cache/baseimage
// (git-ignored). The cache is keyed per input and recipe version, so only the first `make test`
// on a machine, or after a recipe change, pays for debootstrap.
func testCacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("FERRY_BASEIMAGE_CACHE"); d != "" {
		return d
	}
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, ".cache", "baseimage")
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// startRegistry starts the distribution registry with a robot account and returns it with the
// push options.
func startRegistry(t testing.TB) (*registry.Server, []remote.Option) {
	t.Helper()
	reg, err := registry.StartDistribution(registry.DistributionOptions{
		Users:      map[string]string{"robot$ferry+dev": "s3cret"},
		StorageDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return reg, []remote.Option{remote.WithAuth(&authn.Basic{Username: "robot$ferry+dev", Password: "s3cret"})}
}

// progressLog reports build progress in the test log, and records it.
type progressLog struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (p *progressLog) report(step string, done, total int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, step)
	p.t.Logf("[%d/%d] %s", done, total, step)
}

func TestBuild(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("this machine cannot build base images: %v", err)
	}
	if testing.Short() {
		t.Skip("-short: builds real images with debootstrap (minutes the first time)")
	}
	ctx := t.Context()
	reg, ropts := startRegistry(t)
	progress := &progressLog{t: t}
	opts := Options{CacheDir: testCacheDir(t), Registry: reg.Host, Remote: ropts, Progress: progress.report}

	first, err := Build(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	logFigures(t, first)
	checkResult(t, first, reg.Host)

	t.Run("the stack and runtimes carry SBOMs, the runtimes linking the stack's", func(t *testing.T) {
		stackRef, err := name.NewDigest(first.Catalog.Stacks[StackName])
		if err != nil {
			t.Fatal(err)
		}
		stack, _, err := supplychain.FetchSBOM(stackRef, ropts...)
		if err != nil {
			t.Fatal(err)
		}
		// The real stack's dpkg status: libc6 and base-files are in every Debian system.
		for _, want := range []string{"libc6", "base-files"} {
			if !slices.ContainsFunc(stack.Packages(), func(p supplychain.Package) bool {
				return p.Type == supplychain.TypeDeb && p.Name == want && p.Version != ""
			}) {
				t.Errorf("the stack's SBOM lacks the Debian package %s: %d packages", want, len(stack.Packages()))
			}
		}
		pyRef, err := name.NewDigest(first.Catalog.Runtimes[PythonName])
		if err != nil {
			t.Fatal(err)
		}
		py, _, err := supplychain.FetchSBOM(pyRef, ropts...)
		if err != nil {
			t.Fatal(err)
		}
		if len(py.Layers) <= len(stack.Layers) || py.Layers[0].Role != supplychain.RoleStack || py.Layers[len(py.Layers)-1].Role != supplychain.RoleRuntime {
			t.Errorf("python runtime SBOM layers = %d, roles %s…%s", len(py.Layers), py.Layers[0].Role, py.Layers[len(py.Layers)-1].Role)
		}
		var runtimeDebs []string
		for _, p := range py.Layers[len(py.Layers)-1].Packages {
			if p.Type == supplychain.TypeDeb {
				runtimeDebs = append(runtimeDebs, p.Name)
			}
		}
		if !slices.ContainsFunc(runtimeDebs, func(n string) bool { return strings.HasPrefix(n, "python3") }) || slices.Contains(runtimeDebs, "libc6") {
			t.Errorf("the python runtime's own Debian packages = %v: want python3…, not the stack's libc6", runtimeDebs)
		}
		for _, im := range first.Images {
			if (im.Name == StackName || im.Name == PythonName) && im.SBOM == "" {
				t.Errorf("image %s has no SBOM digest", im.Name)
			}
		}
	})

	t.Run("the stack's layers are a prefix of every image on it", func(t *testing.T) {
		stack := layersOf(t, first.Catalog.Stacks[StackName], ropts)
		for _, ref := range []string{first.Catalog.Runtimes[GoStaticName], first.Catalog.Runtimes[PythonName], first.Builders["golang:"+goMinorOf(t, first)], first.Builders["python:3.11"]} {
			layers := layersOf(t, ref, ropts)
			if len(layers) <= len(stack) || !slices.Equal(layers[:len(stack)], stack) {
				t.Errorf("%s: layers %v do not start with the stack's %v", ref, layers, stack)
			}
		}
		python := layersOf(t, first.Catalog.Runtimes[PythonName], ropts)
		builder := layersOf(t, first.Builders["python:3.11"], ropts)
		if !slices.Equal(builder[:len(python)], python) {
			t.Errorf("python:3.11 does not sit on the python-3.11 runtime: %v, %v", builder, python)
		}
	})

	t.Run("python3 runs in the python-3.11 runtime", func(t *testing.T) {
		root, env := unpackImage(t, first.Catalog.Runtimes[PythonName], ropts)
		out := inRoot(t, root, env, "python3", "-c", "import sys, ssl, sqlite3; print(1, sys.version_info[:2])")
		if out != "1 (3, 11)" {
			t.Fatalf("python3 printed %q", out)
		}
	})

	t.Run("the python builder runs the python-web example's tests", func(t *testing.T) {
		root, env := unpackImage(t, first.Builders["python:3.11"], ropts)
		copyExample(t, "python-web", filepath.Join(root, "src/python-web"))
		out := inRoot(t, root, env, "sh", "-c", "cd /src/python-web && python3 -m unittest discover -s tests -t . 2>&1 && python --version")
		if !strings.Contains(out, "OK") || !strings.Contains(out, "Python 3.11") {
			t.Fatalf("unittest and python --version printed:\n%s", out)
		}
	})

	var goHello string
	keep := t.TempDir()
	t.Run("the golang builder tests and builds go-hello", func(t *testing.T) {
		root, env := unpackImage(t, first.Builders["golang:"+goMinorOf(t, first)], ropts)
		if out := inRoot(t, root, env, "go", "version"); !strings.HasPrefix(out, "go version "+first.GoVersion+" linux/") {
			t.Fatalf("go version printed %q, want %s", out, first.GoVersion)
		}
		src := filepath.Join(root, "src/go-hello")
		copyExample(t, "go-hello", src)
		// A checkout has .git; the image has no git, and the build must not need it.
		if err := os.MkdirAll(filepath.Join(src, ".git"), 0o755); err != nil {
			t.Fatal(err)
		}
		// The steps of examples/go-hello/.ferry.yaml, with a build cache kept next to the test
		// cache: a fresh one compiles the standard library (over a minute of CPU), which the
		// first run shows works; later runs need not pay for it again.
		gocache := filepath.Join(filepath.Dir(testCacheDir(t)), "baseimage-gocache")
		if err := os.MkdirAll(gocache, 0o750); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		err := runIsolated(t.Context(), &buf, env, "/bin/sh", "-c", `set -e
mount -t proc proc "$0/proc"
mount --rbind /dev "$0/dev"
mkdir -p "$0/root/.cache/go-build"
mount --bind "$1" "$0/root/.cache/go-build"
shift
exec chroot "$0" "$@"`, root, gocache, "sh", "-c", "cd /src/go-hello && go test ./... && CGO_ENABLED=0 go build -trimpath -o bin/go-hello . && echo built")
		out := strings.TrimSpace(buf.String())
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if !strings.HasSuffix(out, "built") {
			t.Fatalf("go test and go build printed:\n%s", out)
		}
		// Kept for the next subtest: this one's directories go when it ends.
		goHello = filepath.Join(keep, "go-hello")
		copyFile(t, filepath.Join(src, "bin/go-hello"), goHello, 0o755)
	})

	t.Run("go-hello answers from the go-static runtime as nonroot", func(t *testing.T) {
		if goHello == "" {
			t.Skip("go-hello was not built")
		}
		root, env := unpackImage(t, first.Catalog.Runtimes[GoStaticName], ropts)
		for _, p := range []string{"etc/ssl/certs/ca-certificates.crt", "usr/share/zoneinfo/Europe/Berlin"} {
			if _, err := os.Stat(filepath.Join(root, p)); err != nil {
				t.Errorf("go-static lacks /%s: %v", p, err)
			}
		}
		if out := inRoot(t, root, env, "id", "nonroot"); out != "uid=65532(nonroot) gid=65532(nonroot) groups=65532(nonroot)" {
			t.Errorf("id nonroot printed %q", out)
		}
		bin := filepath.Join(root, "app/bin/go-hello")
		copyFile(t, goHello, bin, 0o755)
		port := freePort(t)
		srvCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		var log bytes.Buffer
		go func() {
			done <- runIsolated(srvCtx, &syncWriter{w: &log}, append(env, "PORT="+port, "GREETING=Ferry"), "/bin/sh", "-c",
				`set -e; mount -t proc proc "$0/proc"; exec chroot --userspec=65532:65532 "$0" /app/bin/go-hello`, root)
		}()
		defer func() { stop(); <-done }()
		var body string
		testutil.Eventually(t, "go-hello to answer", func() (bool, error) {
			select {
			case err := <-done:
				done <- err
				return false, fmt.Errorf("go-hello exited: %w", err)
			default:
			}
			resp, err := http.Get("http://127.0.0.1:" + port + "/")
			if err != nil {
				return false, err
			}
			defer func() { _ = resp.Body.Close() }()
			data, _ := io.ReadAll(resp.Body)
			body = string(data)
			return resp.StatusCode == http.StatusOK, nil
		})
		if body != "Hello, Ferry!\n" {
			t.Fatalf("go-hello answered %q", body)
		}
	})

	t.Run("the pause image", func(t *testing.T) {
		root, _ := unpackImage(t, first.Pause, ropts)
		out, err := exec.Command(filepath.Join(root, "pause"), "-v").Output()
		if err != nil || strings.TrimSpace(string(out)) != "ferry-pause 1" {
			t.Fatalf("pause -v: %q, %v", out, err)
		}
		cfg := configOf(t, first.Pause, ropts)
		if !slices.Equal(cfg.Config.Entrypoint, []string{"/pause"}) || cfg.Config.User != "65535:65535" {
			t.Errorf("pause config: entrypoint %v, user %q", cfg.Config.Entrypoint, cfg.Config.User)
		}
	})

	t.Run("a second build comes from the cache and pushes nothing new", func(t *testing.T) {
		progress.lines = nil
		start := time.Now()
		second, err := Build(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("second build: %s", time.Since(start).Round(100*time.Millisecond))
		for _, s := range second.Steps {
			if !s.Cached {
				t.Errorf("step %s was built again", s.Name)
			}
		}
		for _, l := range progress.lines {
			if strings.Contains(l, "debootstrap") || strings.Contains(l, "apt-get") || strings.Contains(l, "go mod download") {
				t.Errorf("the second build did %q", l)
			}
		}
		if !equalRefs(first, second) {
			t.Fatalf("the second build gave other images:\n%+v\n%+v", first, second)
		}
	})
}

func checkResult(t *testing.T, r *Result, host string) {
	t.Helper()
	data, err := yaml.Marshal(r.Catalog)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := catalog.Parse("build result", data); err != nil {
		t.Fatalf("the catalog does not parse: %v", err)
	}
	if len(r.Catalog.Stacks) != 1 || len(r.Catalog.Runtimes) != 2 || r.Catalog.Runtimes[GoStaticName] == "" || r.Catalog.Runtimes[PythonName] == "" {
		t.Fatalf("catalog = %+v", r.Catalog)
	}
	minor := goMinorOf(t, r)
	for _, want := range []struct{ key, repo string }{
		{"golang:" + minor, host + "/library/golang@sha256:"},
		{"golang:" + strings.TrimPrefix(r.GoVersion, "go"), host + "/library/golang@sha256:"},
		{"python:3.11", host + "/library/python@sha256:"},
	} {
		if !strings.HasPrefix(r.Builders[want.key], want.repo) {
			t.Errorf("builder %s = %q, want %s…", want.key, r.Builders[want.key], want.repo)
		}
	}
	if !strings.HasPrefix(r.Pause, host+"/ferry/pause@sha256:") {
		t.Errorf("pause = %q", r.Pause)
	}
}

func goMinorOf(t testing.TB, r *Result) string {
	t.Helper()
	m, err := goMinor(r.GoVersion)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func equalRefs(a, b *Result) bool {
	if a.Pause != b.Pause || len(a.Images) != len(b.Images) {
		return false
	}
	for i := range a.Images {
		if a.Images[i].Ref != b.Images[i].Ref {
			return false
		}
	}
	return true
}

func logFigures(t testing.TB, r *Result) {
	t.Helper()
	for _, s := range r.Steps {
		t.Logf("step %-22s cached=%-5v took %-8s (built in %s) layer %s %s compressed, %s as tar", s.Name, s.Cached, s.Duration.Round(100*time.Millisecond), s.BuildDuration.Round(time.Second), s.Layer, megabytes(s.Size), megabytes(s.UncompressedSize))
	}
	for _, i := range r.Images {
		t.Logf("image %-14s %s: %d layers, %s compressed, %s unpacked", i.Name, i.Ref, len(i.Layers), megabytes(i.Size), megabytes(i.UncompressedSize))
	}
	t.Logf("push: %s", r.PushDuration.Round(100*time.Millisecond))
}

func fetch(t testing.TB, ref string, ropts []remote.Option) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, ropts...)
	if err != nil {
		t.Fatalf("failed to fetch %s: %v", ref, err)
	}
	return img
}

func layersOf(t testing.TB, ref string, ropts []remote.Option) []string {
	t.Helper()
	layers, err := fetch(t, ref, ropts).Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d.String())
	}
	return out
}

func configOf(t testing.TB, ref string, ropts []remote.Option) *v1.ConfigFile {
	t.Helper()
	cf, err := fetch(t, ref, ropts).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// unpackImage pulls an image from the registry and unpacks its layers, as a container runtime
// would, into a temporary directory; it returns the directory and the image's environment (plus
// HOME, which runc sets from /etc/passwd).
func unpackImage(t testing.TB, ref string, ropts []remote.Option) (string, []string) {
	t.Helper()
	img := fetch(t, ref, ropts)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	idx := tree{}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		err = unpackLayer(t.Context(), root, rc, idx)
		_ = rc.Close()
		if err != nil {
			t.Fatalf("failed to unpack %s: %v", ref, err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return root, append(slices.Clone(cf.Config.Env), "HOME=/root")
}

// inRoot runs a command chrooted into an unpacked image and returns its trimmed output.
func inRoot(t testing.TB, root string, env []string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	if err := runInRoot(t.Context(), &out, root, env, args...); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	return strings.TrimSpace(out.String())
}

func copyExample(t testing.TB, example, dst string) {
	t.Helper()
	src := filepath.Join("..", "..", "examples", example)
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		copyFile(t, p, target, 0o644)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, mode); err != nil {
		t.Fatal(err)
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
