package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/ferryci/ferry/internal/assemble"
)

func newAssembleCommand() *cobra.Command {
	opts := assemble.Options{}
	cmd := &cobra.Command{
		Use:   "assemble",
		Short: "Assemble the layered image of a checkout and push it (the image step of a Build)",
		Long: `Assemble the application image of a repository checkout without a Docker daemon: one layer made
reproducibly from the pipeline file's artifacts, on the runtime image (which must sit on the stack image),
with the entrypoint, env, workdir, ports and user of the pipeline file. The image is pushed by digest,
tagged with the revision and --tag values (never latest); blobs already in the repository are not uploaded
and blobs of another repository on the same registry are mounted. Credentials come from the Docker config
in --docker-config. Progress goes to stderr; the last line on stdout is REPOSITORY@sha256:….
Catalog names must be resolved by the caller and passed as --stack-image and --runtime-image.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Log = cmd.ErrOrStderr()
			res, err := assemble.Assemble(cmd.Context(), opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Image)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Dir, "dir", ".", "the repository checkout")
	f.StringVar(&opts.PipelineFile, "file", "", "the pipeline file inside --dir (default .ferry.yaml)")
	f.StringVar(&opts.Image, "image", "", "the repository to push to, without tag or digest (required)")
	f.StringVar(&opts.Revision, "revision", "", "the commit (full hash): a tag and the org.opencontainers.image.revision label")
	f.StringArrayVar(&opts.Tags, "tag", nil, "an extra tag, e.g. the git tag of a tag build (repeatable; never latest)")
	f.StringVar(&opts.SourceURL, "source-url", "", "the repository's URL, for the org.opencontainers.image.source label (credentials are removed)")
	f.StringVar(&opts.StackImage, "stack-image", "", "the stack image, overriding the pipeline file's stack (a resolved catalog name)")
	f.StringVar(&opts.RuntimeImage, "runtime-image", "", "the runtime image, overriding the pipeline file's runtime (a resolved catalog name)")
	f.StringVar(&opts.DockerConfigDir, "docker-config", "", "directory with the Docker config.json holding the registry credentials (default $DOCKER_CONFIG or ~/.docker)")
	f.BoolVar(&opts.Insecure, "insecure-registry", false, "allow plain HTTP and unverified TLS to the registries (loopback registries never need it)")
	f.StringVar(&opts.ResultsDir, "results-dir", "", "write the Tekton results IMAGE_URL, IMAGE_DIGEST and FERRY_LINEAGE into this directory")
	_ = cmd.MarkFlagRequired("image")
	return cmd
}
