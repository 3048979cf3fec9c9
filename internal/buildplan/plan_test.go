package buildplan_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/pipelinefile"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

const (
	sha       = "0123456789abcdef0123456789abcdef01234567"
	stackRef  = "reg.example.com/stacks/debian@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
	rtRef     = "reg.example.com/runtimes/python@sha256:1b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
	ferryImg  = "ghcr.io/ferryci/ferry:v0.1.0"
	cloneURL  = "https://gitlab.example.com/team/app.git"
	imageRepo = "harbor.example.com/team/app"
)

func inputs() buildplan.Inputs {
	return buildplan.Inputs{
		BuildName: "app-main-0123456", BuildUID: "6f1c2d1e-0000-4000-8000-000000000001", Namespace: "team",
		Project: "app", CloneURL: cloneURL, Revision: sha, Ref: "refs/heads/main", PipelineFile: ".ferry.yaml",
		Image: imageRepo, StackImage: stackRef, RuntimeImage: rtRef, FerryImage: ferryImg,
		GitCredentialsSecret: "app-git", PushSecret: "app-push", ServiceAccountName: "builder",
	}
}

// pipelineFiles is the table of pipeline files every rendering test goes through, plus the
// examples in the repository.
func pipelineFiles(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{
		"minimal":  "stack: debian-12\n",
		"runtime":  "stack: debian-12\nruntime: python-3.12\nentrypoint: [python, app.py]\nports: [8080]\n",
		"no build": "stack: " + stackRef + "\nartifacts: [app/]\nworkdir: /srv\n",
		"build": `stack: debian-12
runtime: python-3.12
build:
  image: python:3.12
  steps:
    - name: deps
      run: pip install -r requirements.txt
    - name: test
      run: |
        pytest -q
        echo "done in $(pwd)"
      env: {CI: "true", QUOTED: "it's $(not) a ${var}"}
      timeout: 5m
timeout: 30m
`,
		"tekton variables in scripts": `stack: debian-12
build:
  image: alpine:3.20
  steps:
    - name: tricky
      run: echo $(params.foo) $(context.taskRun.name) $(workspaces.source.path) $(results.x.path) $(steps.clone.exitCode.path) $(params["a"]) $((1+2))
      env: {X: "$(params.bar)"}
`,
		"many steps": func() string {
			var b strings.Builder
			b.WriteString("stack: debian-12\nbuild:\n  image: golang:1.26\n  steps:\n")
			for i := range 32 {
				b.WriteString("    - {name: step-" + strings.Repeat("x", i%20) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ", run: 'true'}\n")
			}
			return b.String()
		}(),
	}
	examples, _ := filepath.Glob("../../examples/*/.ferry.yaml")
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files["example "+filepath.Base(filepath.Dir(p))] = string(b)
	}
	return files
}

func render(t *testing.T, name, content string, in buildplan.Inputs) (*buildplan.Plan, *pipelinev1.PipelineRun) {
	t.Helper()
	f, err := pipelinefile.Parse(".ferry.yaml", []byte(content))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	p, err := buildplan.New(f, in)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	pr, err := p.PipelineRun()
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return p, pr
}

// tektonValidate runs Tekton's own defaulting and validation, as its admission webhook does.
func tektonValidate(pr *pipelinev1.PipelineRun) *apis.FieldError {
	ctx := apis.WithinCreate(context.Background())
	c := pr.DeepCopy()
	c.SetDefaults(ctx)
	return c.Validate(ctx)
}

// TestRenderedPipelineRunsAreValid: every rendered PipelineRun passes Tekton's validation and is
// accepted by a real API server with Tekton's CRDs.
func TestRenderedPipelineRunsAreValid(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ns := testutil.Namespace(t, hub.Client)
	variants := map[string]func(*buildplan.Inputs){
		"with secrets": func(*buildplan.Inputs) {},
		"without secrets": func(in *buildplan.Inputs) {
			in.GitCredentialsSecret, in.PushSecret, in.ServiceAccountName, in.RuntimeImage = "", "", "", ""
		},
		"tag build":       func(in *buildplan.Inputs) { in.Tag, in.Ref, in.Insecure = "v1.2.0", "refs/tags/v1.2.0", true },
		"long build name": func(in *buildplan.Inputs) { in.BuildName = strings.Repeat("very-long-build-name-", 10) + "x" },
		"with a step cache": func(in *buildplan.Inputs) {
			in.Cache = buildplan.Cache{Claim: "ferry-cache-app", Vars: []string{"GOCACHE", "GOMODCACHE"}}
		},
	}
	i := 0
	for name, content := range pipelineFiles(t) {
		for vname, vary := range variants {
			t.Run(name+"/"+vname, func(t *testing.T) {
				in := inputs()
				vary(&in)
				in.Namespace = ns
				in.BuildUID = types.UID(fmt.Sprintf("uid-%d", i))
				i++
				_, pr := render(t, name, content, in)
				if err := tektonValidate(pr); err != nil {
					t.Fatalf("Tekton refuses the PipelineRun: %v", err)
				}
				if len(pr.Name) > 50 {
					t.Errorf("name %q is longer than 50 characters", pr.Name)
				}
				if err := hub.Client.Create(context.Background(), pr); err != nil {
					t.Fatalf("the API server refuses the PipelineRun: %v", err)
				}
			})
		}
	}
}

