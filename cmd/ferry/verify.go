package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func newVerifyCommand(g *globalFlags) *cobra.Command {
	k := &kubeFlags{}
	var env string
	cmd := &cobra.Command{
		Use:   "verify RELEASE --environment ENV",
		Short: "Run an environment's verification of a Release again",
		Long: `Run the verification checks of an environment again for a Release that rolled out there and still
runs there: the Environment's checks and the application's (deploy.verification), on every cluster
of the environment. The Release controller starts a new run once; its progress and result are in
the Release's status (ferry get releases shows verifying, verified or unverified).

A re-verification that fails takes back the "verified" mark of the digest in that environment; it
does not roll back: the environment keeps running what it runs.`,
		Example: `  ferry verify shop-api-main-42 --environment prod`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if env == "" {
				return fmt.Errorf("--environment is required: the environment to verify again")
			}
			c, ns, err := k.client(g)
			if err != nil {
				return err
			}
			return runVerify(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], env)
		},
	}
	k.bind(cmd)
	cmd.Flags().StringVar(&env, "environment", "", "the environment to verify again (required)")
	cmd.Flags().StringVar(&env, "env", "", "short for --environment")
	return cmd
}

// runVerify asks the Release controller for a new verification run in env (ReverifyAnnotation).
func runVerify(ctx context.Context, c client.Client, w io.Writer, ns, release, env string) error {
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: release}, rel); err != nil {
		return err
	}
	var es *ferryv1.ReleaseEnvironmentStatus
	for i := range rel.Status.Environments {
		if rel.Status.Environments[i].Name == env {
			es = &rel.Status.Environments[i]
		}
	}
	if es == nil || !meta.IsStatusConditionTrue(es.Conditions, ferryv1.ReadyCondition) {
		return fmt.Errorf("release %s has not rolled out to environment %s: there is nothing to verify there", release, env)
	}
	if err := requestFor(ctx, c, rel, ferryv1.ReverifyAnnotation, env); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "release/%s: verification in environment %s requested\n", release, env)
	return err
}

// verificationState is a word for the verification in an environment, "" when there is none:
// verifying(passed/all), verified, unverified (the last run failed). While an environment rolls
// out in waves, its wave says which one is verifying (waveState).
func verificationState(es *ferryv1.ReleaseEnvironmentStatus) string {
	v := es.Verification
	if v == nil || (v.CompletionTime == nil && waveState(es) != "") {
		return ""
	}
	if v.CompletionTime == nil {
		passed := 0
		for _, cs := range v.Checks {
			if cs.Result == ferryv1.VerificationPassed {
				passed++
			}
		}
		return fmt.Sprintf("verifying(%d/%d)", passed, len(v.Checks))
	}
	if v.VerifiedImage != "" && meta.IsStatusConditionTrue(es.Conditions, ferryv1.VerifiedCondition) {
		return "verified"
	}
	return "unverified"
}

// soakLeft is the time until a soak ends, in whole minutes (seconds under one), "0s" once over.
func soakLeft(ends, now time.Time) string {
	left := ends.Sub(now)
	switch {
	case left <= 0:
		return "0s"
	case left < time.Minute:
		return left.Round(time.Second).String()
	}
	return strings.TrimSuffix(left.Truncate(time.Minute).String(), "0s")
}
