package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/build"
	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/sandbox"
)

// Step states, as in status.steps.
const (
	stepWaiting   = "Waiting"
	stepRunning   = "Running"
	stepSucceeded = "Succeeded"
	stepFailed    = "Failed"
	stepSkipped   = "Skipped"
)

// stopGrace is how long a stopped step's processes have between SIGTERM and SIGKILL.
const stopGrace = 2 * time.Second

// outputGrace is how long a finished step's output may take to drain: processes that left the
// step's process group may still hold it open.
const outputGrace = 2 * time.Second

// markerEnv is set in every step's environment to the Build's UID, so that processes a step left
// behind can be found after a crash (on Linux).
const markerEnv = "FERRY_LOCAL_RUN"

// run is one Build's run on this machine.
type run struct {
	key                types.NamespacedName
	uid                types.UID
	logPath, statePath string
	parallelism        int
	ctx                context.Context
	cancel             context.CancelCauseFunc
	mu                 sync.Mutex
	state              state
	forgotten          bool
	currentStep        string
}

func newRun(b *ferryv1.Build, p *buildplan.Plan, logPath, statePath string, parallelism int) *run {
	r := &run{
		key: types.NamespacedName{Namespace: b.Namespace, Name: b.Name}, uid: b.UID,
		logPath: logPath, statePath: statePath, parallelism: parallelism,
		state: state{
			UID: b.UID, Namespace: b.Namespace, Name: b.Name, Run: buildplan.PipelineRunName(b.Name, b.UID),
			Phase: build.PhaseQueued, Deploy: p.File.Deploy.DeepCopy(),
		},
	}
	r.state.Message = r.queuedMessage()
	for _, s := range p.Steps {
		r.state.Steps = append(r.state.Steps, ferryv1.StepStatus{Name: s.Name, State: stepWaiting})
	}
	return r
}

func (r *run) queuedMessage() string {
	return fmt.Sprintf("waiting for a free slot (this machine runs at most %d at once)", r.parallelism)
}

func (r *run) snapshot() *build.RunState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state.runState(logURL(r.logPath))
}

// setStep moves step i to a state; a finished step gets its exit code.
func (r *run) setStep(i int, to string, code *int32) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := metav1.Now()
	s := &r.state.Steps[i]
	s.State = to
	switch to {
	case stepRunning:
		s.StartTime = &now
		r.state.Message = "step " + s.Name + " is running"
	case stepSucceeded, stepFailed:
		s.CompletionTime, s.ExitCode = &now, code
		if s.StartTime == nil {
			s.StartTime = &now
		}
	}
}

// outcome is how a run ended.
type outcome struct {
	phase   build.Phase
	message string
	results map[string]string
}

// execute waits for a slot, runs the steps and records the outcome; it removes the workspace
// whatever happens.
func (e *Executor) execute(r *run, p *buildplan.Plan, logFile *os.File) {
	defer e.wg.Done()
	out := newRedactor(logFile)
	log := e.opts.Log.WithValues("build", klog.KRef(r.key.Namespace, r.key.Name))
	_, _ = fmt.Fprintf(out, "Build %s/%s: commit %s of %s (%s), run on this machine by Ferry's local executor\n",
		r.key.Namespace, r.key.Name, p.Revision, p.CloneURL, p.Ref)

	var o outcome
	var runCtx context.Context
	select {
	case e.slots <- struct{}{}:
		if r.ctx.Err() != nil {
			// Cancelled at the moment a slot became free.
			<-e.slots
			runCtx, o = r.ctx, outcome{phase: build.PhaseFailed}
			break
		}
		var cancelTimeout context.CancelFunc
		runCtx, cancelTimeout = context.WithTimeoutCause(r.ctx, p.Timeout, errTimedOut)
		o = e.runSteps(runCtx, r, p, out, log)
		cancelTimeout()
		<-e.slots
	case <-r.ctx.Done():
		runCtx = r.ctx
		o = outcome{phase: build.PhaseFailed}
	}

	r.mu.Lock()
	if o.phase != build.PhaseSucceeded {
		where := ""
		if r.currentStep != "" {
			where = " while step " + r.currentStep + " ran"
		} else if r.state.StartTime == nil {
			where = " while it waited in the queue"
		}
		switch cause := context.Cause(runCtx); {
		case errors.Is(cause, errCancelled) || errors.Is(cause, errGone):
			o.phase, o.message = build.PhaseCancelled, "cancelled"+where
		case errors.Is(cause, errTimedOut):
			o.phase, o.message = build.PhaseTimedOut, fmt.Sprintf("the Build did not finish within %s%s", p.Timeout, where)
		case errors.Is(cause, errStopping):
			o.phase, o.message = build.PhaseFailed, interruptedMessage
		}
	}
	now := metav1.Now()
	for i := range r.state.Steps {
		if r.state.Steps[i].State == stepWaiting {
			r.state.Steps[i].State = stepSkipped
		}
	}
	r.state.Phase, r.state.Message, r.state.Results, r.state.CompletionTime = o.phase, out.Redact(o.message), o.results, &now
	st := r.state.deepCopy()
	forgotten := r.forgotten
	r.mu.Unlock()

	summary := strings.ToLower(string(o.phase))
	if o.message != "" {
		summary += ": " + o.message
	}
	_, _ = fmt.Fprintf(out, "\nBuild %s\n", summary)
	_ = out.Flush()
	_ = logFile.Close()

	// The outcome is on disk before the run leaves memory, so Observe always finds it in one.
	if forgotten {
		_ = ignoreNotExist(os.Remove(r.logPath))
		_ = ignoreNotExist(os.Remove(r.statePath))
	} else if err := writeState(r.statePath, st); err != nil {
		log.Error(err, "Failed to record the end of a local run")
	}
	e.mu.Lock()
	delete(e.runs, r.uid)
	e.mu.Unlock()
	if !forgotten {
		e.changed(r, true)
	}
}

