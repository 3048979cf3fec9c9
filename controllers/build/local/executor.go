// Package local is the Build controller's local executor, what `ferry dev` runs on a machine
// without Tekton: each Build's plan runs as processes on this machine, the way a CI runner's shell
// executor works. The commit is checked out in-process (go-git, as `ferry git-clone` does) into a
// temporary workspace, the pipeline file's steps run with /bin/sh in the checkout (there is no
// container runtime: the builder image is not used, and the log says so), and `ferry assemble`
// runs in-process. Step logs stream to one file per Build under the log directory, which the
// Build's status.logURL names; the workspace is always removed.
//
// The steps are code that anyone who may push to a repository wrote. On Linux, as root, each step
// runs isolated (internal/sandbox): as a user of its own Build (one of Options.StepUIDs), in new
// PID, mount and IPC namespaces, on a read-only view of the host with a private /proc and /tmp,
// writing only its Build's workspace, which nobody else may read. Nothing it starts outlives it;
// it cannot see the manager, its environment or its files, and the Project's credentials never
// exist where a step could read them (they stay in the manager's memory). Elsewhere, steps run as
// the manager's user, in a process group of their own, and the log says so. The executor refuses
// to run in a Kubernetes pod unless Options.AllowInCluster says this pod is one person's.
//
// A Build never runs twice. Its state file is written before anything runs, and a Build whose
// state says it was queued or running when this process did not run it (the manager stopped or
// crashed) fails as interrupted instead of starting again. One manager uses a log directory at a
// time (a lock file says so): run the local executor with one replica.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/build"
	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/sandbox"
)

// Name is the executor's name, recorded in a Build's status.executor.
const Name = "local"

// DefaultParallelism is how many Builds run at once when Options.Parallelism is 0.
const DefaultParallelism = 2

// runKind names a local run in the Build's messages ("Local run app-main-1a2b3 is running").
const runKind = "Local run"

// Files and directories inside the log directory besides the namespaces' directories (a namespace
// name never starts with a dot).
const (
	lockFile = ".lock"
	workDir  = ".work"
)

// Causes of a run's end other than its own steps.
var (
	errCancelled = errors.New("cancelled")
	errTimedOut  = errors.New("timed out")
	errStopping  = errors.New("the manager is stopping")
	errGone      = errors.New("the Build was deleted")
)

// interruptedMessage ends a Build that was queued or running when its manager stopped.
const interruptedMessage = "interrupted: the manager stopped while the Build ran on this machine; the local executor never runs a Build twice, create a new Build to run it again"

// Options configure the local executor.
type Options struct {
	// APIReader reads the Projects' Secrets: the clone credentials and the push config.
	APIReader client.Reader
	// LogDir holds each Build's log and state, LogDir/<namespace>/<build>-<uid>.log and .json, and
	// the workspaces of running Builds (LogDir/.work). Required. Keep it across restarts: the state
	// files are what keeps a restarted manager from running a Build twice.
	LogDir string
	// Parallelism is how many Builds run at once; the others wait in a queue, in the order they
	// were started. Default DefaultParallelism.
	Parallelism int
	// StepEnv is the environment of the pipeline file's steps besides PATH, HOME and TMPDIR (HOME
	// and TMPDIR are in the workspace): "NAME" passes the manager's value of NAME, "NAME=value"
	// sets one. Nothing else of the manager's environment reaches a step.
	StepEnv []string
	// StepCaches are directories the steps use as caches, each named by the variable that gives a
	// step its path: "NAME" takes the directory from the manager's value of NAME, "NAME=DIR" names
	// it. An isolated step gets a copy-on-write view of DIR in its workspace: it reads what DIR
	// holds and writes only its own Build's copy, so one Build cannot plant anything in another's
	// cache (GOCACHE and GOMODCACHE fit: see sandbox.Cache for what a step may add). Steps that run
	// unisolated get DIR itself.
	StepCaches []string
	// StepMounts are host directories isolated steps see at their own paths, even where the step
	// user could not reach them (a toolchain under root's home): "DIR" read-only, "DIR:rw"
	// read-write, which every Build shares: what one writes, the next reads. Unisolated steps see
	// everything the manager's user sees anyway.
	StepMounts []string
	// Isolation is IsolationAuto (default), IsolationRequired or IsolationOff.
	Isolation string
	// StepUIDs is the range of users (and groups of the same numbers) isolated steps run as,
	// "FIRST-LAST", one user per running Build; no account may use them. Default DefaultStepUIDs.
	StepUIDs string
	// AllowInCluster runs the executor in a Kubernetes pod too (AllowInClusterFlag): only for a pod
	// that is one person's machine.
	AllowInCluster bool
	// Assemble builds and pushes the image. Default assemble.Assemble.
	Assemble func(context.Context, assemble.Options) (*assemble.Result, error)
	// Log receives the executor's own messages.
	Log logr.Logger
}

