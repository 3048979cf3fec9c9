package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/webhooks/gitlabreceiver"
)

func newProjectCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "project",
		Short: "Help with Projects: connect a GitLab project to Ferry",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newProjectWebhookCommand(g))
	return cmd
}

type projectWebhookOptions struct {
	namespace    string
	receiverURL  string
	createSecret bool
	output       string
}

func newProjectWebhookCommand(g *globalFlags) *cobra.Command {
	o := &projectWebhookOptions{}
	cmd := &cobra.Command{
		Use:   "webhook PROJECT",
		Short: "Print how to set up the GitLab webhook (and API token) of a Project",
		Long: `Print what to enter in GitLab so that pushes, tags and merge requests of a Project's GitLab
project start Builds: the receiver's URL, the events to tick, and how to create (or rotate) the
webhook secret; and how to give Ferry an API token for commit statuses and merge request notes.

--create-secret creates the Project's webhook Secret with a random token when it does not exist and
prints the token once, to paste into GitLab.`,
		Example: `  ferry project webhook shop -n team --receiver-url https://ferry.example.com
  ferry project webhook shop -n team --create-secret`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runProjectWebhook(cmd.Context(), g, o, args[0], cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.namespace, "namespace", "n", "", "the Project's namespace (default: the kubeconfig context's namespace)")
	f.StringVar(&o.receiverURL, "receiver-url", os.Getenv("FERRY_RECEIVER_URL"), "external base URL of Ferry's GitLab receiver, as GitLab reaches it (default $FERRY_RECEIVER_URL)")
	f.BoolVar(&o.createSecret, "create-secret", false, "create the webhook Secret with a random token if it does not exist, and print the token once")
	f.StringVarP(&o.output, "output", "o", "text", "output format: text or json")
	return cmd
}

// webhookSetup is what `ferry project webhook` tells, also as JSON for scripts, `ferry dev` and the UI.
type webhookSetup struct {
	Project       string       `json:"project"`
	GitLabURL     string       `json:"gitlabURL"`
	GitLabProject string       `json:"gitlabProject"`
	HooksPage     string       `json:"hooksPage"`
	URL           string       `json:"url"`
	URLIsInternal bool         `json:"urlIsInternal"`
	Events        []string     `json:"events"`
	BranchFilter  string       `json:"branchFilter,omitempty"`
	WebhookSecret secretState  `json:"webhookSecret"`
	APIToken      *secretState `json:"apiToken,omitempty"`
	// CreatedToken is set once, when --create-secret created the Secret.
	CreatedToken string `json:"createdToken,omitempty"`
}

type secretState struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Key       string `json:"key"`
	Exists    bool   `json:"exists"`
	HasKey    bool   `json:"hasKey"`
}

func runProjectWebhook(ctx context.Context, g *globalFlags, o *projectWebhookOptions, name string, out io.Writer) error {
	if o.output != "text" && o.output != "json" {
		return fmt.Errorf("unknown output format %q: use text or json", o.output)
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.kubeconfig
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: g.context})
	if o.namespace == "" {
		ns, _, err := loader.Namespace()
		if err != nil {
			return fmt.Errorf("failed to read the namespace from the kubeconfig: %w", err)
		}
		o.namespace = ns
	}
	cfg, err := g.restConfig()
	if err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return fmt.Errorf("failed to create a client: %w", err)
	}
	p := &ferryv1.Project{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.namespace, Name: name}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("project %s/%s not found", o.namespace, name)
		}
		return fmt.Errorf("failed to read Project %s/%s: %w", o.namespace, name, err)
	}
	setup := describeWebhook(p, o.receiverURL)
	if setup.WebhookSecret, err = inspectSecret(ctx, c, p.Namespace, p.Spec.GitLab.WebhookSecretRef.Name, gitlabreceiver.TokenKey); err != nil {
		return err
	}
	if ref := p.Spec.GitLab.TokenSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "token"
		}
		st, err := inspectSecret(ctx, c, p.Namespace, ref.Name, key)
		if err != nil {
			return err
		}
		setup.APIToken = &st
	}
	if o.createSecret && !setup.WebhookSecret.Exists {
		token, err := createWebhookSecret(ctx, c, p)
		if err != nil {
			return err
		}
		setup.CreatedToken = token
		setup.WebhookSecret.Exists, setup.WebhookSecret.HasKey = true, true
	}
	if o.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(setup)
	}
	printWebhookSetup(out, p, setup)
	return nil
}