// TestTektonVariablesAreEscaped: without the escaping, Tekton would refuse (or substitute) the
// user's script; with it, the script the shell runs is unchanged.
func TestTektonVariablesAreEscaped(t *testing.T) {
	raw := pipelinev1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "raw"},
		Spec: pipelinev1.PipelineRunSpec{PipelineSpec: &pipelinev1.PipelineSpec{Tasks: []pipelinev1.PipelineTask{{
			Name: "t", TaskSpec: &pipelinev1.EmbeddedTask{TaskSpec: pipelinev1.TaskSpec{Steps: []pipelinev1.Step{{Name: "s", Image: "alpine", Script: "echo $(params.foo)"}}}},
		}}}},
	}
	if tektonValidate(&raw) == nil {
		t.Fatal("Tekton accepts an undeclared $(params.foo): the escaping test proves nothing")
	}
	script := buildplan.UserScript(buildplan.Step{Run: "echo $(params.foo) $(date) $((1+2)) $(params[\"a\"])", Env: map[string]string{"B": "it's $(x)", "A": "plain"}})
	want := "#!/bin/sh\nexport A='plain'\nexport B='it'\\''s $''(x)'\necho $( params.foo) $(date) $((1+2)) $( params[\"a\"])\n"
	if script != want {
		t.Errorf("script:\n%s\nwant:\n%s", script, want)
	}
	// The shell sees the same values.
	out := runShell(t, script+"printf '%s|%s' \"$A\" \"$B\"\n")
	if !strings.HasSuffix(out, "plain|it's $(x)") {
		t.Errorf("shell output %q", out)
	}
}

// TestStepCache: with a cache, the Project's claim is the "cache" workspace and only the user's
// steps get the cache variables, which their own environment can override; without one, nothing
// of it is rendered.
func TestStepCache(t *testing.T) {
	content := pipelineFiles(t)["build"]
	in := inputs()
	_, pr := render(t, "build", content, in)
	if len(pr.Spec.Workspaces) != 1 || len(pr.Spec.PipelineSpec.Tasks[0].TaskSpec.Workspaces) != 1 {
		t.Fatalf("a cache without Inputs.Cache: %+v", pr.Spec.Workspaces)
	}
	in.Cache = buildplan.Cache{Claim: "ferry-cache-app", Vars: []string{"GOCACHE", "PIP_CACHE_DIR"}}
	_, pr = render(t, "build", content, in)
	var claim string
	for _, w := range pr.Spec.Workspaces {
		if w.Name == buildplan.CacheWorkspace && w.PersistentVolumeClaim != nil {
			claim = w.PersistentVolumeClaim.ClaimName
		}
	}
	if claim != "ferry-cache-app" {
		t.Errorf("cache workspace bound to %q: %+v", claim, pr.Spec.Workspaces)
	}
	task := pr.Spec.PipelineSpec.Tasks[0]
	if !slices.ContainsFunc(task.Workspaces, func(w pipelinev1.WorkspacePipelineTaskBinding) bool { return w.Name == buildplan.CacheWorkspace }) ||
		!slices.ContainsFunc(task.TaskSpec.Workspaces, func(w pipelinev1.WorkspaceDeclaration) bool {
			return w.Name == buildplan.CacheWorkspace && w.MountPath == buildplan.CacheDir
		}) {
		t.Errorf("the task does not declare and bind the cache: %+v %+v", task.Workspaces, task.TaskSpec.Workspaces)
	}
	for _, s := range task.TaskSpec.Steps {
		env := map[string]string{}
		for _, e := range s.Env {
			env[e.Name] = e.Value
		}
		user := s.Name != "clone" && s.Name != "assemble"
		switch {
		case user && (env["GOCACHE"] != "/ferry/cache/GOCACHE" || env["PIP_CACHE_DIR"] != "/ferry/cache/PIP_CACHE_DIR"):
			t.Errorf("user step %s env = %v", s.Name, env)
		case !user && len(env) != 0:
			t.Errorf("step %s gets the cache variables: %v", s.Name, env)
		}
	}
	// A step that sets a cache variable itself keeps its own value: its script exports it after
	// the container's environment is set.
	out := runShell(t, "GOCACHE=/ferry/cache/GOCACHE\n"+buildplan.UserScript(buildplan.Step{Run: "printf %s \"$GOCACHE\"", Env: map[string]string{"GOCACHE": "/tmp/mine"}}))
	if !strings.HasSuffix(out, "/tmp/mine") {
		t.Errorf("the step's own GOCACHE lost: %q", out)
	}
	if err := tektonValidate(pr); err != nil {
		t.Fatalf("Tekton refuses the PipelineRun: %v", err)
	}
}

