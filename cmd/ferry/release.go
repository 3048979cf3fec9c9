package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func newReleaseCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release",
		Short: "Create Releases",
	}
	cmd.AddCommand(newReleaseCreateCommand(g))
	return cmd
}

func newReleaseCreateCommand(g *globalFlags) *cobra.Command {
	k := &kubeFlags{}
	var build string
	var envs []string
	cmd := &cobra.Command{
		Use:   "create PROJECT --build BUILD",
		Short: "Release a successful Build along the Project's environments",
		Long: `Create a Release of a successful Build: its image, pinned by digest, and its deploy settings go
through the Project's environments in order (or only those named with --env), each behind its
approval gate.`,
		Example: `  ferry release create shop-api --build shop-api-main-42
  ferry release create shop-api --build shop-api-main-42 --env dev --env staging`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := k.client(g)
			if err != nil {
				return err
			}
			return runReleaseCreate(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], build, envs)
		},
	}
	k.bind(cmd)
	cmd.Flags().StringVar(&build, "build", "", "the Build to release (required)")
	cmd.Flags().StringSliceVar(&envs, "env", nil, "only these environments of the promotion path (repeatable)")
	_ = cmd.MarkFlagRequired("build")
	return cmd
}

func runReleaseCreate(ctx context.Context, c client.Client, w io.Writer, ns, project, build string, envs []string) error {
	b := &ferryv1.Build{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: build}, b); err != nil {
		return err
	}
	if b.Spec.Project != project {
		return fmt.Errorf("build %s belongs to project %s, not %s", build, b.Spec.Project, project)
	}
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready == nil || ready.Status != metav1.ConditionTrue || b.Status.Image == "" {
		state := "has not finished"
		if ready != nil {
			state = fmt.Sprintf("is Ready=%s (%s: %s)", ready.Status, ready.Reason, ready.Message)
		}
		return fmt.Errorf("build %s %s: only a successful Build with an image can be released", build, state)
	}
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, GenerateName: project + "-",
			Labels: map[string]string{ferryv1.ProjectLabel: project, ferryv1.BuildLabel: build},
		},
		Spec: ferryv1.ReleaseSpec{
			Project: project, Build: build, Image: b.Status.Image, Revision: b.Spec.Revision,
			Deploy: b.Status.Deploy, Environments: envs,
		},
	}
	if len(build) > 63 {
		delete(rel.Labels, ferryv1.BuildLabel)
	}
	if err := c.Create(ctx, rel); err != nil {
		return err
	}
	path := "its promotion path"
	if len(envs) > 0 {
		path = strings.Join(envs, " → ")
	}
	_, err := fmt.Fprintf(w, "release/%s created: %s along %s\n", rel.Name, shortDigest(rel.Spec.Image), path)
	return err
}
