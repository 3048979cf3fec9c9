package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/supplychain"
)

const (
	testRobot  = "robot$team-a+ci"
	testSecret = "Robot-S3cret-Value"
)

// imageEnv is a Harbor-like registry with a stack and runtime (and patched ones), a Docker config
// for the robot and a catalog naming them.
type imageEnv struct {
	reg                    *registry.Server
	configDir, catalogFile string
	base, patched          *registry.Seeded
}

func newImageEnv(t *testing.T) *imageEnv {
	t.Helper()
	reg, err := registry.StartDistribution(registry.DistributionOptions{Users: map[string]string{testRobot: testSecret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	e := &imageEnv{reg: reg, configDir: t.TempDir()}
	if err := registry.WriteDockerConfig(e.configDir, reg.Host, testRobot, testSecret); err != nil {
		t.Fatal(err)
	}
	seed := func(tag, salt string) *registry.Seeded {
		s, err := registry.SeedBaseImages(context.Background(), reg.Host, registry.SeedOptions{
			Stack: "ferry/stacks/debian", Runtime: "ferry/runtimes/python", Tag: tag, Salt: salt,
			Username: testRobot, Password: testSecret,
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	e.base, e.patched = seed("12.8", ""), seed("12.9", "patched")
	e.catalogFile = filepath.Join(t.TempDir(), "catalog.yaml")
	cat := "stacks:\n  debian-12: " + e.base.Stack + "\n  debian-12-patched: " + e.patched.Stack +
		"\nruntimes:\n  python-3.12: " + e.base.Runtime + "\n  python-3.12-patched: " + e.patched.Runtime + "\n"
	if err := os.WriteFile(e.catalogFile, []byte(cat), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// run executes ferry with args and returns stdout and stderr.
func run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	err = cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// lastLine returns the last line of the output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

func (e *imageEnv) pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: testRobot, Password: testSecret}))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func appCheckout(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range map[string]string{
		".ferry.yaml":  "stack: debian-12\nruntime: python-3.12\nentrypoint: [python, main.py]\nports: [8080]\n",
		"main.py":      "print('hi')\n",
		"README.md":    "# app\n",
		"static/x.css": "body{}\n",
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestAssembleCommand(t *testing.T) {
	e := newImageEnv(t)
	dir := appCheckout(t)
	results := t.TempDir()
	rev := strings.Repeat("a", 40)
	stdout, stderr, err := run(t, "assemble", "--dir", dir, "--image", e.reg.Ref("team-a/app"), "--revision", rev,
		"--tag", "v1.0.0", "--source-url", "https://gitlab.example.com/team-a/app", "--stack-image", e.base.Stack,
		"--runtime-image", e.base.Runtime, "--docker-config", e.configDir, "--results-dir", results)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	ref := lastLine(stdout)
	if !strings.HasPrefix(ref, e.reg.Ref("team-a/app@sha256:")) {
		t.Fatalf("last line %q, want the image by digest", ref)
	}
	digest, _ := os.ReadFile(filepath.Join(results, "IMAGE_DIGEST"))
	if !strings.HasSuffix(ref, "@"+string(digest)) {
		t.Errorf("IMAGE_DIGEST %q does not match %q", digest, ref)
	}
	if !strings.Contains(stderr, "Pushing "+e.reg.Ref("team-a/app")+" (tags "+rev+", v1.0.0)") || strings.Contains(stderr, testSecret) {
		t.Errorf("stderr:\n%s", stderr)
	}
	cf, _ := e.pull(t, ref).ConfigFile()
	if cf.Config.Labels[image.LabelStackName] != "debian-12" || cf.Config.Labels[image.LabelRevision] != rev {
		t.Errorf("labels %v", cf.Config.Labels)
	}

	// Catalog names need the resolved images.
	_, _, err = run(t, "assemble", "--dir", dir, "--image", e.reg.Ref("team-a/app"), "--docker-config", e.configDir)
	if err == nil || !strings.Contains(err.Error(), `stack "debian-12" is a catalog name`) {
		t.Fatalf("without --stack-image: %v", err)
	}
}

func TestBuildAndRebaseCommands(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	e := newImageEnv(t)
	dir := appCheckout(t)
	git := func(args ...string) string {
		out, err := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q")
	git("add", ".")
	git("commit", "-qm", "app")
	git("remote", "add", "origin", "https://ci:glpat-T0ken@gitlab.example.com/team-a/app.git")
	head := git("rev-parse", "HEAD")

	_, _, err := run(t, "build", "--dir", dir, "--image", e.reg.Ref("team-a/app:dev"), "--docker-config", e.configDir)
	if err == nil || !strings.Contains(err.Error(), "pass the platform's catalog with --catalog") {
		t.Fatalf("without --catalog: %v", err)
	}
	stdout, stderr, err := run(t, "build", "--dir", dir, "--image", e.reg.Ref("team-a/app:dev"), "--catalog", e.catalogFile, "--docker-config", e.configDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	built := lastLine(stdout)
	if !strings.HasPrefix(built, e.reg.Ref("team-a/app@sha256:")) {
		t.Fatalf("last line %q", built)
	}
	if strings.Contains(stderr, "glpat-T0ken") || strings.Contains(stderr, testSecret) {
		t.Fatalf("a secret leaked to stderr:\n%s", stderr)
	}
	for _, tag := range []string{head, "dev"} {
		if d, _ := e.pull(t, e.reg.Ref("team-a/app:"+tag)).Digest(); !strings.HasSuffix(built, d.String()) {
			t.Errorf("tag %s names %s, not %s", tag, d, built)
		}
	}
	img := e.pull(t, built)
	cf, _ := img.ConfigFile()
	if cf.Config.Labels[image.LabelRevision] != head || cf.Config.Labels[image.LabelSource] != "https://gitlab.example.com/team-a/app.git" {
		t.Errorf("labels %v", cf.Config.Labels)
	}

	// Rebase onto the patched stack and runtime, named through the catalog.
	stdout, stderr, err = run(t, "rebase", built, "--stack", "debian-12-patched", "--runtime", "python-3.12-patched",
		"--catalog", e.catalogFile, "--docker-config", e.configDir)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	rebased := lastLine(stdout)
	if rebased == built || !strings.HasPrefix(rebased, e.reg.Ref("team-a/app@sha256:")) {
		t.Fatalf("rebased %q (built %q)", rebased, built)
	}
	rcf, _ := e.pull(t, rebased).ConfigFile()
	if rcf.Config.Labels[image.LabelStackName] != "debian-12-patched" || rcf.Config.Labels[image.LabelRuntimeImage] != e.patched.Runtime {
		t.Errorf("rebased labels %v", rcf.Config.Labels)
	}
	if !strings.Contains(stderr, "application layer "+cf.Config.Labels[image.LabelAppLayer]+" kept") {
		t.Errorf("stderr:\n%s", stderr)
	}
	// The rebased image has its own SBOM, which describes it and not the original.
	rd, err := name.NewDigest(rebased)
	if err != nil {
		t.Fatal(err)
	}
	sb, _, err := supplychain.FetchSBOM(rd, remote.WithAuth(&authn.Basic{Username: testRobot, Password: testSecret}))
	if err != nil {
		t.Fatalf("the rebased image's SBOM: %v\n%s", err, stderr)
	}
	if sb.Digest != rd.DigestStr() || len(sb.Layers) == 0 || sb.Layers[len(sb.Layers)-1].Digest != cf.Config.Labels[image.LabelAppLayer] || !strings.Contains(stderr, "SBOM sha256:") {
		t.Errorf("rebased SBOM = %+v\nstderr:\n%s", sb, stderr)
	}

	// The original runtime does not sit on the patched stack.
	_, _, err = run(t, "rebase", built, "--stack", "debian-12-patched", "--runtime", "python-3.12", "--catalog", e.catalogFile, "--docker-config", e.configDir)
	if err == nil || !strings.Contains(err.Error(), "refusing to rebase") || !strings.Contains(err.Error(), "does not sit on stack") {
		t.Fatalf("mismatched runtime: %v", err)
	}
}
