package image

import (
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/registry"
)

const (
	robot  = "robot$team-a+ci"
	secret = "Robot-S3cret-Value"
)

// fastBackoff keeps fault tests quick while still backing off.
var fastBackoff = Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 4}

// fixture is a distribution registry with Harbor-style token auth, a recording proxy in front of
// it, a Docker config with the robot's credentials, and a stack and runtime in team-a.
type fixture struct {
	reg       *registry.Server
	proxy     *registry.Proxy
	configDir string
	stack     string
	runtime   string
	log       strings.Builder
}

func newFixture(t *testing.T, seed registry.SeedOptions) *fixture {
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
	f := &fixture{reg: reg, proxy: p, configDir: t.TempDir()}
	if err := registry.WriteDockerConfig(f.configDir, p.Host, robot, secret); err != nil {
		t.Fatal(err)
	}
	if seed.Stack == "" {
		seed.Stack, seed.Runtime = "team-a/stack", "team-a/runtime"
	}
	seed.Username, seed.Password = robot, secret
	s, err := registry.SeedBaseImages(context.Background(), p.Host, seed)
	if err != nil {
		t.Fatal(err)
	}
	f.stack, f.runtime = s.Stack, s.Runtime
	p.Reset()
	return f
}

func (f *fixture) client(t *testing.T) *Client {
	t.Helper()
	c, err := NewClient(ClientOptions{DockerConfigDir: f.configDir, Backoff: &fastBackoff, Log: &f.log})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// seed pushes more base images to the fixture's registry.
func (f *fixture) seed(t *testing.T, opts registry.SeedOptions) *registry.Seeded {
	t.Helper()
	opts.Username, opts.Password = robot, secret
	s, err := registry.SeedBaseImages(context.Background(), f.proxy.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// build assembles dir on stack and runtime ("" for none) and pushes it to team-a/app.
func (f *fixture) build(t *testing.T, c *Client, dir, stack, runtime string, spec Spec, tags ...string) (name.Digest, *Artifact, error) {
	t.Helper()
	ctx := context.Background()
	st, err := c.Fetch(ctx, "stack-name", stack)
	if err != nil {
		return name.Digest{}, nil, err
	}
	var rt *Base
	if runtime != "" {
		if rt, err = c.Fetch(ctx, "runtime-name", runtime); err != nil {
			return name.Digest{}, nil, err
		}
	}
	layer, err := BuildLayer(ctx, LayerOptions{Dir: dir, Workdir: "/app"})
	if err != nil {
		return name.Digest{}, nil, err
	}
	t.Cleanup(func() { _ = layer.Close() })
	art, err := Compose(st, rt, layer, spec)
	if err != nil {
		return name.Digest{}, nil, err
	}
	repo, err := c.ParseRepository(f.proxy.Ref("team-a/app"))
	if err != nil {
		return name.Digest{}, nil, err
	}
	d, err := c.Push(ctx, repo, art, tags)
	return d, art, err
}

func (f *fixture) pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func digests(t *testing.T, img v1.Image) []string {
	t.Helper()
	ds, err := layerDigests(img)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func appDir(t *testing.T) string {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"app/main.py": "print('hello')\n", "requirements.txt": "flask\n", "static/logo.svg": "<svg/>"})
	return dir
}

func TestComposeAndPushSetsConfigAndLineage(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	c := f.client(t)
	spec := Spec{
		Entrypoint: []string{"python", "app/main.py"},
		Env:        map[string]string{"PORT": "8080", "RUNTIME_VERSION": "overridden"},
		Workdir:    "/app",
		Ports:      []int32{8080},
		User:       "1000:1000",
		Source:     "https://gitlab.example.com/team-a/app",
		Revision:   strings.Repeat("a", 40),
		Created:    DefaultEpoch,
	}
	rev := strings.Repeat("a", 40)
	ref, art, err := f.build(t, c, appDir(t), f.stack, f.runtime, spec, rev, "v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	img := f.pull(t, ref.String())
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg := cf.Config
	if !slices.Equal(cfg.Entrypoint, spec.Entrypoint) || cfg.Cmd != nil || cfg.WorkingDir != "/app" || cfg.User != "1000:1000" {
		t.Errorf("config: entrypoint %q cmd %q workdir %q user %q", cfg.Entrypoint, cfg.Cmd, cfg.WorkingDir, cfg.User)
	}
	if _, ok := cfg.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("exposed ports %v, want 8080/tcp", cfg.ExposedPorts)
	}
	// The commit is in the environment too, for the application to report (EnvRevision).
	wantEnv := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "RUNTIME_VERSION=overridden", EnvRevision + "=" + strings.Repeat("a", 40), "PORT=8080"}
	if !slices.Equal(cfg.Env, wantEnv) {
		t.Errorf("env %q, want %q", cfg.Env, wantEnv)
	}
	if !cf.Created.Equal(DefaultEpoch) {
		t.Errorf("created %s", cf.Created)
	}

	// The image is the runtime plus one layer; the runtime is the stack plus its own layer.
	rt := f.pull(t, f.runtime)
	layers, rtLayers := digests(t, img), digests(t, rt)
	if len(layers) != len(rtLayers)+1 || !slices.Equal(layers[:len(rtLayers)], rtLayers) {
		t.Fatalf("layers %q do not extend the runtime's %q by one", layers, rtLayers)
	}
	app := layers[len(layers)-1]
	rtDigest, _ := rt.Digest()
	st := f.pull(t, f.stack)
	stDigest, _ := st.Digest()
	labels := cfg.Labels
	for k, want := range map[string]string{
		LabelSource:        spec.Source,
		LabelRevision:      rev,
		LabelBaseName:      f.runtime,
		LabelBaseDigest:    rtDigest.String(),
		LabelStackName:     "stack-name",
		LabelStackImage:    f.stack,
		LabelStackDigest:   stDigest.String(),
		LabelRuntimeName:   "runtime-name",
		LabelRuntimeImage:  f.runtime,
		LabelRuntimeDigest: rtDigest.String(),
		LabelAppLayer:      app,
	} {
		if labels[k] != want {
			t.Errorf("label %s = %q, want %q", k, labels[k], want)
		}
	}
	m, _ := img.Manifest()
	if m.Annotations[LabelStackDigest] != stDigest.String() || m.Annotations[LabelRevision] != rev {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	if art.Lineage.AppLayer != app || art.Lineage.Stack.Digest != stDigest.String() || art.Lineage.Runtime.Image != f.runtime {
		t.Errorf("lineage %+v", art.Lineage)
	}
	if l, ok := LineageFromLabels(labels); !ok || l.Runtime.Digest != rtDigest.String() {
		t.Errorf("LineageFromLabels: %+v %v", l, ok)
	}
	// Both tags name the image.
	for _, tag := range []string{rev, "v1.2.3"} {
		if d, _ := f.pull(t, f.proxy.Ref("team-a/app:"+tag)).Digest(); d.String() != ref.DigestStr() {
			t.Errorf("tag %s names %s, want %s", tag, d, ref.DigestStr())
		}
	}
	if strings.Contains(f.log.String(), secret) {
		t.Fatalf("the progress log reveals the password:\n%s", f.log.String())
	}
}

func TestComposeRefusesRuntimeNotOnStack(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	other := f.seed(t, registry.SeedOptions{Stack: "team-a/other-stack", Salt: "other"})
	f.proxy.Reset()
	c := f.client(t)
	_, _, err := f.build(t, c, appDir(t), other.Stack, f.runtime, Spec{})
	if err == nil {
		t.Fatal("built a runtime on a stack it does not sit on")
	}
	rtDigest, _ := f.pull(t, f.runtime).Digest()
	stDigest, _ := f.pull(t, other.Stack).Digest()
	for _, want := range []string{"does not sit on stack", rtDigest.String(), stDigest.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if st := f.proxy.Stats(); len(st.Manifests) != 0 || len(st.Uploads) != 0 {
		t.Errorf("something was pushed: %+v", st)
	}
}

func TestComposeWithoutRuntimeAndDockerMediaTypes(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	// A Docker (schema 2) stack: the application layer gets a Docker layer media type.
	st := f.pull(t, f.stack)
	docker := mutate.MediaType(st, "application/vnd.docker.distribution.manifest.v2+json")
	docker = mutate.ConfigMediaType(docker, "application/vnd.docker.container.image.v1+json")
	ref, _ := name.ParseReference(f.proxy.Ref("team-a/docker-stack:v1"))
	if err := remote.Write(ref, docker, remote.WithAuth(&authn.Basic{Username: robot, Password: secret})); err != nil {
		t.Fatal(err)
	}
	c := f.client(t)
	out, _, err := f.build(t, c, appDir(t), ref.String(), "", Spec{Cmd: []string{"serve"}})
	if err != nil {
		t.Fatal(err)
	}
	img := f.pull(t, out.String())
	m, _ := img.Manifest()
	if m.MediaType != "application/vnd.docker.distribution.manifest.v2+json" || m.Layers[len(m.Layers)-1].MediaType != "application/vnd.docker.image.rootfs.diff.tar.gzip" {
		t.Fatalf("manifest %s with app layer %s", m.MediaType, m.Layers[len(m.Layers)-1].MediaType)
	}
	cf, _ := img.ConfigFile()
	if !slices.Equal(cf.Config.Cmd, []string{"serve"}) || cf.Config.Labels[LabelRuntimeImage] != "" || cf.Config.Labels[LabelBaseName] != ref.String() {
		t.Fatalf("config %+v", cf.Config)
	}
}

func TestMultiPlatformRuntimeGivesAnIndex(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{Platforms: []string{"linux/amd64", "linux/arm64"}})
	c := f.client(t)
	ref, art, err := f.build(t, c, appDir(t), f.stack, f.runtime, Spec{Entrypoint: []string{"app"}}, strings.Repeat("b", 40))
	if err != nil {
		t.Fatal(err)
	}
	if art.Index == nil {
		t.Fatal("a multi-platform runtime gave a single image")
	}
	r, _ := name.ParseReference(ref.String())
	idx, err := remote.Index(r, remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Annotations[LabelAppLayer] != art.Lineage.AppLayer {
		t.Fatalf("index %+v", im)
	}
	rtIdx, _ := remote.Index(mustParse(t, f.runtime), remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	for _, d := range im.Manifests {
		img, _ := idx.Image(d.Digest)
		rt, err := platformOf(rtIdx, *d.Platform)
		if err != nil {
			t.Fatal(err)
		}
		layers, rtLayers := digests(t, img), digests(t, rt)
		if !slices.Equal(layers[:len(rtLayers)], rtLayers) || layers[len(layers)-1] != art.Lineage.AppLayer {
			t.Errorf("%s: layers %q on runtime %q", d.Platform, layers, rtLayers)
		}
		cf, _ := img.ConfigFile()
		if cf.Architecture != d.Platform.Architecture || !slices.Equal(cf.Config.Entrypoint, []string{"app"}) {
			t.Errorf("%s: config %s %q", d.Platform, cf.Architecture, cf.Config.Entrypoint)
		}
		rtd, _ := rt.Digest()
		if cf.Config.Labels[LabelBaseDigest] != rtd.String() {
			t.Errorf("%s: base digest %s, want the platform runtime's %s", d.Platform, cf.Config.Labels[LabelBaseDigest], rtd)
		}
	}
	// One app layer uploaded once for both platforms, plus two configs.
	st := f.proxy.Stats()
	if n := strings.Count(strings.Join(st.UploadedDigests(), " "), art.Lineage.AppLayer); n != 1 || len(st.Uploads) != 3 {
		t.Errorf("uploads %+v, want the app layer once and two configs", st.Uploads)
	}
}

func platformOf(idx v1.ImageIndex, p v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && samePlatform(*d.Platform, p) {
			return idx.Image(d.Digest)
		}
	}
	return nil, errors.New("no such platform")
}

func mustParse(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPushUploadsOnlyWhatIsMissing(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	dir := appDir(t)

	// First push into team-a/app: the runtime's layers live in the sibling team-a/runtime and are
	// mounted; only the app layer and the config travel.
	c := f.client(t)
	ref, art, err := f.build(t, c, dir, f.stack, f.runtime, Spec{}, strings.Repeat("1", 40))
	if err != nil {
		t.Fatal(err)
	}
	st := f.proxy.Stats()
	rtLayers := digests(t, f.pull(t, f.runtime))
	img := f.pull(t, ref.String())
	cfgDigest, _ := img.ConfigName()
	want := []string{art.Lineage.AppLayer, cfgDigest.String()}
	slices.Sort(want)
	if !slices.Equal(st.UploadedDigests(), want) {
		t.Errorf("uploaded %q, want the app layer and the config %q", st.UploadedDigests(), want)
	}
	var mounted []string
	for _, m := range st.Mounts {
		if m.From != "team-a/runtime" {
			t.Errorf("mount %+v, want from team-a/runtime", m)
		}
		mounted = append(mounted, m.Digest)
	}
	slices.Sort(mounted)
	slices.Sort(rtLayers)
	if !slices.Equal(mounted, rtLayers) {
		t.Errorf("mounted %q, want the runtime's layers %q", mounted, rtLayers)
	}
	if tr := c.Transfer(); len(tr.Uploaded) != 2 || len(tr.Mounted) != len(rtLayers) || tr.Manifests != 1 {
		t.Errorf("client's transfer %+v", tr)
	}

	// An identical rebuild uploads nothing at all.
	f.proxy.Reset()
	c = f.client(t)
	again, _, err := f.build(t, c, dir, f.stack, f.runtime, Spec{}, strings.Repeat("1", 40))
	if err != nil {
		t.Fatal(err)
	}
	if again != ref {
		t.Fatalf("identical rebuild: %s, want %s", again, ref)
	}
	if st := f.proxy.Stats(); len(st.Uploads) != 0 || len(st.Mounts) != 0 || len(st.StoredManifests()) != 0 || st.BytesIn != 0 {
		t.Fatalf("identical rebuild sent %+v", st)
	}

	// One changed file: one layer, the config and the manifest, nothing else, byte for byte.
	writeTree(t, dir, map[string]string{"app/main.py": "print('changed')\n"})
	f.proxy.Reset()
	c = f.client(t)
	changed, art2, err := f.build(t, c, dir, f.stack, f.runtime, Spec{}, strings.Repeat("2", 40))
	if err != nil {
		t.Fatal(err)
	}
	img2 := f.pull(t, changed.String())
	cfg2, _ := img2.ConfigName()
	raw, _ := img2.RawManifest()
	rawCfg, _ := img2.RawConfigFile()
	layerSize, _ := img2.LayerByDigest(mustHash(t, art2.Lineage.AppLayer))
	ls, _ := layerSize.Size()
	st = f.proxy.Stats()
	want = []string{art2.Lineage.AppLayer, cfg2.String()}
	slices.Sort(want)
	if !slices.Equal(st.UploadedDigests(), want) || len(st.Mounts) != 0 || len(st.StoredManifests()) != 1 {
		t.Fatalf("one-file change sent %+v, want uploads %q and one manifest", st, want)
	}
	if exact := ls + int64(len(rawCfg)) + int64(len(raw)); st.BytesIn != exact {
		t.Fatalf("one-file change sent %d bytes, the app layer + config + manifest are %d", st.BytesIn, exact)
	}
}

func mustHash(t *testing.T, s string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestPushRetriesThenSucceeds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault registry.Fault
	}{
		{name: "503 twice on blob uploads", fault: registry.Fault{Match: registry.MatchBlobUploads, Status: http.StatusServiceUnavailable, Times: 2}},
		{name: "429 twice on the manifest", fault: registry.Fault{Match: registry.MatchManifestPuts, Status: http.StatusTooManyRequests, Times: 2}},
		{name: "dropped connections twice", fault: registry.Fault{Match: registry.MatchBlobUploads, Times: 2}},
		{name: "500 on everything, twice", fault: registry.Fault{Match: registry.MatchV2, Status: http.StatusInternalServerError, Times: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, registry.SeedOptions{})
			f.proxy.Inject(tc.fault)
			ref, _, err := f.build(t, f.client(t), appDir(t), f.stack, f.runtime, Spec{}, strings.Repeat("c", 40))
			if err != nil {
				t.Fatal(err)
			}
			if st := f.proxy.Stats(); st.Faults != 2 {
				t.Fatalf("faults %d, want 2", st.Faults)
			}
			f.pull(t, ref.String())
		})
	}
}

func TestPushKeepsFailingLeavesNoManifest(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	f.proxy.Inject(registry.Fault{Match: registry.MatchBlobUploads, Status: http.StatusServiceUnavailable, Times: -1})
	start := time.Now()
	_, _, err := f.build(t, f.client(t), appDir(t), f.stack, f.runtime, Spec{}, strings.Repeat("d", 40))
	if err == nil {
		t.Fatal("push succeeded against a registry that always fails")
	}
	for _, want := range []string{"failed to push " + f.proxy.Ref("team-a/app@sha256:"), "UNAVAILABLE"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error reveals the password: %v", err)
	}
	st := f.proxy.Stats()
	if len(st.Manifests) != 0 {
		t.Fatalf("a manifest was sent although its blobs were not: %+v", st.Manifests)
	}
	if st.Faults < fastBackoff.Steps {
		t.Errorf("gave up after %d attempts, want %d", st.Faults, fastBackoff.Steps)
	}
	t.Logf("gave up after %d failed requests in %s", st.Faults, time.Since(start))
}

func TestWrongCredentialsFailClearlyWithoutLeaking(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	wrong := "Wrong-Passw0rd-Value"
	if err := registry.WriteDockerConfig(f.configDir, f.proxy.Host, robot, wrong); err != nil {
		t.Fatal(err)
	}
	_, _, err := f.build(t, f.client(t), appDir(t), f.stack, f.runtime, Spec{})
	if err == nil {
		t.Fatal("pushed with a wrong password")
	}
	if !strings.Contains(err.Error(), "UNAUTHORIZED") && !strings.Contains(err.Error(), "401") {
		t.Errorf("error %q does not say the credentials were refused", err)
	}
	for _, s := range []string{wrong, secret} {
		if strings.Contains(err.Error(), s) || strings.Contains(f.log.String(), s) {
			t.Fatalf("a password appears in the error or log: %v\n%s", err, f.log.String())
		}
	}
}

func TestPlainHTTPOnlyForLoopbackOrInsecure(t *testing.T) {
	ok := roundTripperFunc(func(*http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: http.StatusOK, Body: http.NoBody, Header: http.Header{}}, nil
	})
	for _, tc := range []struct {
		url      string
		insecure bool
		refused  bool
	}{
		{url: "http://harbor.example.com/v2/", refused: true},
		{url: "http://10.0.0.5:5000/v2/", refused: true},
		{url: "http://harbor.example.com/v2/", insecure: true},
		{url: "https://harbor.example.com/v2/"},
		{url: "http://127.0.0.1:5000/v2/"},
		{url: "http://localhost:5000/v2/"},
		{url: "http://[::1]:5000/v2/"},
	} {
		o := newObserver(ok, tc.insecure, io.Discard)
		req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
		resp, err := o.RoundTrip(req)
		if resp != nil {
			_ = resp.Body.Close()
		}
		if refused := err != nil; refused != tc.refused {
			t.Errorf("%s (insecure %v): refused %v (%v), want %v", tc.url, tc.insecure, refused, err, tc.refused)
		}
		if err != nil && !strings.Contains(err.Error(), "--insecure-registry") {
			t.Errorf("%s: error %q does not say how to allow it", tc.url, err)
		}
	}
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestValidateTags(t *testing.T) {
	for _, tc := range []struct {
		tag string
		ok  bool
	}{
		{tag: strings.Repeat("a", 40), ok: true},
		{tag: "v1.2.3", ok: true},
		{tag: "release_2024-01", ok: true},
		{tag: "latest"},
		{tag: "feat/x"},
		{tag: ".hidden"},
		{tag: strings.Repeat("a", 129)},
		{tag: ""},
	} {
		if err := ValidateTags([]string{tc.tag}); (err == nil) != tc.ok {
			t.Errorf("ValidateTags(%q) = %v, want ok %v", tc.tag, err, tc.ok)
		}
	}
}

// TestDockerConfigInMemory: a config.json given in memory pushes with its credentials; one that
// names a credential helper (a program the manager would run because a Secret says so) or is
// not JSON is refused without quoting it.
func TestDockerConfigInMemory(t *testing.T) {
	f := newFixture(t, registry.SeedOptions{})
	c, err := NewClient(ClientOptions{DockerConfig: registry.DockerConfigJSON(f.proxy.Host, robot, secret), DockerConfigDir: t.TempDir(), Backoff: &fastBackoff})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.build(t, c, appDir(t), f.stack, f.runtime, Spec{}); err != nil {
		t.Fatalf("push with the config in memory: %v", err)
	}
	for name, cfg := range map[string]string{
		"credsStore":  `{"credsStore": "evil", "auths": {}}`,
		"credHelpers": `{"credHelpers": {"` + f.proxy.Host + `": "evil"}}`,
		"not JSON":    `{"auths": ` + secret,
	} {
		_, err := NewClient(ClientOptions{DockerConfig: []byte(cfg)})
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "evil") {
			t.Errorf("%s: the error quotes the config: %v", name, err)
		}
	}
}