// describeWebhook derives the receiver URL, the events to tick and the branch filter from the
// Project's triggers.
func describeWebhook(p *ferryv1.Project, receiverURL string) webhookSetup {
	base := strings.TrimSuffix(p.Spec.GitLab.URL, "/")
	s := webhookSetup{
		Project:       p.Namespace + "/" + p.Name,
		GitLabURL:     base,
		GitLabProject: p.Spec.GitLab.ProjectPath,
		HooksPage:     base + "/" + p.Spec.GitLab.ProjectPath + "/-/hooks",
		Events:        []string{"Push events"},
	}
	if receiverURL == "" {
		s.URL = "http://ferry-receiver." + manager.DefaultNamespace + ".svc:8090" + gitlabreceiver.Path
		s.URLIsInternal = true
	} else {
		s.URL = strings.TrimSuffix(strings.TrimSuffix(receiverURL, "/"), gitlabreceiver.Path) + gitlabreceiver.Path
	}
	if len(p.Spec.Triggers.Tags) > 0 {
		s.Events = append(s.Events, "Tag push events")
	}
	if p.Spec.Triggers.MergeRequests {
		s.Events = append(s.Events, "Merge request events")
		if p.Spec.GitLab.TokenSecretRef != nil {
			// Merge request commands (/retest, /cancel, /ok-to-test) arrive as comments.
			s.Events = append(s.Events, "Comments")
		}
	}
	branches := p.Spec.Triggers.Branches
	if len(branches) == 0 {
		branches = []string{"main"}
	}
	s.BranchFilter = branchFilter(branches)
	return s
}

// branchFilter is GitLab's push-event branch filter for the Project's branch patterns: a wildcard
// for one pattern, an RE2 regular expression for several ("" when every branch builds). Merge
// requests are not filtered by it; Ferry filters them itself.
func branchFilter(patterns []string) string {
	for _, p := range patterns {
		if p == "*" {
			return ""
		}
	}
	if len(patterns) == 1 {
		return patterns[0]
	}
	parts := make([]string, len(patterns))
	for i, p := range patterns {
		parts[i] = strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*")
	}
	return "^(" + strings.Join(parts, "|") + ")$"
}

func inspectSecret(ctx context.Context, c client.Client, ns, name, key string) (secretState, error) {
	st := secretState{Namespace: ns, Name: name, Key: key}
	s := &corev1.Secret{}
	switch err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s); {
	case apierrors.IsNotFound(err):
		return st, nil
	case apierrors.IsForbidden(err):
		// Not everyone who may read Projects may read Secrets: say so instead of failing.
		return st, nil
	case err != nil:
		return st, fmt.Errorf("failed to read Secret %s/%s: %w", ns, name, err)
	}
	st.Exists = true
	st.HasKey = len(s.Data[key]) > 0
	return st, nil
}

func createWebhookSecret(ctx context.Context, c client.Client, p *ferryv1.Project) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	token := hex.EncodeToString(b)
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: p.Namespace,
			Name:      p.Spec.GitLab.WebhookSecretRef.Name,
			Labels:    map[string]string{ferryv1.ProjectLabel: p.Name, ferryv1.ManagedByLabel: ferryv1.ManagedByValue},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{gitlabreceiver.TokenKey: []byte(token)},
	}
	if err := c.Create(ctx, s); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return "", errors.New("the webhook Secret was created meanwhile; run again without --create-secret")
		}
		return "", fmt.Errorf("failed to create Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	return token, nil
}

