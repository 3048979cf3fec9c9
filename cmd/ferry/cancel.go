package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func newCancelCommand(g *globalFlags) *cobra.Command {
	var kf kubeFlags
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel BUILD",
		Short: "Cancel a Build: its pipeline stops and it ends as Cancelled",
		Long: `Cancel a Build by setting spec.cancelled (it cannot be undone). The Build controller stops the
Build's PipelineRun (or local run) and the Build ends with Ready=False, reason Cancelled. A Build
that already finished is left as it is.`,
		Example: `  ferry cancel app-main-3f2c1a9 -n team-a --reason "broken dependency, fixing"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, namespace, err := kf.client(g)
			if err != nil {
				return err
			}
			b := &ferryv1.Build{}
			if err := c.Get(cmd.Context(), types.NamespacedName{Namespace: namespace, Name: args[0]}, b); err != nil {
				return fmt.Errorf("failed to get Build %s/%s: %w", namespace, args[0], err)
			}
			out := cmd.OutOrStdout()
			if b.Status.CompletionTime != nil {
				state := "finished"
				if c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); c != nil {
					state = "finished (" + c.Reason + ")"
				}
				fmt.Fprintf(out, "Build %s/%s already %s; nothing to cancel\n", namespace, b.Name, state)
				return nil
			}
			if b.Spec.Cancelled {
				fmt.Fprintf(out, "Build %s/%s is already cancelled\n", namespace, b.Name)
				return nil
			}
			body, err := json.Marshal(map[string]any{"spec": map[string]any{"cancelled": true, "cancelReason": reason}})
			if err != nil {
				return err
			}
			if err := c.Patch(cmd.Context(), b, client.RawPatch(types.MergePatchType, body)); err != nil {
				return fmt.Errorf("failed to cancel Build %s/%s: %w", namespace, b.Name, err)
			}
			fmt.Fprintf(out, "Build %s/%s cancelled\n", namespace, b.Name)
			return nil
		},
	}
	kf.bind(cmd)
	cmd.Flags().StringVar(&reason, "reason", "cancelled with ferry cancel", "why, recorded in the Build's spec.cancelReason")
	return cmd
}
