package local_test

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/testutil"
)

// pull reads an image from the test registry with the robot's credentials.
func pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: robot, Password: registryPassword}), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatalf("failed to pull %s: %v", ref, err)
	}
	return img
}

// tagDigest is the digest a tag of the Project's repository points at.
func tagDigest(t *testing.T, repo, tag string) string {
	t.Helper()
	ref, err := name.ParseReference(repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(ref, remote.WithAuth(&authn.Basic{Username: robot, Password: registryPassword}))
	if err != nil {
		t.Fatalf("tag %s of %s: %v", tag, repo, err)
	}
	return desc.Digest.String()
}

// layerFiles lists the entries of an image's last layer (the application layer) with their modes.
func layerFiles(t *testing.T, img v1.Image) map[string]os.FileMode {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatalf("layers: %v", err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	files := map[string]os.FileMode{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h.FileInfo().Mode()
	}
}

func digestOf(ref string) string {
	_, d, _ := strings.Cut(ref, "@")
	return d
}

// TestExamples builds the repository's example apps (when this machine has their tools) with the
// local executor: the Build is Ready with an image in the registry that has the pipeline file's
// config, the layers of the catalog's stack and runtime, and an application layer holding what
// the steps made.
func TestExamples(t *testing.T) {
	cases := []struct {
		example, tool, runtime string
		ref, tag               string
		steps                  string
		entrypoint             []string
		env                    []string
		port                   string
		files                  []string
		absent                 []string
		logLines               []string
		replicas               int32
	}{
		{
			example: "go-hello", tool: "go", runtime: "go-static", ref: "refs/heads/main",
			steps:      "clone=Succeeded(0),test=Succeeded(0),compile=Succeeded(0),assemble=Succeeded(0)",
			entrypoint: []string{"/app/bin/go-hello"}, env: []string{"PORT=8080", "GREETING=Ferry"}, port: "8080/tcp",
			files: []string{"app/bin/go-hello"}, absent: []string{"app/main.go"},
			logLines: []string{"==> test (/bin/sh in the checkout)", "ok  \texample.com/go-hello", "==> compile", "the builder image golang:1.26 is not used"}, replicas: 2,
		},
		{
			example: "python-web", tool: "python3", runtime: "python-3.11", ref: "refs/tags/v1.0.0", tag: "v1.0.0",
			steps:      "clone=Succeeded(0),test=Succeeded(0),assemble=Succeeded(0)",
			entrypoint: []string{"python3", "/app/app.py"}, env: []string{"PORT=8000"}, port: "8000/tcp",
			files: []string{"app/app.py", "app/static/index.html"}, absent: []string{"app/tests/test_app.py"},
			logLines: []string{"==> test (/bin/sh in the checkout)", "OK"}, replicas: 1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.example, func(t *testing.T) {
			if _, err := exec.LookPath(tc.tool); err != nil {
				t.Skipf("%s is not installed: the example's steps cannot run on this machine", tc.tool)
			}
			e := newEnv(t)
			sha := e.commit(gitserver.Commit{Dir: filepath.Join("..", "..", "..", "examples", tc.example)})
			if tc.tag != "" {
				if err := e.git.Tag(e.repo, tc.tag, sha, "release"); err != nil {
					t.Fatal(err)
				}
			}
			e.startManager(2)
			e.createBuild("app", sha, tc.ref)
			b := e.waitReady("app", metav1.ConditionTrue, ferryv1.SucceededReason)

			for typ, want := range map[string]string{
				ferryv1.SourceResolvedCondition:    "True/Succeeded",
				ferryv1.PipelineSucceededCondition: "True/Succeeded",
				ferryv1.ImagePushedCondition:       "True/Succeeded",
			} {
				if got := condition(b, typ); got != want {
					t.Errorf("%s = %s, want %s", typ, got, want)
				}
			}
			if got := steps(b); got != tc.steps {
				t.Errorf("steps = %s", got)
			}
			for _, s := range b.Status.Steps {
				if s.StartTime == nil || s.CompletionTime == nil || s.CompletionTime.Before(s.StartTime) {
					t.Errorf("step %s times %v–%v", s.Name, s.StartTime, s.CompletionTime)
				}
			}
			if b.Status.Executor != "local" || b.Status.PipelineRunRef != nil || b.Status.StartTime == nil || b.Status.CompletionTime == nil {
				t.Errorf("status = %+v", b.Status)
			}
			if b.Status.Deploy == nil || b.Status.Deploy.Replicas == nil || *b.Status.Deploy.Replicas != tc.replicas {
				t.Errorf("deploy = %+v", b.Status.Deploy)
			}

			// The image: repository@digest of the Project's repository, tagged with the commit
			// (and the git tag), made of the catalog's stack and runtime.
			repo := e.project.Spec.Image.Repository
			if !strings.HasPrefix(b.Status.Image, repo+"@sha256:") {
				t.Fatalf("image = %q", b.Status.Image)
			}
			wantTags := []string{sha}
			if tc.tag != "" {
				wantTags = append(wantTags, tc.tag)
			}
			if !slices.Equal(b.Status.Tags, wantTags) {
				t.Errorf("tags = %v, want %v", b.Status.Tags, wantTags)
			}
			for _, tag := range wantTags {
				if d := tagDigest(t, repo, tag); d != digestOf(b.Status.Image) {
					t.Errorf("tag %s is %s, the Build recorded %s", tag, d, b.Status.Image)
				}
			}
			runtime := map[string]string{"go-static": shared.goRT, "python-3.11": shared.pythonR}[tc.runtime]
			l := b.Status.Lineage
			if l == nil || l.Stack == nil || l.Runtime == nil || l.Stack.Name != "debian-12" || l.Stack.Digest != digestOf(shared.stack) ||
				l.Runtime.Name != tc.runtime || l.Runtime.Digest != digestOf(runtime) {
				t.Fatalf("lineage = %+v, want stack %s and runtime %s", l, shared.stack, runtime)
			}
			img := pull(t, b.Status.Image)
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Config.Entrypoint, tc.entrypoint) || cfg.Config.WorkingDir != "/app" {
				t.Errorf("entrypoint %q workdir %q", cfg.Config.Entrypoint, cfg.Config.WorkingDir)
			}
			for _, kv := range tc.env {
				if !slices.Contains(cfg.Config.Env, kv) {
					t.Errorf("env %q lacks %s", cfg.Config.Env, kv)
				}
			}
			if _, ok := cfg.Config.ExposedPorts[tc.port]; !ok {
				t.Errorf("exposed ports %v lack %s", cfg.Config.ExposedPorts, tc.port)
			}
			if cfg.Config.Labels[image.LabelRevision] != sha || cfg.Config.Labels[image.LabelSource] != e.project.Spec.Repository.CloneURL {
				t.Errorf("labels = %v", cfg.Config.Labels)
			}
			if recorded, ok := image.LineageFromLabels(cfg.Config.Labels); !ok || !reflect.DeepEqual(recorded, *l) {
				t.Errorf("the image's lineage %+v differs from the Build's %+v", recorded, *l)
			}
			layers, _ := img.Layers()
			rtLayers, _ := pull(t, runtime).Layers()
			if len(layers) != len(rtLayers)+1 {
				t.Errorf("%d layers on a runtime of %d", len(layers), len(rtLayers))
			}
			for i := range rtLayers {
				a, _ := layers[i].Digest()
				r, _ := rtLayers[i].Digest()
				if a != r {
					t.Errorf("layer %d is %s, the runtime's is %s", i, a, r)
				}
			}
			if app, _ := layers[len(layers)-1].Digest(); app.String() != l.AppLayer {
				t.Errorf("application layer %s, lineage says %s", app, l.AppLayer)
			}
			files := layerFiles(t, img)
			for _, f := range tc.files {
				if _, ok := files[f]; !ok {
					t.Errorf("application layer lacks %s: %v", f, files)
				}
			}
			for _, f := range tc.absent {
				if _, ok := files[f]; ok {
					t.Errorf("application layer holds %s, which is not an artifact", f)
				}
			}
			if mode, ok := files["app/bin/go-hello"]; ok && mode&0o111 == 0 {
				t.Errorf("the compiled binary is not executable: %v", mode)
			}

			log := readLog(t, b)
			for _, line := range append(tc.logLines, "==> clone (ferry git-clone, in-process)", "Checked out "+sha, "==> assemble (ferry assemble, in-process)", "Pushed ", "Build succeeded") {
				if !strings.Contains(log, line) {
					t.Errorf("log lacks %q:\n%s", line, log)
				}
			}
			// Isolated, the steps used the host's Go caches through copy-on-write views.
			if isolated(t, b) && strings.Contains(log, "starts empty") {
				t.Errorf("a step cache was not mounted:\n%s", log)
			}
			e.assertNoLeak("app")
			e.assertNoWorkspace()
		})
	}
}

// shellApp is a pipeline file whose steps need nothing but /bin/sh.
func shellApp(steps string) string {
	return "stack: debian-12\nbuild:\n  image: alpine:3.20\n  steps:\n" + steps + "artifacts: [\"app.txt\"]\nentrypoint: [\"/bin/true\"]\n"
}

// TestFailingStep: a step that fails ends the Build with PipelineFailed naming the step and its
// exit code; the later steps are skipped; the log has the step's output, with a secret that a step
// printed redacted. A push the registry refuses fails the assemble step without leaking the
// credentials.
func TestFailingStep(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "hello\n", ".ferry.yaml": shellApp(`    - name: prepare
      run: echo "preparing; logging in with ` + registryPassword + `"
    - name: test
      run: |
        echo "running the tests"
        echo "expected 42, got 41" >&2
        exit 3
    - name: package
      run: touch packaged
`)}})
	other := e.project.DeepCopy()
	other.ObjectMeta = metav1.ObjectMeta{Namespace: e.ns, Name: "other"}
	other.Spec.Image.Repository = shared.reg.Host + "/other/app"
	if err := e.c.Create(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	okSHA := e.commit(gitserver.Commit{Files: map[string]string{".ferry.yaml": shellApp("    - {name: test, run: 'true'}\n")}})
	e.startManager(2)

	e.createBuild("failing", sha, "refs/heads/main")
	b := e.waitReady("failing", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	if got := steps(b); got != "clone=Succeeded(0),prepare=Succeeded(0),test=Failed(3),package=Skipped,assemble=Skipped" {
		t.Errorf("steps = %s", got)
	}
	msg := conditionMessage(b, ferryv1.ReadyCondition)
	if !strings.Contains(msg, "step test failed (exit code 3)") || condition(b, ferryv1.PipelineSucceededCondition) != "False/PipelineFailed" {
		t.Errorf("Ready message %q, PipelineSucceeded %s", msg, condition(b, ferryv1.PipelineSucceededCondition))
	}
	if b.Status.Image != "" || condition(b, ferryv1.ImagePushedCondition) == "True/Succeeded" || b.Status.CompletionTime == nil {
		t.Errorf("status = %+v", b.Status)
	}
	log := readLog(t, b)
	for _, line := range []string{"running the tests", "expected 42, got 41", "--- test failed", "preparing; logging in with [redacted]", "Build failed: step test failed (exit code 3)"} {
		if !strings.Contains(log, line) {
			t.Errorf("log lacks %q:\n%s", line, log)
		}
	}
	if strings.Contains(log, "==> package") {
		t.Error("a step after the failed one ran")
	}

	// The robot may push to team/, not to other/.
	b = &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "denied"},
		Spec:       ferryv1.BuildSpec{Project: "other", Revision: okSHA, Ref: "refs/heads/main"},
	}
	if err := e.c.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	b = e.waitReady("denied", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	if got, msg := steps(b), conditionMessage(b, ferryv1.ReadyCondition); got != "clone=Succeeded(0),test=Succeeded(0),assemble=Failed(1)" || !strings.Contains(msg, "step assemble failed") {
		t.Errorf("steps = %s, message %q", got, msg)
	}
	e.assertNoLeak("failing")
	e.assertNoLeak("denied")
	e.assertNoWorkspace()
}

