// Package manager runs Ferry's controllers, admission webhooks and HTTP endpoints in one
// controller-runtime manager. `ferry manager` runs it against a cluster; `ferry dev` runs it in-process.
package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	webhookconfig "github.com/ferryci/ferry/config/webhook"
	buildcontroller "github.com/ferryci/ferry/controllers/build"
	localexecutor "github.com/ferryci/ferry/controllers/build/local"
	buildreportcontroller "github.com/ferryci/ferry/controllers/buildreport"
	clustercontroller "github.com/ferryci/ferry/controllers/cluster"
	gitlabdeploycontroller "github.com/ferryci/ferry/controllers/gitlabdeploy"
	previewcontroller "github.com/ferryci/ferry/controllers/preview"
	releasecontroller "github.com/ferryci/ferry/controllers/release"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/ui"
	"github.com/ferryci/ferry/internal/webhookcert"
	"github.com/ferryci/ferry/webhooks/admission"
	"github.com/ferryci/ferry/webhooks/gitlabreceiver"
)

// DefaultNamespace is Ferry's namespace when neither a flag nor POD_NAMESPACE says otherwise.
const DefaultNamespace = "ferry-system"

// Options configure the manager. The zero value of each field is a usable default except
// Namespace.
type Options struct {
	// Namespace is Ferry's own namespace: leader election and kubeconfig Secrets live there.
	Namespace string

	// MetricsAddr is where Prometheus metrics are served; "0" turns them off.
	MetricsAddr string

	// ProbeAddr is where /healthz and /readyz are served; "0" turns them off.
	ProbeAddr string

	// LeaderElect makes only one replica reconcile at a time.
	LeaderElect bool

	// LeaderElectionID names the Lease used for leader election.
	LeaderElectionID string

	// Controllers lists the controllers to run; "*" (the default) runs all, "-name" removes one.
	Controllers []string

	// GracefulShutdownTimeout bounds how long running reconciles may take to finish on shutdown.
	GracefulShutdownTimeout time.Duration

	// WebhookPort is where admission webhooks are served; 0 turns them off.
	WebhookPort int

	// WebhookHost is the address webhooks listen on; empty means all addresses.
	WebhookHost string

	// WebhookCertDir holds the webhook server's tls.crt and tls.key.
	WebhookCertDir string

	// WebhookCertSecret names the Secret in Namespace where the manager keeps the webhook CA and
	// serving certificate and from which it injects the CA into Ferry's webhook configurations.
	// Empty means the certificate in WebhookCertDir is provided by someone else (cert-manager,
	// envtest, `ferry dev`).
	WebhookCertSecret string

	// WebhookService is the Service in front of the webhook server; the certificate names it.
	WebhookService string

	// Executor runs Builds: "tekton" (default) creates a PipelineRun per Build; "local" runs the
	// same steps as processes on this machine (`ferry dev`).
	Executor string

	// FerryImage is the image of the ferry binary that runs the clone and assemble steps of every
	// PipelineRun. Default: the image this manager runs in, when it runs in the pod PodName, so
	// that one image reference set at install time serves both; else DefaultFerryImage.
	FerryImage string

	// PodName is the manager's own pod in Namespace, when it runs in one ($POD_NAME).
	PodName string

	// SigningKeySecret, when set, names the Secret in Namespace with the platform's ECDSA P-256
	// key (PEM under cosign.key): the manager then publishes an SBOM, signed SLSA provenance and a
	// cosign signature for every image a Build pushes (issue 17).
	SigningKeySecret string
	// GenerateSigningKey lets the manager create SigningKeySecret with a new key pair (cosign.key
	// and cosign.pub) when it does not exist.
	GenerateSigningKey bool
	// FerryVersion is Ferry's version, the builder version in provenance.
	FerryVersion string

	// StepCache gives every Project a step cache on the Tekton executor: a PersistentVolumeClaim
	// per Project whose directories the user's steps get in the variables StepCache.Vars names
	// (none: no cache).
	StepCache buildcontroller.StepCache

	// MaxBuildTimeout caps every Build's timeout, whatever its Project and pipeline file ask for.
	// Default 6h.
	MaxBuildTimeout time.Duration

	// GitLimits bound each read of a pipeline file from a git server: its timeout, stall timeout
	// and the bytes it may read. Zero fields take gitsource.ReadFileLimits.
	GitLimits gitsource.Limits

	// GitFetchShare is how many of the Build controller's workers may fetch from one git server,
	// or for one namespace, at once. Default half of them.
	GitFetchShare int

	// LogDir is where the local executor writes each Build's step logs and state, and keeps the
	// workspaces of running Builds. Keep it across restarts: the state is what keeps a restarted
	// manager from running a Build twice. Default DefaultLogDir().
	LogDir string

	// LocalParallelism is how many Builds the local executor runs at once; the others wait in a
	// queue (Ready=Unknown, reason Queued). Default 2.
	LocalParallelism int

	// LocalStepEnv is the environment the local executor gives the pipeline file's steps besides
	// PATH, HOME and TMPDIR: "NAME" passes the manager's value, "NAME=value" sets one.
	LocalStepEnv []string

	// LocalStepCaches are the local executor's step caches, "NAME" or "NAME=DIR": each step gets
	// a copy-on-write view of DIR in its variable NAME (localexecutor.Options.StepCaches).
	LocalStepCaches []string

	// LocalStepMounts are host directories the local executor's isolated steps see: "DIR"
	// read-only, "DIR:rw" read-write and shared by every Build (localexecutor.Options.StepMounts).
	LocalStepMounts []string

	// LocalStepIsolation is "auto" (default: isolate the steps where the machine can, Linux as
	// root), "required" (refuse to start where it cannot) or "off".
	LocalStepIsolation string

	// LocalStepUIDs is the range of users the local executor's isolated steps run as, one per
	// running Build, "FIRST-LAST". Default localexecutor.DefaultStepUIDs.
	LocalStepUIDs string

	// AllowLocalExecutorInCluster lets the local executor run in a Kubernetes pod. Dangerous:
	// every repository's steps would run next to the pod's ServiceAccount token; only for a pod
	// that is one person's machine.
	AllowLocalExecutorInCluster bool

	// ReceiverAddr is where the GitLab webhook receiver (POST /hooks/gitlab) listens; "" or "0"
	// turns it off. Every replica serves it, leader or not.
	ReceiverAddr string

	// ReceiverMaxBodyBytes caps a webhook body (413 above it). Default 25 MiB, GitLab's own limit.
	ReceiverMaxBodyBytes int64

	// ReceiverMaxConcurrentReads bounds the webhook deliveries whose beginning (the envelope that
	// names the project, read before the token is checked) is read at once; others wait briefly,
	// then get 503. Default 32.
	ReceiverMaxConcurrentReads int

	// ReceiverBodyMemoryBytes is the byte budget of authenticated webhook bodies larger than
	// 256 KiB; each holds twice its size while it is read and decoded. Default 64 MiB, or twice
	// ReceiverMaxBodyBytes when that is more.
	ReceiverBodyMemoryBytes int64

	// UIBaseURL is the external URL of Ferry's UI; GitLab commit statuses link to
	// <UIBaseURL>/builds/<namespace>/<name>. Empty: statuses carry no link.
	UIBaseURL string

	// UIAddr is where the approval UI listens; "" or "0" turns it off. Every replica serves it.
	UIAddr string

	// UI configures how people sign in to the UI and how their sessions are kept.
	UI ui.Config

	// UIIdentity is the Kubernetes user Ferry's UI runs as (its ServiceAccount,
	// system:serviceaccount:<namespace>:ferry-ui): the admission webhooks believe the person it
	// names on the Approvals it creates and the Releases whose gates it re-requests from this user
	// only, and refuse anyone else who names one. Empty: the identity the manager runs as when it
	// serves the UI itself (UIAddr), which it asks the API server for when it starts; its requests
	// that name nobody are then its controllers' own. Else nobody.
	UIIdentity string

	// GitLabIdentity maps the GitLab users who trigger Builds to the Kubernetes users who approve
	// Releases, for the self-approval rule: the claim and prefix the API server's OpenID Connect
	// authenticator names people with when they sign in with GitLab. The zero value maps a GitLab
	// username to the same Kubernetes username.
	GitLabIdentity approval.IdentityMapping

	// BuildCreators are the Kubernetes users whose Builds keep the trigger they carry: the identity
	// the GitLab receiver creates Builds as. A Build created by anyone else is Manual, by its
	// creator. Empty: the identity the manager runs as (its ServiceAccount in a cluster), which
	// the manager asks the API server for when it starts (SelfSubjectReview).
	BuildCreators []string
}

