//go:build !ferry_nodev

// The files of `ferry dev` build only without the ferry_nodev tag: the binary that goes into the
// cluster image (make image) leaves out the registry server, the fake GitLab, the git server and
// the control plane, which only ferry dev needs.

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
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
		Long: `Run Ferry's whole flow on this machine, with no Docker, no cluster and no internet: a hub control
plane with Ferry's CRDs and admission webhooks, two target clusters (nonprod for dev and staging,
prod for prod), a registry with Harbor's token authentication seeded with stacks and runtimes, a git
server hosting the example apps, a fake GitLab that sends GitLab's webhooks for every push, and
Ferry's manager with the GitLab receiver and the UI.

Where the machine can (Linux, root, containerd, runc, the CNI plugins and iptables: make run installs
them), every cluster has a real node — containerd, runc, the kubelet and kube-proxy in namespaces of
their own — so the apps' containers really run, answer HTTP and fail their health checks, and
nothing they send leaves the machine; Tekton Pipelines runs on the hub's node and every Build is a
PipelineRun, each Project with a step cache of its own. Elsewhere, or with --nodes=simulated, kwok
plays the nodes and the local executor runs the Builds' steps on this machine, isolated.

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
	cmd.Flags().BoolVar(&opts.AllowLocalExecutorInCluster, "allow-local-executor-in-cluster", false, "DANGEROUS: run the local executor although this is a Kubernetes pod (its build steps would run next to the pod's ServiceAccount token); only for a pod that is one person's machine")
	cmd.Flags().StringVar(&opts.ImageCache, "image-cache", "", "directory that keeps the real base images (Debian, Python, Go) between starts and data directories (default DATA_DIR/images)")
	cmd.Flags().StringVar(&opts.Executor, "executor", dev.ExecutorAuto, "what runs the Builds: tekton (Tekton Pipelines installed on the hub's real node runs each Build as a PipelineRun, with a step cache per Project; needs real nodes), local (the steps on this machine, isolated) or auto (tekton on real nodes, else local)")
	cmd.Flags().StringVar(&opts.Nodes, "nodes", dev.NodesAuto, "what runs the clusters' pods: real (containerd and the kubelet on this machine), simulated (kwok) or auto (real where the machine can)")
	cmd.AddCommand(newDevPushCommand(), newDevMRCommand())
	return cmd
}

func newDevMRCommand() *cobra.Command {
	opts := dev.MROptions{}
	cmd := &cobra.Command{
		Use:   "mr",
		Short: "Open, comment on and merge merge requests of an example app, as people do in GitLab",
		Long: `Work with merge requests of an example app in a running ferry dev, through the fake GitLab's REST
API, the way people do in GitLab: open one from a new branch (GitLab's Merge Request Hook: Ferry
builds its head and, for python-web, deploys it to a preview of its own), comment Ferry's commands
on it (/retest, /retest force, /cancel, /ok-to-test; GitLab's Note Hook: Ferry replies with a note),
and merge it (main moves, GitLab's Push Hook of main: Ferry builds and releases it to dev; the Merge
Request Hook: Ferry removes the preview).`,
		Example: `  ferry dev mr open python-web -m "A new greeting"   # prints the merge request's number and preview URL
  ferry dev mr comment python-web 1 /retest
  ferry dev mr merge python-web 1`,
	}
	cmd.PersistentFlags().StringVar(&opts.DataDir, "data-dir", dev.DefaultDataDir, "data directory of the running ferry dev")
	cmd.PersistentFlags().StringVar(&opts.As, "as", "", "GitLab user who acts (default bob, the developer; alice, a maintainer, merges)")
	cmd.PersistentFlags().DurationVar(&opts.Timeout, "timeout", time.Minute, "how long to wait for the git server and GitLab")
	var message string
	open := &cobra.Command{
		Use:   "open PROJECT [-m MESSAGE]",
		Short: "Commit a change on a new branch, push it and open a merge request into main",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o := opts
			o.Project, o.Out, o.Command = args[0], cmd.OutOrStdout(), commandName()
			_, err := dev.OpenMergeRequest(cmd.Context(), o, message)
			return err
		},
	}
	open.Flags().StringVarP(&message, "message", "m", "", `commit message and title (default "Change PROJECT (ferry dev mr open)")`)
	comment := &cobra.Command{
		Use:   "comment PROJECT IID TEXT",
		Short: "Comment on a merge request (Ferry's commands: /retest, /retest force, /cancel, /ok-to-test)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			iid, err := parseIID(args[1])
			if err != nil {
				return err
			}
			o := opts
			o.Project, o.Out, o.Command = args[0], cmd.OutOrStdout(), commandName()
			return dev.CommentMergeRequest(cmd.Context(), o, iid, args[2])
		},
	}
	merge := &cobra.Command{
		Use:   "merge PROJECT IID",
		Short: "Merge a merge request into main (fast-forward), as a maintainer",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			iid, err := parseIID(args[1])
			if err != nil {
				return err
			}
			o := opts
			o.Project, o.Out, o.Command = args[0], cmd.OutOrStdout(), commandName()
			_, err = dev.MergeMergeRequest(cmd.Context(), o, iid)
			return err
		},
	}
	cmd.AddCommand(open, comment, merge)
	return cmd
}

// parseIID reads a merge request's number: 7 or !7.
func parseIID(arg string) (int64, error) {
	iid, err := strconv.ParseInt(strings.TrimPrefix(arg, "!"), 10, 64)
	if err != nil || iid <= 0 {
		return 0, fmt.Errorf("%q is not a merge request number: give the N of !N, for example 1", arg)
	}
	return iid, nil
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
  ferry dev push python-web -m "New landing page" --wait
  ferry dev push go-hello --unhealthy --wait   # a broken health check: dev rolls back on its own`,
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
	var unhealthy, healthy bool
	cmd.Flags().BoolVar(&unhealthy, "unhealthy", false, "also break the app's health check (/healthz answers 500): its rollout fails and is rolled back")
	cmd.Flags().BoolVar(&healthy, "healthy", false, "also repair a health check broken with --unhealthy")
	cmd.MarkFlagsMutuallyExclusive("unhealthy", "healthy")
	cmd.PreRun = func(*cobra.Command, []string) {
		switch {
		case unhealthy:
			opts.Health = dev.HealthBroken
		case healthy:
			opts.Health = dev.HealthOK
		}
	}
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
