package local_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/testutil"
)

// Environment of the manager a test runs in a child process (see runChildManager).
const (
	childKubeconfigEnv = "FERRY_LOCAL_TEST_CHILD_KUBECONFIG"
	childLogDirEnv     = "FERRY_LOCAL_TEST_CHILD_LOG_DIR"
	childMountsEnv     = "FERRY_LOCAL_TEST_CHILD_MOUNTS"
)

// isolationEnv, set to "off", runs these tests with unisolated steps (what a machine that cannot
// isolate them does): the attacker's tests then show what isolation prevents.
const isolationEnv = "FERRY_LOCAL_TEST_ISOLATION"

func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_LOGS") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	if kubeconfig := os.Getenv(childKubeconfigEnv); kubeconfig != "" {
		var mounts []string
		if m := os.Getenv(childMountsEnv); m != "" {
			mounts = strings.Split(m, ",")
		}
		os.Exit(runChildManager(kubeconfig, os.Getenv(childLogDirEnv), mounts))
	}
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{})
	if shared.reg != nil {
		_ = shared.reg.Close()
	}
	os.Exit(code)
}

// runChildManager runs the manager with the local executor until the process is killed.
func runChildManager(kubeconfig, logDir string, mounts []string) int {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := manager.Run(ctx, cfg, managerOptions(logDir, 1, mounts)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Credentials the tests give Ferry; none may ever appear in a log, a status, an event or an error.
const (
	gitUser          = "deploy"
	gitPassword      = "git-t0ken-that-must-never-leak"
	robot            = "robot$team+ci"
	registryPassword = "registry-s3cret-that-must-never-leak"
)

// shared is the package's registry (Harbor-style token auth) with the seeded base images, and the
// catalog that names them.
var shared struct {
	once    sync.Once
	err     error
	reg     *registry.Server
	stack   string
	goRT    string
	pythonR string
}

// startRegistry starts the registry, seeds a stack with a Go and a Python runtime on it, and
// writes the platform's catalog into Ferry's namespace.
func startRegistry(t *testing.T) {
	t.Helper()
	shared.once.Do(func() {
		shared.reg, shared.err = registry.StartDistribution(registry.DistributionOptions{
			Users:  map[string]string{robot: registryPassword},
			Access: registry.ProjectAccess(map[string][]string{robot: {"team", "ferry"}}),
		})
		if shared.err != nil {
			return
		}
		ctx := context.Background()
		host := shared.reg.Host
		var goSeed, pySeed *registry.Seeded
		if goSeed, shared.err = registry.SeedBaseImages(ctx, host, registry.SeedOptions{Stack: "ferry/stacks/debian", Runtime: "ferry/runtimes/go", Username: robot, Password: registryPassword}); shared.err != nil {
			return
		}
		if pySeed, shared.err = registry.SeedBaseImages(ctx, host, registry.SeedOptions{Stack: "ferry/stacks/debian", Runtime: "ferry/runtimes/python", Username: robot, Password: registryPassword}); shared.err != nil {
			return
		}
		shared.stack, shared.goRT, shared.pythonR = goSeed.Stack, goSeed.Runtime, pySeed.Runtime
		c := testutil.CurrentHub(t).Client
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
		if err := c.Create(ctx, ns); client.IgnoreAlreadyExists(err) != nil {
			shared.err = err
			return
		}
		shared.err = c.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: catalog.ConfigMapName},
			Data: map[string]string{catalog.ConfigMapKey: fmt.Sprintf("stacks:\n  debian-12: %s\nruntimes:\n  go-static: %s\n  python-3.11: %s\n",
				shared.stack, shared.goRT, shared.pythonR)},
		})
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
}

// env is one test's namespace, private git repository, Secrets and Project.
type env struct {
	t       *testing.T
	c       client.Client
	ns      string
	git     *gitserver.Server
	repo    string
	project *ferryv1.Project
	logDir  string
	// mounts are the directories the test shares with its steps (--local-step-mount DIR:rw).
	mounts []string
}

func newEnv(t *testing.T, mutate ...func(*ferryv1.Project)) *env {
	t.Helper()
	startRegistry(t)
	hub := testutil.CurrentHub(t)
	e := &env{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), repo: "team/app", logDir: t.TempDir()}
	var err error
	if e.git, err = gitserver.Start(gitserver.Options{Users: map[string]string{gitUser: gitPassword}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.git.Close() })
	if err := e.git.CreateRepo(e.repo, gitserver.RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, s := range []*corev1.Secret{
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "git"}, Type: corev1.SecretTypeBasicAuth,
			Data: map[string][]byte{corev1.BasicAuthUsernameKey: []byte(gitUser), corev1.BasicAuthPasswordKey: []byte(gitPassword)},
		},
		{
			ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "push"}, Type: corev1.SecretTypeDockerConfigJson,
			Data: map[string][]byte{corev1.DockerConfigJsonKey: registry.DockerConfigJSON(shared.reg.Host, robot, registryPassword)},
		},
	} {
		if err := e.c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	e.project = &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "app"},
		Spec: ferryv1.ProjectSpec{
			GitLab:     ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "team/app", WebhookSecretRef: ferryv1.LocalObjectReference{Name: "hook"}},
			Repository: ferryv1.Repository{CloneURL: e.git.RepoURL(e.repo), CredentialsSecretRef: &ferryv1.LocalObjectReference{Name: "git"}},
			Image:      ferryv1.ImageRepository{Repository: shared.reg.Host + "/team/app", PushSecretRef: &ferryv1.LocalObjectReference{Name: "push"}},
		},
	}
	for _, m := range mutate {
		m(e.project)
	}
	if err := e.c.Create(ctx, e.project); err != nil {
		t.Fatal(err)
	}
	return e
}

