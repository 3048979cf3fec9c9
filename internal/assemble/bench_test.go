package assemble

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/registry"
)

// BenchmarkAssembleVersusCraneAppend pushes the same application directory onto the same runtime
// with `ferry assemble` and with `crane append` (go-containerregistry's own tool, built from the
// module Ferry already requires), side by side, through a recording proxy in front of a
// distribution registry with Harbor-style token auth, storing on disk. Each round pushes into fresh repositories,
// so the application layer has to travel and the runtime's layers are mounted from their sibling
// repository. crane gets the application layer as a ready-made tar (crane cannot read a
// directory); ferry walks the directory itself. Figures are medians over the rounds. Goals:
// time_ratio_to_crane ≤ 1 (both as processes; inprocess_ratio_to_crane is the local executor's
// way), and ferry_bytes_over_minimum = 0 (only the app layer, the config and the manifest travel).
func BenchmarkAssembleVersusCraneAppend(b *testing.B) {
	root := moduleRoot(b)
	bin := filepath.Join(root, ".cache", "bench")
	crane := buildTool(b, root, filepath.Join(bin, "crane"), "github.com/google/go-containerregistry/cmd/crane")
	ferry := buildTool(b, root, filepath.Join(bin, "ferry"), "./cmd/ferry")

	// On disk, as Harbor keeps blobs: distribution's in-memory driver copies a blob on every write.
	reg, err := registry.StartDistribution(registry.DistributionOptions{Users: map[string]string{robot: secret}, StorageDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = reg.Close() }()
	proxy, err := registry.StartProxy(reg.Host)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = proxy.Close() }()
	configDir := b.TempDir()
	if err := registry.WriteDockerConfig(configDir, proxy.Host, robot, secret); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	seeded, err := registry.SeedBaseImages(ctx, proxy.Host, registry.SeedOptions{
		Stack: "team-a/stack", Runtime: "team-a/runtime", Username: robot, Password: secret, StackLayers: 3, RuntimeLayers: 2,
	})
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	files, size := writeBenchApp(b, dir, seeded)
	layerTar := filepath.Join(b.TempDir(), "app.tar")
	writeLayerTar(b, dir, layerTar)

	const rounds = 5
	var craneTimes, ferryTimes, inprocTimes, craneCPU, ferryCPU []time.Duration
	var craneBytes, ferryBytes, inprocBytes, minimum, craneMinimum int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rounds; r++ {
			n := fmt.Sprintf("%d-%d", i, r)
			rev := fmt.Sprintf("%040x", i*rounds+r+1)

			proxy.Reset()
			start := time.Now()
			out, cpu := runTool(b, crane, []string{"DOCKER_CONFIG=" + configDir}, "append", "--base", seeded.Runtime, "--new_layer", layerTar, "--new_tag", proxy.Ref("team-a/crane-"+n+":"+rev))
			craneTimes, craneCPU = append(craneTimes, time.Since(start)), append(craneCPU, cpu)
			craneBytes = proxy.Stats().BytesIn
			craneMinimum = minimumBytes(b, strings.TrimSpace(out))

			proxy.Reset()
			start = time.Now()
			out, cpu = runTool(b, ferry, nil, "assemble", "--dir", dir, "--image", proxy.Ref("team-a/ferry-"+n), "--revision", rev,
				"--docker-config", configDir, "--stack-image", seeded.Stack, "--runtime-image", seeded.Runtime)
			ferryTimes, ferryCPU = append(ferryTimes, time.Since(start)), append(ferryCPU, cpu)
			ferryBytes = proxy.Stats().BytesIn
			minimum = minimumBytes(b, lastLine(out))

			proxy.Reset()
			start = time.Now()
			res, err := Assemble(ctx, Options{Dir: dir, Image: proxy.Ref("team-a/inproc-" + n), Revision: rev,
				DockerConfigDir: configDir, StackImage: seeded.Stack, RuntimeImage: seeded.Runtime})
			if err != nil {
				b.Fatal(err)
			}
			inprocTimes = append(inprocTimes, time.Since(start))
			inprocBytes = proxy.Stats().BytesIn
			if res.Transfer.UploadedBytes() != inprocBytes {
				b.Fatalf("ferry counted %d bytes, the proxy %d", res.Transfer.UploadedBytes(), inprocBytes)
			}
		}
	}
	b.StopTimer()
	c, f, p := median(craneTimes), median(ferryTimes), median(inprocTimes)
	b.ReportMetric(float64(files), "app_files")
	b.ReportMetric(float64(size)/(1<<20), "app_MiB")
	b.ReportMetric(ms(c), "crane_append_ms")
	b.ReportMetric(ms(f), "ferry_assemble_ms")
	b.ReportMetric(ms(p), "ferry_inprocess_ms")
	b.ReportMetric(float64(f)/float64(c), "time_ratio_to_crane")
	b.ReportMetric(ms(median(craneCPU)), "crane_cpu_ms")
	b.ReportMetric(ms(median(ferryCPU)), "ferry_cpu_ms")
	b.ReportMetric(float64(p)/float64(c), "inprocess_ratio_to_crane")
	b.ReportMetric(float64(craneBytes), "crane_uploaded_bytes")
	b.ReportMetric(float64(ferryBytes), "ferry_uploaded_bytes")
	b.ReportMetric(float64(ferryBytes-minimum), "ferry_bytes_over_minimum")
	b.ReportMetric(float64(craneBytes-craneMinimum), "crane_bytes_over_minimum")
	b.ReportMetric(0, "ns/op")
}