// blockingApp is a pipeline file whose step "block" counts its runs in dir/runs, writes the file
// dir/<the Build's UID>, starts a child and waits until dir/release exists (or dir is gone: a
// failed test leaves nothing running). dir must be shared with the steps (env.sharedDir); the
// Builds' users may differ, so the files there are everybody's.
func blockingApp(dir string) string {
	return shellApp(fmt.Sprintf(`    - name: block
      run: |
        umask 0
        echo run >> %[1]s/runs
        sleep 300 &
        echo $$ > %[1]s/$FERRY_LOCAL_RUN
        echo "block is waiting"
        while [ -d %[1]s ] && [ ! -e %[1]s/release ]; do sleep 0.1; done
        kill $!
`, dir))
}

// waitBlocked waits until the Build's step block runs and has started its child.
func (e *env) waitBlocked(name, dir string) []int {
	e.t.Helper()
	e.waitStep(name, "block", "Running")
	return e.waitPIDs(name, dir)
}

// waitPIDs waits until the Build's step block has started its child, and returns the host's IDs
// of the step's shell and of that child.
func (e *env) waitPIDs(name, _ string) []int {
	e.t.Helper()
	var pids []int
	marker := "\nFERRY_LOCAL_RUN=" + string(e.build(name).UID) + "\n"
	testutil.Eventually(e.t, "the processes of "+name, func() (bool, error) {
		pids = hostProcesses(func(cmdline, environ string) bool {
			return strings.Contains("\n"+environ, marker) && (cmdline == "sleep 300" || strings.HasSuffix(cmdline, "-block.sh"))
		})
		return len(pids) == 2, fmt.Errorf("pids %v", pids)
	})
	return pids
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	testutil.Eventually(t, fmt.Sprintf("processes %v to end", pids), func() (bool, error) {
		for _, pid := range pids {
			if !processGone(pid) {
				return false, fmt.Errorf("process %d still runs", pid)
			}
		}
		return true, nil
	})
}