// managerOptions run the build controller with the local executor. The steps get the host's Go
// caches (copy-on-write when isolated), so that the Go example compiles with a warm cache and
// without a network, and the directories in mounts read-write.
func managerOptions(logDir string, parallelism int, mounts []string) manager.Options {
	stepEnv := []string{"GOTOOLCHAIN=local", "GOPROXY=off", "GOFLAGS=-buildvcs=false", "PYENV_ROOT"}
	var caches []string
	if out, err := exec.Command("go", "env", "GOCACHE", "GOMODCACHE").Output(); err == nil {
		if lines := strings.Split(strings.TrimSpace(string(out)), "\n"); len(lines) == 2 {
			caches = append(caches, "GOCACHE="+lines[0], "GOMODCACHE="+lines[1])
		}
	}
	var stepMounts []string
	for _, m := range mounts {
		stepMounts = append(stepMounts, m+":rw")
	}
	return manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"build"},
		Executor: "local", LogDir: logDir, LocalParallelism: parallelism, LocalStepEnv: stepEnv,
		LocalStepCaches: caches, LocalStepMounts: stepMounts, LocalStepIsolation: os.Getenv(isolationEnv),
		// A test machine is one person's, even a CI runner's pod; TestNewRefusesInCluster tests
		// the refusal.
		AllowLocalExecutorInCluster: true,
	}
}

func (e *env) startManager(parallelism int) {
	e.t.Helper()
	testutil.StartManager(e.t, managerOptions(e.logDir, parallelism, e.mounts))
}

// sharedDir is a directory the test shares with its steps: mounted read-write in isolated steps,
// writable by their users. Create it before the manager starts.
func (e *env) sharedDir() string {
	e.t.Helper()
	dir, err := filepath.EvalSymlinks(e.t.TempDir())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		e.t.Fatal(err)
	}
	e.mounts = append(e.mounts, dir)
	return dir
}

// isolated reports whether the steps run isolated: the executor's log header says so.
func isolated(t *testing.T, b *ferryv1.Build) bool {
	t.Helper()
	return strings.Contains(readLog(t, b), "The steps run isolated as user and group ")
}

// startStoppableManager runs the manager until the returned function is called.
func (e *env) startStoppableManager(parallelism int) func() {
	e.t.Helper()
	m, err := manager.New(testutil.CurrentHub(e.t).Config, managerOptions(e.logDir, parallelism, e.mounts))
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("manager stopped with an error: %v", err)
		}
	}
	e.t.Cleanup(stop)
	return stop
}

// commit adds a commit with the given files on main and returns its SHA.
func (e *env) commit(c gitserver.Commit) string {
	e.t.Helper()
	sha, err := e.git.Commit(e.repo, c)
	if err != nil {
		e.t.Fatal(err)
	}
	return sha
}

func (e *env) createBuild(name, sha, ref string) {
	e.t.Helper()
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec:       ferryv1.BuildSpec{Project: e.project.Name, Revision: sha, Ref: ref, Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice"}},
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) build(name string) *ferryv1.Build {
	e.t.Helper()
	b := &ferryv1.Build{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, b); err != nil {
		e.t.Fatal(err)
	}
	return b
}

// waitFor waits until the Build satisfies cond and returns it.
func (e *env) waitFor(name, what string, cond func(*ferryv1.Build) (bool, error)) *ferryv1.Build {
	e.t.Helper()
	var got *ferryv1.Build
	// Builds compile and push on two cores shared with other work: longer than testutil's default.
	testutil.EventuallyWithin(e.t, 3*time.Minute, "Build "+name+" "+what, func() (bool, error) {
		got = &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: name}, got); err != nil {
			return false, err
		}
		return cond(got)
	})
	return got
}

// waitReady waits for the Build's Ready condition to have a status and reason.
func (e *env) waitReady(name string, status metav1.ConditionStatus, reason string) *ferryv1.Build {
	e.t.Helper()
	return e.waitFor(name, fmt.Sprintf("Ready=%s/%s", status, reason), func(b *ferryv1.Build) (bool, error) {
		c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
		if c == nil {
			return false, errors.New("no Ready condition")
		}
		return c.Status == status && c.Reason == reason, fmt.Errorf("Ready=%s/%s: %s", c.Status, c.Reason, c.Message)
	})
}

