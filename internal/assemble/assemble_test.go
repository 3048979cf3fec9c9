package assemble

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/registry"
)

const (
	robot  = "robot$team-a+ci"
	secret = "Robot-S3cret-Value"
	rev    = "0123456789abcdef0123456789abcdef01234567"
)

var fast = image.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 4}

func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkout makes a repository checkout with a pipeline file naming stack and runtime.
func checkout(t *testing.T, stack, runtime string) string {
	t.Helper()
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		".ferry.yaml": "stack: " + stack + "\nruntime: " + runtime + `
artifacts: ["app/", "requirements.txt"]
entrypoint: ["python", "app/main.py"]
env: {PORT: "8080"}
ports: [8080]
user: "1000"
`,
		"app/main.py":      "print('hello')\n",
		"requirements.txt": "flask\n",
		"tests/test_x.py":  "assert True\n",
		".git/HEAD":        "ref: refs/heads/main\n",
	})
	return dir
}

func pull(t *testing.T, ref string, opts ...remote.Option) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestAssembleAgainstGGCRRegistry(t *testing.T) {
	reg, err := registry.StartMemory(registry.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	ctx := context.Background()
	seeded, err := registry.SeedBaseImages(ctx, reg.Host, registry.SeedOptions{Stack: "ferry/stacks/debian", Runtime: "ferry/runtimes/python"})
	if err != nil {
		t.Fatal(err)
	}
	dir := checkout(t, seeded.Stack, seeded.Runtime)
	results := t.TempDir()
	var log strings.Builder
	res, err := Assemble(ctx, Options{
		Dir: dir, Image: reg.Ref("team-a/app"), Revision: rev, Tags: []string{"v1.0.0"},
		SourceURL: "https://gitlab.example.com/team-a/app", ResultsDir: results, Log: &log,
		DockerConfigDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.Image, reg.Ref("team-a/app@sha256:")) || !strings.HasSuffix(res.Image, res.Digest) {
		t.Fatalf("result image %q digest %q", res.Image, res.Digest)
	}
	if !slices.Equal(res.Tags, []string{rev, "v1.0.0"}) {
		t.Errorf("tags %q", res.Tags)
	}
	if res.Lineage.Stack.Image != seeded.Stack || res.Lineage.Runtime.Image != seeded.Runtime || res.Lineage.AppLayer != res.Layer.Digest {
		t.Errorf("lineage %+v, layer %+v", res.Lineage, res.Layer)
	}
	if res.Layer.Files != 2 {
		t.Errorf("layer holds %d files, want the 2 artifacts", res.Layer.Files)
	}

	// Tekton results: no trailing newline, small.
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(results, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(ResultImageURL); got != reg.Ref("team-a/app") {
		t.Errorf("IMAGE_URL %q", got)
	}
	if got := read(ResultImageDigest); got != res.Digest {
		t.Errorf("IMAGE_DIGEST %q, want %q", got, res.Digest)
	}
	var lineage ferryv1.ImageLineage
	raw := read(ResultLineage)
	if err := json.Unmarshal([]byte(raw), &lineage); err != nil || !reflect.DeepEqual(lineage, res.Lineage) {
		t.Errorf("FERRY_LINEAGE %s (%v), want %+v", raw, err, res.Lineage)
	}
	if total := len(read(ResultImageURL)) + len(read(ResultImageDigest)) + len(raw); total > 1500 {
		t.Errorf("results take %d bytes", total)
	}

	img := pull(t, res.Image)
	cf, _ := img.ConfigFile()
	if !slices.Equal(cf.Config.Entrypoint, []string{"python", "app/main.py"}) || cf.Config.User != "1000" || cf.Config.WorkingDir != "/app" {
		t.Errorf("config %+v", cf.Config)
	}
	if cf.Config.Labels[image.LabelRevision] != rev || cf.Config.Labels[image.LabelSource] != "https://gitlab.example.com/team-a/app" {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	for _, want := range []string{"stack    ", "runtime  ", "app layer sha256:", "Pushed " + res.Image} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("progress log does not say %q:\n%s", want, log.String())
		}
	}
}

// harbor is a distribution registry with Harbor-style token auth behind a recording proxy,
// seeded with a stack and a runtime in team-a, and a Docker config for the robot.
type harbor struct {
	proxy     *registry.Proxy
	configDir string
	seeded    *registry.Seeded
}

func newHarbor(t *testing.T) *harbor {
	t.Helper()
	reg, err := registry.StartDistribution(registry.DistributionOptions{
		Users:  map[string]string{robot: secret},
		Access: registry.ProjectAccess(map[string][]string{robot: {"team-a"}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	p, err := registry.StartProxy(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	h := &harbor{proxy: p, configDir: t.TempDir()}
	if err := registry.WriteDockerConfig(h.configDir, p.Host, robot, secret); err != nil {
		t.Fatal(err)
	}
	h.seeded, err = registry.SeedBaseImages(context.Background(), p.Host, registry.SeedOptions{
		Stack: "team-a/stacks/debian", Runtime: "team-a/runtimes/python", Username: robot, Password: secret,
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Reset()
	return h
}

func (h *harbor) options(dir string, log io.Writer) Options {
	return Options{
		Dir: dir, Image: h.proxy.Ref("team-a/app"), Revision: rev,
		StackImage: h.seeded.Stack, RuntimeImage: h.seeded.Runtime,
		DockerConfigDir: h.configDir, Log: log, Backoff: &fast,
	}
}

func TestAssembleWithTokenAuthAndCatalogNames(t *testing.T) {
	h := newHarbor(t)
	dir := checkout(t, "debian-12", "python-3.12")
	var log strings.Builder
	opts := h.options(dir, &log)
	opts.SourceURL = "https://oauth2:glpat-Secr3tToken@gitlab.example.com/team-a/app.git?private_token=glpat-Other#frag"
	res, err := Assemble(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lineage.Stack.Name != "debian-12" || res.Lineage.Runtime.Name != "python-3.12" || res.Lineage.Runtime.Image != h.seeded.Runtime {
		t.Errorf("lineage %+v", res.Lineage)
	}
	img := pull(t, res.Image, remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	cf, _ := img.ConfigFile()
	if got := cf.Config.Labels[image.LabelSource]; got != "https://gitlab.example.com/team-a/app.git" {
		t.Errorf("source label %q, want the URL without credentials", got)
	}
	// The runtime's layers were mounted from the sibling repository; the app layer and the config
	// were uploaded; one manifest, under the revision tag.
	st := h.proxy.Stats()
	if len(st.Mounts) != 3 || len(st.Uploads) != 2 || len(st.StoredManifests()) != 1 || st.StoredManifests()[0].Reference != rev {
		t.Errorf("transfer %+v", st)
	}
	if len(res.Transfer.Mounted) != 3 || len(res.Transfer.Uploaded) != 2 || res.Transfer.Manifests != 1 {
		t.Errorf("result transfer %+v", res.Transfer)
	}
	out, _ := json.Marshal(res)
	for _, s := range []string{secret, "glpat-"} {
		if strings.Contains(log.String(), s) || strings.Contains(string(out), s) || strings.Contains(string(mustJSON(t, cf)), s) {
			t.Fatalf("%q leaked into the log, result or image config", s)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAssembleIsReproducibleAndUploadsOnlyChanges(t *testing.T) {
	h := newHarbor(t)
	ctx := context.Background()
	one := checkout(t, "debian-12", "python-3.12")
	first, err := Assemble(ctx, h.options(one, nil))
	if err != nil {
		t.Fatal(err)
	}

	// Another checkout of the same commit, files touched at other times: the same image, and
	// nothing to upload.
	two := checkout(t, "debian-12", "python-3.12")
	old := time.Now().Add(-48 * time.Hour)
	_ = filepath.Walk(two, func(p string, _ os.FileInfo, _ error) error { return os.Chtimes(p, old, old) })
	h.proxy.Reset()
	second, err := Assemble(ctx, h.options(two, nil))
	if err != nil {
		t.Fatal(err)
	}
	if second.Image != first.Image {
		t.Fatalf("same source, different images: %s and %s", first.Image, second.Image)
	}
	if st := h.proxy.Stats(); st.BytesIn != 0 || len(st.Uploads) != 0 {
		t.Fatalf("identical rebuild sent %d bytes: %+v", st.BytesIn, st)
	}
	if second.Transfer.UploadedBytes() != 0 {
		t.Errorf("result transfer %+v", second.Transfer)
	}

	// One file changed in a new commit: the app layer, the config, the manifest — nothing else.
	writeFiles(t, two, map[string]string{"app/main.py": "print('changed')\n"})
	h.proxy.Reset()
	opts := h.options(two, nil)
	opts.Revision = strings.Repeat("f", 40)
	third, err := Assemble(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	img := pull(t, third.Image, remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	raw, _ := img.RawManifest()
	rawCfg, _ := img.RawConfigFile()
	st := h.proxy.Stats()
	if len(st.Uploads) != 2 || len(st.StoredManifests()) != 1 || len(st.Mounts) != 0 {
		t.Fatalf("one-file change sent %+v", st)
	}
	if exact := third.Layer.Size + int64(len(rawCfg)) + int64(len(raw)); st.BytesIn != exact || third.Transfer.UploadedBytes() != exact {
		t.Fatalf("one-file change sent %d bytes (client counted %d), app layer + config + manifest = %d", st.BytesIn, third.Transfer.UploadedBytes(), exact)
	}
}

func TestAssembleRetriesAndFails(t *testing.T) {
	h := newHarbor(t)
	dir := checkout(t, "debian-12", "python-3.12")
	h.proxy.Inject(registry.Fault{Match: registry.MatchBlobUploads, Status: http.StatusServiceUnavailable, Times: 2})
	if _, err := Assemble(context.Background(), h.options(dir, nil)); err != nil {
		t.Fatalf("503 twice: %v", err)
	}
	h.proxy.ClearFaults()
	h.proxy.Inject(registry.Fault{Match: registry.MatchBlobUploads, Status: http.StatusServiceUnavailable, Times: -1})
	h.proxy.Reset()
	writeFiles(t, dir, map[string]string{"app/main.py": "print('new')\n"})
	results := t.TempDir()
	opts := h.options(dir, nil)
	opts.ResultsDir = results
	_, err := Assemble(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "failed to push") || !strings.Contains(err.Error(), "UNAVAILABLE") {
		t.Fatalf("always 503: %v", err)
	}
	if st := h.proxy.Stats(); len(st.Manifests) != 0 {
		t.Fatalf("manifest sent without its blobs: %+v", st.Manifests)
	}
	if entries, _ := os.ReadDir(results); len(entries) != 0 {
		t.Fatalf("results written for a failed push: %v", entries)
	}
}

func TestAssembleRefusesBadInput(t *testing.T) {
	h := newHarbor(t)
	dir := checkout(t, "debian-12", "python-3.12")
	for _, tc := range []struct {
		name string
		edit func(*Options)
		want string
	}{
		{name: "catalog name without an override", edit: func(o *Options) { o.StackImage = "" }, want: `stack "debian-12" is a catalog name`},
		{name: "runtime catalog name", edit: func(o *Options) { o.RuntimeImage = "" }, want: `runtime "python-3.12" is a catalog name`},
		{name: "image with a tag", edit: func(o *Options) { o.Image += ":v1" }, want: "without a tag"},
		{name: "image with a digest", edit: func(o *Options) { o.Image += "@sha256:" + strings.Repeat("0", 64) }, want: "without a digest"},
		{name: "no image", edit: func(o *Options) { o.Image = "" }, want: "--image"},
		{name: "short revision", edit: func(o *Options) { o.Revision = "abc123" }, want: "full commit hash"},
		{name: "latest", edit: func(o *Options) { o.Tags = []string{"latest"} }, want: "never pushes latest"},
		{name: "git tag with a slash", edit: func(o *Options) { o.Tags = []string{"release/1.0"} }, want: `tag "release/1.0"`},
		{name: "no pipeline file", edit: func(o *Options) { o.PipelineFile = "missing.yaml" }, want: "missing.yaml: no pipeline file"},
		{name: "stack that does not exist", edit: func(o *Options) { o.StackImage = h.proxy.Ref("team-a/nothing:v1") }, want: "failed to fetch " + h.proxy.Ref("team-a/nothing:v1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.proxy.Reset()
			opts := h.options(dir, nil)
			tc.edit(&opts)
			_, err := Assemble(context.Background(), opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if st := h.proxy.Stats(); len(st.Uploads) != 0 || len(st.Manifests) != 0 {
				t.Fatalf("pushed despite the error: %+v", st)
			}
		})
	}
}

func TestSanitizeSourceURL(t *testing.T) {
	for in, want := range map[string]string{
		"":                                      "",
		"https://gitlab.example.com/g/p":        "https://gitlab.example.com/g/p",
		"https://user:tok@gitlab.example.com/g": "https://gitlab.example.com/g",
		"https://gitlab.example.com/g?private_token=x#y": "https://gitlab.example.com/g",
		"git@gitlab.example.com:g/p.git":                 "git@gitlab.example.com:g/p.git",
		"http://%zz:pass@host/x":                         "",
	} {
		if got := SanitizeSourceURL(in); got != want {
			t.Errorf("SanitizeSourceURL(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAssembleWithBasicAuthRegistry(t *testing.T) {
	// A registry that challenges with `Basic realm="harbor"` instead of a token service.
	reg, err := registry.StartMemory(registry.MemoryOptions{Users: map[string]string{robot: secret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	seeded, err := registry.SeedBaseImages(context.Background(), reg.Host, registry.SeedOptions{Stack: "ferry/stack", Username: robot, Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{".ferry.yaml": "stack: " + seeded.Stack + "\n", "main.py": "x\n"})
	configDir := t.TempDir()
	opts := Options{Dir: dir, Image: reg.Ref("team-a/app"), Revision: rev, DockerConfigDir: configDir, Backoff: &fast}

	// No credentials: refused, and the error says so.
	if _, err := Assemble(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("anonymous: %v", err)
	}
	// A Kubernetes dockerconfigjson Secret mounted as is: the key is .dockerconfigjson.
	if err := os.WriteFile(filepath.Join(configDir, ".dockerconfigjson"), registry.DockerConfigJSON(reg.Host, robot, secret), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := Assemble(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Lineage.Runtime != nil || res.Lineage.Stack.Image != seeded.Stack {
		t.Errorf("lineage %+v", res.Lineage)
	}
}