// runSteps runs the plan's steps in a new workspace until one fails.
func (e *Executor) runSteps(ctx context.Context, r *run, p *buildplan.Plan, out *redactor, log logr.Logger) outcome {
	r.mu.Lock()
	now := metav1.Now()
	r.state.Phase, r.state.StartTime, r.state.Message = build.PhaseRunning, &now, ""
	r.mu.Unlock()
	e.persist(r)

	owner := unisolatedOwner
	if e.uids != nil {
		lease, err := e.uids.take()
		if err != nil {
			return outcome{phase: build.PhaseFailed, message: err.Error()}
		}
		defer lease.release()
		owner = stepOwner{uid: lease.uid, gid: lease.uid, lease: lease}
		_, _ = fmt.Fprintf(out, "The steps run isolated as user and group %d, each in its own PID, mount and IPC namespaces: they see the host read-only, a private /proc and /tmp and this Build's workspace, and nothing they start outlives them\n", owner.uid)
	} else {
		_, _ = fmt.Fprintf(out, "The steps run unisolated as this manager's user (uid %d) because %s: they can read what the manager can, the Project's credentials included, and what leaves a step's process group may outlive it\n", os.Geteuid(), e.unisolated)
	}
	ws, err := e.newWorkspace(owner)
	if err != nil {
		return outcome{phase: build.PhaseFailed, message: fmt.Sprintf("failed to create a workspace: %v", err)}
	}
	defer func() {
		if err := removeAll(ws.root); err != nil {
			log.Error(err, "Failed to remove a local workspace", "workspace", ws.root)
		}
	}()
	secrets, err := e.readSecrets(ctx, p)
	if err != nil {
		_, _ = fmt.Fprintf(out, "%s\n", err)
		return outcome{phase: build.PhaseFailed, message: err.Error()}
	}
	out.AddSecrets(secrets.values()...)
	if p.File.Build != nil && len(p.File.Build.Steps) > 0 {
		_, _ = fmt.Fprintf(out, "The build steps run with /bin/sh on this machine: the builder image %s is not used (the local executor has no container runtime)\n", p.File.Build.Image)
	}

	for i, step := range p.Steps {
		if ctx.Err() != nil {
			return outcome{phase: build.PhaseFailed}
		}
		r.mu.Lock()
		r.currentStep = step.Name
		r.mu.Unlock()
		r.setStep(i, stepRunning, nil)
		e.persist(r)
		start := time.Now()
		_, _ = fmt.Fprintf(out, "\n==> %s %s\n", step.Name, describe(step))
		var code int32
		switch step.Kind {
		case buildplan.CloneStep:
			code, err = e.clone(ctx, p, ws, secrets.git, out)
			if err == nil {
				// The checkout is the step user's from here on.
				err = ws.owner.chownTree(ws.source)
			}
		case buildplan.UserStep:
			code, err = e.shell(ctx, r, i, step, ws, out)
		case buildplan.AssembleStep:
			code, err = e.assemble(ctx, p, ws, secrets.docker, out)
		default:
			code, err = 1, fmt.Errorf("unknown kind of step %q", step.Kind)
		}
		elapsed := time.Since(start).Round(time.Millisecond)
		if err != nil {
			_, _ = fmt.Fprintf(out, "--- %s failed after %s (exit code %d): %v\n", step.Name, elapsed, code, err)
			r.setStep(i, stepFailed, &code)
			return outcome{phase: build.PhaseFailed, message: fmt.Sprintf("step %s failed (exit code %d): %v", step.Name, code, err)}
		}
		_, _ = fmt.Fprintf(out, "--- %s succeeded after %s\n", step.Name, elapsed)
		r.setStep(i, stepSucceeded, &code)
	}
	r.mu.Lock()
	r.currentStep = ""
	r.mu.Unlock()
	results := map[string]string{}
	for _, name := range []string{buildplan.ResultImageURL, buildplan.ResultImageDigest, buildplan.ResultLineage} {
		if data, err := os.ReadFile(filepath.Join(ws.results, name)); err == nil {
			results[name] = string(data)
		}
	}
	return outcome{phase: build.PhaseSucceeded, results: results}
}