// DefaultLeaderElectionID names the Lease of the managers' leader election, in their namespace.
const DefaultLeaderElectionID = "ferry-manager.ferry.dev"

// DefaultFerryImage runs the clone and assemble steps when the manager is not told otherwise.
const DefaultFerryImage = "ghcr.io/ferryci/ferry:v0.1.0"

// Default names of the install manifests in config/ (kustomize adds the "ferry-" prefix).
const (
	DefaultWebhookCertSecret = "ferry-webhook-tls" //nolint:gosec // G101: a Secret name, not a credential
	DefaultWebhookService    = "ferry-webhook-service"
	// DefaultSigningKeySecret holds the platform's image signing key (cosign.key, cosign.pub).
	DefaultSigningKeySecret = "ferry-signing-key"
	installNamePrefix       = "ferry-"
)

// Controllers Ferry knows, in the order they start.
var knownControllers = []string{"cluster", "build", "buildreport", "release", "gitlabdeploy", "preview"}

// Scheme returns a scheme with every kind Ferry reads or writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(ferryv1.AddToScheme(s))
	utilruntime.Must(pipelinev1.AddToScheme(s))
	return s
}

// Manager is a configured controller-runtime manager with Ferry's shared state.
type Manager struct {
	ctrl.Manager

	// Clusters caches one client per target Cluster.
	Clusters *clusters.Cache

	// Receiver is the GitLab webhook receiver; nil when ReceiverAddr turns it off.
	Receiver *gitlabreceiver.Receiver

	// UI is the approval UI; nil when UIAddr turns it off.
	UI *ui.Server

	opts    Options
	rotator *webhookcert.Rotator
	// buildCreators is what the Build webhook trusts; nil when webhooks are off.
	buildCreators *admission.BuildCreators
	// trustedUI is whose assertions of a person the webhooks believe; nil when webhooks are off.
	trustedUI *admission.TrustedUI
}

