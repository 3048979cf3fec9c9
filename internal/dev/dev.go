// Package dev is `ferry dev`: Ferry's whole flow on one machine, on loopback, with no Docker, no
// cluster and no internet. It starts a hub control plane (etcd and kube-apiserver with Ferry's and
// Tekton's CRDs and Ferry's admission webhooks), two simulated target clusters, a distribution
// registry with Harbor's token authentication, a git server hosting the example apps, a fake
// GitLab that sends GitLab's real webhooks for every push to that git server, and Ferry's manager
// in-process with the local executor, the GitLab receiver and the UI. It seeds the base images
// from files of this machine, writes the catalog, Clusters, Environments dev, staging and prod,
// and a Project per example app, and prints (and writes to DIR/endpoints.json) what a person
// needs to use it.
//
// Everything lives in the data directory: a second start with the same directory is faster and
// keeps the history (Builds, Releases, Approvals, images, repositories, workloads).
package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/baseimage"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/registry"
)

// DefaultDataDir is the data directory when none is given: .ferry-dev in the working directory,
// as `make run` uses it.
const DefaultDataDir = ".ferry-dev"

// Options configure Run.
type Options struct {
	// DataDir keeps everything between starts. Default DefaultDataDir.
	DataDir string

	// ImageCache keeps the real base images (debootstrap, apt, the Go toolchain) between starts
	// and data directories, per input. Default DataDir/images. Only real nodes need them.
	ImageCache string

	// RepoDir is the Ferry checkout whose examples/ become the git repositories (on the first start)
	// and whose config/rbac holds the release manager's role. Default: the checkout that contains
	// the working directory.
	RepoDir string

	// Out receives the progress and the summary. Default os.Stdout.
	Out io.Writer

	// Command is how the summary names the ferry binary in the commands it suggests. Default
	// "ferry".
	Command string

	// Ready, when set, is called once everything serves, with what was written to
	// DIR/endpoints.json.
	Ready func(*Endpoints)

	// AllowLocalExecutorInCluster lets the local executor run although this process runs in a
	// Kubernetes pod (see manager.Options.AllowLocalExecutorInCluster): only for a pod that is
	// one person's machine.
	AllowLocalExecutorInCluster bool

	// Nodes says what runs the clusters' pods: NodesReal (containerd, runc, the kubelet and
	// kube-proxy on this machine: containers really run), NodesSimulated (kwok marks pods ready,
	// nothing runs) or NodesAuto (real where the machine can, else simulated; the default).
	Nodes string

	// Executor runs the Builds: ExecutorTekton (Tekton Pipelines installed on the hub's real node:
	// each Build a PipelineRun whose pod clones, runs the steps in the builder image and assembles),
	// ExecutorLocal (the steps run on this machine, isolated) or ExecutorAuto and "" (Tekton where
	// the nodes are real, else local).
	Executor string
}

// What runs the Builds (Options.Executor).
const (
	ExecutorTekton = "tekton"
	ExecutorLocal  = "local"
	ExecutorAuto   = "auto"
)

// decideExecutor resolves Options.Executor against the nodes: Tekton needs a real node to run on,
// and runs the Builds wherever there is one unless the local executor is asked for.
func decideExecutor(executor string, real bool, whyNot string) (string, error) {
	switch executor {
	case "", ExecutorAuto:
		if real {
			return ExecutorTekton, nil
		}
		return ExecutorLocal, nil
	case ExecutorLocal:
		return ExecutorLocal, nil
	case ExecutorTekton:
		if !real {
			return "", fmt.Errorf("--executor=tekton needs real nodes to run Tekton's pods on, and nodes are simulated here (%s)", whyNot)
		}
		return ExecutorTekton, nil
	}
	return "", fmt.Errorf("--executor=%s: want tekton, local or auto", executor)
}

// What runs the clusters' pods (Options.Nodes).
const (
	NodesAuto      = "auto"
	NodesReal      = "real"
	NodesSimulated = "simulated"
)

