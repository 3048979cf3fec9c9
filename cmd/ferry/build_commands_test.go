package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5"
	gitconfig "github.com/go-git/go-git/v5/config"
	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/testutil"
)

// runFerry runs the ferry command with arguments and returns its output.
func runFerry(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

const renderSHA = "0123456789abcdef0123456789abcdef01234567"

func TestRender(t *testing.T) {
	// A repository whose origin is the clone URL, with the pipeline file in a subdirectory.
	repo := t.TempDir()
	r, err := git.PlainInit(repo, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.CreateRemote(&gitconfig.RemoteConfig{Name: "origin", URLs: []string{"https://gitlab.example.com/team/app.git"}}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(repo, "ci"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(repo, "ci", "ferry.yaml")
	content := "stack: debian-12\nruntime: python-3.12\nbuild:\n  image: python:3.12\n  steps:\n    - {name: test, run: pytest}\n"
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	cat := filepath.Join(t.TempDir(), "catalog.yaml")
	digest := "sha256:" + strings.Repeat("ab", 32)
	if err := os.WriteFile(cat, []byte("stacks:\n  debian-12: reg.example.com/stacks/debian@"+digest+"\nruntimes:\n  python-3.12: reg.example.com/runtimes/python@"+digest+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, format := range []string{"yaml", "json"} {
		out, _, err := runFerry(t, "render", "-f", file, "--revision", renderSHA, "--image", "harbor.example.com/team/app",
			"--project", "app", "--catalog", cat, "--push-secret", "app-push", "-o", format)
		if err != nil {
			t.Fatal(err)
		}
		pr := &pipelinev1.PipelineRun{}
		if err := yaml.Unmarshal([]byte(out), pr); err != nil {
			t.Fatalf("%s output: %v\n%s", format, err, out)
		}
		ctx := apis.WithinCreate(context.Background())
		pr.SetDefaults(ctx)
		if fe := pr.Validate(ctx); fe != nil {
			t.Fatalf("Tekton refuses the rendered PipelineRun: %v", fe)
		}
		steps := pr.Spec.PipelineSpec.Tasks[0].TaskSpec.Steps
		clone, assemble := strings.Join(steps[0].Args, " "), strings.Join(steps[2].Args, " ")
		if !strings.Contains(clone, "--url https://gitlab.example.com/team/app.git --revision "+renderSHA) {
			t.Errorf("clone args: %s", clone)
		}
		want := "assemble --dir /workspace/source --file ci/ferry.yaml --image harbor.example.com/team/app --revision " + renderSHA +
			" --source-url https://gitlab.example.com/team/app.git --stack-image reg.example.com/stacks/debian@" + digest +
			" --runtime-image reg.example.com/runtimes/python@" + digest + " --docker-config /ferry/docker-config --results-dir /tekton/results"
		if assemble != want {
			t.Errorf("assemble args:\n%s\nwant:\n%s", assemble, want)
		}
		if pr.Name != "app-0123456" || pr.Labels[ferryv1.ProjectLabel] != "app" {
			t.Errorf("name %s labels %v", pr.Name, pr.Labels)
		}
	}

	// Without the catalog a catalog name cannot resolve: the error names the line and the field.
	_, _, err = runFerry(t, "render", "-f", file, "--revision", renderSHA, "--image", "harbor.example.com/team/app")
	if err == nil || !strings.HasPrefix(err.Error(), `ci/ferry.yaml:1:8: stack: stack "debian-12" is not in the catalog`) || !strings.Contains(err.Error(), "--catalog") {
		t.Errorf("error = %v", err)
	}
	// An invalid file is reported as the Build would report it.
	if err := os.WriteFile(file, []byte("stack: debian-12\nports: [http]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = runFerry(t, "render", "-f", file, "--revision", renderSHA, "--image", "harbor.example.com/team/app")
	if err == nil || err.Error() != `ci/ferry.yaml:2:9: ports[0]: must be a whole number, not the string "http"` {
		t.Errorf("error = %v", err)
	}
	// Outside a repository, a placeholder clone URL with a note.
	plain := filepath.Join(t.TempDir(), ".ferry.yaml")
	if err := os.WriteFile(plain, []byte("stack: reg.example.com/stacks/debian@"+digest+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runFerry(t, "render", "-f", plain, "--revision", renderSHA, "--image", "harbor.example.com/team/app")
	if err != nil || !strings.Contains(errOut, "pass --clone-url") || !strings.Contains(out, "git.example.invalid") {
		t.Errorf("err %v, stderr %q", err, errOut)
	}
}

func TestGitCloneCommand(t *testing.T) {
	srv, err := gitserver.Start(gitserver.Options{Users: map[string]string{"ci": "pw-0123456789"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.CreateRepo("team/app", gitserver.RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	sha, err := srv.Commit("team/app", gitserver.Commit{Files: map[string]string{"app/main.py": "print(1)\n"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Commit("team/app", gitserver.Commit{Files: map[string]string{"app/main.py": "print(2)\n"}}); err != nil {
		t.Fatal(err)
	}
	creds := t.TempDir()
	for k, v := range map[string]string{"username": "ci", "password": "pw-0123456789"} {
		if err := os.WriteFile(filepath.Join(creds, k), []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "source")
	out, _, err := runFerry(t, "git-clone", "--url", srv.RepoURL("team/app"), "--revision", sha, "--dir", dir, "--credentials-dir", creds)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "app/main.py")); err != nil || string(b) != "print(1)\n" {
		t.Errorf("checkout: %q, %v (output %q)", b, err, out)
	}
	_, _, err = runFerry(t, "git-clone", "--url", "file:///etc", "--revision", sha, "--dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `scheme "file" is refused`) {
		t.Errorf("file URL: %v", err)
	}
	_, _, err = runFerry(t, "git-clone", "--url", srv.RepoURL("team/app"), "--revision", sha, "--dir", filepath.Join(t.TempDir(), "x"))
	if err == nil || !strings.Contains(err.Error(), "needs credentials") {
		t.Errorf("without credentials: %v", err)
	}
}

func TestCancelCommand(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ns := testutil.Namespace(t, hub.Client)
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "app-main-1"},
		Spec:       ferryv1.BuildSpec{Project: "app", Revision: renderSHA, Ref: "refs/heads/main"},
	}
	if err := hub.Client.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	out, _, err := runFerry(t, "cancel", "app-main-1", "-n", ns, "--kubeconfig", hub.KubeconfigPath, "--reason", "wrong branch")
	if err != nil || out != "Build "+ns+"/app-main-1 cancelled\n" {
		t.Fatalf("cancel: %q, %v", out, err)
	}
	got := &ferryv1.Build{}
	if err := hub.Client.Get(context.Background(), client.ObjectKeyFromObject(b), got); err != nil {
		t.Fatal(err)
	}
	if !got.Spec.Cancelled || got.Spec.CancelReason != "wrong branch" {
		t.Errorf("spec = %+v", got.Spec)
	}
	if out, _, err = runFerry(t, "cancel", "app-main-1", "-n", ns, "--kubeconfig", hub.KubeconfigPath); err != nil || !strings.Contains(out, "already cancelled") {
		t.Errorf("second cancel: %q, %v", out, err)
	}
	if _, _, err = runFerry(t, "cancel", "nope", "-n", ns, "--kubeconfig", hub.KubeconfigPath); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown Build: %v", err)
	}
}

func TestBuildRerun(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ns := testutil.Namespace(t, hub.Client)
	ctx := context.Background()
	old := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-0123456-abcdef12",
			Labels:      map[string]string{ferryv1.ProjectLabel: "shop", ferryv1.TriggerKindLabel: "MergeRequest"},
			Annotations: map[string]string{ferryv1.GitLabSourceBranchAnnotation: "feature", ferryv1.GitLabOKToTestAnnotation: "alice"}},
		Spec: ferryv1.BuildSpec{Project: "shop", Revision: renderSHA, Ref: "refs/merge-requests/3/head",
			Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerMergeRequest, MergeRequestIID: 3, User: "bob"}},
	}
	if err := hub.Client.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	out, _, err := runFerry(t, "build", "rerun", old.Name, "-n", ns, "--kubeconfig", hub.KubeconfigPath)
	if err != nil || !strings.Contains(out, "commit 0123456 of refs/merge-requests/3/head again, as Build "+old.Name+" was") {
		t.Fatalf("rerun: %q, %v", out, err)
	}
	var list ferryv1.BuildList
	if err := hub.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 2 {
		t.Fatalf("%d Builds after a rerun, want 2", len(list.Items))
	}
	for _, b := range list.Items {
		if b.Name == old.Name {
			continue
		}
		if b.Spec.Revision != old.Spec.Revision || b.Spec.Ref != old.Spec.Ref || b.Spec.Project != "shop" || b.Spec.Cancelled ||
			b.Annotations[ferryv1.RerunOfAnnotation] != old.Name || b.Annotations[ferryv1.GitLabSourceBranchAnnotation] != "feature" ||
			b.Annotations[ferryv1.GitLabOKToTestAnnotation] != "" || b.Labels[ferryv1.ProjectLabel] != "shop" ||
			b.Spec.Trigger.Kind == ferryv1.TriggerMergeRequest || b.Spec.Trigger.User == "bob" || !strings.HasPrefix(b.Name, old.Name+"-rerun-") {
			t.Errorf("rerun Build = %+v %+v", b.ObjectMeta, b.Spec)
		}
	}
	if _, _, err := runFerry(t, "build", "rerun", "nope", "-n", ns, "--kubeconfig", hub.KubeconfigPath); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("unknown Build: %v", err)
	}
}