func countRuns(t *testing.T, dir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "runs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return strings.Count(string(data), "run\n")
}

// TestCancel: cancelling a Build stops its running step's processes at once and ends it
// Cancelled; deleting a running Build stops its processes and removes its log.
func TestCancel(t *testing.T) {
	e := newEnv(t)
	dir := e.sharedDir()
	sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
	e.startManager(2)

	e.createBuild("cancelled", sha, "refs/heads/main")
	e.createBuild("deleted", sha, "refs/heads/main")
	pids := e.waitBlocked("cancelled", dir)
	for _, pid := range pids {
		if processGone(pid) {
			t.Fatalf("process %d is not running", pid)
		}
	}
	// The log streams while the step runs.
	testutil.Eventually(t, "the running step's output in the log", func() (bool, error) {
		b := e.build("cancelled")
		log := readLog(t, b)
		return strings.Contains(log, "block is waiting") && stepState(b, "block") == "Running", fmt.Errorf("step %s, log:\n%s", stepState(b, "block"), log)
	})
	requested := time.Now()
	e.cancelBuild("cancelled", "cancelled by alice")
	b := e.waitReady("cancelled", metav1.ConditionFalse, ferryv1.CancelledReason)
	if took := time.Since(requested); took > 15*time.Second {
		t.Errorf("cancelling took %s", took)
	}
	waitGone(t, pids)
	if got := steps(b); got != "clone=Succeeded(0),block=Failed(143),assemble=Skipped" {
		t.Errorf("steps = %s", got)
	}
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "cancelled by alice") || condition(b, ferryv1.PipelineSucceededCondition) != "False/Cancelled" {
		t.Errorf("Ready message %q, PipelineSucceeded %s", msg, condition(b, ferryv1.PipelineSucceededCondition))
	}
	if log := readLog(t, b); !strings.Contains(log, "block is waiting") || !strings.Contains(log, "Build cancelled: cancelled while step block ran") {
		t.Errorf("log:\n%s", log)
	}

	pids = e.waitBlocked("deleted", dir)
	logFile := logPath(t, e.build("deleted"))
	if err := e.c.Delete(context.Background(), e.build("deleted")); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pids)
	testutil.Eventually(t, "the deleted Build's files to go", func() (bool, error) {
		matches, _ := filepath.Glob(filepath.Join(e.logDir, e.ns, "deleted-*"))
		return len(matches) == 0, fmt.Errorf("files %v", matches)
	})
	if _, err := os.Stat(logFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("log of the deleted Build: %v", err)
	}
	if n := countRuns(t, dir); n != 2 {
		t.Errorf("the step ran %d times for two Builds", n)
	}
	e.assertNoWorkspace()
	e.assertNoLeak("cancelled")
}