// decideNodes resolves Options.Nodes: whether nodes are real, and when auto falls back to
// simulated nodes, why.
func decideNodes(mode string) (real bool, why string, err error) {
	switch mode {
	case "", NodesAuto:
		if err := controlplane.RealNodesAvailable(); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	case NodesReal:
		if err := controlplane.RealNodesAvailable(); err != nil {
			return false, "", fmt.Errorf("--nodes=real: %w", err)
		}
		return true, "", nil
	case NodesSimulated:
		return false, "asked for with --nodes=simulated", nil
	}
	return false, "", fmt.Errorf("--nodes=%s: want real, simulated or auto", mode)
}

// env is a running local environment: what was started, in order, so that it can be stopped.
type env struct {
	opts     Options
	dir      string
	st       *state
	first    bool
	out      *progress
	examples []string

	// real says whether the clusters have real nodes; whyNot says why not when they do not.
	real   bool
	whyNot string
	// executor runs the Builds (ExecutorTekton or ExecutorLocal); ferryImage is the image of the
	// clone and assemble steps of PipelineRuns under Tekton.
	executor   string
	ferryImage string
	hostNet    *controlplane.HostNetwork
	// nodeSlots are the real nodes' directories and slots, to check that they left nothing.
	nodeSlots map[string]int
	// pause is the pause image of the real nodes' pod sandboxes.
	pause string
	apps  *appProxy

	hub *controlplane.APIServer
	// hubCluster is the hub as a cluster with a real node (nil with simulated nodes).
	hubCluster *controlplane.Cluster
	clusters   map[string]*controlplane.Cluster
	registry   *registry.Server
	git        *gitserver.Server
	gitlab     *gitlabsim.Server
	mirror     *mirror
	catalog    *catalog.Catalog
	client     client.Client
	mgr        *manager.Manager
	endpoint   *Endpoints

	mu    sync.Mutex
	stops []namedStop
}

type namedStop struct {
	name string
	stop func() error
}

// onStop registers how to stop something that started; stops run in reverse order.
func (e *env) onStop(name string, stop func() error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stops = append(e.stops, namedStop{name, stop})
}

// stopAll stops everything that started, newest first, and reports what failed to stop.
func (e *env) stopAll() error {
	e.mu.Lock()
	stops := e.stops
	e.stops = nil
	e.mu.Unlock()
	var errs []error
	for i := len(stops) - 1; i >= 0; i-- {
		if err := stops[i].stop(); err != nil {
			errs = append(errs, fmt.Errorf("failed to stop %s: %w", stops[i].name, err))
		}
	}
	return errors.Join(errs...)
}

// startSteps is the number of steps a start reports.
const startSteps = 8

// Run starts the local environment, prints what a person needs to use it, and serves until ctx
// ends (Ctrl-C), then stops every process it started.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Command == "" {
		opts.Command = "ferry"
	}
	dir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return err
	}
	if opts.RepoDir == "" {
		if opts.RepoDir, err = controlplane.RepoRoot(); err != nil {
			return fmt.Errorf("ferry dev imports the example apps from a Ferry checkout: run it inside one: %w", err)
		}
	}
	if _, err := controlplane.AssetsDir(); err != nil {
		return err
	}
	examples, err := findExamples(opts.RepoDir)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create the data directory %s: %w", dir, err)
	}
	lock, err := lockDataDir(dir)
	if err != nil {
		return err
	}
	defer func() { _ = lock.Close() }()
	st, first, err := loadState(dir)
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(filepath.Join(dir, "ferry-dev.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("failed to open the log file: %w", err)
	}
	defer func() { _ = logFile.Close() }()
	setupLogging(logFile)

	real, whyNot, err := decideNodes(opts.Nodes)
	if err != nil {
		return err
	}
	executor, err := decideExecutor(opts.Executor, real, whyNot)
	if err != nil {
		return err
	}
	e := &env{opts: opts, dir: dir, st: st, first: first, examples: examples, clusters: map[string]*controlplane.Cluster{}, real: real, whyNot: whyNot, executor: executor}
	steps := startSteps
	if real {
		steps++
	}
	e.out = newProgress(opts.Out, steps)
	if first {
		e.out.printf("Starting ferry dev in %s for the first time: control planes, registry, git server, GitLab, Ferry. This takes a minute or two; later starts are faster.", dir)
	} else {
		e.out.printf("Starting ferry dev from %s (start %d; the last one took %s): everything you did is kept.", dir, st.Starts+1, roundDuration(time.Duration(st.LastStartSeconds*float64(time.Second))))
	}
	e.out.printf("Logs: %s", logFile.Name())
	if real {
		e.out.printf("Nodes: real — containerd, runc, the kubelet and kube-proxy run the apps' containers on this machine, each cluster's node in namespaces of its own.")
	} else {
		e.out.printf("Nodes: simulated — kwok marks pods ready and no container runs (%s).", whyNot)
	}

	defer func() {
		e.out.printf("Stopping ferry dev…")
		begin := time.Now()
		// The endpoints describe a running environment: `ferry dev push` must not find stale ones.
		stopErr := e.stopAll()
		if rmErr := os.Remove(EndpointsPath(dir)); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			stopErr = errors.Join(stopErr, rmErr)
		}
		if left := LeftoverProcesses(dir); len(left) > 0 {
			stopErr = errors.Join(stopErr, fmt.Errorf("processes still running after the stop: %s", strings.Join(left, "; ")))
		}
		if left := e.nodeLeftovers(); len(left) > 0 {
			stopErr = errors.Join(stopErr, fmt.Errorf("left on the host after the stop: %s", strings.Join(left, "; ")))
		}
		if stopErr != nil {
			err = errors.Join(err, stopErr)
			return
		}
		e.out.printf("Stopped everything in %s; nothing is left running. `%s dev --data-dir %s` resumes where you left off.", since(begin), opts.Command, opts.DataDir)
	}()

	if err := e.start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	<-ctx.Done()
	return nil
}

