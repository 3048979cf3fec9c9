package main

import (
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/ferryci/ferry/internal/dev"
)

func newDevCommand() *cobra.Command {
	opts := dev.Options{}
	cmd := &cobra.Command{
		Use:   "dev [--data-dir DIR]",
		Short: "Run Ferry's whole flow on this machine: control planes, registry, git server, GitLab, Ferry",
		Long: `Run Ferry's whole flow on this machine, on loopback, with no Docker, no cluster and no internet:
a hub control plane with Ferry's CRDs and admission webhooks, two simulated target clusters
(nonprod for dev and staging, prod for prod), a registry with Harbor's token authentication seeded
with stacks and runtimes made from this machine's files, a git server hosting the example apps, a
fake GitLab that sends GitLab's webhooks for every push, and Ferry's manager with the local executor,
the GitLab receiver and the UI.

It prints what you need (UI, sign-in tokens, webhook URL and secrets, kubeconfigs, registry) and
writes it to DIR/endpoints.json. Ctrl-C stops everything; a second start with the same data
directory is faster and keeps the history: Builds, Releases, Approvals, images and repositories.

Run it inside a Ferry checkout: the example apps come from its examples/ directory.`,
		Example: `  ferry dev --data-dir .ferry-dev        # what make run runs
  ferry dev push go-hello                 # in another terminal: a push, a Build, a Release`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out = cmd.OutOrStdout()
			opts.Command = commandName()
			return dev.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", dev.DefaultDataDir, "directory that keeps everything between starts")
	cmd.AddCommand(newDevPushCommand())
	return cmd
}

func newDevPushCommand() *cobra.Command {
	opts := dev.PushOptions{}
	cmd := &cobra.Command{
		Use:   "push PROJECT [-m MESSAGE] [--data-dir DIR]",
		Short: "Commit a change to an example app and push it, so that GitLab's Push Hook starts the flow",
		Long: `Commit a change (a line in CHANGELOG.md) to an example app's repository in a running ferry dev and
push it to main as the developer. The fake GitLab sees the push and sends GitLab's Push Hook to
Ferry's receiver: a Build, an image in the registry, a Release that rolls out to dev at once, and
staging and prod waiting for approvals. It prints the Build and how to follow it; --wait follows it
until the Release reached dev.`,
		Example: `  ferry dev push go-hello
  ferry dev push python-web -m "New landing page" --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.Project, opts.Out, opts.Command = args[0], cmd.OutOrStdout(), commandName()
			_, err := dev.Push(cmd.Context(), opts)
			return err
		},
	}
	cmd.Flags().StringVar(&opts.DataDir, "data-dir", dev.DefaultDataDir, "data directory of the running ferry dev")
	cmd.Flags().StringVarP(&opts.Message, "message", "m", "", `commit message (default "Change PROJECT (ferry dev push)")`)
	cmd.Flags().BoolVar(&opts.Wait, "wait", false, "wait until the Release rolled out to dev, and say how long each part took")
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 10*time.Minute, "how long to wait for the Build (and, with --wait, the rollout)")
	return cmd
}

// commandName is how to run this binary again, as the user ran it: "ferry" when it is found on
// PATH under that name, else the path it was started with.
func commandName() string {
	arg0 := os.Args[0]
	if !strings.Contains(arg0, string(filepath.Separator)) {
		return arg0
	}
	if wd, err := os.Getwd(); err == nil {
		if r, err := filepath.Rel(wd, arg0); err == nil && !strings.HasPrefix(r, "..") {
			if !strings.Contains(r, string(filepath.Separator)) {
				return "./" + r
			}
			return r
		}
	}
	return arg0
}
