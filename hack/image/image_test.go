package main

import (
	"context"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"github.com/ferryci/ferry/internal/baseimage"
)

// TestImageIsReproducibleAndLean builds Ferry's image twice from the same checkout: the same
// digest both times, a non-root entrypoint that is the ferry binary, and none of ferry dev's
// modules (the registry server, the GitLab simulator, the control plane) in that binary.
func TestImageIsReproducibleAndLean(t *testing.T) {
	if testing.Short() {
		t.Skip("builds Ferry's image twice")
	}
	if err := baseimage.Available(); err != nil {
		t.Skipf("the base images cannot be built here: %v", err)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ferry := filepath.Join(t.TempDir(), "ferry")
	if out, err := exec.Command("go", "build", "-o", ferry, "../../cmd/ferry").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	var digests []string
	var last *built
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "out")
		b, err := run(context.Background(), options{ferry: ferry, repoDir: repo, repository: "ferry/ferry", cacheDir: ".cache/baseimage", outDir: out})
		if err != nil {
			t.Fatalf("build %d: %v", i+1, err)
		}
		digests, last = append(digests, b.Digest), b
		if i == 0 {
			checkLayout(t, filepath.Join(out, "oci"), b)
		}
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same checkout gave %s and %s", digests[0], digests[1])
	}
	t.Logf("image %s: binary %d bytes, image %d bytes compressed", last.Digest, last.BinaryBytes, last.ImageBytes)

	info, err := buildinfo.ReadFile(last.Binary)
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range info.Deps {
		for _, devOnly := range []string{"github.com/distribution/distribution", "github.com/redis/go-redis", "sigs.k8s.io/controller-runtime/tools/setup-envtest"} {
			if strings.HasPrefix(dep.Path, devOnly) {
				t.Errorf("the image's binary has ferry dev's module %s", dep.Path)
			}
		}
	}
	if _, err := os.Stat(last.Binary); err != nil {
		t.Fatal(err)
	}
}

// checkLayout reads the image back from the OCI layout: its entrypoint is the ferry binary and it
// runs as nonroot.
func checkLayout(t *testing.T, dir string, b *built) {
	t.Helper()
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest(b.Ref)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	idx, err := h.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest.String() != d.DigestStr() {
		t.Fatalf("the OCI layout holds %+v, want only %s", idx.Manifests, d.DigestStr())
	}
	img, err := p.Image(idx.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.Config.Entrypoint, " "); got != "/ko-app/ferry" {
		t.Errorf("entrypoint %q, want /ko-app/ferry", got)
	}
	if cf.Config.User == "" || strings.HasPrefix(cf.Config.User, "0") || cf.Config.User == "root" {
		t.Errorf("the image runs as %q, want a non-root user", cf.Config.User)
	}
}