// TestQueue: with room for one Build, the others wait Queued (steps Waiting, no start time) and
// start when it finishes; a queued Build that is cancelled never runs.
func TestQueue(t *testing.T) {
	e := newEnv(t)
	dir := e.sharedDir()
	sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
	e.startManager(1)

	e.createBuild("first", sha, "refs/heads/main")
	e.waitBlocked("first", dir)
	e.createBuild("second", sha, "refs/heads/main")
	e.createBuild("third", sha, "refs/heads/main")
	for _, name := range []string{"second", "third"} {
		b := e.waitReady(name, metav1.ConditionUnknown, ferryv1.QueuedReason)
		if got := steps(b); got != "clone=Waiting,block=Waiting,assemble=Waiting" || b.Status.StartTime != nil {
			t.Errorf("%s: steps %s, start %v", name, got, b.Status.StartTime)
		}
		if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "is queued: waiting for a free slot (this machine runs at most 1 at once)") ||
			condition(b, ferryv1.PipelineSucceededCondition) != "Unknown/Queued" {
			t.Errorf("%s: Ready message %q, PipelineSucceeded %s", name, msg, condition(b, ferryv1.PipelineSucceededCondition))
		}
	}
	e.cancelBuild("third", "not needed")
	b := e.waitReady("third", metav1.ConditionFalse, ferryv1.CancelledReason)
	if got := steps(b); got != "clone=Skipped,block=Skipped,assemble=Skipped" {
		t.Errorf("third: steps %s", got)
	}
	if log := readLog(t, b); !strings.Contains(log, "cancelled while it waited in the queue") {
		t.Errorf("third's log:\n%s", log)
	}
	if n := countRuns(t, dir); n != 1 {
		t.Errorf("%d Builds ran with room for one", n)
	}

	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	first := e.waitReady("first", metav1.ConditionTrue, ferryv1.SucceededReason)
	second := e.waitReady("second", metav1.ConditionTrue, ferryv1.SucceededReason)
	if n := countRuns(t, dir); n != 2 {
		t.Errorf("the step ran %d times for two Builds", n)
	}
	firstDone := first.Status.Steps[len(first.Status.Steps)-1].CompletionTime
	if second.Status.StartTime == nil || second.Status.StartTime.Before(firstDone) {
		t.Errorf("second started at %v, before first finished at %v", second.Status.StartTime, firstDone)
	}
	if _, err := os.Stat(filepath.Join(dir, string(b.UID))); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cancelled queued Build ran: %v", err)
	}
	e.assertNoWorkspace()
}