// Isolation modes (Options.Isolation).
const (
	// IsolationAuto isolates the steps where this machine can (Linux, root), and says so where not.
	IsolationAuto = "auto"
	// IsolationRequired refuses to start where the steps cannot be isolated.
	IsolationRequired = "required"
	// IsolationOff runs the steps as the manager's user, unisolated.
	IsolationOff = "off"
)

// Executor runs Builds as processes on this machine. It implements build.Executor,
// build.NotifyingExecutor and build.ForgettingExecutor; add Runnable to the manager.
type Executor struct {
	opts    Options
	logDir  string
	workDir string
	lock    *os.File
	slots   chan struct{}
	notify  chan event.GenericEvent

	// uids hands out the step users; nil when the steps run unisolated, for unisolated's reason.
	uids       *uidPool
	unisolated string
	caches     []stepCache
	mounts     []sandbox.Mount

	base context.Context
	stop context.CancelCauseFunc
	wg   sync.WaitGroup

	mu   sync.Mutex
	runs map[types.UID]*run
}

// New takes the log directory (refusing one another manager uses), removes workspaces a stopped
// manager left behind and returns the executor. It refuses to run in a Kubernetes pod unless
// Options.AllowInCluster, and without isolation when Options.Isolation requires it.
func New(opts Options) (*Executor, error) {
	if !opts.AllowInCluster {
		if err := checkNotInCluster(); err != nil {
			return nil, err
		}
	}
	if opts.APIReader == nil {
		return nil, errors.New("the local executor needs a reader for the Projects' Secrets")
	}
	if opts.LogDir == "" {
		return nil, errors.New("the local executor needs a log directory (--log-dir)")
	}
	if opts.Parallelism < 0 {
		return nil, fmt.Errorf("the local executor's parallelism must not be negative, not %d", opts.Parallelism)
	}
	for _, kv := range opts.StepEnv {
		if name, _, _ := strings.Cut(kv, "="); name == "" || strings.ContainsAny(name, " \t\n\x00") {
			return nil, fmt.Errorf("step environment entry %q: want NAME or NAME=value", kv)
		}
	}
	if opts.Parallelism == 0 {
		opts.Parallelism = DefaultParallelism
	}
	if opts.Assemble == nil {
		opts.Assemble = assemble.Assemble
	}
	if opts.Log.GetSink() == nil {
		opts.Log = logr.Discard()
	}
	caches, err := parseStepCaches(opts.StepCaches, opts.StepEnv)
	if err != nil {
		return nil, err
	}
	mounts, err := parseStepMounts(opts.StepMounts)
	if err != nil {
		return nil, err
	}
	uids, unisolated, err := isolation(opts)
	if err != nil {
		return nil, err
	}
	logDir, err := filepath.Abs(opts.LogDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve the log directory %s: %w", opts.LogDir, err)
	}
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the log directory %s: %w", logDir, err)
	}
	// The sandboxes mount the workspaces by paths without symbolic links.
	realLogDir, err := filepath.EvalSymlinks(logDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve the log directory %s: %w", opts.LogDir, err)
	}
	lock, err := lockDir(filepath.Join(logDir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("failed to take the log directory %s: %w", logDir, err)
	}
	e := &Executor{
		opts:    opts,
		logDir:  logDir,
		workDir: filepath.Join(realLogDir, workDir),
		lock:    lock,
		slots:   make(chan struct{}, opts.Parallelism),
		notify:  make(chan event.GenericEvent, 1024),
		runs:    map[types.UID]*run{},
		uids:    uids, unisolated: unisolated, caches: caches, mounts: mounts,
	}
	// Nothing runs yet: every workspace there was left by a manager that stopped mid-build.
	if err := removeAll(e.workDir); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("failed to remove old workspaces: %w", err)
	}
	// Isolated steps pass through it to their own workspace, and may not list it.
	mode := os.FileMode(0o700)
	if uids != nil {
		mode = 0o711
	}
	// Chmod as well: the umask may have taken bits from Mkdir's mode.
	err = os.Mkdir(e.workDir, mode)
	if err == nil {
		err = os.Chmod(e.workDir, mode)
	}
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("failed to create the workspace directory: %w", err)
	}
	if uids != nil {
		opts.Log.Info("Build steps run isolated: each Build as its own user, each step in its own PID, mount and IPC namespaces", "users", uids.String())
	} else {
		opts.Log.Info("Build steps run unisolated, as this manager's user: they can read what the manager can, the Projects' credentials included, and what they start may outlive them", "reason", unisolated)
	}
	e.base, e.stop = context.WithCancelCause(context.Background())
	return e, nil
}

