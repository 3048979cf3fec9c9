package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// decisionFlags are the flags of `ferry approve` and `ferry reject`.
type decisionFlags struct {
	kubeFlags
	env        string
	message    string
	batch      int32
	breakGlass bool
}

func (d *decisionFlags) bind(cmd *cobra.Command) {
	d.kubeFlags.bind(cmd)
	cmd.Flags().StringVar(&d.env, "env", "", "the environment whose gate to decide (required)")
	cmd.Flags().StringVarP(&d.message, "message", "m", "", "a comment: why")
	cmd.Flags().Int32Var(&d.batch, "batch", 0, "under the Batch strategy with approvals between batches: the batch (2 or more) to let start")
	_ = cmd.MarkFlagRequired("env")
}

func newApproveCommand(g *globalFlags) *cobra.Command {
	d := &decisionFlags{}
	var reRequest bool
	cmd := &cobra.Command{
		Use:   "approve RELEASE --env ENV [-m MESSAGE] [--break-glass]",
		Short: "Approve a Release for an environment",
		Long: `Approve a Release for an environment: this creates an Approval as you. Ferry's admission webhook
records who you are from your credentials, binds the decision to the Release's digest, and refuses
it (with the reason) when the environment's policy does not count you: not an eligible user or
group member, your own Release when self-approval is forbidden, a second decision of yours, or a
gate that expired or was rejected.

--rerequest asks again for an expired gate instead: it opens a new approval window.

--break-glass lets this Release start in the environment through a freeze or outside its deploy
windows, once; it needs -m saying why and a person the Environment's break-glass policy (or its
approval policy) names. It is recorded on the Release and does not count towards the gate.`,
		Example: `  ferry approve shop-api-main-42 --env prod -m "load test passed, CHG-1234"
  ferry approve shop-api-main-42 --env prod --batch 2
  ferry approve shop-api-main-42 --env prod --rerequest
  ferry approve shop-api-main-42 --env prod --break-glass -m "INC-4711: this is the fix"`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := d.client(g)
			if err != nil {
				return err
			}
			if reRequest {
				return runReRequest(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], d.env)
			}
			if d.breakGlass && strings.TrimSpace(d.message) == "" {
				return fmt.Errorf("a break-glass decision needs a message saying why: -m MESSAGE")
			}
			return runDecision(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], d, ferryv1.DecisionApprove)
		},
	}
	d.bind(cmd)
	cmd.Flags().BoolVar(&reRequest, "rerequest", false, "re-request an expired approval gate instead of approving")
	cmd.Flags().BoolVar(&d.breakGlass, "break-glass", false, "let this Release through the environment's freezes and closed deploy windows (needs -m)")
	return cmd
}

func newRejectCommand(g *globalFlags) *cobra.Command {
	d := &decisionFlags{}
	cmd := &cobra.Command{
		Use:   "reject RELEASE --env ENV -m MESSAGE",
		Short: "Reject a Release for an environment",
		Long: `Reject a Release for an environment: one eligible rejection closes the gate and the Release stops
there. Under the Batch strategy with approvals between batches, rejecting a batch (--batch N)
rolls the environment back. A rejection needs a message saying why.`,
		Example: `  ferry reject shop-api-main-42 --env prod -m "error budget exhausted"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(d.message) == "" {
				return fmt.Errorf("a rejection needs a message saying why: -m MESSAGE")
			}
			c, ns, err := d.client(g)
			if err != nil {
				return err
			}
			return runDecision(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], d, ferryv1.DecisionReject)
		},
	}
	d.bind(cmd)
	return cmd
}

// runDecision creates the Approval. An error from Ferry's admission webhook is returned as the API
// server sent it: it says why the decision does not count.
func runDecision(ctx context.Context, c client.Client, w io.Writer, ns, release string, d *decisionFlags, decision ferryv1.Decision) error {
	prefix := release + "-" + d.env + "-"
	if len(prefix) > 200 {
		prefix = prefix[:200]
	}
	a := &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: prefix},
		Spec: ferryv1.ApprovalSpec{
			Release:     release,
			Environment: d.env,
			Decision:    decision,
			Comment:     d.message,
			Batch:       d.batch,
			BreakGlass:  d.breakGlass,
		},
	}
	if err := c.Create(ctx, a); err != nil {
		return err
	}
	who := ""
	if a.Spec.Approver != nil {
		who = " by " + a.Spec.Approver.Username
	}
	what := "environment " + d.env
	if d.batch > 0 {
		what = fmt.Sprintf("batch %d of environment %s", d.batch, d.env)
	}
	verb := map[ferryv1.Decision]string{ferryv1.DecisionApprove: "approved", ferryv1.DecisionReject: "rejected"}[decision]
	if d.breakGlass {
		verb = "let through by break-glass"
	}
	_, err := fmt.Fprintf(w, "approval/%s created: release %s %s for %s%s\n", a.Name, release, verb, what, who)
	return err
}

// runReRequest asks the Release controller to open a new approval window for env.
func runReRequest(ctx context.Context, c client.Client, w io.Writer, ns, release, env string) error {
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release}, rel); err != nil {
		return err
	}
	if err := requestFor(ctx, c, rel, ferryv1.ReRequestAnnotation, env); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "release/%s: approval gate of environment %s re-requested\n", release, env)
	return err
}

// requestFor adds env to the Release's comma-separated list annotation key (a request the
// controller acts on once per environment: ReRequestAnnotation, ReverifyAnnotation), keeping the
// environments already asked for.
func requestFor(ctx context.Context, c client.Client, rel *ferryv1.Release, key, env string) error {
	envs := []string{env}
	for _, e := range strings.Split(rel.Annotations[key], ",") {
		if e = strings.TrimSpace(e); e != "" && !slices.Contains(envs, e) {
			envs = append(envs, e)
		}
	}
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: strings.Join(envs, ",")}}})
	if err != nil {
		return err
	}
	return c.Patch(ctx, rel, client.RawPatch(types.MergePatchType, body))
}