func TestPlanSteps(t *testing.T) {
	content := pipelineFiles(t)["build"]
	in := inputs()
	in.Tag, in.Ref, in.Insecure = "v1.2.0", "refs/tags/v1.2.0", true
	p, pr := render(t, "build", content, in)
	if got := p.StepNames(); !slices.Equal(got, []string{"clone", "deps", "test", "assemble"}) {
		t.Errorf("steps = %v", got)
	}
	if !slices.Equal(p.Tags, []string{sha, "v1.2.0"}) {
		t.Errorf("tags = %v", p.Tags)
	}
	if pr.Name != "app-main-0123456-"+buildplan.PipelineRunName("", in.BuildUID)[1:] || !strings.HasPrefix(pr.Name, "app-main-0123456-") {
		t.Errorf("name = %s", pr.Name)
	}
	if pr.Labels["ferry.dev/project"] != "app" || pr.Labels["ferry.dev/build"] != "app-main-0123456" || pr.Annotations[ferryv1.RevisionAnnotation] != sha {
		t.Errorf("labels %v annotations %v", pr.Labels, pr.Annotations)
	}
	if pr.Annotations[ferryv1.DeployAnnotation] != `{"replicas":1}` {
		t.Errorf("deploy annotation = %s", pr.Annotations[ferryv1.DeployAnnotation])
	}
	if pr.Spec.Timeouts.Pipeline.Duration != 30*time.Minute {
		t.Errorf("pipeline timeout = %v", pr.Spec.Timeouts.Pipeline)
	}
	if pr.Spec.TaskRunTemplate.ServiceAccountName != "builder" || *pr.Spec.TaskRunTemplate.PodTemplate.AutomountServiceAccountToken {
		t.Errorf("taskRunTemplate = %+v", pr.Spec.TaskRunTemplate)
	}
	task := pr.Spec.PipelineSpec.Tasks[0].TaskSpec.TaskSpec
	steps := task.Steps
	wantClone := []string{"git-clone", "--url", cloneURL, "--revision", sha, "--ref", "refs/tags/v1.2.0", "--dir", "/workspace/source", "--credentials-dir", "/ferry/git-credentials"}
	if steps[0].Image != ferryImg || !slices.Equal(steps[0].Command, []string{"ferry"}) || !slices.Equal(steps[0].Args, wantClone) {
		t.Errorf("clone step = %+v", steps[0])
	}
	// The contract with the image issue, argument for argument.
	wantAssemble := []string{"assemble", "--dir", "/workspace/source", "--file", ".ferry.yaml", "--image", imageRepo, "--revision", sha,
		"--tag", "v1.2.0", "--source-url", cloneURL, "--stack-image", stackRef, "--runtime-image", rtRef,
		"--docker-config", "/ferry/docker-config", "--insecure-registry", "--results-dir", "/tekton/results"}
	if last := steps[3]; last.Name != "assemble" || last.Image != ferryImg || !slices.Equal(last.Args, wantAssemble) {
		t.Errorf("assemble step = %+v\nwant args %v", last, wantAssemble)
	}
	if s := steps[2]; s.Image != "python:3.12" || s.WorkingDir != "/workspace/source" || s.Timeout.Duration != 5*time.Minute || !strings.Contains(s.Script, "export CI='true'\n") {
		t.Errorf("test step = %+v", s)
	}
	// Each Secret is mounted into exactly the step that needs it; the user's steps see neither.
	mounts := map[string][]string{}
	for _, s := range steps {
		for _, m := range s.VolumeMounts {
			mounts[s.Name] = append(mounts[s.Name], m.Name+":"+m.MountPath)
		}
	}
	if len(mounts) != 2 || !slices.Equal(mounts["clone"], []string{"git-credentials:/ferry/git-credentials"}) || !slices.Equal(mounts["assemble"], []string{"docker-config:/ferry/docker-config"}) {
		t.Errorf("volume mounts = %v", mounts)
	}
	vols := map[string]*corev1.SecretVolumeSource{}
	for _, v := range task.Volumes {
		vols[v.Name] = v.Secret
	}
	if vols["git-credentials"].SecretName != "app-git" || vols["docker-config"].SecretName != "app-push" || vols["docker-config"].Items[0].Key != ".dockerconfigjson" || vols["docker-config"].Items[0].Path != "config.json" {
		t.Errorf("volumes = %+v", task.Volumes)
	}
	results := []string{}
	for _, r := range pr.Spec.PipelineSpec.Results {
		results = append(results, r.Name+"="+r.Value.StringVal)
	}
	if !slices.Equal(results, []string{"IMAGE_URL=$(tasks.build.results.IMAGE_URL)", "IMAGE_DIGEST=$(tasks.build.results.IMAGE_DIGEST)", "FERRY_LINEAGE=$(tasks.build.results.FERRY_LINEAGE)"}) {
		t.Errorf("pipeline results = %v", results)
	}
}