// New builds the manager and registers the enabled controllers; Start runs it.
func New(cfg *rest.Config, opts Options) (*Manager, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the manager needs its namespace (--namespace)")
	}
	enabled, err := enabledControllers(opts.Controllers)
	if err != nil {
		return nil, err
	}
	if opts.LeaderElectionID == "" {
		opts.LeaderElectionID = DefaultLeaderElectionID
	}
	if opts.GracefulShutdownTimeout == 0 {
		opts.GracefulShutdownTimeout = 30 * time.Second
	}
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		// Like controller-runtime's own config loading: no client-side throttling (client-go's
		// default is 5 requests a second), the API server's priority and fairness decides. A burst
		// of Builds otherwise waits on the client, not on the API server.
		cfg = rest.CopyConfig(cfg)
		cfg.QPS = -1
	}
	tekton, err := servesTekton(cfg)
	if err != nil {
		return nil, err
	}
	scheme := Scheme()
	var webhookServer webhook.Server
	if opts.WebhookPort > 0 {
		webhookServer = webhook.NewServer(webhook.Options{Host: opts.WebhookHost, Port: opts.WebhookPort, CertDir: opts.WebhookCertDir})
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		WebhookServer:                 webhookServer,
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: orDefault(opts.MetricsAddr, ":8080")},
		HealthProbeBindAddress:        orDefault(opts.ProbeAddr, ":8081"),
		LeaderElection:                opts.LeaderElect,
		LeaderElectionID:              opts.LeaderElectionID,
		LeaderElectionNamespace:       opts.Namespace,
		LeaderElectionReleaseOnCancel: true,
		GracefulShutdownTimeout:       &opts.GracefulShutdownTimeout,
		// Tests and `ferry dev` run several managers in one process; each registers a controller
		// name once per manager, so the process-wide uniqueness check would only get in the way.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache:      cacheOptions(opts, enabled, tekton),
	})
	if err != nil {
		return nil, fmt.Errorf("failed to create the manager: %w", err)
	}
	m := &Manager{
		Manager: mgr,
		opts:    opts,
		Clusters: &clusters.Cache{
			Loader: &clusters.Loader{Reader: mgr.GetClient(), Namespace: opts.Namespace},
			Reader: mgr.GetClient(),
			Scheme: scheme,
		},
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if webhookServer != nil {
		if err := m.setupWebhooks(); err != nil {
			return nil, err
		}
	}
	for _, name := range enabled {
		if err := m.setupController(name); err != nil {
			return nil, fmt.Errorf("failed to set up the %s controller: %w", name, err)
		}
	}
	if err := m.setupReceiver(); err != nil {
		return nil, err
	}
	if err := m.setupUI(); err != nil {
		return nil, err
	}
	return m, nil
}