// start brings everything up, in parallel where it can.
func (e *env) start(ctx context.Context) error {
	if err := e.startParallel(ctx); err != nil {
		return err
	}
	if err := e.out.step("Writing Ferry's objects on the hub: catalog, Clusters, Environments dev/staging/prod, Projects, people", func() error {
		return e.writeObjects(ctx)
	}); err != nil {
		return err
	}
	if err := e.out.step("Starting Ferry's manager: controllers, admission webhooks, GitLab receiver, UI, "+e.executor+" executor", func() error {
		return e.startManager(ctx)
	}); err != nil {
		return err
	}
	if err := e.out.step("Waiting for Ferry to reach the clusters", func() error {
		if err := e.waitClustersReady(ctx); err != nil {
			return err
		}
		return e.startApps()
	}); err != nil {
		return err
	}
	elapsed := e.out.elapsed()
	e.st.Starts++
	e.st.LastStartSeconds = elapsed.Seconds()
	if e.first {
		e.st.FirstStartSeconds = elapsed.Seconds()
	}
	if err := e.st.save(e.dir); err != nil {
		return err
	}
	ep, err := e.writeEndpoints()
	if err != nil {
		return err
	}
	e.printSummary(ep, elapsed)
	e.watchActivity(ctx)
	if e.opts.Ready != nil {
		e.opts.Ready(ep)
	}
	return nil
}