func TestEffectiveTimeout(t *testing.T) {
	d := func(x time.Duration) *metav1.Duration { return &metav1.Duration{Duration: x} }
	cases := []struct {
		file              *metav1.Duration
		project, platform time.Duration
		want              time.Duration
	}{
		{nil, 0, 0, time.Hour},
		{d(20 * time.Minute), 0, 0, 20 * time.Minute},
		{d(3 * time.Hour), 0, 0, time.Hour},
		{d(3 * time.Hour), 4 * time.Hour, 0, 3 * time.Hour},
		{d(3 * time.Hour), 4 * time.Hour, 2 * time.Hour, 2 * time.Hour},
		{nil, 10 * time.Hour, 0, buildplan.DefaultMaxTimeout},
	}
	for _, tc := range cases {
		if got := buildplan.EffectiveTimeout(tc.file, tc.project, tc.platform); got != tc.want {
			t.Errorf("buildplan.EffectiveTimeout(%v, %v, %v) = %v, want %v", tc.file, tc.project, tc.platform, got, tc.want)
		}
	}
	// A step's timeout never outlasts the Build's.
	in := inputs()
	in.ProjectTimeout = 2 * time.Minute
	p, _ := render(t, "build", pipelineFiles(t)["build"], in)
	if p.Timeout != 2*time.Minute || p.Steps[2].Timeout != 2*time.Minute {
		t.Errorf("timeout %v, step timeout %v", p.Timeout, p.Steps[2].Timeout)
	}
}

func TestInvalidInputs(t *testing.T) {
	f, err := pipelinefile.Parse(".ferry.yaml", []byte("stack: debian-12\n"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]func(*buildplan.Inputs){
		"file URL":           func(in *buildplan.Inputs) { in.CloneURL = "file:///srv/repo" },
		"short revision":     func(in *buildplan.Inputs) { in.Revision = "abc" },
		"option-like ref":    func(in *buildplan.Inputs) { in.Ref = "refs/heads/-x" },
		"dollar in tag":      func(in *buildplan.Inputs) { in.Tag = "v$(HOME)" },
		"tag with a slash":   func(in *buildplan.Inputs) { in.Tag = "release/1.0" },
		"tag latest":         func(in *buildplan.Inputs) { in.Tag = "latest" },
		"absolute file path": func(in *buildplan.Inputs) { in.PipelineFile = "/etc/passwd" },
		"no ferry image":     func(in *buildplan.Inputs) { in.FerryImage = "" },
		"no stack image":     func(in *buildplan.Inputs) { in.StackImage = "" },
	}
	for name, vary := range cases {
		in := inputs()
		vary(&in)
		if _, err := buildplan.New(f, in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPipelineRunName(t *testing.T) {
	if got := buildplan.PipelineRunName("app", ""); got != "app" {
		t.Errorf("without a UID: %s", got)
	}
	a, b := buildplan.PipelineRunName("app", "uid-1"), buildplan.PipelineRunName("app", "uid-2")
	if a == b || a != buildplan.PipelineRunName("app", "uid-1") || !strings.HasPrefix(a, "app-") || len(a) != len("app-")+5 {
		t.Errorf("names %s %s", a, b)
	}
	long := buildplan.PipelineRunName(strings.Repeat("a", 43)+"-b"+strings.Repeat("c", 100), "u")
	if len(long) > 50 || strings.Contains(long, "--") {
		t.Errorf("long name %s", long)
	}
}

func runShell(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("/bin/sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("sh: %v\n%s", err, out)
	}
	return string(out)
}