func printWebhookSetup(out io.Writer, p *ferryv1.Project, s webhookSetup) {
	ws := s.WebhookSecret
	fmt.Fprintf(out, "Project %s builds GitLab project %s on %s.\n\n", s.Project, s.GitLabProject, s.GitLabURL)
	fmt.Fprintf(out, "1. In GitLab: %s → Add new webhook\n", s.HooksPage)
	fmt.Fprintf(out, "   URL:           %s\n", s.URL)
	if s.URLIsInternal {
		fmt.Fprintf(out, "                  (the receiver's in-cluster address: GitLab must reach it; expose the\n")
		fmt.Fprintf(out, "                  ferry-receiver Service and pass --receiver-url with its external URL)\n")
	}
	fmt.Fprintf(out, "   Secret token:  the %q key of Secret %s/%s (step 2)\n", gitlabreceiver.TokenKey, ws.Namespace, ws.Name)
	fmt.Fprintf(out, "   Trigger:       %s\n", strings.Join(s.Events, ", "))
	switch {
	case s.BranchFilter == "":
		fmt.Fprintf(out, "                  push events: all branches\n")
	case strings.HasPrefix(s.BranchFilter, "^("):
		fmt.Fprintf(out, "                  push events: regular expression %s\n", s.BranchFilter)
	default:
		fmt.Fprintf(out, "                  push events: wildcard pattern %s\n", s.BranchFilter)
	}
	fmt.Fprintf(out, "   Keep SSL verification on. Test with \"Test → Push events\": Ferry answers 2xx.\n\n")

	fmt.Fprintf(out, "2. The webhook secret, Secret %s/%s:\n", ws.Namespace, ws.Name)
	switch {
	case s.CreatedToken != "":
		fmt.Fprintf(out, "   created. Paste this token into GitLab's Secret token field (it is not shown again):\n\n       %s\n\n", s.CreatedToken)
	case ws.Exists && ws.HasKey:
		fmt.Fprintf(out, "   exists. Read the token to paste into GitLab:\n")
		fmt.Fprintf(out, "     kubectl -n %s get secret %s -o jsonpath='{.data.token}' | base64 -d\n", ws.Namespace, ws.Name)
	case ws.Exists:
		fmt.Fprintf(out, "   exists but has no %q key: deliveries are refused until it has one.\n", gitlabreceiver.TokenKey)
	default:
		fmt.Fprintf(out, "   missing (or not readable by you). Create it:\n")
		fmt.Fprintf(out, "     kubectl -n %s create secret generic %s --from-literal=token=\"$(openssl rand -hex 32)\"\n", ws.Namespace, ws.Name)
		fmt.Fprintf(out, "   or: ferry project webhook %s -n %s --create-secret\n", p.Name, p.Namespace)
	}
	fmt.Fprintf(out, "   Rotate: set %q to the old token and %q to a new one, update GitLab, then remove %q.\n",
		gitlabreceiver.PreviousTokenKey, gitlabreceiver.TokenKey, gitlabreceiver.PreviousTokenKey)
	fmt.Fprintf(out, "   Signed webhooks (GitLab's signing token, whsec_…): store it under %q; Ferry then also\n", gitlabreceiver.SigningTokenKey)
	fmt.Fprintf(out, "   verifies every delivery's webhook-signature.\n\n")

	fmt.Fprintf(out, "3. Build results in GitLab (commit status \"ferry\" and a note on merge requests):\n")
	if s.APIToken == nil {
		fmt.Fprintf(out, "   off: spec.gitlab.tokenSecretRef is not set. Create a project access token (role Developer,\n")
		fmt.Fprintf(out, "   scope api), store it in a Secret and name it in spec.gitlab.tokenSecretRef.\n")
		return
	}
	t := s.APIToken
	switch {
	case t.Exists && t.HasKey:
		fmt.Fprintf(out, "   on: the token is key %q of Secret %s/%s; it is only ever sent to %s.\n", t.Key, t.Namespace, t.Name, s.GitLabURL)
	default:
		fmt.Fprintf(out, "   Secret %s/%s (key %q) is missing or not readable by you. Create a project access token\n", t.Namespace, t.Name, t.Key)
		fmt.Fprintf(out, "   (role Developer, scope api) and store it:\n")
		fmt.Fprintf(out, "     kubectl -n %s create secret generic %s --from-literal=%s=<token>\n", t.Namespace, t.Name, t.Key)
	}
}