// cacheOptions keep the manager's cache to what is Ferry's: the Secrets of its own namespace
// (kubeconfigs of target clusters, its webhook certificate; a manager that only serves the UI,
// the UI's session Secret alone), and of Tekton's PipelineRuns and TaskRuns only Ferry's own
// (app.kubernetes.io/managed-by=ferry, which Ferry sets on each PipelineRun and Tekton copies to
// its TaskRuns). Anything else is neither listed, watched nor held in memory; Secrets elsewhere
// are read one at a time when needed. Pods are not cached: the UI reads step logs directly.
// tekton says whether the API server serves Tekton's kinds: a cache cannot be told about kinds
// the API server does not know.
func cacheOptions(opts Options, controllers []string, tekton bool) cache.Options {
	secrets := cache.Config{}
	if uiOnly(opts, controllers) {
		secrets.FieldSelector = fields.OneTermEqualSelector("metadata.name", orDefault(opts.UI.SessionSecret, ui.DefaultSessionSecret))
	}
	byObject := map[client.Object]cache.ByObject{
		&corev1.Secret{}: {Namespaces: map[string]cache.Config{opts.Namespace: secrets}},
	}
	if tekton {
		ferrys := labels.SelectorFromSet(labels.Set{ferryv1.ManagedByLabel: ferryv1.ManagedByValue})
		byObject[&pipelinev1.PipelineRun{}] = cache.ByObject{Label: ferrys}
		byObject[&pipelinev1.TaskRun{}] = cache.ByObject{Label: ferrys}
	}
	return cache.Options{ByObject: byObject}
}

// servesTekton reports whether the API server serves Tekton's PipelineRuns and TaskRuns
// (tekton.dev/v1). Without Tekton the manager runs what needs no Tekton (the Release
// controller, the webhooks, the UI's Release pages); the Build controller's watches fail.
func servesTekton(cfg *rest.Config) (bool, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return false, fmt.Errorf("failed to create a discovery client: %w", err)
	}
	list, err := dc.ServerResourcesForGroupVersion(pipelinev1.SchemeGroupVersion.String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("failed to ask the API server whether it serves Tekton's %s: %w", pipelinev1.SchemeGroupVersion, err)
	}
	served := map[string]bool{}
	for _, r := range list.APIResources {
		served[r.Name] = true
	}
	return served["pipelineruns"] && served["taskruns"], nil
}

// uiOnly reports whether the manager serves the UI and nothing else (`ferry ui`).
func uiOnly(opts Options, controllers []string) bool {
	return len(controllers) == 0 && opts.WebhookPort == 0 && !on(opts.ReceiverAddr) && on(opts.UIAddr)
}

// on reports whether an address turns a listener on ("" and "0" turn it off).
func on(addr string) bool { return addr != "" && addr != "0" }