// isolation decides whether the steps run isolated: the step users when they do, else why not.
func isolation(opts Options) (*uidPool, string, error) {
	switch opts.Isolation {
	case "", IsolationAuto, IsolationRequired:
	case IsolationOff:
		return nil, "the local executor's isolation is off", nil
	default:
		return nil, "", fmt.Errorf("step isolation %q: want %s, %s or %s", opts.Isolation, IsolationAuto, IsolationRequired, IsolationOff)
	}
	uids, err := parseUIDRange(cmpOr(opts.StepUIDs, DefaultStepUIDs))
	if err != nil {
		return nil, "", err
	}
	if err := sandbox.Check(uids.first, uids.first); err != nil {
		if opts.Isolation == IsolationRequired {
			return nil, "", fmt.Errorf("the local executor's isolation is required, and %w", err)
		}
		return nil, err.Error(), nil
	}
	return uids, "", nil
}

// stepCache is a cache directory of the steps (Options.StepCaches).
type stepCache struct {
	name, dir string
}

// parseStepCaches reads Options.StepCaches; a NAME unset in the manager's environment is skipped.
func parseStepCaches(entries, stepEnv []string) ([]stepCache, error) {
	var caches []stepCache
	for _, kv := range entries {
		name, dir, hasDir := strings.Cut(kv, "=")
		if name == "" || strings.ContainsAny(name, " \t\n\x00/") {
			return nil, fmt.Errorf("step cache %q: want NAME or NAME=DIR", kv)
		}
		for _, e := range stepEnv {
			if n, _, _ := strings.Cut(e, "="); n == name {
				return nil, fmt.Errorf("step cache %s: it is in the step environment too; name it in one of them", name)
			}
		}
		if !hasDir {
			var ok bool
			if dir, ok = os.LookupEnv(name); !ok || dir == "" {
				continue
			}
		}
		resolved, err := existingDir(dir)
		if err != nil {
			return nil, fmt.Errorf("step cache %s: %w", name, err)
		}
		caches = append(caches, stepCache{name: name, dir: resolved})
	}
	return caches, nil
}

