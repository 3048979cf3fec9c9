package main

import (
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// globalFlags are the kubectl-style flags every command that talks to a cluster shares.
type globalFlags struct {
	kubeconfig string
	context    string
}

// restConfig loads the client configuration the way kubectl does: --kubeconfig, else $KUBECONFIG,
// else ~/.kube/config, else the in-cluster configuration.
func (g *globalFlags) restConfig() (*rest.Config, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = g.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: g.context}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
}

func newRootCommand() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:   "ferry",
		Short: "Kubernetes-native CI/CD: GitLab pushes become layered images, released through gated environments",
		Long: `Ferry turns a push to GitLab into a Build that assembles a layered OCI image (OS stack, language
runtime, application) without a Docker daemon, and carries that exact digest through environments on
several clusters, stopping at approval gates that release managers answer in a web UI, this CLI or kubectl.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	root.PersistentFlags().StringVar(&g.context, "context", "", "the kubeconfig context to use")
	root.AddCommand(
		newManagerCommand(g),
		newUICommand(g),
		newProjectCommand(g),
		newVersionCommand(),
		newRenderCommand(),
		newGitCloneCommand(),
		newCancelCommand(g),
		newGetCommand(g),
		newApproveCommand(g),
		newRejectCommand(g),
		newFreezeCommand(g),
		newRollbackCommand(g),
		newVerifyCommand(g),
		newReleaseCommand(g),
		newDevCommand(),
	)
	root.AddCommand(newAssembleCommand())
	root.AddCommand(newBuildCommand(g))
	root.AddCommand(newRebaseCommand())
	return root
}
