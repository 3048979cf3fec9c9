package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/spf13/cobra"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/supplychain"
)

type rebaseFlags struct {
	stack, runtime, catalog, dockerConfig string
	tags                                  []string
	insecure                              bool
}

func newRebaseCommand() *cobra.Command {
	fl := &rebaseFlags{}
	cmd := &cobra.Command{
		Use:   "rebase IMAGE --stack NEW_STACK [--runtime NEW_RUNTIME]",
		Short: "Put an application image on a patched stack (or runtime) without rebuilding it",
		Long: `Swap the layers under an application image's application layer: the image's recorded stack is replaced
by NEW_STACK (its runtime layers are kept on top), or, with --runtime, the whole base is replaced by
NEW_RUNTIME, which must sit on NEW_STACK. The application layer and the config are kept byte for byte; the
new lineage is recorded in the labels and annotations, and the result is pushed next to the original, by
digest (and --tag). Rebase refuses, saying why, images Ferry did not assemble, images whose layers do not
start with their recorded stack, a runtime that does not sit on the new stack, and a new base without the
image's platform. NEW_STACK and NEW_RUNTIME are image references, or catalog names with --catalog.
Progress goes to stderr; the last line on stdout is REPOSITORY@sha256:….`,
		Example: `  ferry rebase harbor.example.com/team-a/app@sha256:… --stack harbor.example.com/ferry/stacks/debian:12.9
  ferry rebase harbor.example.com/team-a/app:v1.4.0 --stack debian-12 --runtime python-3.12 --catalog catalog.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := fl.options(args[0])
			if err != nil {
				return err
			}
			c, err := image.NewClient(image.ClientOptions{DockerConfigDir: fl.dockerConfig, Insecure: fl.insecure, Log: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			log := c.Log()
			fmt.Fprintf(log, "Rebasing %s onto %s\n", opts.Image, opts.Stack)
			res, err := c.Rebase(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if res.Unchanged {
				fmt.Fprintf(log, "%s already sits on that base: nothing to push\n", res.Image)
			} else {
				fmt.Fprintf(log, "Rebased onto stack %s", res.New.Stack.Image)
				if res.New.Runtime != nil {
					fmt.Fprintf(log, " and runtime %s", res.New.Runtime.Image)
				}
				fmt.Fprintf(log, "; application layer %s kept\n", res.New.AppLayer)
				if err := rebasedSBOM(cmd.Context(), c, res, log); err != nil {
					return err
				}
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Image)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.stack, "stack", "", "the new stack: an image reference, or a catalog name with --catalog (required)")
	f.StringVar(&fl.runtime, "runtime", "", "the new runtime, which must sit on the new stack (default: keep the image's runtime layers)")
	f.StringVar(&fl.catalog, "catalog", "", "the platform's catalog file, to resolve stack and runtime names")
	f.StringArrayVar(&fl.tags, "tag", nil, "a tag for the rebased image (repeatable; never latest); by default it is pushed by digest only")
	f.StringVar(&fl.dockerConfig, "docker-config", "", "directory with the Docker config.json (default $DOCKER_CONFIG or ~/.docker)")
	f.BoolVar(&fl.insecure, "insecure-registry", false, "allow plain HTTP and unverified TLS to the registries (loopback registries never need it)")
	_ = cmd.MarkFlagRequired("stack")
	return cmd
}

// options resolves catalog names and returns the rebase options.
func (fl *rebaseFlags) options(img string) (image.RebaseOptions, error) {
	opts := image.RebaseOptions{Image: img, Stack: fl.stack, StackName: fl.stack, Runtime: fl.runtime, RuntimeName: fl.runtime, Tags: fl.tags}
	var cat *catalog.Catalog
	if fl.catalog != "" {
		data, err := os.ReadFile(fl.catalog)
		if err != nil {
			return opts, fmt.Errorf("failed to read the catalog: %w", err)
		}
		if cat, err = catalog.Parse(fl.catalog, data); err != nil {
			return opts, err
		}
	}
	resolve := func(kind catalog.Kind, v string) (string, error) {
		if v == "" || catalog.IsReference(v) {
			return v, nil
		}
		if cat == nil {
			return "", fmt.Errorf("%s %q is a catalog name: pass the platform's catalog with --catalog FILE, or an image reference", kind, v)
		}
		return cat.Resolve(kind, v)
	}
	var err error
	if opts.Stack, err = resolve(catalog.Stack, fl.stack); err != nil {
		return opts, err
	}
	if opts.Runtime, err = resolve(catalog.Runtime, fl.runtime); err != nil {
		return opts, err
	}
	return opts, nil
}

// rebasedSBOM attaches the rebased image's SBOM: the new bases' own SBOMs are linked when they
// have them, and the rest (the kept runtime layers without a new runtime, and the application
// layer) is catalogued.
func rebasedSBOM(ctx context.Context, c *image.Client, res *image.RebaseResult, log io.Writer) error {
	var bases []supplychain.Base
	for _, b := range []struct {
		role string
		src  *ferryv1.LayerSource
	}{{supplychain.RoleStack, res.New.Stack}, {supplychain.RoleRuntime, res.New.Runtime}} {
		if b.src == nil || b.src.Image == "" {
			continue
		}
		ref, err := c.ParseReference(b.src.Image)
		if err != nil {
			return err
		}
		d, ok := ref.(name.Digest)
		if !ok {
			return fmt.Errorf("the new %s %s is not pinned by digest", b.role, b.src.Image)
		}
		bases = append(bases, supplychain.Base{Role: b.role, Image: d})
	}
	ropts := c.RemoteOptions(ctx)
	d, err := supplychain.Describe(res.Image, supplychain.DescribeOptions{Bases: bases, Tool: "ferry-" + version, Remote: ropts})
	if err != nil {
		return fmt.Errorf("rebased %s, but its SBOM could not be made: %w", res.Image, err)
	}
	pub, err := supplychain.Publish(res.Image, supplychain.PublishOptions{SBOM: d.SBOM, Remote: ropts})
	if err != nil {
		return fmt.Errorf("rebased %s, but its SBOM could not be attached: %w", res.Image, err)
	}
	fmt.Fprintf(log, "SBOM %s attached: %d packages, %d layers catalogued, %d base SBOMs linked\n", pub.SBOM, pub.Packages, d.Catalogued, len(d.Linked))
	return nil
}