// parseStepMounts reads Options.StepMounts.
func parseStepMounts(entries []string) ([]sandbox.Mount, error) {
	var mounts []sandbox.Mount
	for _, e := range entries {
		dir, mode, _ := strings.Cut(e, ":")
		if mode != "" && mode != "ro" && mode != "rw" {
			return nil, fmt.Errorf("step mount %q: want DIR, DIR:ro or DIR:rw", e)
		}
		resolved, err := existingDir(dir)
		if err != nil {
			return nil, fmt.Errorf("step mount %q: %w", e, err)
		}
		if resolved == "/" {
			return nil, fmt.Errorf("step mount %q: not the root directory", e)
		}
		mounts = append(mounts, sandbox.Mount{Path: resolved, Writable: mode == "rw"})
	}
	return mounts, nil
}

// existingDir resolves an absolute path of an existing directory to one without symbolic links.
func existingDir(dir string) (string, error) {
	if !filepath.IsAbs(dir) {
		return "", fmt.Errorf("%q is not an absolute path", dir)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Stat(resolved); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("%s is not a directory", dir)
	}
	return resolved, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// LogDir is the absolute log directory.
func (e *Executor) LogDir() string { return e.logDir }

// Name is "local".
func (e *Executor) Name() string { return Name }

// Notifications carries the Builds whose run changed: a step started or ended, the run left the
// queue or finished.
func (e *Executor) Notifications() <-chan event.GenericEvent { return e.notify }

// Runnable stops every run when the manager stops and releases the log directory. The runs end
// as interrupted; the next manager records that in their Builds.
func (e *Executor) Runnable() manager.Runnable { return runnable{e} }

type runnable struct{ e *Executor }

func (r runnable) Start(ctx context.Context) error {
	<-ctx.Done()
	return r.e.Close()
}

// NeedLeaderElection is false: the executor must stop its runs whether or not it leads.
func (runnable) NeedLeaderElection() bool { return false }

// Close stops every run, waits for them to record their end and releases the log directory.
func (e *Executor) Close() error {
	e.mu.Lock()
	e.stop(errStopping)
	e.mu.Unlock()
	e.wg.Wait()
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lock == nil {
		return nil
	}
	err := e.lock.Close()
	e.lock = nil
	return err
}

// LogPath is where the local executor with the log directory logDir writes a Build's log. A UI
// should open this path, not whatever status.logURL says: anyone who may write a Build's status
// could point that anywhere.
func LogPath(logDir string, b *ferryv1.Build) string {
	logPath, _ := paths(logDir, b.Namespace, b.Name, b.UID)
	return logPath
}

// paths are a Build's log and state files.
func paths(logDir, namespace, name string, uid types.UID) (logPath, statePath string) {
	// A Build's name may be 253 characters, a file name 255 bytes.
	if len(name) > 200 {
		name = name[:200]
	}
	base := filepath.Join(logDir, namespace, name+"-"+string(uid))
	return base + ".log", base + ".json"
}

func (e *Executor) paths(namespace, name string, uid types.UID) (logPath, statePath string) {
	return paths(e.logDir, namespace, name, uid)
}

// logURL is the file:// URL of a log file.
func logURL(path string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()
}

// Observe reports the Build's run: from memory while it runs here, else from its state file. A
// run that was queued or running in a manager that stopped ends here as interrupted.
func (e *Executor) Observe(_ context.Context, b *ferryv1.Build) (*build.RunState, error) {
	if r := e.running(b.UID); r != nil {
		return r.snapshot(), nil
	}
	logPath, statePath := e.paths(b.Namespace, b.Name, b.UID)
	st, err := readState(statePath)
	if errors.Is(err, os.ErrNotExist) {
		if b.Status.Executor == Name && b.Status.LogURL != "" {
			// The Build recorded a local run whose record is gone: never start it again.
			now := metav1.Now()
			return &build.RunState{
				Exists: true, Name: buildplan.PipelineRunName(b.Name, b.UID), Kind: runKind, Phase: build.PhaseFailed, CompletionTime: &now,
				Message: fmt.Sprintf("the run's record in %s is gone (the log directory was removed or the manager uses another --log-dir); the Build is not run again", e.logDir),
			}, nil
		}
		return &build.RunState{}, nil
	}
	if err != nil {
		return nil, err
	}
	if st.UID != b.UID {
		return nil, fmt.Errorf("the local run's state file %s belongs to another Build", statePath)
	}
	if st.Phase == build.PhaseQueued || st.Phase == build.PhaseRunning {
		if err := e.recordInterrupted(st, logPath, statePath); err != nil {
			return nil, err
		}
	}
	return st.runState(logURL(logPath)), nil
}

// recordInterrupted ends a run that a stopped manager left queued or running: what it started is
// killed, the state says interrupted, and so does the log.
func (e *Executor) recordInterrupted(st *state, logPath, statePath string) error {
	if n := killMarked(st.UID); n > 0 {
		e.opts.Log.Info("Killed processes an interrupted Build left running", "build", klog.KRef(st.Namespace, st.Name), "processes", n)
	}
	now := metav1.Now()
	st.Phase, st.Message, st.CompletionTime = build.PhaseFailed, interruptedMessage, &now
	for i := range st.Steps {
		switch st.Steps[i].State {
		case stepRunning:
			st.Steps[i].State, st.Steps[i].CompletionTime = stepFailed, &now
		case stepWaiting:
			st.Steps[i].State = stepSkipped
		}
	}
	if err := writeState(statePath, st); err != nil {
		return err
	}
	if f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		_, _ = fmt.Fprintf(f, "\n%s\n", capitalize(interruptedMessage))
		_ = f.Close()
	}
	return nil
}

