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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
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

// BenchmarkManagerMemoryWithBuilds starts the image's `ferry manager` (every controller) on a
// cluster holding finished Builds and 5,000 Secrets and ConfigMaps that are not Ferry's, and
// measures, once its Build controller has reconciled every Build and has nothing queued, its
// resident memory (goals: at most 150 MiB with 1,000 Builds of 50 Projects, at most 300 MiB with
// 10,000 of 100 Projects; only Ferry's objects are cached) and its reconcile rate from the start.
func BenchmarkManagerMemoryWithBuilds(b *testing.B) {
	benchOnce.Do(func() { benchSetup, benchErr = setUpBench() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	var image benchBinary
	for _, bin := range benchSetup.binaries {
		if bin.name == "image" {
			image = bin
		}
	}
	// Thousands of writes: without client-side throttling.
	cfg := rest.CopyConfig(benchSetup.hub.Config)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := client.New(cfg, client.Options{Scheme: benchSetup.hub.Client.Scheme()})
	if err != nil {
		b.Fatal(err)
	}
	if err := once("unrelated", func() error { return createUnrelated(c, "bench-unrelated", 2500) }); err != nil {
		b.Fatal(err)
	}
	// Each level adds its Builds to the ones before: 1,000 of 50 Projects, then 10,000 of 100.
	levels := []struct {
		name                 string
		projects, perProject int
	}{
		{"1000-builds", 50, 20},
		{"10000-builds", 50, 180},
	}
	total := 0
	for i, l := range levels {
		total += l.projects * l.perProject
		n := total
		ns := fmt.Sprintf("bench-builds-%d", i)
		b.Run(l.name, func(b *testing.B) {
			b.StopTimer()
			if err := once(ns, func() error { return createBuilds(c, ns, l.projects, l.perProject) }); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			var rss, rate float64
			for range b.N {
				rss, rate = managerAfterReconciles(b, image.path, benchSetup.hub.KubeconfigPath, n)
			}
			b.ReportMetric(rss, "image-manager-rss-MiB")
			b.ReportMetric(rate, "build-reconciles-per-s")
		})
	}
}

// once runs create the first time it is asked for key, and returns its error every time.
func once(key string, create func() error) error {
	createdMu.Lock()
	defer createdMu.Unlock()
	if err, ok := created[key]; ok {
		return err
	}
	err := create()
	created[key] = err
	return err
}

var (
	createdMu sync.Mutex
	created   = map[string]error{}
)

// createBuilds creates a namespace of Projects, each with finished Builds (within its history
// limit, so that none is pruned), perProject of them, from several writers at once.
func createBuilds(c client.Client, namespace string, projects, perProject int) error {
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	type job struct{ project, build string }
	jobs := make(chan job)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for j := range jobs {
				if err := createFinishedBuild(ctx, c, namespace, j.project, j.build); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for p := range projects {
		name := fmt.Sprintf("app-%03d", p)
		project := releasetest.Project(namespace, name)
		project.Spec.BuildHistoryLimit = int32(max(perProject, defaultHistoryLimit))
		if err := c.Create(ctx, project); err != nil {
			close(jobs)
			wg.Wait()
			return err
		}
		for i := range perProject {
			jobs <- job{project: name, build: fmt.Sprintf("%s-%03d", name, i)}
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// defaultHistoryLimit is the Projects' default buildHistoryLimit.
const defaultHistoryLimit = 20

// createFinishedBuild creates a Build that succeeded, as the Build controller leaves one.
func createFinishedBuild(ctx context.Context, c client.Client, namespace, project, name string) error {
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec: ferryv1.BuildSpec{
			Project: project, Revision: releasetest.Revision(name), Ref: "refs/heads/main",
			Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice"},
		},
	}
	if err := c.Create(ctx, b); err != nil {
		return fmt.Errorf("failed to create Build %s: %w", name, err)
	}
	now := metav1.Now()
	b.Status = ferryv1.BuildStatus{
		ObservedGeneration: b.Generation, Image: releasetest.Image(name), Deploy: releasetest.Deploy(1, nil),
		StartTime: &now, CompletionTime: &now,
	}
	meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "image pushed"})
	if err := c.Status().Update(ctx, b); err != nil {
		return fmt.Errorf("failed to set the status of Build %s: %w", name, err)
	}
	return nil
}

// createUnrelated creates n Secrets and n ConfigMaps of 4 KiB each that are not Ferry's: the
// manager's memory must not grow with them.
func createUnrelated(c client.Client, namespace string, n int) error {
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}
	payload := strings.Repeat("x", 4096)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Go(func() {
			for i := w; i < n; i += 16 {
				name := fmt.Sprintf("unrelated-%04d", i)
				for _, o := range []client.Object{
					&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, StringData: map[string]string{"data": payload}},
					&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: map[string]string{"data": payload}},
				} {
					if err := c.Create(ctx, o); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// managerAfterReconciles runs `ferry manager` until its Build controller has reconciled n Builds
// and has nothing queued, and returns its resident memory then and its reconciles per second
// from its start.
func managerAfterReconciles(b *testing.B, ferry, kubeconfig string, n int) (rss, perSecond float64) {
	b.Helper()
	metrics := testutil.FreeAddr(b)
	cmd := exec.Command(ferry, "manager", "--kubeconfig", kubeconfig, "--namespace", "ferry-system",
		"--metrics-bind-address", metrics, "--health-probe-bind-address", "0", "--receiver-bind-address", "0",
		"--ui-bind-address", "0", "--webhook-port", "0", "--leader-elect=false", "--executor", "tekton", "--zap-log-level", "error")
	started := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var last string
	var reconciled float64
	if err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 15*time.Minute, true, func(context.Context) (bool, error) {
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
		reconciled = buildControllerSum(families["controller_runtime_reconcile_total"])
		depth := buildControllerSum(families["workqueue_depth"])
		last = fmt.Sprintf("%.0f reconciles, %.0f queued", reconciled, depth)
		return reconciled >= float64(n) && depth == 0, nil
	}); err != nil {
		b.Fatalf("the manager did not reconcile %d Builds: %v (last: %s)", n, err, last)
	}
	return rssMiB(cmd.Process.Pid), reconciled / time.Since(started).Seconds()
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
