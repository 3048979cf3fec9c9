package buildplan

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/tektoncd/pipeline/pkg/apis/pipeline/pod"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Names inside the rendered PipelineRun.
const (
	// TaskName is the pipeline's single task: every step shares one pod and its checkout.
	TaskName = "build"
	// SourceWorkspace is the checkout, an emptyDir for the run.
	SourceWorkspace = "source"
	// CacheWorkspace is the Project's step cache (Inputs.Cache), a PersistentVolumeClaim.
	CacheWorkspace = "cache"
	// gitCredentialsVolume and dockerConfigVolume mount the Project's Secrets into the one step
	// that needs each; the user's steps never see them.
	gitCredentialsVolume = "git-credentials"
	dockerConfigVolume   = "docker-config"
)

// PipelineRun renders the plan as a Tekton v1 PipelineRun with an inline pipeline of one task.
// The caller sets the owner reference.
func (p *Plan) PipelineRun() (*pipelinev1.PipelineRun, error) {
	deploy, err := json.Marshal(p.File.Deploy)
	if err != nil {
		return nil, fmt.Errorf("failed to encode the deploy settings: %w", err)
	}
	task := &pipelinev1.TaskSpec{
		Workspaces: []pipelinev1.WorkspaceDeclaration{{Name: SourceWorkspace, MountPath: SourceDir, Description: "The commit's checkout."}},
		Results: []pipelinev1.TaskResult{
			{Name: ResultImageURL, Type: pipelinev1.ResultsTypeString, Description: "The pushed image's repository; IMAGE_URL@IMAGE_DIGEST is the image."},
			{Name: ResultImageDigest, Type: pipelinev1.ResultsTypeString, Description: "The pushed image's manifest digest."},
			{Name: ResultLineage, Type: pipelinev1.ResultsTypeString, Description: "The image's stack, runtime and application layer (JSON)."},
		},
	}
	if p.GitCredentialsSecret != "" {
		task.Volumes = append(task.Volumes, corev1.Volume{Name: gitCredentialsVolume, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{SecretName: p.GitCredentialsSecret, DefaultMode: ptr.To[int32](0o400)},
		}})
	}
	if p.PushSecret != "" {
		task.Volumes = append(task.Volumes, corev1.Volume{Name: dockerConfigVolume, VolumeSource: corev1.VolumeSource{
			Secret: &corev1.SecretVolumeSource{
				SecretName:  p.PushSecret,
				Items:       []corev1.KeyToPath{{Key: corev1.DockerConfigJsonKey, Path: "config.json"}},
				DefaultMode: ptr.To[int32](0o400),
			},
		}})
	}
	for _, s := range p.Steps {
		task.Steps = append(task.Steps, p.tektonStep(s))
	}
	pipeline := &pipelinev1.PipelineSpec{
		Workspaces: []pipelinev1.PipelineWorkspaceDeclaration{{Name: SourceWorkspace}},
		Tasks:      []pipelinev1.PipelineTask{{Name: TaskName, Workspaces: []pipelinev1.WorkspacePipelineTaskBinding{{Name: SourceWorkspace, Workspace: SourceWorkspace}}}},
	}
	bindings := []pipelinev1.WorkspaceBinding{{Name: SourceWorkspace, EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	if p.Cache.Claim != "" {
		task.Workspaces = append(task.Workspaces, pipelinev1.WorkspaceDeclaration{Name: CacheWorkspace, MountPath: CacheDir, Description: "The Project's step cache."})
		pipeline.Workspaces = append(pipeline.Workspaces, pipelinev1.PipelineWorkspaceDeclaration{Name: CacheWorkspace})
		pipeline.Tasks[0].Workspaces = append(pipeline.Tasks[0].Workspaces, pipelinev1.WorkspacePipelineTaskBinding{Name: CacheWorkspace, Workspace: CacheWorkspace})
		bindings = append(bindings, pipelinev1.WorkspaceBinding{Name: CacheWorkspace, PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: p.Cache.Claim}})
	}
	pipeline.Tasks[0].TaskSpec = &pipelinev1.EmbeddedTask{TaskSpec: *task}
	for _, r := range []string{ResultImageURL, ResultImageDigest, ResultLineage} {
		pipeline.Results = append(pipeline.Results, pipelinev1.PipelineResult{
			Name:  r,
			Type:  pipelinev1.ResultsTypeString,
			Value: *pipelinev1.NewStructuredValues(fmt.Sprintf("$(tasks.%s.results.%s)", TaskName, r)),
		})
	}
	pr := &pipelinev1.PipelineRun{
		TypeMeta: metav1.TypeMeta{APIVersion: pipelinev1.SchemeGroupVersion.String(), Kind: "PipelineRun"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      PipelineRunName(p.BuildName, p.BuildUID),
			Namespace: p.Namespace,
			Labels: map[string]string{
				ferryv1.ProjectLabel:   p.Project,
				ferryv1.BuildLabel:     p.BuildName,
				ferryv1.ManagedByLabel: ferryv1.ManagedByValue,
			},
			Annotations: map[string]string{
				ferryv1.RevisionAnnotation: p.Revision,
				ferryv1.DeployAnnotation:   string(deploy),
			},
		},
		Spec: pipelinev1.PipelineRunSpec{
			PipelineSpec: pipeline,
			Timeouts:     &pipelinev1.TimeoutFields{Pipeline: &metav1.Duration{Duration: p.Timeout}},
			TaskRunTemplate: pipelinev1.PipelineTaskRunTemplate{
				ServiceAccountName: p.ServiceAccountName,
				// The steps need no Kubernetes API: the user's steps get no token to use it with.
				PodTemplate: &pod.PodTemplate{AutomountServiceAccountToken: ptr.To(false)},
			},
			Workspaces: bindings,
		},
	}
	if len(pr.Labels[ferryv1.BuildLabel]) > 63 {
		// A label value holds at most 63 characters; the Build's name is then in the name prefix.
		delete(pr.Labels, ferryv1.BuildLabel)
	}
	return pr, nil
}