// Start records the run and starts it in the background; it waits in the queue while Parallelism
// Builds run. A Build that has a run (in memory or in its state file) is not started again.
func (e *Executor) Start(ctx context.Context, b *ferryv1.Build, p *buildplan.Plan) (*build.RunState, error) {
	if s, err := e.Observe(ctx, b); err != nil || s.Exists {
		return s, err
	}
	logPath, statePath := e.paths(b.Namespace, b.Name, b.UID)
	if err := os.MkdirAll(filepath.Dir(statePath), 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the log directory of namespace %s: %w", b.Namespace, err)
	}
	r := newRun(b, p, logPath, statePath, e.opts.Parallelism)
	r.ctx, r.cancel = context.WithCancelCause(e.base)
	// In memory first, then on disk: Observe never takes the new state file for a stopped run.
	e.mu.Lock()
	if e.base.Err() != nil {
		e.mu.Unlock()
		return nil, errors.New("the local executor is stopping")
	}
	e.runs[b.UID] = r
	e.wg.Add(1)
	e.mu.Unlock()
	forget := func() {
		e.mu.Lock()
		delete(e.runs, b.UID)
		e.mu.Unlock()
		r.cancel(errGone)
		e.wg.Done()
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		forget()
		return nil, fmt.Errorf("failed to create the Build's log: %w", err)
	}
	// Written before anything runs: from here on a restarted manager finds the Build started.
	if err := writeState(statePath, &r.state); err != nil {
		forget()
		_ = logFile.Close()
		_ = os.Remove(logPath)
		return nil, err
	}
	go e.execute(r, p, logFile)
	return r.snapshot(), nil
}

// Cancel stops the Build's run: a queued run leaves the queue, a running step's processes are
// stopped (SIGTERM, then SIGKILL), and the run ends Cancelled.
func (e *Executor) Cancel(_ context.Context, b *ferryv1.Build) error {
	if r := e.running(b.UID); r != nil {
		r.cancel(errCancelled)
	}
	return nil
}

