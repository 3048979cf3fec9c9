package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/baseimage"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// BenchmarkFerryBinaries measures the ferry binary as `make build` makes it (with ferry dev) and as
// Ferry's image carries it (-tags ferry_nodev, stripped), and how long `ferry manager` of each takes
// from its start until /readyz answers 200 against a real API server with Ferry's CRDs, and its
// memory then.
func BenchmarkFerryBinaries(b *testing.B) {
	benchOnce.Do(func() { benchSetup, benchErr = setUpBench() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	for _, bin := range benchSetup.binaries {
		b.ReportMetric(float64(bin.size)/1e6, bin.name+"-binary-MB")
	}
	for _, bin := range benchSetup.binaries {
		var total time.Duration
		var rss float64
		for range b.N {
			d, mem := startManager(b, bin.path, benchSetup.hub.KubeconfigPath)
			total += d
			rss = mem
		}
		b.ReportMetric(total.Seconds()/float64(b.N), bin.name+"-manager-ready-s")
		b.ReportMetric(rss, bin.name+"-manager-rss-MiB")
	}
}

// BenchmarkFerryImage measures `make image`: Ferry's image built with `ferry build` on go-static
// (the base images cached), its compressed size and how long the build took.
func BenchmarkFerryImage(b *testing.B) {
	if err := baseimage.Available(); err != nil {
		b.Skipf("the base images cannot be built here: %v", err)
	}
	benchOnce.Do(func() { benchSetup, benchErr = setUpBench() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	var full string
	for _, bin := range benchSetup.binaries {
		if bin.name == "full" {
			full = bin.path
		}
	}
	var took time.Duration
	var size int64
	for range b.N {
		start := time.Now()
		built, err := run(context.Background(), options{ferry: full, repoDir: repo, repository: "ferry/ferry", cacheDir: ".cache/baseimage", outDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		took += time.Since(start)
		size = built.ImageBytes
	}
	b.ReportMetric(float64(size)/1e6, "image-compressed-MB")
	b.ReportMetric(took.Seconds()/float64(b.N), "make-image-s")
}

// BenchmarkManagerMemoryWithBuilds measures the resident memory of the image's `ferry manager`
// once it has reconciled 1,000 finished Builds of 50 Projects (goal: at most 150 MiB).
func BenchmarkManagerMemoryWithBuilds(b *testing.B) {
	benchOnce.Do(func() { benchSetup, benchErr = setUpBench() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	const projects, perProject = 50, 20 // 20: within the default history limit, so none is pruned
	buildsOnce.Do(func() {
		// Two thousand writes: without client-side throttling.
		cfg := rest.CopyConfig(benchSetup.hub.Config)
		cfg.QPS, cfg.Burst = 1000, 1000
		c, err := client.New(cfg, client.Options{Scheme: benchSetup.hub.Client.Scheme()})
		if err != nil {
			buildsErr = err
			return
		}
		buildsErr = createBuilds(b, c, projects, perProject)
	})
	if buildsErr != nil {
		b.Fatal(buildsErr)
	}
	var image benchBinary
	for _, bin := range benchSetup.binaries {
		if bin.name == "image" {
			image = bin
		}
	}
	var rss float64
	for range b.N {
		rss = managerAfterReconciles(b, image.path, benchSetup.hub.KubeconfigPath, projects*perProject)
	}
	b.ReportMetric(rss, "image-manager-rss-1000-builds-MiB")
}

var (
	buildsOnce sync.Once
	buildsErr  error
)

// createBuilds creates Projects, each with finished Builds.
func createBuilds(b *testing.B, c client.Client, projects, perProject int) error {
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench-builds"}}
	if err := c.Create(ctx, ns); err != nil {
		return err
	}
	for p := range projects {
		name := fmt.Sprintf("app-%02d", p)
		if err := c.Create(ctx, releasetest.Project(ns.Name, name)); err != nil {
			return err
		}
		for i := range perProject {
			releasetest.CreateBuild(b, c, ns.Name, fmt.Sprintf("%s-%02d", name, i), name, "refs/heads/main",
				releasetest.Image(fmt.Sprintf("%s-%d", name, i)), "alice", releasetest.Deploy(1, nil))
		}
	}
	return nil
}

// managerAfterReconciles runs `ferry manager` until its Build controller has reconciled n Builds
// and has nothing queued, and returns its resident memory then.
func managerAfterReconciles(b *testing.B, ferry, kubeconfig string, n int) float64 {
	b.Helper()
	metrics := testutil.FreeAddr(b)
	cmd := exec.Command(ferry, "manager", "--kubeconfig", kubeconfig, "--namespace", "ferry-system",
		"--metrics-bind-address", metrics, "--health-probe-bind-address", "0", "--receiver-bind-address", "0",
		"--ui-bind-address", "0", "--webhook-port", "0", "--leader-elect=false", "--executor", "tekton", "--zap-log-level", "error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var last string
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + metrics + "/metrics") //nolint:noctx // metrics of a local process
		if err != nil {
			return false, nil
		}
		defer func() { _ = resp.Body.Close() }()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		families, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			return false, nil
		}
		reconciled := buildControllerSum(families["controller_runtime_reconcile_total"])
		depth := buildControllerSum(families["workqueue_depth"])
		last = fmt.Sprintf("%.0f reconciles, %.0f queued", reconciled, depth)
		return reconciled >= float64(n) && depth == 0, nil
	}); err != nil {
		b.Fatalf("the manager did not reconcile %d Builds: %v (last: %s)", n, err, last)
	}
	return rssMiB(cmd.Process.Pid)
}

// buildControllerSum adds up the samples of a counter or gauge that belong to the Build controller.
func buildControllerSum(f *dto.MetricFamily) float64 {
	var sum float64
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" && l.GetValue() == "build" {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// benchSetup is what every run of BenchmarkFerryBinaries shares: the hub and the two binaries,
// made once; TestMain stops the hub.
var (
	benchOnce  sync.Once
	benchSetup *benchEnv
	benchErr   error
)

type benchEnv struct {
	hub      *testutil.Hub
	dir      string
	binaries []benchBinary
}

type benchBinary struct {
	name, path string
	size       int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if benchSetup != nil {
		_ = benchSetup.hub.Stop()
		_ = os.RemoveAll(benchSetup.dir)
	}
	os.Exit(code)
}

func setUpBench() (*benchEnv, error) {
	hub, err := testutil.StartHub(context.Background(), controlplane.APIServerOptions{})
	if err != nil {
		return nil, err
	}
	e := &benchEnv{hub: hub}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ferry-system"}}
	if err := hub.Client.Create(context.Background(), ns); err != nil {
		return nil, err
	}
	if e.dir, err = os.MkdirTemp("", "ferry-binaries-"); err != nil {
		return nil, err
	}
	for _, bin := range []struct {
		name  string
		flags []string
	}{
		{"full", nil},
		{"image", []string{"-tags", "ferry_nodev", "-trimpath", "-ldflags", "-s -w"}},
	} {
		path := filepath.Join(e.dir, "ferry-"+bin.name)
		args := append(append([]string{"build"}, bin.flags...), "-o", path, "../../cmd/ferry")
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		e.binaries = append(e.binaries, benchBinary{name: bin.name, path: path, size: st.Size()})
	}
	return e, nil
}

// startManager runs `ferry manager` until /readyz answers 200 and returns how long that took and
// the process's resident memory then.
func startManager(b *testing.B, ferry, kubeconfig string) (time.Duration, float64) {
	b.Helper()
	probes := testutil.FreeAddr(b)
	cmd := exec.Command(ferry, "manager", "--kubeconfig", kubeconfig, "--namespace", "ferry-system",
		"--metrics-bind-address", "0", "--health-probe-bind-address", probes, "--receiver-bind-address", "0",
		"--ui-bind-address", "0", "--webhook-port", "0", "--leader-elect=false", "--executor", "tekton", "--zap-log-level", "error")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	if err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + probes + "/readyz") //nolint:noctx // a probe of a local process
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	}); err != nil {
		b.Fatalf("%s manager was not ready: %v", ferry, err)
	}
	ready := time.Since(start)
	return ready, rssMiB(cmd.Process.Pid)
}

// rssMiB reads a process's resident memory from /proc.
func rssMiB(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kib / 1024
		}
	}
	return 0
}
