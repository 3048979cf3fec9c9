// Package buildplan turns a pipeline file and a Build's inputs into the steps that make the image:
// clone the commit (`ferry git-clone`), the user's build steps in the builder image, then `ferry
// assemble`. The Tekton executor renders them as one PipelineRun (PipelineRun); the local executor
// runs the same steps as processes on the host.
package buildplan

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

// Defaults for timeouts: the Project's buildTimeout when it says nothing, and the platform's cap.
const (
	DefaultBuildTimeout = time.Hour
	DefaultMaxTimeout   = 6 * time.Hour
)

// Paths inside the pipeline's pod.
const (
	// SourceDir is the checkout, the Tekton workspace "source".
	SourceDir = "/workspace/source"
	// GitCredentialsDir is where the Project's clone credentials are mounted, for the clone step
	// only.
	GitCredentialsDir = "/ferry/git-credentials" //nolint:gosec // G101: a mount path, not a credential
	// DockerConfigDir holds config.json from the Project's push Secret, for the assemble step only.
	DockerConfigDir = "/ferry/docker-config"
	// CacheDir is the Project's step cache, the Tekton workspace "cache" (Inputs.Cache).
	CacheDir = "/ferry/cache"
	// ResultsDir is where Tekton collects step results.
	ResultsDir = "/tekton/results"
)

// Tekton result names written by `ferry assemble`. IMAGE_URL and IMAGE_DIGEST are the names Tekton
// Chains reads for provenance.
const (
	ResultImageURL    = "IMAGE_URL"
	ResultImageDigest = "IMAGE_DIGEST"
	ResultLineage     = "FERRY_LINEAGE"
)

// Inputs are everything a Build's steps depend on besides the pipeline file.
type Inputs struct {
	// BuildName and BuildUID identify the Build; the PipelineRun's name derives from them.
	BuildName string
	BuildUID  types.UID
	// Namespace is the Build's namespace.
	Namespace string
	// Project is the Project's name.
	Project string
	// CloneURL is the Project's clone URL, the only URL fetched.
	CloneURL string
	// Revision is the commit SHA; Ref the ref it was pushed to.
	Revision, Ref string
	// Tag is the git tag for tag builds; it becomes an image tag.
	Tag string
	// PipelineFile is the pipeline file's path in the repository.
	PipelineFile string
	// Image is the image repository pushed to.
	Image string
	// Insecure allows plain HTTP to the registry.
	Insecure bool
	// StackImage and RuntimeImage are the pipeline file's stack and runtime, resolved through the
	// catalog; RuntimeImage is empty without a runtime.
	StackImage, RuntimeImage string
	// GitCredentialsSecret and PushSecret name the Project's Secrets ("" for none).
	GitCredentialsSecret, PushSecret string
	// ServiceAccountName runs the pipeline's pod ("" for the namespace's default).
	ServiceAccountName string
	// ProjectTimeout is the Project's buildTimeout (0: DefaultBuildTimeout); MaxTimeout the
	// platform's cap (0: DefaultMaxTimeout).
	ProjectTimeout, MaxTimeout time.Duration
	// FerryImage is the image with the ferry binary, for the clone and assemble steps.
	FerryImage string
	// Cache is the Project's step cache; none when its Claim is empty.
	Cache Cache
}

// Cache is a volume that outlives the Build, kept for one Project, where the user's steps keep
// what their tools cache (Go's build and module caches, pip's wheels): each variable in Vars
// points at a directory of its own name in it, unless the step sets the variable itself.
type Cache struct {
	// Claim is the PersistentVolumeClaim of the Project's cache, in the Build's namespace.
	Claim string
	// Vars are the environment variables that name cache directories (GOCACHE, GOMODCACHE, …).
	Vars []string
}

// StepKind says who provides a step.
type StepKind string

const (
	// CloneStep checks the commit out (`ferry git-clone`).
	CloneStep StepKind = "Clone"
	// UserStep is one of the pipeline file's build steps.
	UserStep StepKind = "User"
	// AssembleStep builds and pushes the image (`ferry assemble`).
	AssembleStep StepKind = "Assemble"
)

// Step is one step of the plan.
type Step struct {
	// Name is the step's name: clone, the user's names, assemble.
	Name string
	// Kind says who provides it.
	Kind StepKind
	// Image runs the step (the ferry image, or the pipeline file's builder image).
	Image string
	// Args are the ferry command's arguments (Clone, Assemble).
	Args []string
	// Run is the user's shell script (User).
	Run string
	// Env is the user step's environment.
	Env map[string]string
	// Timeout bounds the step; 0 for none beyond the Build's.
	Timeout time.Duration
}

// Plan is what a Build runs.
type Plan struct {
	Inputs
	// File is the parsed pipeline file.
	File *pipelinefile.File
	// Steps run in order.
	Steps []Step
	// Timeout bounds the whole Build: the file's timeout, capped by the Project's and the platform's.
	Timeout time.Duration
	// Tags are the tags pushed with the image: the commit SHA, and the git tag for tag builds.
	Tags []string
}