// startParallel starts the control planes, the registry (and seeds it), the git server and the
// fake GitLab at the same time: the control planes take longest. With real nodes, the host's
// address for nodes, the registry on it and the pause image come first: nodes pull from it.
func (e *env) startParallel(ctx context.Context) error {
	type parallelStep struct {
		what string
		fn   func(context.Context) error
	}
	var steps []parallelStep
	if e.real {
		if err := e.out.step("Preparing real nodes: the host's address for nodes, the registry there (Harbor-style token auth), the pause image", func() error {
			return e.prepareRealNodes(ctx)
		}); err != nil {
			return err
		}
		steps = []parallelStep{
			{"Starting the hub control plane with a real node (etcd, kube-apiserver, Ferry's and Tekton's CRDs, admission webhooks)", e.startHub},
			{"Starting cluster nonprod with a real node (dev, staging)", func(ctx context.Context) error { return e.startCluster(ctx, "nonprod") }},
			{"Starting cluster prod with a real node", func(ctx context.Context) error { return e.startCluster(ctx, "prod") }},
			{"Building the real stack, runtimes and builder images from Debian's archive and the Go module proxy (minutes the first time, then cached) and pushing them", e.seedImages},
			{"Starting the git server and the fake GitLab, importing the example apps", e.startGit},
		}
	} else {
		steps = []parallelStep{
			{"Starting the hub control plane (etcd, kube-apiserver, Ferry's and Tekton's CRDs, admission webhooks)", e.startHub},
			{"Starting simulated cluster nonprod (dev, staging)", func(ctx context.Context) error { return e.startCluster(ctx, "nonprod") }},
			{"Starting simulated cluster prod", func(ctx context.Context) error { return e.startCluster(ctx, "prod") }},
			{"Starting the registry (Harbor-style token auth) and seeding stacks and runtimes from this machine's files", func(ctx context.Context) error {
				if err := e.startRegistry(ctx); err != nil {
					return err
				}
				return e.seedImages(ctx)
			}},
			{"Starting the git server and the fake GitLab, importing the example apps", e.startGit},
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The first step to fail cancels the others; its error is the one that says what went wrong
	// (the others fail because they were cancelled, in whatever words).
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for _, s := range steps {
		wg.Go(func() {
			if err := e.out.step(s.what, func() error { return s.fn(ctx) }); err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: %w", s.what, err)
				}
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	return first
}

// nodeLeftovers lists what the real nodes left on the host after they stopped: mounts, links,
// cgroups, processes. There must be none.
func (e *env) nodeLeftovers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var left []string
	for dir, slot := range e.nodeSlots {
		left = append(left, controlplane.HostLeftovers(dir, slot)...)
	}
	return left
}

// recordNode remembers a real node's directory and slot, for nodeLeftovers.
func (e *env) recordNode(c *controlplane.Cluster) {
	if c.NodeSlot() < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.nodeSlots == nil {
		e.nodeSlots = map[string]int{}
	}
	e.nodeSlots[c.Dir] = c.NodeSlot()
}

// startApps serves the apps of every environment on one loopback port, when nodes are real.
func (e *env) startApps() error {
	if !e.real {
		return nil
	}
	addr, moved := e.st.addr(portApps)
	if moved {
		e.out.printf("  ! the apps' port %d is taken: their URLs change", e.st.Ports[portApps])
	}
	p, err := startAppProxy(addr, e.client, e.clusters)
	if err != nil {
		return err
	}
	e.apps = p
	e.onStop("the apps' address", p.Close)
	return e.st.setPort(portApps, p.addr)
}

// prepareRealNodes takes the host's address for nodes, starts the registry there and pushes the
// pause image the nodes' pod sandboxes run.
func (e *env) prepareRealNodes(ctx context.Context) error {
	hn, err := controlplane.AcquireHostNetwork()
	if err != nil {
		return err
	}
	e.hostNet = hn
	e.onStop("the host network of real nodes", hn.Release)
	if err := e.startRegistry(ctx); err != nil {
		return err
	}
	assets, err := controlplane.AssetsDir()
	if err != nil {
		return err
	}
	img, err := controlplane.BinaryImage(filepath.Join(assets, "ferry-pause"), "/pause")
	if err != nil {
		return err
	}
	e.pause, _, err = pushImage(e.registry.Host+"/"+pauseRepository+":"+seedTag, img, e.registryOptions(ctx, registryAdmin))
	return err
}

// pauseRepository holds the pause image of real nodes' pod sandboxes.
const pauseRepository = "ferry/pause"

// listenHost is the address the registry and the git server listen on: the host's address for
// nodes when nodes are real (pods pull and clone from there), else loopback.
func (e *env) listenHost() string {
	if e.hostNet != nil {
		return e.hostNet.IP.String()
	}
	return "127.0.0.1"
}

// realNode is how a cluster's real node reaches the registry; nil with simulated nodes.
func (e *env) realNode() *controlplane.RealNodeOptions {
	if !e.real {
		return nil
	}
	// No credentials: the pause and builder images are public, the apps' images are pulled with
	// their Project's pull Secret.
	return &controlplane.RealNodeOptions{Registry: e.registry.Host, SandboxImage: e.pause}
}

func (e *env) startHub(ctx context.Context) error {
	// The CRDs are installed here rather than by the control plane, so that a later start, whose
	// etcd has them, does not install them again.
	opts := controlplane.APIServerOptions{Name: "hub", Dir: filepath.Join(e.dir, "hub"), Persistent: true, FerryWebhooks: true}
	var hub *controlplane.APIServer
	if e.real {
		c, err := controlplane.StartCluster(ctx, controlplane.ClusterOptions{APIServer: opts, RealNode: e.realNode()})
		if err != nil {
			return err
		}
		e.mu.Lock()
		e.hubCluster = c
		e.mu.Unlock()
		e.recordNode(c)
		e.onStop("the hub cluster", c.Stop)
		hub = c.APIServer
	} else {
		var err error
		if hub, err = controlplane.StartAPIServer(ctx, opts); err != nil {
			return err
		}
		e.onStop("the hub control plane", hub.Stop)
	}
	e.hub = hub
	if err := installCRDs(ctx, hub.Config); err != nil {
		return err
	}
	if e.executor == ExecutorTekton {
		if err := e.installTekton(ctx); err != nil {
			return err
		}
	}
	c, err := client.New(hub.Config, client.Options{Scheme: manager.Scheme()})
	e.client = c
	return err
}

func (e *env) startCluster(ctx context.Context, name string) error {
	c, err := controlplane.StartCluster(ctx, controlplane.ClusterOptions{
		APIServer: controlplane.APIServerOptions{Name: name, Dir: filepath.Join(e.dir, "clusters", name), Persistent: true},
		Nodes:     2,
		RealNode:  e.realNode(),
	})
	if err != nil {
		return err
	}
	e.mu.Lock()
	e.clusters[name] = c
	e.mu.Unlock()
	e.recordNode(c)
	e.onStop("cluster "+name, c.Stop)
	return nil
}

// publicProjects are the registry projects anyone may pull from.
var publicProjects = map[string]bool{"ferry": true, "library": true}

// Registry accounts: the platform team's admin seeds the base images; the robot accounts are what
// a Harbor project's robots would be.
const (
	registryAdmin = "admin"
	robotPush     = "robot$" + Namespace + "+ci"
	robotPull     = "robot$" + Namespace + "+pull"
)

// registryAccess is Harbor's project permissions as the local environment needs them: the admin
// does anything, the push robot pushes the examples' images (and reads the base images it mounts
// from), the pull robot reads both. The platform's projects — ferry (stacks, runtimes, the pause
// image) and library (builder images, where docker.io is mirrored) — are public, as Harbor's
// public projects are: anyone may pull from them, so nodes need no credentials of their own, and
// the examples' images are pulled with the Project's pull Secret only.
func registryAccess(user, repository string, requested []string) []string {
	project, _, _ := strings.Cut(repository, "/")
	allowed := map[string]bool{}
	switch {
	case user == registryAdmin:
		return requested
	case publicProjects[project]:
		allowed["pull"] = true
	case user == robotPush && project == Namespace:
		allowed["pull"], allowed["push"] = true, true
	case user == robotPull && project == Namespace:
		allowed["pull"] = true
	}
	var granted []string
	for _, a := range requested {
		if allowed[a] {
			granted = append(granted, a)
		}
	}
	return granted
}

func (e *env) startRegistry(context.Context) error {
	addr, moved := e.st.addrOn(portRegistry, e.listenHost())
	if moved {
		e.out.printf("  ! the registry's port %d is taken: it moves, and images of earlier starts keep the old address", e.st.Ports[portRegistry])
	}
	logw, err := os.OpenFile(filepath.Join(e.dir, "registry.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	reg, err := registry.StartDistribution(registry.DistributionOptions{
		Addr: addr,
		Users: map[string]string{
			registryAdmin: e.st.secret("registry/"+registryAdmin, "", 16),
			robotPush:     e.st.secret("registry/"+robotPush, "", 16),
			robotPull:     e.st.secret("registry/"+robotPull, "", 16),
		},
		Access:     registryAccess,
		StorageDir: filepath.Join(e.dir, "registry"),
		Log:        logw,
	})
	if err != nil {
		_ = logw.Close()
		return err
	}
	e.registry = reg
	e.onStop("the registry", func() error { return errors.Join(reg.Close(), logw.Close()) })
	return e.st.setPort(portRegistry, reg.Host)
}

// registryOptions are the options of a registry client acting as one of its accounts.
func (e *env) registryOptions(ctx context.Context, user string) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuth(&authn.Basic{Username: user, Password: e.st.get("registry/" + user)})}
}

// seedImages pushes the catalog's stacks and runtimes into the registry: with real nodes the real
// ones, built from Debian's archive and the Go module proxy (cached), else small ones made of this
// machine's files, which simulated nodes never run.
func (e *env) seedImages(ctx context.Context) error {
	if e.real {
		return e.buildBaseImages(ctx)
	}
	var err error
	e.catalog, _, err = seedBaseImages(ctx, e.registry.Host, &authn.Basic{Username: registryAdmin, Password: e.st.get("registry/" + registryAdmin)})
	return err
}

// buildBaseImages builds the real stack, runtimes and builder images (from the cache after the
// first time) and pushes them: the builders as library/golang and library/python, which the
// nodes' docker.io mirror resolves.
func (e *env) buildBaseImages(ctx context.Context) error {
	cache := e.opts.ImageCache
	if cache == "" {
		cache = filepath.Join(e.dir, "images")
	}
	logs := filepath.Join(e.dir, "logs", "baseimage.log")
	if err := os.MkdirAll(filepath.Dir(logs), 0o750); err != nil {
		return err
	}
	logw, err := os.OpenFile(logs, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644) //nolint:gosec // G302: the build's output, no secrets
	if err != nil {
		return err
	}
	defer func() { _ = logw.Close() }()
	res, err := baseimage.Build(ctx, baseimage.Options{
		CacheDir: cache,
		Registry: e.registry.Host,
		// The registry listens on the host's address for nodes without TLS, as the nodes pull.
		PlainHTTP: true,
		Remote:    e.registryOptions(ctx, registryAdmin),
		Log:       logw,
		Progress: func(step string, done, total int) {
			e.out.printf("    base images [%d/%d] %s", done, total, step)
		},
	})
	if err != nil {
		return fmt.Errorf("failed to build the base images (their log: %s): %w", logs, err)
	}
	e.catalog = res.Catalog
	return nil
}

func (e *env) startGit(context.Context) error {
	addr, moved := e.st.addrOn(portGit, e.listenHost())
	if moved {
		e.out.printf("  ! the git server's port %d is taken: clone URLs change", e.st.Ports[portGit])
	}
	e.gitlab = gitlabsim.New()
	e.onStop("the fake GitLab", func() error { e.gitlab.Close(); return nil })
	e.gitlab.AddUser("ferry-bot", e.st.secret("gitlab/ferry-bot", "glpat-", 10))
	for _, p := range People {
		e.gitlab.AddUser(p.Name, e.st.secret("gitlab/"+p.Name, "glpat-", 10))
	}
	var m *mirror
	git, err := gitserver.Start(gitserver.Options{
		Dir:   filepath.Join(e.dir, "git"),
		Addr:  addr,
		Users: map[string]string{developer: e.st.secret("git/"+developer, "", 12)},
		OnPush: func(repo string) {
			if m != nil {
				m.onPush(repo)
			}
		},
	})
	if err != nil {
		return err
	}
	e.git = git
	e.onStop("the git server", git.Close)
	if err := e.st.setPort(portGit, strings.TrimPrefix(git.URL(), "http://")); err != nil {
		return err
	}
	receiverAddr, err := e.receiverAddr()
	if err != nil {
		return err
	}
	m = newMirror(git, e.gitlab, developer, func(format string, args ...any) {
		e.out.printf("  %s %s", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
	})
	m.connect()
	for i, name := range e.examples {
		repo := Namespace + "/" + name
		created, err := importExample(git, repo, filepath.Join(e.opts.RepoDir, "examples", name))
		if err != nil {
			return err
		}
		if created && !e.first {
			e.out.printf("  + new example app %s: repository %s created", name, git.RepoURL(repo))
		}
		id := gitlabProjectID(i)
		if err := m.add(repo, id); err != nil {
			return err
		}
		if err := e.gitlab.AddHook(id, gitlabsim.Hook{
			URL: "http://" + receiverAddr + "/hooks/gitlab", Token: e.webhookSecret(name),
			PushEvents: true, TagPushEvents: true, MergeRequestsEvents: true, NoteEvents: true,
		}); err != nil {
			return err
		}
		// Roles decide who may run merge request commands and whose merge requests build
		// without /ok-to-test: the developer pushes, the others maintain.
		for _, p := range People {
			role := gitlabsim.MaintainerAccess
			if p.Name == developer {
				role = gitlabsim.DeveloperAccess
			}
			if err := e.gitlab.SetRole(id, p.Name, role); err != nil {
				return err
			}
		}
	}
	e.mirror = m
	return nil
}

// gitlabProjectID is the fake GitLab's ID of the i-th example (sorted by name), the same at every
// start.
func gitlabProjectID(i int) int64 { return int64(101 + i) }

func (e *env) webhookSecret(project string) string {
	return e.st.secret("webhook/"+project, "", 20)
}

// receiverAddr is the GitLab receiver's address: the port of the last start when it is free.
func (e *env) receiverAddr() (string, error) {
	return e.listenAddr(portReceiver, "the GitLab receiver's port %d is taken: the webhook URL changes")
}

func (e *env) uiAddr() (string, error) {
	return e.listenAddr(portUI, "the UI's port %d is taken: its URL changes")
}

// listenAddr picks the address of a listener the manager opens: the kept port when free, else a
// new free port, which is recorded.
func (e *env) listenAddr(name, movedMessage string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	addr, moved := e.st.addr(name)
	if moved {
		e.out.printf("  ! "+movedMessage, e.st.Ports[name])
	}
	if strings.HasSuffix(addr, ":0") {
		var err error
		if addr, err = freePort(); err != nil {
			return "", err
		}
	}
	return addr, e.st.setPort(name, addr)
}

// findExamples lists the example apps: the directories of examples/ with a pipeline file.
func findExamples(repoDir string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(repoDir, "examples"))
	if err != nil {
		return nil, fmt.Errorf("failed to list the example apps: %w", err)
	}
	var names []string
	for _, ent := range entries {
		if !ent.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(repoDir, "examples", ent.Name(), ferryv1.DefaultPipelineFile)); err == nil {
			names = append(names, ent.Name())
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("no example app (a directory with %s) in %s", ferryv1.DefaultPipelineFile, filepath.Join(repoDir, "examples"))
	}
	return names, nil
}

// writeObjects writes everything Ferry's controllers read: namespaces, the catalog, the clusters'
// kubeconfigs and Clusters, Environments, the Projects and their Secrets, the people's roles, and
// a kubeconfig for the admin and for each person.
func (e *env) writeObjects(ctx context.Context) error {
	cm, err := catalogConfigMap(e.catalog)
	if err != nil {
		return err
	}
	objs := []client.Object{namespace(FerryNamespace), namespace(Namespace), cm}
	for _, name := range ClusterNames {
		data, err := os.ReadFile(e.clusters[name].KubeconfigPath)
		if err != nil {
			return err
		}
		objs = append(objs, secret(FerryNamespace, kubeconfigSecretName(name), corev1.SecretTypeOpaque, map[string]string{"kubeconfig": string(data)}), clusterObject(name, e.real))
	}
	for _, env := range environments() {
		objs = append(objs, env)
	}
	rbac, err := rbacObjects(e.opts.RepoDir)
	if err != nil {
		return err
	}
	objs = append(objs, rbac...)
	objs = append(objs,
		secret(Namespace, gitlabTokenSecret, corev1.SecretTypeOpaque, map[string]string{"token": e.st.get("gitlab/ferry-bot")}),
		dockerConfigSecret(pushSecret, e.registry.Host, robotPush, e.st.get("registry/"+robotPush)),
		dockerConfigSecret(pullSecret, e.registry.Host, robotPull, e.st.get("registry/"+robotPull)),
	)
	for i, name := range e.examples {
		objs = append(objs,
			secret(Namespace, webhookSecretName(name), corev1.SecretTypeOpaque, map[string]string{"token": e.webhookSecret(name)}),
			project(projectSpec{
				name: name, gitlabURL: e.gitlab.URL, gitlabID: gitlabProjectID(i),
				cloneURL: e.git.RepoURL(Namespace + "/" + name), repository: e.registry.Host + "/" + Namespace + "/" + name,
				// The registry of real nodes listens on the host's address for nodes, not on loopback:
				// plain HTTP must be allowed explicitly.
				insecure: e.real,
			}),
		)
	}
	if err := apply(ctx, e.client, objs...); err != nil {
		return err
	}
	return e.writeKubeconfigs()
}

// writeKubeconfigs writes DIR/kubeconfig (the hub's admin) and DIR/users/NAME.kubeconfig (each
// person, authenticated by a client certificate with their groups), all with the examples'
// namespace as the default.
func (e *env) writeKubeconfigs() error {
	if err := withNamespace(e.hub.KubeconfigPath, e.kubeconfigPath()); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "users"), 0o700); err != nil {
		return err
	}
	for _, p := range People {
		path := e.userKubeconfigPath(p.Name)
		if err := e.hub.UserKubeconfig(path, p.Name, p.Groups...); err != nil {
			return err
		}
		if err := withNamespace(path, path); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) kubeconfigPath() string { return filepath.Join(e.dir, "kubeconfig") }

