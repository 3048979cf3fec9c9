package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

type renderOptions struct {
	file, pipelineFile, revision, ref, tag, image, project, build, namespace string
	cloneURL, gitSecret, pushSecret, serviceAccount, catalogFile, ferryImage string
	output                                                                   string
	insecure                                                                 bool
	projectTimeout, maxTimeout                                               time.Duration
}

func newRenderCommand() *cobra.Command {
	o := &renderOptions{}
	cmd := &cobra.Command{
		Use:   "render -f .ferry.yaml --revision SHA --image REPO",
		Short: "Print the Tekton PipelineRun a Build of this pipeline file would run",
		Long: `Print the Tekton PipelineRun that the Build controller would create for a pipeline file: the clone at
the commit, the file's build steps in the builder image, and ferry assemble. Nothing is created and no
cluster is contacted. Stack and runtime names resolve through --catalog (the platform's catalog.yaml);
image references need no catalog.`,
		Example: `  ferry render -f .ferry.yaml --revision $(git rev-parse HEAD) --image harbor.example.com/team/app
  ferry render -f .ferry.yaml --revision 3f2c… --image reg/team/app --project app --catalog catalog.yaml -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.file, "file", "f", "", "the pipeline file to render (required)")
	f.StringVar(&o.revision, "revision", "", "the commit SHA to build, 40 hex digits (required)")
	f.StringVar(&o.image, "image", "", "the image repository to push to, without tag (required)")
	f.StringVar(&o.project, "project", "", "the Project's name (labels, and the default Build name)")
	f.StringVar(&o.build, "build", "", "the Build's name (default PROJECT-SHORTSHA)")
	f.StringVarP(&o.namespace, "namespace", "n", "default", "the Build's namespace")
	f.StringVar(&o.ref, "ref", "refs/heads/main", "the git ref the commit was pushed to")
	f.StringVar(&o.tag, "tag", "", "the git tag, for a tag Build (default: from a refs/tags/ --ref)")
	f.StringVar(&o.cloneURL, "clone-url", "", "the repository's clone URL (default: the origin remote of the file's git repository)")
	f.StringVar(&o.pipelineFile, "pipeline-file", "", "the pipeline file's path in the repository (default: the file's path relative to its repository, or .ferry.yaml)")
	f.StringVar(&o.gitSecret, "git-secret", "", "the Project's clone credentials Secret, mounted for the clone step")
	f.StringVar(&o.pushSecret, "push-secret", "", "the Project's registry push Secret (dockerconfigjson), mounted for the assemble step")
	f.StringVar(&o.serviceAccount, "service-account", "", "the ServiceAccount the pipeline's pod runs as")
	f.BoolVar(&o.insecure, "insecure", false, "push over plain HTTP")
	f.DurationVar(&o.projectTimeout, "project-timeout", 0, "the Project's buildTimeout (default 1h)")
	f.DurationVar(&o.maxTimeout, "max-build-timeout", 0, "the platform's maximum Build timeout (default 6h)")
	f.StringVar(&o.catalogFile, "catalog", "", "the platform's catalog file (stacks and runtimes by name)")
	f.StringVar(&o.ferryImage, "ferry-image", manager.DefaultFerryImage, "the ferry image for the clone and assemble steps")
	f.StringVarP(&o.output, "output", "o", "yaml", "output format: yaml or json")
	for _, name := range []string{"file", "revision", "image"} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}

func (o *renderOptions) run(out, errOut io.Writer) error {
	if o.output != "yaml" && o.output != "json" {
		return fmt.Errorf("unknown output format %q: use yaml or json", o.output)
	}
	data, err := os.ReadFile(o.file)
	if err != nil {
		return fmt.Errorf("failed to read the pipeline file: %w", err)
	}
	repoRoot, origin := gitRepository(o.file)
	if o.pipelineFile == "" {
		o.pipelineFile = ".ferry.yaml"
		if repoRoot != "" {
			if abs, err := filepath.Abs(o.file); err == nil {
				if rel, err := filepath.Rel(repoRoot, abs); err == nil && !strings.HasPrefix(rel, "..") {
					o.pipelineFile = filepath.ToSlash(rel)
				}
			}
		}
	}
	f, err := pipelinefile.Parse(o.pipelineFile, data)
	if err != nil {
		return err
	}
	if o.cloneURL == "" {
		o.cloneURL = origin
	}
	if o.cloneURL == "" {
		o.cloneURL = "https://git.example.invalid/" + valueOr(o.project, "repository") + ".git"
		fmt.Fprintf(errOut, "No clone URL: rendering with %s; pass --clone-url\n", o.cloneURL)
	}
	stack, runtime, err := o.resolve(f)
	if err != nil {
		return err
	}
	project := valueOr(o.project, "app")
	build := o.build
	if build == "" && len(o.revision) >= 7 {
		build = project + "-" + o.revision[:7]
	}
	tag := o.tag
	if tag == "" {
		tag, _ = strings.CutPrefix(o.ref, "refs/tags/")
		if tag == o.ref {
			tag = ""
		}
	}
	plan, err := buildplan.New(f, buildplan.Inputs{
		BuildName: build, Namespace: o.namespace, Project: project, CloneURL: o.cloneURL,
		Revision: o.revision, Ref: o.ref, Tag: tag, PipelineFile: o.pipelineFile, Image: o.image,
		Insecure: o.insecure, StackImage: stack, RuntimeImage: runtime,
		GitCredentialsSecret: o.gitSecret, PushSecret: o.pushSecret, ServiceAccountName: o.serviceAccount,
		ProjectTimeout: o.projectTimeout, MaxTimeout: o.maxTimeout, FerryImage: o.ferryImage,
	})
	if err != nil {
		return err
	}
	pr, err := plan.PipelineRun()
	if err != nil {
		return err
	}
	var b []byte
	if o.output == "json" {
		b, err = json.MarshalIndent(pr, "", "  ")
		b = append(b, '\n')
	} else {
		b, err = yaml.Marshal(pr)
	}
	if err != nil {
		return err
	}
	_, err = out.Write(b)
	return err
}

// resolve turns the file's stack and runtime into images, through the catalog when given.
func (o *renderOptions) resolve(f *pipelinefile.File) (string, string, error) {
	var cat *catalog.Catalog
	if o.catalogFile != "" {
		data, err := os.ReadFile(o.catalogFile)
		if err != nil {
			return "", "", fmt.Errorf("failed to read the catalog: %w", err)
		}
		if cat, err = catalog.Parse(o.catalogFile, data); err != nil {
			return "", "", err
		}
	}
	hint := ""
	if cat == nil {
		hint = " (pass the platform's catalog with --catalog)"
	}
	stack, err := cat.Resolve(catalog.Stack, f.Stack)
	if err != nil {
		return "", "", f.Errorf("stack", "%v%s", err, hint)
	}
	var runtime string
	if f.Runtime != "" {
		if runtime, err = cat.Resolve(catalog.Runtime, f.Runtime); err != nil {
			return "", "", f.Errorf("runtime", "%v%s", err, hint)
		}
	}
	return stack, runtime, nil
}

// gitRepository finds the git repository holding a file: its root directory and the URL of its
// origin remote when that is a URL Ferry would fetch.
func gitRepository(file string) (string, string) {
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return "", ""
	}
	repo, err := git.PlainOpenWithOptions(dir, &git.PlainOpenOptions{DetectDotGit: true})
	if err != nil {
		return "", ""
	}
	root := ""
	if wt, err := repo.Worktree(); err == nil {
		root = wt.Filesystem.Root()
	}
	remote, err := repo.Remote(git.DefaultRemoteName)
	if err != nil || len(remote.Config().URLs) == 0 {
		return root, ""
	}
	url := remote.Config().URLs[0]
	if gitsource.ValidateURL(url) != nil {
		return root, ""
	}
	return root, url
}

func valueOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
