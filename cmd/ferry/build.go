package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

type buildFlags struct {
	dir, file, image, revision, catalog, dockerConfig string
	tags                                              []string
	insecure                                          bool
}

func newBuildCommand(g *globalFlags) *cobra.Command {
	fl := &buildFlags{}
	cmd := &cobra.Command{
		Use:   "build",
		Short: "Build the layered image of a directory on this machine and push it, without Docker",
		Long: `Build the application image of a directory the way a Build does, on a developer's machine and without a
Docker daemon: read the pipeline file, resolve the stack and runtime (catalog names through --catalog),
make the application layer from the artifacts, and push. --image REPO[:TAG] names the repository and an
optional extra tag; the revision (default: the commit HEAD names when --dir is in a git repository) is a tag
too. Uncommitted changes are part of the layer, so the revision then only says where they started from.
Progress goes to stderr; the last line on stdout is REPOSITORY@sha256:….`,
		Example: `  ferry build --image harbor.example.com/team-a/app --catalog catalog.yaml
  ferry build --dir ./service --image localhost:5000/app:dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := fl.options()
			if err != nil {
				return err
			}
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
	f.StringVar(&fl.dir, "dir", ".", "the directory to build")
	f.StringVar(&fl.file, "file", "", "the pipeline file inside --dir (default .ferry.yaml)")
	f.StringVar(&fl.image, "image", "", "the repository to push to, with an optional extra tag: REPO[:TAG] (required)")
	f.StringVar(&fl.revision, "revision", "", "the commit (full hash) to tag and label the image with (default: the git HEAD of --dir)")
	f.StringArrayVar(&fl.tags, "tag", nil, "an extra tag (repeatable; never latest)")
	f.StringVar(&fl.catalog, "catalog", "", "the platform's catalog file, to resolve stack and runtime names such as debian-12")
	f.StringVar(&fl.dockerConfig, "docker-config", "", "directory with the Docker config.json (default $DOCKER_CONFIG or ~/.docker)")
	f.BoolVar(&fl.insecure, "insecure-registry", false, "allow plain HTTP and unverified TLS to the registries (loopback registries never need it)")
	_ = cmd.MarkFlagRequired("image")
	cmd.AddCommand(newRerunCommand(g))
	return cmd
}

// options turns the flags into assemble options: the tag split from --image, the revision and
// source URL from git, the catalog names resolved.
func (fl *buildFlags) options() (assemble.Options, error) {
	repo, tags := fl.image, fl.tags
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") && !strings.Contains(repo, "@") {
		repo, tags = repo[:i], append([]string{repo[i+1:]}, tags...)
	}
	opts := assemble.Options{
		Dir: fl.dir, PipelineFile: fl.file, Image: repo, Tags: tags, Revision: fl.revision,
		DockerConfigDir: fl.dockerConfig, Insecure: fl.insecure,
	}
	git, err := assemble.ReadGitRepository(fl.dir)
	if err != nil {
		return opts, err
	}
	if git != nil {
		if opts.Revision == "" {
			opts.Revision = git.Head
		}
		opts.SourceURL = git.Origin
	}
	file, err := pipelinefile.Load(fl.dir, fl.file)
	if err != nil {
		return opts, err
	}
	opts.File = file
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
	if !catalog.IsReference(file.Stack) {
		if cat == nil {
			return opts, fmt.Errorf("stack %q is a catalog name: pass the platform's catalog with --catalog FILE", file.Stack)
		}
		if opts.StackImage, err = cat.Resolve(catalog.Stack, file.Stack); err != nil {
			return opts, err
		}
	}
	if file.Runtime != "" && !catalog.IsReference(file.Runtime) {
		if cat == nil {
			return opts, fmt.Errorf("runtime %q is a catalog name: pass the platform's catalog with --catalog FILE", file.Runtime)
		}
		if opts.RuntimeImage, err = cat.Resolve(catalog.Runtime, file.Runtime); err != nil {
			return opts, err
		}
	}
	return opts, nil
}