func (e *env) userKubeconfigPath(name string) string {
	return filepath.Join(e.dir, "users", name+".kubeconfig")
}

// withNamespace copies a kubeconfig from src to dst with Namespace as its current context's
// namespace.
func withNamespace(src, dst string) error {
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return fmt.Errorf("failed to read the kubeconfig %s: %w", src, err)
	}
	if c := cfg.Contexts[cfg.CurrentContext]; c != nil {
		c.Namespace = Namespace
	}
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return writeFileAtomic(dst, data, 0o600)
}

// waitClustersReady waits until the cluster controller reached every target cluster.
func (e *env) waitClustersReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		var notReady []string
		for _, name := range ClusterNames {
			c := &ferryv1.Cluster{}
			if err := e.client.Get(ctx, client.ObjectKey{Name: name}, c); err != nil {
				notReady = append(notReady, name+": "+err.Error())
				continue
			}
			ready := meta.FindStatusCondition(c.Status.Conditions, ferryv1.ReadyCondition)
			// The Secret changes at every start: only a probe of this generation of it counts.
			if ready == nil || ready.Status != "True" || c.Status.LastProbeTime == nil || c.Status.LastProbeTime.Time.Before(e.out.start.Truncate(time.Second)) {
				msg := "not probed yet"
				if ready != nil {
					msg = ready.Reason + ": " + ready.Message
				}
				notReady = append(notReady, name+": "+msg)
			}
		}
		if len(notReady) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ferry did not reach the clusters: %s", strings.Join(notReady, "; "))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// setupLogging sends the logs of the manager, the control-plane clients and client-go to w.
