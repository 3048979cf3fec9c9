package supplychain

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/registry"
)

// BenchmarkSupplyChainGoHello measures what the supply chain adds to a go-hello image on a seeded
// stack and runtime, through a recording proxy in front of a distribution registry on disk: the
// push of the image itself (the end of a build), then the SBOM (the bases' SBOMs linked, the app
// layer with the go-hello binary catalogued), the signed provenance and the signature, and the
// gate's check of a Release (signature, provenance, SBOM). publish_ratio_to_push compares it with
// the push alone (to a registry on this machine, so the push is fast); the goal is publish_ms under
// 10 % of a whole go-hello build: publish_pct_of_build compares it with go_hello_build_ms, the
// pipeline's go test and go build steps plus the push (without the clone and the pod, so a lower
// bound of a build, and the percentage an upper bound).
func BenchmarkSupplyChainGoHello(b *testing.B) {
	root, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	bin := filepath.Join(b.TempDir(), "go-hello")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Dir = filepath.Join(root, "examples", "go-hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build go-hello: %v\n%s", err, out)
	}
	hello, err := os.ReadFile(bin)
	if err != nil {
		b.Fatal(err)
	}
	reg, err := registry.StartDistribution(registry.DistributionOptions{StorageDir: b.TempDir(), Access: func(_, _ string, requested []string) []string { return requested }})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = reg.Close() }()
	proxy, err := registry.StartProxy(reg.Host)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = proxy.Close() }()
	ctx := context.Background()
	seeded, err := registry.SeedBaseImages(ctx, proxy.Host, registry.SeedOptions{Stack: "ferry/stack", Runtime: "ferry/runtime", StackLayers: 3, RuntimeLayers: 2})
	if err != nil {
		b.Fatal(err)
	}
	stack, _ := name.NewDigest(seeded.Stack)
	rt, _ := name.NewDigest(seeded.Runtime)
	// The bases carry their SBOMs, made once.
	for _, base := range []struct {
		d     name.Digest
		bases []Base
		role  string
	}{{stack, nil, RoleStack}, {rt, []Base{{RoleStack, stack}}, RoleRuntime}} {
		d, err := Describe(base.d, DescribeOptions{Bases: base.bases, Role: base.role, Tool: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Publish(base.d, PublishOptions{SBOM: d.SBOM}); err != nil {
			b.Fatal(err)
		}
	}
	runtimeImg, err := remote.Image(rt)
	if err != nil {
		b.Fatal(err)
	}
	baseLayers, err := runtimeImg.Layers()
	if err != nil {
		b.Fatal(err)
	}
	key, _, _ := GenerateKey()
	signer, _ := NewSigner(key)
	pubPEM, _ := signer.PublicKeyPEM()
	k, _ := ParsePublicKey(pubPEM)
	pol := Policy{Keys: []Key{{Name: "bench", Key: k}}, RequireSignature: true, RequireProvenance: true, RequireSBOM: true}

	const rounds = 5
	var pushes, publishes, checks, steps []time.Duration
	var pushBytes, publishBytes int64
	packages := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			// A new app layer each round: the binary plus a file that differs.
			app := tarLayer(b, map[string][]byte{"app/bin/go-hello": hello, "app/round": []byte(time.Now().String())})
			// The go-hello pipeline's test and compile steps, as the local executor runs them (the
			// host's Go caches warm, as in a build after the first).
			start := time.Now()
			for _, args := range [][]string{{"test", "-count=1", "./..."}, {"build", "-trimpath", "-o", bin, "."}} {
				c := exec.Command("go", args...)
				c.Dir = filepath.Join(root, "examples", "go-hello")
				c.Env = append(os.Environ(), "CGO_ENABLED=0")
				if out, err := c.CombinedOutput(); err != nil {
					b.Fatalf("go %v in go-hello: %v\n%s", args, err, out)
				}
			}
			steps = append(steps, time.Since(start))

			proxy.Reset()
			start = time.Now()
			img := pushImage(b, proxy.Host+"/team-a/go-hello", append(slices.Clone(baseLayers), app)...)
			pushes = append(pushes, time.Since(start))
			pushBytes = proxy.Stats().BytesIn

			proxy.Reset()
			start = time.Now()
			d, err := Describe(img, DescribeOptions{Bases: []Base{{RoleStack, stack}, {RoleRuntime, rt}}, Tool: "bench"})
			if err != nil {
				b.Fatal(err)
			}
			prov := Provenance{FerryVersion: "bench", Repository: "https://gitlab.example/team-a/go-hello", Revision: "0123456789abcdef0123456789abcdef01234567", Stack: stack.String(), Runtime: rt.String(), Build: "team-a/go-hello-1"}
			pub, err := Publish(img, PublishOptions{SBOM: d.SBOM, Provenance: &prov, Signer: signer})
			if err != nil {
				b.Fatal(err)
			}
			publishes = append(publishes, time.Since(start))
			publishBytes = proxy.Stats().BytesIn
			packages = pub.Packages

			start = time.Now()
			v, err := Check(ctx, img, pol, Expect{Repository: prov.Repository, Revision: prov.Revision})
			if err != nil || v.Refused != "" {
				b.Fatalf("Check = %+v, %v", v, err)
			}
			checks = append(checks, time.Since(start))
		}
	}
	b.StopTimer()
	med := func(ds []time.Duration) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[len(s)/2].Microseconds()) / 1000
	}
	b.ReportMetric(med(pushes), "image_push_ms")
	b.ReportMetric(med(publishes), "publish_ms")
	b.ReportMetric(med(publishes)/med(pushes), "publish_ratio_to_push")
	b.ReportMetric(float64(pushBytes), "image_uploaded_bytes")
	b.ReportMetric(float64(publishBytes), "publish_uploaded_bytes")
	b.ReportMetric(float64(packages), "sbom_packages")
	b.ReportMetric(med(checks), "gate_check_ms")
	// The whole build here is the pipeline's test and compile steps plus the image's push: the
	// clone, the pod and the layer's assembly are left out, so it is shorter than a real build and
	// the percentage is an upper bound.
	build := med(steps) + med(pushes)
	b.ReportMetric(build, "go_hello_build_ms")
	b.ReportMetric(100*med(publishes)/build, "publish_pct_of_build")
	b.ReportMetric(0, "ns/op")
}