func describe(s buildplan.Step) string {
	switch s.Kind {
	case buildplan.CloneStep:
		return "(ferry git-clone, in-process)"
	case buildplan.AssembleStep:
		return "(ferry assemble, in-process)"
	}
	return "(/bin/sh in the checkout)"
}

// secrets are a run's credentials, read from the Project's Secrets.
type secrets struct {
	git    *gitsource.Credentials
	docker []byte
}

// values are the strings that must never appear in a log.
func (s secrets) values() []string {
	var v []string
	if s.git != nil {
		v = append(v, s.git.Password)
		v = append(v, strings.Split(string(s.git.SSHPrivateKey), "\n")...)
	}
	return append(v, dockerConfigSecrets(s.docker)...)
}

// readSecrets reads the clone credentials and the push config named by the plan. A missing
// Secret fails the run before any step, as it keeps a pipeline's pod from starting.
func (e *Executor) readSecrets(ctx context.Context, p *buildplan.Plan) (secrets, error) {
	var s secrets
	if p.GitCredentialsSecret != "" {
		sec, err := e.secret(ctx, p.Namespace, p.GitCredentialsSecret, "credentials")
		if err != nil {
			return s, err
		}
		if s.git, err = gitsource.CredentialsFromSecret(sec); err != nil {
			return s, err
		}
	}
	if p.PushSecret != "" {
		sec, err := e.secret(ctx, p.Namespace, p.PushSecret, "push")
		if err != nil {
			return s, err
		}
		cfg, ok := sec.Data[corev1.DockerConfigJsonKey]
		if !ok {
			return s, fmt.Errorf("the Project's push Secret %s/%s has no %s key: make it a %s Secret", p.Namespace, p.PushSecret, corev1.DockerConfigJsonKey, corev1.SecretTypeDockerConfigJson)
		}
		s.docker = cfg
	}
	return s, nil
}

func (e *Executor) secret(ctx context.Context, namespace, name, what string) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	if err := e.opts.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the Project's %s Secret %s/%s was not found", what, namespace, name)
		}
		return nil, fmt.Errorf("failed to read the Project's %s Secret %s/%s: %w", what, namespace, name, err)
	}
	return s, nil
}

// clone checks the commit out with the Project's credentials, as `ferry git-clone` does.
func (e *Executor) clone(ctx context.Context, p *buildplan.Plan, ws *workspace, creds *gitsource.Credentials, out io.Writer) (int32, error) {
	req := gitsource.Request{URL: p.CloneURL, Revision: p.Revision, Ref: p.Ref, Credentials: creds}
	if err := gitsource.Checkout(ctx, req, ws.source); err != nil {
		return 1, err
	}
	_, _ = fmt.Fprintf(out, "Checked out %s of %s\n", p.Revision, p.CloneURL)
	return 0, nil
}

// assemble builds and pushes the image in-process, as `ferry assemble` does in a PipelineRun.
// The push config never leaves the manager's memory. The artifacts are read through a root at
// the checkout that the steps left: no link (nor a checkout replaced by a link) leads out of the
// step's workspace, and only files of the step's user are taken.
func (e *Executor) assemble(ctx context.Context, p *buildplan.Plan, ws *workspace, dockerConfig []byte, out io.Writer) (int32, error) {
	if dockerConfig == nil {
		// Never the manager's own ~/.docker: without a push Secret the pushes are anonymous.
		dockerConfig = []byte("{}")
	}
	wsRoot, err := os.OpenRoot(ws.dir)
	if err != nil {
		return 1, err
	}
	defer func() { _ = wsRoot.Close() }()
	source, err := wsRoot.OpenRoot(filepath.Base(ws.source))
	if err != nil {
		return 1, fmt.Errorf("failed to open the checkout: %w", err)
	}
	defer func() { _ = source.Close() }()
	opts := assemble.Options{
		Dir: ws.source, Root: source, ArtifactOwner: ws.owner.artifactOwner(), PipelineFile: p.PipelineFile, File: p.File,
		Image: p.Image, Revision: p.Revision, SourceURL: p.CloneURL, StackImage: p.StackImage, RuntimeImage: p.RuntimeImage,
		DockerConfig: dockerConfig, Insecure: p.Insecure, ResultsDir: ws.results, Log: out,
	}
	if p.Tag != "" {
		opts.Tags = []string{p.Tag}
	}
	if _, err := e.opts.Assemble(ctx, opts); err != nil {
		return 1, err
	}
	return 0, nil
}

