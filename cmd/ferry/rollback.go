package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func newRollbackCommand(g *globalFlags) *cobra.Command {
	k := &kubeFlags{}
	var env, to string
	cmd := &cobra.Command{
		Use:   "rollback PROJECT --env ENV [--to DIGEST]",
		Short: "Roll an environment back to an earlier image",
		Long: `Roll an environment of a Project back to an earlier image. A rollback is itself a Release (with
spec.rollback, limited to that environment), recorded like any other and subject to the
environment's approval gate; only a rollback may replace a newer image with an older one.

Without --to, the target is the environment's previous digest: what ran there before the Release
that deployed the current image. --to takes a digest (sha256:…) of the Project's image repository,
or a full image reference pinned by digest. The deploy settings are those of the Release (or Build)
that made that image.`,
		Example: `  ferry rollback shop-api --env prod
  ferry rollback shop-api --env prod --to sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ns, err := k.client(g)
			if err != nil {
				return err
			}
			return runRollback(cmd.Context(), c, cmd.OutOrStdout(), ns, args[0], env, to)
		},
	}
	k.bind(cmd)
	cmd.Flags().StringVar(&env, "env", "", "the environment to roll back (required)")
	cmd.Flags().StringVar(&to, "to", "", "the digest or image@digest to roll back to (default: the environment's previous digest)")
	_ = cmd.MarkFlagRequired("env")
	return cmd
}

func runRollback(ctx context.Context, c client.Client, w io.Writer, ns, project, env, to string) error {
	p := &ferryv1.Project{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: project}, p); err != nil {
		return err
	}
	var cur *ferryv1.ProjectEnvironmentStatus
	for i := range p.Status.Environments {
		if p.Status.Environments[i].Name == env {
			cur = &p.Status.Environments[i]
		}
	}
	if cur == nil || cur.Image == "" {
		return fmt.Errorf("project %s has nothing deployed in environment %s: there is nothing to roll back", project, env)
	}
	target, err := rollbackTarget(ctx, c, ns, project, env, cur, to)
	if err != nil {
		return err
	}
	if target == cur.Image {
		return fmt.Errorf("environment %s already runs %s", env, target)
	}
	source, err := findSource(ctx, c, ns, project, target)
	if err != nil {
		return err
	}
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: project + "-rollback-", Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec: ferryv1.ReleaseSpec{
			Project:      project,
			Build:        source.build,
			Image:        target,
			Revision:     source.revision,
			Deploy:       source.deploy,
			Environments: []string{env},
			Rollback:     true,
		},
	}
	if err := c.Create(ctx, rel); err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "release/%s created: rolls environment %s back from %s to %s (%s); its approval gate applies\n",
		rel.Name, env, shortDigest(cur.Image), shortDigest(target), source.from)
	return err
}

// rollbackTarget resolves --to, or the environment's previous digest.
func rollbackTarget(ctx context.Context, c client.Client, ns, project, env string, cur *ferryv1.ProjectEnvironmentStatus, to string) (string, error) {
	repo, _, _ := strings.Cut(cur.Image, "@")
	switch {
	case digestRE.MatchString(to):
		return repo + "@" + to, nil
	case to != "":
		if _, digest, ok := strings.Cut(to, "@"); ok && digestRE.MatchString(digest) {
			return to, nil
		}
		return "", fmt.Errorf("--to %q is neither a digest (sha256:<64 hex>) nor an image pinned by digest", to)
	}
	if cur.Release == "" {
		return "", fmt.Errorf("environment %s records no Release that deployed %s, so its previous digest is unknown: pass --to", env, shortDigest(cur.Image))
	}
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: cur.Release}, rel); err != nil {
		return "", fmt.Errorf("failed to read Release %s, which deployed the current image of %s (pass --to): %w", cur.Release, env, err)
	}
	for _, es := range rel.Status.Environments {
		if es.Name == env && es.PreviousImage != "" {
			return es.PreviousImage, nil
		}
	}
	return "", fmt.Errorf("release %s was the first to deploy project %s to environment %s: there is no previous digest; pass --to", cur.Release, project, env)
}

// source is where a rollback's deploy settings come from.
type source struct {
	build, revision, from string
	deploy                *ferryv1.DeploySpec
}

// findSource finds the deploy settings that go with an image: those of the newest Release of the
// project with that image (its own, or its Build's), else those of a successful Build that made it.
func findSource(ctx context.Context, c client.Client, ns, project, image string) (*source, error) {
	releases := &ferryv1.ReleaseList{}
	if err := c.List(ctx, releases, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	builds := &ferryv1.BuildList{}
	if err := c.List(ctx, builds, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	buildNamed := func(name string) *ferryv1.Build {
		for i := range builds.Items {
			if name != "" && builds.Items[i].Name == name {
				return &builds.Items[i]
			}
		}
		return nil
	}
	var best *ferryv1.Release
	for i := range releases.Items {
		r := &releases.Items[i]
		if r.Spec.Project == project && r.Spec.Image == image && (best == nil || r.CreationTimestamp.After(best.CreationTimestamp.Time)) {
			best = r
		}
	}
	if best != nil {
		s := &source{revision: best.Spec.Revision, deploy: best.Spec.Deploy, from: "settings of Release " + best.Name}
		// Name the Build only while it exists: approvals check its trigger user.
		if b := buildNamed(best.Spec.Build); b != nil {
			s.build = b.Name
			if s.deploy == nil {
				s.deploy = b.Status.Deploy
			}
		}
		if s.deploy != nil {
			return s, nil
		}
	}
	for i := range builds.Items {
		b := &builds.Items[i]
		if b.Spec.Project == project && b.Status.Image == image && b.Status.Deploy != nil && meta.IsStatusConditionTrue(b.Status.Conditions, ferryv1.ReadyCondition) {
			return &source{build: b.Name, revision: b.Spec.Revision, deploy: b.Status.Deploy, from: "settings of Build " + b.Name}, nil
		}
	}
	return nil, fmt.Errorf("no Release or successful Build of project %s with image %s records deploy settings: pass an image that Ferry deployed or built", project, shortDigest(image))
}