func (m *Manager) setupController(name string) error {
	switch name {
	case "cluster":
		return (&clustercontroller.Reconciler{
			Client:    m.GetClient(),
			Cache:     m.Clusters,
			Namespace: m.opts.Namespace,
			Recorder:  m.GetEventRecorder("ferry-cluster-controller"),
		}).SetupWithManager(m.Manager)
	case "build":
		executor, err := m.buildExecutor()
		if err != nil {
			return err
		}
		ferryImage, err := m.ferryImage()
		if err != nil {
			return err
		}
		return (&buildcontroller.Reconciler{
			Client:          m.GetClient(),
			APIReader:       m.GetAPIReader(),
			Scheme:          m.GetScheme(),
			Recorder:        m.GetEventRecorder("ferry-build-controller"),
			Namespace:       m.opts.Namespace,
			Executor:        executor,
			FerryImage:      ferryImage,
			MaxBuildTimeout: m.opts.MaxBuildTimeout,
			GitLimits:       m.opts.GitLimits,
			FetchShare:      m.opts.GitFetchShare,
			SupplyChain:     m.supplyChain(),
		}).SetupWithManager(m.Manager)
	case "buildreport":
		return (&buildreportcontroller.Reconciler{
			Client:    m.GetClient(),
			APIReader: m.GetAPIReader(),
			Recorder:  m.GetEventRecorder("ferry-buildreport-controller"),
			UIBaseURL: m.opts.UIBaseURL,
		}).SetupWithManager(m.Manager)
	case "gitlabdeploy":
		return (&gitlabdeploycontroller.Reconciler{
			Client:    m.GetClient(),
			APIReader: m.GetAPIReader(),
			Recorder:  m.GetEventRecorder("ferry-gitlabdeploy-controller"),
			UIBaseURL: m.opts.UIBaseURL,
		}).SetupWithManager(m.Manager)
	case "preview":
		return (&previewcontroller.Reconciler{
			Client:         m.GetClient(),
			APIReader:      m.GetAPIReader(),
			Clusters:       m.Clusters,
			Recorder:       m.GetEventRecorder("ferry-preview-controller"),
			UIBaseURL:      m.opts.UIBaseURL,
			FerryNamespace: m.opts.Namespace,
		}).SetupWithManager(m.Manager)
	case "release":
		if err := (&releasecontroller.Reconciler{
			Client:     m.GetClient(),
			APIReader:  m.GetAPIReader(),
			Clusters:   m.Clusters,
			Recorder:   m.GetEventRecorder("ferry-release-controller"),
			Identities: m.opts.GitLabIdentity,
			Namespace:  m.opts.Namespace,
		}).SetupWithManager(m.Manager); err != nil {
			return err
		}
		return (&releasecontroller.AutoReleaser{
			Client:   m.GetClient(),
			Recorder: m.GetEventRecorder("ferry-autorelease-controller"),
		}).SetupWithManager(m.Manager)
	}
	return fmt.Errorf("unknown controller %q", name)
}

// buildExecutor is the executor Options.Executor names.
func (m *Manager) buildExecutor() (buildcontroller.Executor, error) {
	switch m.opts.Executor {
	case "", "tekton":
		return &buildcontroller.TektonExecutor{Client: m.GetClient(), APIReader: m.GetAPIReader(), Scheme: m.GetScheme(), Cache: m.opts.StepCache}, nil
	case localexecutor.Name:
		e, err := localexecutor.New(localexecutor.Options{
			APIReader:      m.GetAPIReader(),
			LogDir:         orDefault(m.opts.LogDir, DefaultLogDir()),
			Parallelism:    m.opts.LocalParallelism,
			StepEnv:        m.opts.LocalStepEnv,
			StepCaches:     m.opts.LocalStepCaches,
			StepMounts:     m.opts.LocalStepMounts,
			Isolation:      m.opts.LocalStepIsolation,
			StepUIDs:       m.opts.LocalStepUIDs,
			AllowInCluster: m.opts.AllowLocalExecutorInCluster,
			Log:            ctrl.Log.WithName("local-executor"),
		})
		if err != nil {
			return nil, err
		}
		if err := m.Add(e.Runnable()); err != nil {
			_ = e.Close()
			return nil, err
		}
		return e, nil
	}
	return nil, fmt.Errorf("unknown executor %q (known: tekton, local)", m.opts.Executor)
}

// DefaultLogDir is where the local executor keeps Builds' logs when Options.LogDir is empty.
func DefaultLogDir() string { return filepath.Join(os.TempDir(), "ferry-builds") }

// setupReceiver adds the GitLab webhook receiver, which runs on every replica.
func (m *Manager) setupReceiver() error {
	if !on(m.opts.ReceiverAddr) {
		return nil
	}
	r, err := gitlabreceiver.New(m.Manager, gitlabreceiver.Options{
		Addr:               m.opts.ReceiverAddr,
		MaxBodyBytes:       m.opts.ReceiverMaxBodyBytes,
		MaxConcurrentReads: m.opts.ReceiverMaxConcurrentReads,
		BodyMemoryBytes:    m.opts.ReceiverBodyMemoryBytes,
	})
	if err != nil {
		return err
	}
	if err := m.Add(r); err != nil {
		return fmt.Errorf("failed to add the GitLab receiver: %w", err)
	}
	m.Receiver = r
	return m.AddReadyzCheck("gitlab-receiver", r.ReadyCheck)
}