func (p *Plan) tektonStep(s Step) pipelinev1.Step {
	step := pipelinev1.Step{Name: s.Name, Image: s.Image}
	if s.Timeout > 0 {
		step.Timeout = &metav1.Duration{Duration: s.Timeout}
	}
	switch s.Kind {
	case UserStep:
		step.Script = UserScript(s)
		step.WorkingDir = SourceDir
		if p.Cache.Claim != "" {
			// The step's own environment, exported first in its script, wins.
			for _, v := range p.Cache.Vars {
				step.Env = append(step.Env, corev1.EnvVar{Name: v, Value: path.Join(CacheDir, v)})
			}
		}
	default:
		step.Command = []string{"ferry"}
		step.Args = slices.Clone(s.Args)
	}
	switch {
	case s.Kind == CloneStep && p.GitCredentialsSecret != "":
		step.VolumeMounts = []corev1.VolumeMount{{Name: gitCredentialsVolume, MountPath: GitCredentialsDir, ReadOnly: true}}
	case s.Kind == AssembleStep && p.PushSecret != "":
		step.VolumeMounts = []corev1.VolumeMount{{Name: dockerConfigVolume, MountPath: DockerConfigDir, ReadOnly: true}}
	}
	return step
}

// tektonRefRE finds what Tekton would substitute in a script: $(params.x), $(context.…), ….
var tektonRefRE = regexp.MustCompile(`\$\((params|context|workspaces|results|steps|step|tasks|task|inputs|outputs|resources|artifacts|credentials)([.\[])`)

// UserScript is a user step as the script Tekton runs: /bin/sh, the step's environment exported
// first, then the user's script. Tekton would substitute its own variables ($(params.…)) in a
// script; a space after "$(" keeps them the shell's own (command substitution, as written) without
// Tekton touching them, and environment values are quoted so that nothing in them is expanded.
func UserScript(s Step) string {
	var b strings.Builder
	b.WriteString("#!/bin/sh\n")
	keys := make([]string, 0, len(s.Env))
	for k := range s.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "export %s=%s\n", k, shellQuote(s.Env[k]))
	}
	b.WriteString(tektonRefRE.ReplaceAllString(s.Run, "$$( $1$2"))
	if !strings.HasSuffix(s.Run, "\n") {
		b.WriteString("\n")
	}
	return b.String()
}

// shellQuote single-quotes a value for /bin/sh. "$(" is split across two quoted strings so that
// Tekton does not see a variable in it; the shell joins them back.
func shellQuote(v string) string {
	q := "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
	return strings.ReplaceAll(q, "$(", "$''(")
}
