package main

import (
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// rerunAnnotations are the annotations of a Build that its rerun keeps: they say where GitLab
// wants the commit status.
var rerunAnnotations = []string{ferryv1.GitLabSourceBranchAnnotation, ferryv1.GitLabSourceProjectAnnotation}

func newRerunCommand(g *globalFlags) *cobra.Command {
	var kf kubeFlags
	cmd := &cobra.Command{
		Use:   "rerun BUILD",
		Short: "Build a Build's commit again, as a new Build",
		Long: `Create a new Build of the same Project, commit and ref as BUILD. GitLab deliveries of a commit that
already has a Build on the ref reuse that Build (a Build is as reproducible as its image); rerun is how a
person builds it again anyway (on a merge request, "/retest force" does the same). The new Build is
Manual, by you, and names BUILD in its ferry.dev/rerun-of annotation.`,
		Example: `  ferry build rerun shop-3f2c1a9-1a2b3c4d -n team-a`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, namespace, err := kf.client(g)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			old := &ferryv1.Build{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: args[0]}, old); err != nil {
				return fmt.Errorf("failed to get Build %s/%s: %w", namespace, args[0], err)
			}
			b := rerunOf(old)
			p := &ferryv1.Project{}
			if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: old.Spec.Project}, p); err == nil {
				// Deleting the Project deletes its Builds, as it does the receiver's.
				b.OwnerReferences = []metav1.OwnerReference{{
					APIVersion: ferryv1.GroupVersion.String(), Kind: "Project", Name: p.Name, UID: p.UID, Controller: ptr.To(false),
				}}
			}
			if err := c.Create(ctx, b); err != nil {
				return fmt.Errorf("failed to create a rerun of Build %s/%s: %w", namespace, old.Name, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Build %s/%s created: commit %s of %s again, as Build %s was\n", namespace, b.Name, short(old.Spec.Revision), old.Spec.Ref, old.Name)
			return nil
		},
	}
	kf.bind(cmd)
	return cmd
}

// rerunOf is a new Build of old's Project, commit and ref. Its trigger is left to the admission
// webhook, which makes it Manual by whoever creates it.
func rerunOf(old *ferryv1.Build) *ferryv1.Build {
	prefix := old.Name
	if len(prefix) > 50 {
		prefix = prefix[:50]
	}
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:    old.Namespace,
			GenerateName: prefix + "-rerun-",
			Labels: map[string]string{
				ferryv1.ManagedByLabel: ferryv1.ManagedByValue,
			},
			Annotations: map[string]string{ferryv1.RerunOfAnnotation: old.Name},
		},
		Spec: ferryv1.BuildSpec{Project: old.Spec.Project, Revision: old.Spec.Revision, Ref: old.Spec.Ref},
	}
	if v, ok := old.Labels[ferryv1.ProjectLabel]; ok {
		b.Labels[ferryv1.ProjectLabel] = v
	}
	for _, k := range rerunAnnotations {
		if v, ok := old.Annotations[k]; ok {
			b.Annotations[k] = v
		}
	}
	return b
}

func short(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}