// setupUI adds the approval UI, which runs on every replica.
func (m *Manager) setupUI() error {
	if !on(m.opts.UIAddr) {
		return nil
	}
	s, err := ui.New(m.Manager, ui.Options{
		Addr: m.opts.UIAddr, Namespace: m.opts.Namespace, ExternalURL: m.opts.UIBaseURL, LogDir: orDefault(m.opts.LogDir, DefaultLogDir()), Config: m.opts.UI,
	})
	if err != nil {
		return fmt.Errorf("failed to set up the UI: %w", err)
	}
	if err := m.Add(s); err != nil {
		return fmt.Errorf("failed to add the UI: %w", err)
	}
	m.UI = s
	return m.AddReadyzCheck("ui", s.ReadyCheck)
}

// setupWebhooks registers the admission webhooks and, when the manager keeps its own certificate,
// the rotator that issues it.
func (m *Manager) setupWebhooks() error {
	m.buildCreators = &admission.BuildCreators{}
	m.buildCreators.Set(m.opts.BuildCreators)
	m.trustedUI = &admission.TrustedUI{}
	m.trustedUI.Set(m.opts.UIIdentity)
	if err := admission.SetupWebhooks(m.Manager, admission.Options{Identities: m.opts.GitLabIdentity, BuildCreators: m.buildCreators, UI: m.trustedUI}); err != nil {
		return fmt.Errorf("failed to set up the admission webhooks: %w", err)
	}
	if err := m.AddReadyzCheck("webhook", m.GetWebhookServer().StartedChecker()); err != nil {
		return err
	}
	if m.opts.WebhookCertSecret == "" {
		return nil
	}
	mutating, validating, err := webhookconfig.Configurations()
	if err != nil {
		return err
	}
	// The webhook server needs its certificate before it starts, before the manager's cache runs:
	// the rotator works with a direct client.
	direct, err := client.New(m.GetConfig(), client.Options{Scheme: m.GetScheme()})
	if err != nil {
		return err
	}
	rotator := &webhookcert.Rotator{
		Client:      direct,
		Namespace:   m.opts.Namespace,
		SecretName:  m.opts.WebhookCertSecret,
		ServiceName: orDefault(m.opts.WebhookService, DefaultWebhookService),
		CertDir:     m.opts.WebhookCertDir,
	}
	for _, c := range mutating {
		rotator.MutatingWebhooks = append(rotator.MutatingWebhooks, installNamePrefix+c.Name)
	}
	for _, c := range validating {
		rotator.ValidatingWebhooks = append(rotator.ValidatingWebhooks, installNamePrefix+c.Name)
	}
	if err := m.Add(rotator); err != nil {
		return err
	}
	m.rotator = rotator
	return m.AddReadyzCheck("webhook-certificate", rotator.ReadyCheck)
}

// Start learns whose Builds keep their trigger when it was not told, and its own identity as the
// UI's when it serves the UI itself; issues the webhook certificate when the manager keeps its
// own, then runs the manager until ctx ends.
func (m *Manager) Start(ctx context.Context) error {
	needSelf := m.buildCreators != nil && len(m.opts.BuildCreators) == 0
	uiHere := m.trustedUI != nil && m.UI != nil
	if needSelf || uiHere {
		self, err := selfUser(ctx, m.GetConfig(), m.GetScheme())
		if err != nil {
			return err
		}
		if needSelf {
			m.buildCreators.Set([]string{self})
		}
		if uiHere {
			// The UI in this process writes with the manager's identity.
			if m.opts.UIIdentity != "" && m.opts.UIIdentity != self {
				return fmt.Errorf("this manager serves the UI as %s, but --ui-identity names %s: the admission webhooks would refuse every decision made in the UI; leave --ui-identity empty, or serve the UI apart with ferry ui", self, m.opts.UIIdentity)
			}
			m.trustedUI.SetInProcess(self)
		}
	}
	if m.buildCreators != nil {
		ctrl.LoggerFrom(ctx).Info("Builds keep the trigger they carry only when these users create them", "users", m.buildCreators.Users())
	}
	if m.trustedUI != nil {
		ctrl.LoggerFrom(ctx).Info("The admission webhooks believe whom Ferry's UI acts for only from this user", "ui", m.trustedUI.User())
	}
	if m.rotator != nil {
		if err := m.rotator.WaitForCertificate(ctx); err != nil {
			return err
		}
	}
	return m.Manager.Start(ctx)
}