// Forget stops what still runs of a Build that no longer exists and removes its log and state.
func (e *Executor) Forget(_ context.Context, key types.NamespacedName) error {
	live := map[types.UID]bool{}
	e.mu.Lock()
	for uid, r := range e.runs {
		if r.key == key {
			live[uid] = true
			r.mu.Lock()
			r.forgotten = true
			r.mu.Unlock()
			r.cancel(errGone)
		}
	}
	e.mu.Unlock()
	// The running ones remove their files when they end.
	pattern := filepath.Join(e.logDir, key.Namespace, key.Name+"-*.json")
	if len(key.Name) > 200 {
		pattern = filepath.Join(e.logDir, key.Namespace, key.Name[:200]+"-*.json")
	}
	matches, err := filepath.Glob(pattern)
	if err != nil {
		return err
	}
	var errs []error
	for _, statePath := range matches {
		st, err := readState(statePath)
		if err != nil || st.Namespace != key.Namespace || st.Name != key.Name || live[st.UID] {
			continue
		}
		logPath, _ := e.paths(st.Namespace, st.Name, st.UID)
		errs = append(errs, ignoreNotExist(os.Remove(logPath)), ignoreNotExist(os.Remove(statePath)))
	}
	return errors.Join(errs...)
}

func (e *Executor) running(uid types.UID) *run {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runs[uid]
}

// changed tells the controller that a run changed. Intermediate changes may be dropped when the
// controller is far behind (the last one is always sent).
func (e *Executor) changed(r *run, last bool) {
	ev := event.GenericEvent{Object: &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: r.key.Namespace, Name: r.key.Name}}}
	if !last {
		select {
		case e.notify <- ev:
		default:
		}
		return
	}
	select {
	case e.notify <- ev:
	case <-e.base.Done():
		// The manager is stopping; the next one reads the outcome from the state file.
	}
}

// persist writes the run's state and tells the controller.
func (e *Executor) persist(r *run) {
	r.mu.Lock()
	st := r.state.deepCopy()
	r.mu.Unlock()
	if err := writeState(r.statePath, st); err != nil {
		e.opts.Log.Error(err, "Failed to record a local run", "build", klog.KRef(r.key.Namespace, r.key.Name))
	}
	e.changed(r, false)
}

// state is what a state file holds.
type state struct {
	UID            types.UID            `json:"uid"`
	Namespace      string               `json:"namespace"`
	Name           string               `json:"name"`
	Run            string               `json:"run"`
	Phase          build.Phase          `json:"phase"`
	Message        string               `json:"message,omitempty"`
	StartTime      *metav1.Time         `json:"startTime,omitempty"`
	CompletionTime *metav1.Time         `json:"completionTime,omitempty"`
	Steps          []ferryv1.StepStatus `json:"steps,omitempty"`
	Results        map[string]string    `json:"results,omitempty"`
	Deploy         *ferryv1.DeploySpec  `json:"deploy,omitempty"`
}

func (s *state) deepCopy() *state {
	c := *s
	c.StartTime, c.CompletionTime, c.Deploy = s.StartTime.DeepCopy(), s.CompletionTime.DeepCopy(), s.Deploy.DeepCopy()
	c.Steps = make([]ferryv1.StepStatus, len(s.Steps))
	for i := range s.Steps {
		s.Steps[i].DeepCopyInto(&c.Steps[i])
	}
	if s.Results != nil {
		c.Results = make(map[string]string, len(s.Results))
		for k, v := range s.Results {
			c.Results[k] = v
		}
	}
	return &c
}

func (s *state) runState(logURL string) *build.RunState {
	c := s.deepCopy()
	return &build.RunState{
		Exists: true, Name: c.Run, Kind: runKind, Phase: c.Phase, Message: c.Message, StartTime: c.StartTime,
		CompletionTime: c.CompletionTime, Results: c.Results, Steps: c.Steps, Deploy: c.Deploy, LogURL: logURL,
	}
}

func readState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("the local run's state file %s is damaged: %w", path, err)
	}
	return st, nil
}

// writeState replaces a state file atomically: a crash leaves the old state or the new one.
func writeState(path string, st *state) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("failed to write the local run's state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to write the local run's state: %w", err)
	}
	return nil
}

func ignoreNotExist(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