// TestTimeouts: the Project's buildTimeout ends a Build that runs too long (PipelineTimeout), and
// a step's own timeout fails the step; both kill the step's processes.
func TestTimeouts(t *testing.T) {
	e := newEnv(t, func(p *ferryv1.Project) { p.Spec.BuildTimeout = &metav1.Duration{Duration: 4 * time.Second} })
	dir := e.sharedDir()
	slow := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
	stepTimeout := e.commit(gitserver.Commit{Files: map[string]string{".ferry.yaml": shellApp(`    - name: slow
      timeout: 1s
      run: sleep 300
`)}})
	e.startManager(2)

	e.createBuild("build-timeout", slow, "refs/heads/main")
	e.createBuild("step-timeout", stepTimeout, "refs/heads/main")
	pids := e.waitPIDs("build-timeout", dir)
	b := e.waitReady("build-timeout", metav1.ConditionFalse, ferryv1.PipelineTimeoutReason)
	waitGone(t, pids)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "timed out: the Build did not finish within 4s while step block ran") {
		t.Errorf("message %q", msg)
	}
	if got := steps(b); got != "clone=Succeeded(0),block=Failed(143),assemble=Skipped" {
		t.Errorf("steps = %s", got)
	}
	b = e.waitReady("step-timeout", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "step slow failed (exit code 143): timed out after 1s") {
		t.Errorf("message %q", msg)
	}
	e.assertNoWorkspace()
}