// New makes the plan for a pipeline file and a Build's inputs.
func New(f *pipelinefile.File, in Inputs) (*Plan, error) {
	if err := in.validate(); err != nil {
		return nil, err
	}
	p := &Plan{Inputs: in, File: f, Timeout: EffectiveTimeout(f.Timeout, in.ProjectTimeout, in.MaxTimeout)}
	p.Tags = []string{in.Revision}
	if in.Tag != "" {
		p.Tags = append(p.Tags, in.Tag)
	}
	// `ferry assemble` would refuse them only at the end of the run.
	if err := image.ValidateTags(p.Tags); err != nil {
		return nil, err
	}
	clone := []string{"git-clone", "--url", in.CloneURL, "--revision", in.Revision}
	if in.Ref != "" {
		clone = append(clone, "--ref", in.Ref)
	}
	clone = append(clone, "--dir", SourceDir)
	if in.GitCredentialsSecret != "" {
		clone = append(clone, "--credentials-dir", GitCredentialsDir)
	}
	p.Steps = append(p.Steps, Step{Name: pipelinefile.CloneStep, Kind: CloneStep, Image: in.FerryImage, Args: clone})
	if f.Build != nil {
		for _, s := range f.Build.Steps {
			step := Step{Name: s.Name, Kind: UserStep, Image: f.Build.Image, Run: s.Run, Env: s.Env}
			if s.Timeout != nil {
				step.Timeout = min(s.Timeout.Duration, p.Timeout)
			}
			p.Steps = append(p.Steps, step)
		}
	}
	p.Steps = append(p.Steps, Step{Name: pipelinefile.AssembleStep, Kind: AssembleStep, Image: in.FerryImage, Args: p.assembleArgs(SourceDir, DockerConfigDir, ResultsDir)})
	return p, nil
}

// assembleArgs are `ferry assemble`'s arguments, in the order the image issue defines them.
func (p *Plan) assembleArgs(dir, dockerConfig, results string) []string {
	args := []string{"assemble", "--dir", dir, "--file", p.PipelineFile, "--image", p.Image, "--revision", p.Revision}
	if p.Tag != "" {
		args = append(args, "--tag", p.Tag)
	}
	args = append(args, "--source-url", p.CloneURL, "--stack-image", p.StackImage)
	if p.RuntimeImage != "" {
		args = append(args, "--runtime-image", p.RuntimeImage)
	}
	if p.PushSecret != "" {
		args = append(args, "--docker-config", dockerConfig)
	}
	if p.Insecure {
		args = append(args, "--insecure-registry")
	}
	return append(args, "--results-dir", results)
}

// StepNames lists the steps' names in order.
func (p *Plan) StepNames() []string {
	names := make([]string, len(p.Steps))
	for i, s := range p.Steps {
		names[i] = s.Name
	}
	return names
}

// EffectiveTimeout is how long a Build may run: what the pipeline file asks for, never more than
// the Project's buildTimeout (default 1h) nor the platform's maximum (default 6h).
func EffectiveTimeout(file *metav1.Duration, project, platform time.Duration) time.Duration {
	if project <= 0 {
		project = DefaultBuildTimeout
	}
	if platform <= 0 {
		platform = DefaultMaxTimeout
	}
	limit := min(project, platform)
	if file != nil && file.Duration > 0 {
		return min(file.Duration, limit)
	}
	return limit
}

func (in Inputs) validate() error {
	var errs []error
	if err := gitsource.ValidateURL(in.CloneURL); err != nil {
		errs = append(errs, fmt.Errorf("clone URL: %w", err))
	}
	if err := gitsource.ValidateRevision(in.Revision); err != nil {
		errs = append(errs, err)
	}
	if in.Ref != "" {
		if err := gitsource.ValidateRef(in.Ref); err != nil {
			errs = append(errs, err)
		}
	}
	if in.Image == "" {
		errs = append(errs, errors.New("no image repository"))
	}
	if in.StackImage == "" {
		errs = append(errs, errors.New("no stack image"))
	}
	if in.FerryImage == "" {
		errs = append(errs, errors.New("no ferry image for the clone and assemble steps"))
	}
	// Kubernetes expands $(VAR) in arguments and Tekton $(params.…): values that reach arguments
	// must not look like either.
	for what, v := range map[string]string{"tag": in.Tag, "pipeline file": in.PipelineFile, "ref": in.Ref, "image": in.Image, "stack image": in.StackImage, "runtime image": in.RuntimeImage, "clone URL": in.CloneURL} {
		if strings.Contains(v, "$") {
			errs = append(errs, fmt.Errorf("the %s %q contains '$'", what, v))
		}
	}
	if in.PipelineFile == "" || strings.HasPrefix(in.PipelineFile, "/") || slices.Contains(strings.Split(in.PipelineFile, "/"), "..") {
		errs = append(errs, fmt.Errorf("the pipeline file path %q must be relative to the repository root", in.PipelineFile))
	}
	return errors.Join(errs...)
}

// PipelineRunName is the PipelineRun's name for a Build: the Build's name (shortened to leave
// Tekton's TaskRun and pod names within 63 characters) and a hash of its UID, so that a Build
// deleted and created again under the same name never meets its predecessor's TaskRuns.
func PipelineRunName(buildName string, uid types.UID) string {
	const maxPrefix = 44
	name := buildName
	if len(name) > maxPrefix {
		name = strings.TrimRight(name[:maxPrefix], "-.")
	}
	if uid == "" {
		return name
	}
	sum := sha256.Sum256([]byte(uid))
	return name + "-" + hex.EncodeToString(sum[:])[:5]
}