func setupLogging(w io.Writer) {
	logger := zap.New(zap.WriteTo(w), zap.UseDevMode(false))
	ctrl.SetLogger(logger)
	klog.SetLogger(logger)
}

// LeftoverProcesses lists the processes of this machine that belong to a data directory: their
// command line names it, they run inside it (build steps), or they are a real node's processes
// whose directory is in it (their environment says so). After a stop there must be none. It reads
// /proc, so it finds nothing where there is none.
func LeftoverProcesses(dir string) []string {
	matches, _ := filepath.Glob("/proc/[0-9]*")
	self := fmt.Sprint(os.Getpid())
	var left []string
	for _, proc := range matches {
		pid := filepath.Base(proc)
		if pid == self {
			continue
		}
		data, err := os.ReadFile(filepath.Join(proc, "cmdline"))
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join(proc, "cwd"))
		environ, _ := os.ReadFile(filepath.Join(proc, "environ"))
		inDir := strings.Contains(string(data), dir+string(filepath.Separator)) || cwd == dir || strings.HasPrefix(cwd, dir+string(filepath.Separator)) ||
			strings.Contains(string(environ), "\x00"+controlplane.NodeEnv+"="+dir+string(filepath.Separator))
		if !inDir {
			continue
		}
		left = append(left, pid+" "+strings.ReplaceAll(strings.TrimRight(string(data), "\x00"), "\x00", " "))
	}
	return left
}