// waitStep waits for a step of the Build to be in a state.
func (e *env) waitStep(name, step, state string) *ferryv1.Build {
	e.t.Helper()
	return e.waitFor(name, "step "+step+" "+state, func(b *ferryv1.Build) (bool, error) {
		return stepState(b, step) == state, fmt.Errorf("steps %s", steps(b))
	})
}

func stepState(b *ferryv1.Build, step string) string {
	for _, s := range b.Status.Steps {
		if s.Name == step {
			return s.State
		}
	}
	return ""
}

// steps lists the steps as name=state(exit code).
func steps(b *ferryv1.Build) string {
	var out []string
	for _, s := range b.Status.Steps {
		item := s.Name + "=" + s.State
		if s.ExitCode != nil {
			item += fmt.Sprintf("(%d)", *s.ExitCode)
		}
		out = append(out, item)
	}
	return strings.Join(out, ",")
}

func condition(b *ferryv1.Build, typ string) string {
	c := meta.FindStatusCondition(b.Status.Conditions, typ)
	if c == nil {
		return "<none>"
	}
	return string(c.Status) + "/" + c.Reason
}

func conditionMessage(b *ferryv1.Build, typ string) string {
	if c := meta.FindStatusCondition(b.Status.Conditions, typ); c != nil {
		return c.Message
	}
	return ""
}

// logPath is the local path of the Build's status.logURL.
func logPath(t *testing.T, b *ferryv1.Build) string {
	t.Helper()
	u, err := url.Parse(b.Status.LogURL)
	if err != nil || u.Scheme != "file" || u.Path == "" {
		t.Fatalf("logURL %q is not a file:// URL", b.Status.LogURL)
	}
	return u.Path
}

func readLog(t *testing.T, b *ferryv1.Build) string {
	t.Helper()
	data, err := os.ReadFile(logPath(t, b))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// secretValues are every form of the credentials that must not leak.
func secretValues() []string {
	cfg := registry.DockerConfigJSON("x", robot, registryPassword)
	var parsed struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	_ = json.Unmarshal(cfg, &parsed)
	return []string{gitPassword, registryPassword, parsed.Auths["x"].Auth}
}

// assertNoLeak checks the Build's status, its events, its log and the executor's files for the
// credentials.
func (e *env) assertNoLeak(name string) {
	e.t.Helper()
	b := e.build(name)
	status, _ := json.Marshal(b.Status)
	texts := map[string]string{"status": string(status)}
	list := &corev1.EventList{}
	if err := e.c.List(context.Background(), list, client.InNamespace(e.ns)); err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range list.Items {
		texts["event "+ev.Name] = ev.Reason + " " + ev.Message
	}
	_ = filepath.WalkDir(e.logDir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			data, _ := os.ReadFile(p)
			texts[p] = string(data)
		}
		return nil
	})
	for where, text := range texts {
		for _, s := range secretValues() {
			if strings.Contains(text, s) {
				e.t.Errorf("%s contains a secret: %s", where, text)
			}
		}
	}
}

// assertNoWorkspace checks that no workspace is left in the log directory.
func (e *env) assertNoWorkspace() {
	e.t.Helper()
	entries, err := os.ReadDir(filepath.Join(e.logDir, ".work"))
	if err != nil {
		e.t.Fatal(err)
	}
	if len(entries) != 0 {
		e.t.Errorf("workspaces left behind: %v", entries)
	}
}

// cancelBuild sets spec.cancelled, as `ferry cancel` does.
func (e *env) cancelBuild(name, reason string) {
	e.t.Helper()
	b := e.build(name)
	patch := client.MergeFrom(b.DeepCopy())
	b.Spec.Cancelled, b.Spec.CancelReason = true, reason
	if err := e.c.Patch(context.Background(), b, patch); err != nil {
		e.t.Fatal(err)
	}
}

// processGone reports whether the process has exited (a zombie waiting for its parent counts as
// gone: it runs nothing).
func processGone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return syscall.Kill(pid, 0) != nil
	}
	// pid (comm) state …: the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// hostProcesses are the running processes of this machine (their PIDs as this process sees them,
// whatever PID namespace they run in) whose command line and environment satisfy match: the
// command line's arguments are joined by spaces, the environment's variables by newlines.
func hostProcesses(match func(cmdline, environ string) bool) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || len(data) == 0 {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(filepath.Base(dir), &pid); err != nil || pid == os.Getpid() || processGone(pid) {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join(dir, "environ"))
		if match(strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " ")), strings.ReplaceAll(string(environ), "\x00", "\n")) {
			pids = append(pids, pid)
		}
	}
	return pids
}