// selfUser is who the API server authenticates the manager as (SelfSubjectReview): its
// ServiceAccount in a cluster, the user of its kubeconfig elsewhere.
func selfUser(ctx context.Context, cfg *rest.Config, scheme *runtime.Scheme) (string, error) {
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return "", err
	}
	var review *authenticationv1.SelfSubjectReview
	err = wait.ExponentialBackoffWithContext(ctx, wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 6}, func(ctx context.Context) (bool, error) {
		review = &authenticationv1.SelfSubjectReview{}
		err = c.Create(ctx, review)
		return err == nil, nil
	})
	if err == nil && review.Status.UserInfo.Username == "" {
		err = errors.New("the API server named no user")
	}
	if err != nil {
		return "", fmt.Errorf("failed to learn the manager's own identity, whose Builds keep their trigger and whose UI names the people it acts for (SelfSubjectReview; set --trusted-build-creators and --ui-identity instead): %w", err)
	}
	return review.Status.UserInfo.Username, nil
}

// Run builds the manager and runs it until ctx ends.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	m, err := New(cfg, opts)
	if err != nil {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Starting the manager", "namespace", opts.Namespace, "leaderElection", opts.LeaderElect)
	return m.Start(ctx)
}

// enabledControllers resolves a kubectl-style controller list ("*", "name", "-name").
func enabledControllers(list []string) ([]string, error) {
	if len(list) == 0 {
		list = []string{"*"}
	}
	var enabled []string
	for _, item := range list {
		name := strings.TrimPrefix(item, "-")
		if name != "*" && !slices.Contains(knownControllers, name) {
			return nil, fmt.Errorf("unknown controller %q in --controllers (known: %s)", item, strings.Join(knownControllers, ", "))
		}
	}
	for _, name := range knownControllers {
		on := false
		for _, item := range list {
			switch item {
			case "*", name:
				on = true
			case "-" + name:
				on = false
			}
		}
		if on {
			enabled = append(enabled, name)
		}
	}
	return enabled, nil
}

// ferryImage is the image of the clone and assemble steps of PipelineRuns: as told, else the
// image of the manager's own pod, else DefaultFerryImage.
func (m *Manager) ferryImage() (string, error) {
	if m.opts.FerryImage != "" || m.opts.PodName == "" || m.opts.Executor == localexecutor.Name {
		return orDefault(m.opts.FerryImage, DefaultFerryImage), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img, err := OwnImage(ctx, m.GetAPIReader(), m.opts.Namespace, m.opts.PodName)
	if err != nil {
		return "", fmt.Errorf("failed to find the image this manager runs, for the steps of PipelineRuns (or set --ferry-image): %w", err)
	}
	ctrl.Log.WithName("setup").Info("PipelineRuns run the manager's own image", "image", img)
	return img, nil
}

// OwnImage returns the image of the container "manager" (or the only container) of a pod, pinned
// by digest: the digest the node pulled when it has one, else the image as the pod names it.
func OwnImage(ctx context.Context, r client.Reader, namespace, pod string) (string, error) {
	p := &corev1.Pod{}
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: pod}, p); err != nil {
		return "", fmt.Errorf("failed to read pod %s/%s: %w", namespace, pod, err)
	}
	i := slices.IndexFunc(p.Spec.Containers, func(c corev1.Container) bool { return c.Name == "manager" })
	if i < 0 && len(p.Spec.Containers) == 1 {
		i = 0
	}
	if i < 0 {
		return "", fmt.Errorf("pod %s/%s has no container named manager", namespace, pod)
	}
	c := p.Spec.Containers[i]
	if img, err := rollout.PinnedImage(c.Image); err == nil {
		return img, nil
	}
	for _, cs := range p.Status.ContainerStatuses {
		// containerd reports repository@sha256:…; Docker prefixed it with docker-pullable://.
		if img, err := rollout.PinnedImage(strings.TrimPrefix(cs.ImageID, "docker-pullable://")); cs.Name == c.Name && err == nil {
			return img, nil
		}
	}
	return c.Image, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Ferry's own namespace: leader election, and the Secrets it watches there (kubeconfigs of target
// clusters, its webhook certificate).
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=pods,verbs=get
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=ferry-system,resources=leases,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,verbs=get;list;watch

// supplyChain is what the build controller publishes about images, nil without a signing key.
func (m *Manager) supplyChain() *buildcontroller.SupplyChain {
	if m.opts.SigningKeySecret == "" {
		return nil
	}
	return &buildcontroller.SupplyChain{SigningKeySecret: m.opts.SigningKeySecret, GenerateKey: m.opts.GenerateSigningKey, FerryVersion: orDefault(m.opts.FerryVersion, "dev")}
}
