package main

import (
	"flag"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryci/ferry/internal/manager"
)

func newManagerCommand(g *globalFlags) *cobra.Command {
	opts := manager.Options{}
	zapOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run Ferry's controllers, admission webhooks, GitLab receiver and UI",
		Long: `Run Ferry's controllers, admission webhooks, GitLab receiver and approval UI in one process.
Run two or more replicas: leader election (on by default) makes one of them reconcile.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			cfg, err := g.restConfig()
			if err != nil {
				return err
			}
			return manager.Run(cmd.Context(), cfg, opts)
		},
	}
	f := cmd.Flags()
	defaultNS := os.Getenv("POD_NAMESPACE")
	if defaultNS == "" {
		defaultNS = manager.DefaultNamespace
	}
	f.StringVarP(&opts.Namespace, "namespace", "n", defaultNS, "Ferry's own namespace (leader election, kubeconfig Secrets); default $POD_NAMESPACE")
	f.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", `address of the Prometheus metrics endpoint; "0" turns it off`)
	f.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":8081", `address of /healthz and /readyz; "0" turns them off`)
	f.BoolVar(&opts.LeaderElect, "leader-elect", true, "elect a leader so that only one replica reconciles")
	f.StringVar(&opts.LeaderElectionID, "leader-election-id", "ferry-manager.ferry.dev", "name of the leader election Lease")
	f.StringSliceVar(&opts.Controllers, "controllers", []string{"*"}, `controllers to run: "*" for all, "name" to add one, "-name" to remove one`)
	f.DurationVar(&opts.GracefulShutdownTimeout, "graceful-shutdown-timeout", 0, "how long running work may take to finish on shutdown (default 30s)")
	f.IntVar(&opts.WebhookPort, "webhook-port", 9443, "port of the admission webhook server; 0 turns webhooks off")
	f.StringVar(&opts.WebhookCertDir, "webhook-cert-dir", filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"), "directory with the webhook server's tls.crt and tls.key")
	f.StringVar(&opts.WebhookCertSecret, "webhook-cert-secret", manager.DefaultWebhookCertSecret, `Secret where the manager keeps its webhook certificate and injects the CA; "" when the certificate is provided (cert-manager)`)
	f.StringVar(&opts.WebhookService, "webhook-service", manager.DefaultWebhookService, "Service in front of the webhook server, named by the certificate")
	f.StringVar(&opts.Executor, "executor", "tekton", `how Builds run: "tekton" (a PipelineRun per Build) or "local" (processes on this machine, for ferry dev)`)
	f.StringVar(&opts.FerryImage, "ferry-image", manager.DefaultFerryImage, "image of the ferry binary for the clone and assemble steps of PipelineRuns")
	f.DurationVar(&opts.MaxBuildTimeout, "max-build-timeout", 0, "the longest any Build may run, whatever its Project and pipeline file say (default 6h)")
	f.StringVar(&opts.LogDir, "log-dir", manager.DefaultLogDir(), "where the local executor keeps each Build's log, state and workspace; keep it across restarts")
	f.IntVar(&opts.LocalParallelism, "local-parallelism", 2, "how many Builds the local executor runs at once; the others queue")
	f.StringSliceVar(&opts.LocalStepEnv, "local-step-env", nil, `environment of the local executor's build steps besides PATH, HOME and TMPDIR: NAME passes the manager's value, NAME=value sets one`)
	f.StringVar(&opts.ReceiverAddr, "receiver-bind-address", ":8090", `address of the GitLab webhook receiver (POST /hooks/gitlab); "0" turns it off`)
	f.Int64Var(&opts.ReceiverMaxBodyBytes, "receiver-max-body-bytes", 25<<20, "largest webhook body the receiver accepts (413 above it)")
	f.StringVar(&opts.UIBaseURL, "ui-url", "", "external URL of Ferry's UI; GitLab commit statuses link to <ui-url>/builds/<namespace>/<name>")
	f.StringVar(&opts.UIAddr, "ui-bind-address", ":8082", `address of the approval UI; "0" turns it off`)
	f.StringVar(&opts.UI.OIDCIssuerURL, "ui-oidc-issuer-url", "", "OpenID provider people sign in to the UI with, for example https://gitlab.example.com")
	f.StringVar(&opts.UI.OIDCClientID, "ui-oidc-client-id", "", "the UI's application ID at the OpenID provider")
	f.StringVar(&opts.UI.OIDCClientSecret, "ui-oidc-client-secret", "", "Secret in Ferry's namespace whose key client-secret is the application's secret")
	f.StringVar(&opts.UI.OIDCUsernameClaim, "ui-oidc-username-claim", "preferred_username", "ID token claim that is the username (as the API server's --oidc-username-claim)")
	f.StringVar(&opts.UI.OIDCUsernamePrefix, "ui-oidc-username-prefix", "", "prefix of usernames (as the API server's --oidc-username-prefix)")
	f.StringVar(&opts.UI.OIDCGroupsClaim, "ui-oidc-groups-claim", "groups", "ID token claim with the groups; GitLab's groups_direct is read when it is missing (as the API server's --oidc-groups-claim)")
	f.StringVar(&opts.UI.OIDCGroupsPrefix, "ui-oidc-groups-prefix", "", "prefix of groups (as the API server's --oidc-groups-prefix)")
	f.StringVar(&opts.UI.TokenFile, "ui-token-file", "", "YAML list of {token, user, groups} that sign in to the UI (ferry dev)")
	f.StringVar(&opts.UI.TokenSecret, "ui-token-secret", "", "Secret in Ferry's namespace whose key tokens.yaml lists UI sign-in tokens")
	f.StringVar(&opts.UI.SessionSecret, "ui-session-secret", "ferry-ui-session", "Secret in Ferry's namespace that holds the UI's session key (created when missing)")
	f.DurationVar(&opts.UI.SessionTTL, "ui-session-ttl", 0, "how long a UI sign-in lasts (default 12h)")
	f.StringVar(&opts.UI.CertDir, "ui-cert-dir", "", "directory with tls.crt and tls.key: the UI serves HTTPS")
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(zapFlags)
	f.AddGoFlagSet(zapFlags)
	return cmd
}
