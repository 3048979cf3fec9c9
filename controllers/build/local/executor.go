// Package local is the Build controller's local executor, what `ferry dev` runs on a machine
// without Tekton: each Build's plan runs as processes on this machine, the way a CI runner's shell
// executor works. The commit is checked out in-process (go-git, as `ferry git-clone` does) into a
// temporary workspace, the pipeline file's steps run with /bin/sh in the checkout (there is no
// container runtime: the builder image is not used, and the log says so), and `ferry assemble`
// runs in-process. Step logs stream to one file per Build under the log directory, which the
// Build's status.logURL names; the workspace is always removed.
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
	// Assemble builds and pushes the image. Default assemble.Assemble.
	Assemble func(context.Context, assemble.Options) (*assemble.Result, error)
	// Log receives the executor's own messages.
	Log logr.Logger
}

// Executor runs Builds as processes on this machine. It implements build.Executor,
// build.NotifyingExecutor and build.ForgettingExecutor; add Runnable to the manager.
type Executor struct {
	opts    Options
	logDir  string
	workDir string
	lock    *os.File
	slots   chan struct{}
	notify  chan event.GenericEvent

	base context.Context
	stop context.CancelCauseFunc
	wg   sync.WaitGroup

	mu   sync.Mutex
	runs map[types.UID]*run
}

// New takes the log directory (refusing one another manager uses), removes workspaces a stopped
// manager left behind and returns the executor.
func New(opts Options) (*Executor, error) {
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
	logDir, err := filepath.Abs(opts.LogDir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve the log directory %s: %w", opts.LogDir, err)
	}
	if err := os.MkdirAll(logDir, 0o750); err != nil {
		return nil, fmt.Errorf("failed to create the log directory %s: %w", logDir, err)
	}
	lock, err := lockDir(filepath.Join(logDir, lockFile))
	if err != nil {
		return nil, fmt.Errorf("failed to take the log directory %s: %w", logDir, err)
	}
	e := &Executor{
		opts:    opts,
		logDir:  logDir,
		workDir: filepath.Join(logDir, workDir),
		lock:    lock,
		slots:   make(chan struct{}, opts.Parallelism),
		notify:  make(chan event.GenericEvent, 1024),
		runs:    map[types.UID]*run{},
	}
	// Nothing runs yet: every workspace there was left by a manager that stopped mid-build.
	if err := removeAll(e.workDir); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("failed to remove old workspaces: %w", err)
	}
	if err := os.MkdirAll(e.workDir, 0o700); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("failed to create the workspace directory: %w", err)
	}
	e.base, e.stop = context.WithCancelCause(context.Background())
	return e, nil
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