// shell runs a user step: the script Tekton would run, with /bin/sh in the checkout. Isolated, it
// runs in a sandbox as the Build's user; else in its own process group as the manager's user.
// The step gets PATH, HOME and TMPDIR (in the workspace), the executor's StepEnv and caches and
// its own env. When the step ends, whatever it left running is killed (isolated, the kernel does,
// before the sandbox's end is seen); when the run is cancelled or times out, the step gets SIGTERM
// and, after stopGrace, SIGKILL.
func (e *Executor) shell(ctx context.Context, r *run, i int, step buildplan.Step, ws *workspace, out io.Writer) (int32, error) {
	script := filepath.Join(ws.scripts, fmt.Sprintf("%02d-%s.sh", i, step.Name))
	if err := ws.owner.writeScript(script, []byte(buildplan.UserScript(step))); err != nil {
		return 1, err
	}
	if step.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, step.Timeout, errStepTimedOut)
		defer cancel()
	}
	env := e.stepEnv(ws, r.uid)
	var cmd *exec.Cmd
	var start func() error
	if ws.owner.isolated() {
		sc := sandbox.Command(sandbox.Spec{
			UID: ws.owner.uid, GID: ws.owner.gid, Args: []string{"/bin/sh", script}, Env: env, Dir: ws.source,
			Mounts: append([]sandbox.Mount{{Path: ws.dir, Writable: true}, {Path: ws.scripts}}, e.mounts...),
			Caches: ws.caches, Hold: []*os.File{ws.owner.lease.lock},
		})
		cmd, start = sc.Cmd, sc.Start
	} else {
		cmd = exec.Command("/bin/sh", script)
		cmd.Dir, cmd.Env, cmd.SysProcAttr = ws.source, env, newProcessGroup()
		start = cmd.Start
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 1, err
	}
	defer func() { _ = pr.Close() }()
	cmd.Stdout, cmd.Stderr = pw, pw
	err = start()
	_ = pw.Close()
	if err != nil {
		return 1, fmt.Errorf("failed to start /bin/sh: %w", err)
	}
	pid := cmd.Process.Pid
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(out, pr)
	}()
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err = <-waited:
	case <-ctx.Done():
		signalGroup(pid, sigTerm)
		select {
		case err = <-waited:
		case <-time.After(stopGrace):
			signalGroup(pid, sigKill)
			err = <-waited
		}
	}
	// What the step left running goes with it, as when a container's main process ends.
	signalGroup(pid, sigKill)
	killMarked(r.uid)
	select {
	case <-copied:
	case <-time.After(outputGrace):
		_ = pr.Close()
		<-copied
	}
	if ctx.Err() != nil {
		if errors.Is(context.Cause(ctx), errStepTimedOut) {
			return exitCode(err), fmt.Errorf("timed out after %s", step.Timeout)
		}
		return exitCode(err), context.Cause(ctx)
	}
	if err != nil {
		return exitCode(err), errors.New("the script failed")
	}
	return 0, nil
}

// errStepTimedOut ends a step that ran longer than its own timeout.
var errStepTimedOut = errors.New("step timed out")

// exitCode is a finished process's exit code, 128+n when signal n killed it (as shells and
// container runtimes report it).
func exitCode(err error) int32 {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if sig, ok := signalOf(ee); ok {
			return 128 + int32(sig) //nolint:gosec // G115: signal numbers are small
		}
		if c := ee.ExitCode(); c > 0 {
			return int32(c) //nolint:gosec // G115: exit codes are 0..255
		}
	}
	return 1
}

// stepEnv is a user step's environment.
func (e *Executor) stepEnv(ws *workspace, uid types.UID) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + ws.home, "TMPDIR=" + ws.tmp}
	for _, kv := range e.opts.StepEnv {
		if strings.Contains(kv, "=") {
			env = append(env, kv)
		} else if v, ok := os.LookupEnv(kv); ok {
			env = append(env, kv+"="+v)
		}
	}
	for _, c := range e.caches {
		if ws.owner.isolated() {
			env = append(env, c.name+"="+filepath.Join(ws.cacheDir, c.name))
		} else {
			env = append(env, c.name+"="+c.dir)
		}
	}
	return append(env, markerEnv+"="+string(uid))
}

// removeAll removes a directory tree, making read-only directories writable first (Go's module
// cache and many build tools leave some).
func removeAll(dir string) error {
	err := os.RemoveAll(dir)
	if err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700) //nolint:gosec // G302: a directory about to be removed
		}
		return nil
	})
	return os.RemoveAll(dir)
}
