package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/api/resource"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	buildcontroller "github.com/ferryci/ferry/controllers/build"
	localexecutor "github.com/ferryci/ferry/controllers/build/local"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/manager"
)

func newManagerCommand(g *globalFlags) *cobra.Command {
	opts := manager.Options{}
	zapOpts := zap.Options{}
	var identityClaim, identityPrefix string
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run Ferry's controllers, admission webhooks and GitLab receiver",
		Long: `Run Ferry's controllers, admission webhooks and GitLab receiver in one process.
Run two or more replicas: leader election (on by default) makes one of them reconcile.

The approval UI runs apart, as ` + "`ferry ui`" + ` under a ServiceAccount of its own; --ui-identity tells the
admission webhooks which identity that is. --ui-bind-address serves the UI in this process instead,
for one machine.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			identities, err := approval.NewIdentityMapping(identityClaim, identityPrefix)
			if err != nil {
				return err
			}
			opts.GitLabIdentity = identities
			opts.FerryVersion = version
			cfg, err := g.restConfig()
			if err != nil {
				return err
			}
			return manager.Run(cmd.Context(), cfg, opts)
		},
	}
	f := cmd.Flags()
	bindProcessFlags(f, &opts, "Ferry's own namespace (leader election, kubeconfig Secrets); default $POD_NAMESPACE")
	f.BoolVar(&opts.LeaderElect, "leader-elect", true, "elect a leader so that only one replica reconciles")
	f.StringVar(&opts.LeaderElectionID, "leader-election-id", manager.DefaultLeaderElectionID, "name of the leader election Lease")
	f.StringSliceVar(&opts.Controllers, "controllers", []string{"*"}, `controllers to run: "*" for all, "name" to add one, "-name" to remove one`)
	f.DurationVar(&opts.GracefulShutdownTimeout, "graceful-shutdown-timeout", 0, "how long running work may take to finish on shutdown (default 30s)")
	f.IntVar(&opts.WebhookPort, "webhook-port", 9443, "port of the admission webhook server; 0 turns webhooks off")
	f.StringVar(&opts.WebhookCertDir, "webhook-cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"), "directory with the webhook server's tls.crt and tls.key")
	f.StringVar(&opts.WebhookCertSecret, "webhook-cert-secret", manager.DefaultWebhookCertSecret, `Secret where the manager keeps its webhook certificate and injects the CA; "" when the certificate is provided (cert-manager)`)
	f.StringVar(&opts.WebhookService, "webhook-service", manager.DefaultWebhookService, "Service in front of the webhook server, named by the certificate")
	f.StringVar(&opts.Executor, "executor", "tekton", `how Builds run: "tekton" (a PipelineRun per Build) or "local" (processes on this machine, for ferry dev)`)
	f.StringVar(&opts.SigningKeySecret, "signing-key-secret", manager.DefaultSigningKeySecret, `Secret in the manager's namespace with the ECDSA P-256 key (PEM under cosign.key) that signs every built image's provenance and signature; "" publishes no SBOM, provenance or signature`)
	f.BoolVar(&opts.GenerateSigningKey, "generate-signing-key", true, "create the signing Secret with a new key pair (cosign.key, cosign.pub) when it does not exist")
	f.StringVar(&opts.FerryImage, "ferry-image", "", "image of the ferry binary for the clone and assemble steps of PipelineRuns (default: the image of this manager's pod, $POD_NAME, else "+manager.DefaultFerryImage+")")
	opts.PodName = os.Getenv("POD_NAME")
	f.StringSliceVar(&opts.StepCache.Vars, "step-cache", nil, `variables that name cache directories of the build steps on Tekton, e.g. GOCACHE,GOMODCACHE,PIP_CACHE_DIR: each Project gets a PersistentVolumeClaim of its own (ferry-cache-PROJECT) with one directory per variable (default: no cache)`)
	f.StringVar(&opts.StepCache.StorageClassName, "step-cache-storage-class", "", "StorageClass of the step caches' claims (default: the cluster's default class)")
	f.Var(quantityFlag{&opts.StepCache.Size}, "step-cache-size", "storage each Project's step cache requests (default "+buildcontroller.DefaultStepCacheSize.String()+")")
	f.DurationVar(&opts.MaxBuildTimeout, "max-build-timeout", 0, "the longest any Build may run, whatever its Project and pipeline file say (default 6h)")
	f.DurationVar(&opts.GitLimits.Timeout, "git-timeout", gitsource.ReadFileLimits.Timeout, "the longest a read of a pipeline file from a git server may take")
	f.DurationVar(&opts.GitLimits.StallTimeout, "git-stall-timeout", gitsource.ReadFileLimits.StallTimeout, "a read of a pipeline file fails when the git server sent nothing for this long")
	f.Int64Var(&opts.GitLimits.MaxFetchBytes, "git-max-fetch-bytes", gitsource.ReadFileLimits.MaxFetchBytes, "the most a read of a pipeline file takes from a git server, on the wire and again inflated")
	f.IntVar(&opts.GitFetchShare, "git-fetch-share", 0, "how many of the Build controller's 8 workers may fetch from one git server, or for one namespace, at once (default half)")
	f.StringVar(&opts.LogDir, "log-dir", manager.DefaultLogDir(), "where the local executor keeps each Build's log, state and workspace; keep it across restarts")
	f.IntVar(&opts.LocalParallelism, "local-parallelism", 2, "how many Builds the local executor runs at once; the others queue")
	f.StringSliceVar(&opts.LocalStepEnv, "local-step-env", nil, `environment of the local executor's build steps besides PATH, HOME and TMPDIR: NAME passes the manager's value, NAME=value sets one`)
	f.StringSliceVar(&opts.LocalStepCaches, "local-step-cache", nil, `caches of the local executor's build steps: NAME (the directory in the manager's $NAME) or NAME=DIR; an isolated step gets a copy-on-write view of DIR in $NAME, e.g. GOCACHE,GOMODCACHE`)
	f.StringSliceVar(&opts.LocalStepMounts, "local-step-mount", nil, `host directories the local executor's isolated steps see at their own paths: DIR read-only (a toolchain under root's home), DIR:rw read-write and shared by every Build`)
	f.StringVar(&opts.LocalStepIsolation, "local-step-isolation", localexecutor.IsolationAuto, `isolate the local executor's build steps (own user, PID, mount and IPC namespaces; Linux as root): "auto" where the machine can, "required" refuses to start where it cannot, "off"`)
	f.StringVar(&opts.LocalStepUIDs, "local-step-uids", localexecutor.DefaultStepUIDs, "users (and groups) the local executor's isolated steps run as, one per running Build, FIRST-LAST; no account may use them")
	f.BoolVar(&opts.AllowLocalExecutorInCluster, "allow-local-executor-in-cluster", false, "DANGEROUS: let --executor=local run in a Kubernetes pod, where every repository's build steps would run next to the pod's ServiceAccount token; only for a pod that is one person's machine")
	f.StringVar(&opts.ReceiverAddr, "receiver-bind-address", ":8090", `address of the GitLab webhook receiver (POST /hooks/gitlab); "0" turns it off`)
	f.Int64Var(&opts.ReceiverMaxBodyBytes, "receiver-max-body-bytes", 25<<20, "largest webhook body the receiver accepts (413 above it); GitLab's own limit is 25 MiB")
	f.IntVar(&opts.ReceiverMaxConcurrentReads, "receiver-max-concurrent-reads", 32, "webhook deliveries whose envelope (the part naming the project, read before the token is checked) is read at once; others wait up to 5s, then get 503")
	f.Int64Var(&opts.ReceiverBodyMemoryBytes, "receiver-body-memory-bytes", 0, "memory budget of authenticated webhook bodies over 256 KiB, each counted twice its size (default 64 MiB, or twice --receiver-max-body-bytes when that is more)")
	f.StringVar(&opts.UIBaseURL, "ui-url", "", "external URL of Ferry's UI; GitLab commit statuses link to <ui-url>/builds/<namespace>/<name>")
	f.StringVar(&opts.UIIdentity, "ui-identity", "", `the Kubernetes user Ferry's UI runs as (system:serviceaccount:<namespace>:ferry-ui): the only one whose Approvals and re-requests may name the person it acts for; anyone else who names one is refused (default: this process's own identity when it serves the UI, else nobody)`)
	bindUIFlags(f, &opts, "0")
	f.StringVar(&identityClaim, "gitlab-identity-claim", "username", `what of a GitLab user is their Kubernetes username, for the self-approval rule: "username", "email" or "sub" (the user ID); the API server's --oidc-username-claim when people sign in with GitLab (preferred_username and nickname are the username)`)
	f.StringVar(&identityPrefix, "gitlab-identity-username-prefix", "", `what the API server puts before that claim (its --oidc-username-prefix, e.g. "oidc:"; without that flag it is "<issuer URL>#" for claims other than email)`)
	f.StringSliceVar(&opts.BuildCreators, "trusted-build-creators", nil, "Kubernetes users whose Builds keep the GitLab trigger they carry (the GitLab receiver's identity); others' Builds are Manual (default: the identity the manager runs as, its ServiceAccount in a cluster)")
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(zapFlags)
	f.AddGoFlagSet(zapFlags)
	return cmd
}

// bindProcessFlags binds what every long-running Ferry process has: its own namespace (default
// $POD_NAMESPACE), its metrics and its probes.
func bindProcessFlags(f *pflag.FlagSet, opts *manager.Options, namespaceUsage string) {
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = manager.DefaultNamespace
	}
	f.StringVarP(&opts.Namespace, "namespace", "n", ns, namespaceUsage)
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", `address of the Prometheus metrics endpoint; "0" turns it off`)
	f.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", `address of /healthz and /readyz; "0" turns them off`)
}

// quantityFlag is a flag holding a Kubernetes quantity such as 10Gi.
type quantityFlag struct{ q *resource.Quantity }

func (f quantityFlag) String() string {
	if f.q == nil || f.q.IsZero() {
		return ""
	}
	return f.q.String()
}

func (f quantityFlag) Set(v string) error {
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return fmt.Errorf("%q is not a quantity such as 10Gi: %w", v, err)
	}
	if q.Sign() <= 0 {
		return fmt.Errorf("%q: want more than zero", v)
	}
	*f.q = q
	return nil
}

func (quantityFlag) Type() string { return "quantity" }