// TestRestart: a Build that was running when its manager stopped, gracefully or by a crash, is
// not run again by the next manager: it fails as interrupted, what it started is killed and its
// workspace removed.
func TestRestart(t *testing.T) {
	t.Run("graceful", func(t *testing.T) {
		e := newEnv(t)
		dir := e.sharedDir()
		sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
		stop := e.startStoppableManager(1)
		e.createBuild("app", sha, "refs/heads/main")
		pids := e.waitBlocked("app", dir)
		stop()
		waitGone(t, pids)
		e.assertNoWorkspace()

		e.startManager(1)
		b := e.waitReady("app", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
		assertInterrupted(t, e, b, dir)
	})
	t.Run("another log directory", func(t *testing.T) {
		e := newEnv(t)
		dir := e.sharedDir()
		sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
		stop := e.startStoppableManager(1)
		e.createBuild("app", sha, "refs/heads/main")
		e.waitBlocked("app", dir)
		stop()
		// The next manager does not find the run's record: the Build still does not run again.
		e.logDir = t.TempDir()
		e.startManager(1)
		b := e.waitReady("app", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
		if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "record in "+e.logDir+" is gone") || !strings.Contains(msg, "not run again") {
			t.Errorf("message %q", msg)
		}
		if n := countRuns(t, dir); n != 1 {
			t.Errorf("the Build ran %d times", n)
		}
	})
	t.Run("crash", func(t *testing.T) {
		e := newEnv(t)
		dir := e.sharedDir()
		sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": blockingApp(dir)}})
		kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		if err := testutil.CurrentHub(t).UserKubeconfig(kubeconfig, "ferry-crash-test", "system:masters"); err != nil {
			t.Fatal(err)
		}
		var output strings.Builder
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), childKubeconfigEnv+"="+kubeconfig, childLogDirEnv+"="+e.logDir, childMountsEnv+"="+strings.Join(e.mounts, ","))
		child.Stdout, child.Stderr = &output, &output
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
		e.createBuild("app", sha, "refs/heads/main")
		pids := e.waitBlocked("app", dir)
		if err := child.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = child.Wait()
		// The crash left the step running, orphaned.
		for _, pid := range pids {
			if processGone(pid) {
				t.Fatalf("process %d ended with the manager; the test needs it orphaned (manager output: %s)", pid, output.String())
			}
		}

		e.startManager(1)
		b := e.waitReady("app", metav1.ConditionFalse, ferryv1.PipelineFailedReason)
		waitGone(t, pids)
		assertInterrupted(t, e, b, dir)
	})
}

func assertInterrupted(t *testing.T, e *env, b *ferryv1.Build, dir string) {
	t.Helper()
	if msg := conditionMessage(b, ferryv1.ReadyCondition); !strings.Contains(msg, "interrupted: the manager stopped while the Build ran on this machine") {
		t.Errorf("message %q", msg)
	}
	if got := steps(b); got != "clone=Succeeded(0),block=Failed,assemble=Skipped" && got != "clone=Succeeded(0),block=Failed(143),assemble=Skipped" {
		t.Errorf("steps = %s", got)
	}
	if log := readLog(t, b); !strings.Contains(log, "Interrupted: the manager stopped") && !strings.Contains(log, "Build failed: interrupted") {
		t.Errorf("log:\n%s", log)
	}
	e.assertNoWorkspace()
	if n := countRuns(t, dir); n != 1 {
		t.Errorf("the Build ran %d times", n)
	}
	if b := e.build(b.Name); condition(b, ferryv1.ReadyCondition) != "False/PipelineFailed" || b.Status.Image != "" {
		t.Errorf("Build after a restart: %s, image %q", condition(b, ferryv1.ReadyCondition), b.Status.Image)
	}
}