// minimumBytes is what pushing an image into a repository that has its base must send at least:
// the top layer, the config and the manifest.
func minimumBytes(b *testing.B, ref string) int64 {
	b.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		b.Fatalf("%q: %v", ref, err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := img.RawManifest()
	cfg, _ := img.RawConfigFile()
	m, _ := img.Manifest()
	return m.Layers[len(m.Layers)-1].Size + int64(len(cfg)) + int64(len(raw))
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// moduleRoot finds the directory of go.mod above the test's directory.
func moduleRoot(b *testing.B) string {
	b.Helper()
	dir, err := os.Getwd()
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		if filepath.Dir(dir) == dir {
			b.Fatal("no go.mod above the test directory")
		}
		dir = filepath.Dir(dir)
	}
}

// buildTool builds a command into the git-ignored cache (go build reuses its own cache).
func buildTool(b *testing.B, root, out, pkg string) string {
	b.Helper()
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	return out
}

// runTool runs a command and returns its output and the CPU time it used.
func runTool(b *testing.B, bin string, env []string, args ...string) (string, time.Duration) {
	b.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s", filepath.Base(bin), args[0], err, stderr.String())
	}
	return string(out), cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// writeBenchApp writes a deterministic application of about 24 MiB: source-like text files that
// compress well, binary files that do not, and many small files, plus its pipeline file.
func writeBenchApp(b *testing.B, dir string, seeded *registry.Seeded) (files int, size int64) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	words := strings.Fields("def class import return self value result request response handler config " +
		"context error string number list dict for in if else while try except with as yield lambda None True False")
	write := func(p string, data []byte) {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(full, data, 0o644); err != nil {
			b.Fatal(err)
		}
		files++
		size += int64(len(data))
	}
	for i := range 600 {
		var sb strings.Builder
		for sb.Len() < 16<<10 {
			sb.WriteString(words[rng.IntN(len(words))])
			if rng.IntN(12) == 0 {
				sb.WriteString("\n    ")
			} else {
				sb.WriteByte(' ')
			}
		}
		write(fmt.Sprintf("app/pkg%02d/module%03d.py", i%20, i), []byte(sb.String()))
	}
	for i := range 120 {
		data := make([]byte, 120<<10)
		for j := range data {
			data[j] = byte(rng.Uint32())
		}
		write(fmt.Sprintf("assets/blob%03d.bin", i), data)
	}
	for i := range 1500 {
		write(fmt.Sprintf("static/icons/%02d/icon%04d.svg", i%30, i), []byte(fmt.Sprintf("<svg id=%q/>", fmt.Sprint(rng.Uint64()))))
	}
	write(".ferry.yaml", []byte("stack: "+seeded.Stack+"\nruntime: "+seeded.Runtime+"\nentrypoint: [python, app/main.py]\n"))
	return files, size
}

// writeLayerTar writes the uncompressed application layer ferry makes of dir: crane gets the very
// same content.
func writeLayerTar(b *testing.B, dir, out string) {
	b.Helper()
	l, err := image.BuildLayer(context.Background(), image.LayerOptions{Dir: dir, Workdir: "/app"})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	rc, err := l.Uncompressed()
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	f, err := os.Create(out)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}
