package main

import (
	"flag"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/ui"
)

func newUICommand(g *globalFlags) *cobra.Command {
	opts := manager.Options{}
	zapOpts := zap.Options{}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve Ferry's approval UI",
		Long: `Serve Ferry's approval UI, apart from the controllers, under a ServiceAccount of its own.

The UI impersonates nobody. It reads Ferry's objects, asks the API server what each signed-in person
may do (SubjectAccessReviews), and records a person's decisions and re-requests with its own identity,
naming the person: Ferry's admission webhooks believe that name from the UI's identity alone (the
manager's --ui-identity) and judge the decision as the person's. Every replica serves; run two or more.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
			cfg, err := g.restConfig()
			if err != nil {
				return err
			}
			opts.Controllers = []string{"-*"}
			opts.WebhookPort = 0
			opts.ReceiverAddr = "0"
			opts.LeaderElect = false
			return manager.Run(cmd.Context(), cfg, opts)
		},
	}
	f := cmd.Flags()
	bindProcessFlags(f, &opts, "Ferry's own namespace, where the UI's session and sign-in Secrets are; default $POD_NAMESPACE")
	f.StringVar(&opts.UIBaseURL, "ui-url", "", "external URL of the UI (https makes its cookies Secure; the OIDC redirect URI is <ui-url>/signin/oidc/callback)")
	f.StringVar(&opts.LogDir, "log-dir", manager.DefaultLogDir(), "where the local executor keeps Builds' logs, on the machine it runs on")
	bindUIFlags(f, &opts, ":8082")
	zapFlags := flag.NewFlagSet("zap", flag.ContinueOnError)
	zapOpts.BindFlags(zapFlags)
	f.AddGoFlagSet(zapFlags)
	return cmd
}

// bindUIFlags binds the flags of the UI's listener, sign-in and sessions, which `ferry ui` and
// `ferry manager` share; addr is the listener's default.
func bindUIFlags(f *pflag.FlagSet, opts *manager.Options, addr string) {
	f.StringVar(&opts.UIAddr, "ui-bind-address", addr, `address of the approval UI; "0" turns it off`)
	f.StringVar(&opts.UI.OIDCIssuerURL, "ui-oidc-issuer-url", "", "OpenID provider people sign in to the UI with, for example https://gitlab.example.com")
	f.StringVar(&opts.UI.OIDCClientID, "ui-oidc-client-id", "", "the UI's application ID at the OpenID provider")
	f.StringVar(&opts.UI.OIDCClientSecret, "ui-oidc-client-secret", "", "Secret in Ferry's namespace whose key client-secret is the application's secret (the UI's role may read ferry-ui-oidc)")
	f.StringVar(&opts.UI.OIDCUsernameClaim, "ui-oidc-username-claim", "preferred_username", "ID token claim that is the username (as the API server's --oidc-username-claim)")
	f.StringVar(&opts.UI.OIDCUsernamePrefix, "ui-oidc-username-prefix", "", `prefix of usernames, e.g. "gitlab:" (as the API server's --oidc-username-prefix); required with OIDC sign-in`)
	f.StringVar(&opts.UI.OIDCGroupsClaim, "ui-oidc-groups-claim", "groups", `ID token claim with the groups; GitLab's groups_direct is read when it is missing (as the API server's --oidc-groups-claim); "" takes no groups`)
	f.StringVar(&opts.UI.OIDCGroupsPrefix, "ui-oidc-groups-prefix", "", `prefix of groups, e.g. "gitlab:" (as the API server's --oidc-groups-prefix); required with a groups claim, since anyone can create a GitLab group: approval policies and RoleBindings then name gitlab:<group path>`)
	f.BoolVar(&opts.UI.OIDCAllowUnprefixed, "ui-oidc-allow-unprefixed", false, "accept usernames and groups from the OpenID provider without a prefix: only when nobody but administrators creates users and groups there")
	f.StringVar(&opts.UI.TokenFile, "ui-token-file", "", "YAML list of {token, user, groups} that sign in to the UI (ferry dev)")
	f.StringVar(&opts.UI.TokenSecret, "ui-token-secret", "", "Secret in Ferry's namespace whose key tokens.yaml lists UI sign-in tokens (the UI's role may read ferry-ui-tokens)")
	f.StringVar(&opts.UI.SessionSecret, "ui-session-secret", ui.DefaultSessionSecret, "Secret in Ferry's namespace that holds the UI's session key (the install creates it empty; the UI fills it)")
	f.DurationVar(&opts.UI.SessionTTL, "ui-session-ttl", 0, "how long a UI sign-in lasts (default 12h)")
	f.StringVar(&opts.UI.CertDir, "ui-cert-dir", "", "directory with tls.crt and tls.key: the UI serves HTTPS")
}
