package v1alpha1_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

const (
	sha    = "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
	digest = "sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"
)

func decode(t *testing.T, manifest string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096).Decode(&u.Object); err != nil {
		t.Fatalf("bad test manifest: %v\n%s", err, manifest)
	}
	return u
}

// create creates the manifest (namespaced kinds in ns; cluster-scoped ones get a unique name) and
// returns the error.
func create(t *testing.T, c client.Client, ns, manifest string) (*unstructured.Unstructured, error) {
	t.Helper()
	u := decode(t, manifest)
	switch u.GetKind() {
	case "Cluster", "Environment", "Freeze":
		u.SetName(u.GetName() + "-" + ns)
		t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
	default:
		u.SetNamespace(ns)
	}
	return u, c.Create(context.Background(), u)
}

func check(t *testing.T, err error, wantErr string) {
	t.Helper()
	switch {
	case wantErr == "" && err != nil:
		t.Errorf("want accepted, got: %v", err)
	case wantErr != "" && err == nil:
		t.Errorf("want refused with %q, was accepted", wantErr)
	case wantErr != "" && !strings.Contains(err.Error(), wantErr):
		t.Errorf("want refused with %q, got: %v", wantErr, err)
	}
}

// TestCreateValidation creates valid and invalid objects of every kind against the real API server
// and checks each CEL rule and schema constraint.
func TestCreateValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)

	cluster := func(spec string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Cluster\nmetadata: {name: c}\nspec:\n" + spec
	}
	env := func(spec string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: e}\nspec:\n  clusters: [a]\n" + spec
	}
	project := func(mutate func(string) string) string {
		p := `apiVersion: ferry.dev/v1alpha1
kind: Project
metadata: {generateName: p-}
spec:
  gitlab: {url: "https://gitlab.example.com", projectPath: group/app, webhookSecretRef: {name: hook}}
  repository: {cloneURL: "https://gitlab.example.com/group/app.git"}
  image: {repository: harbor.example.com/group/app}
`
		if mutate != nil {
			p = mutate(p)
		}
		return p
	}
	build := func(revision, ref string) string {
		return fmt.Sprintf("apiVersion: ferry.dev/v1alpha1\nkind: Build\nmetadata: {generateName: b-}\nspec: {project: app, revision: %q, ref: %q}\n", revision, ref)
	}
	release := func(image, extra string) string {
		return fmt.Sprintf("apiVersion: ferry.dev/v1alpha1\nkind: Release\nmetadata: {generateName: r-}\nspec: {project: app, image: %q%s}\n", image, extra)
	}
	approval := func(decision, comment string) string {
		return fmt.Sprintf("apiVersion: ferry.dev/v1alpha1\nkind: Approval\nmetadata: {generateName: a-}\nspec: {release: r, environment: prod, decision: %s, comment: %q}\n", decision, comment)
	}

	cases := []struct {
		name     string
		manifest string
		wantErr  string
	}{
		{"cluster with kubeconfig", cluster("  kubeConfigSecretRef: {name: kc}\n"), ""},
		{"cluster in-cluster", cluster("  inCluster: true\n"), ""},
		{"cluster with both", cluster("  inCluster: true\n  kubeConfigSecretRef: {name: kc}\n"), "exactly one of kubeConfigSecretRef and inCluster"},
		{"cluster with neither", cluster("  description: nothing\n"), "exactly one of kubeConfigSecretRef and inCluster"},
		{"cluster in-cluster false", cluster("  inCluster: false\n"), "exactly one of kubeConfigSecretRef and inCluster"},

		{"environment without gate", env(""), ""},
		{"environment two users two approvals", env("  approval: {users: [ann, bob], minApprovals: 2}\n"), ""},
		{"environment group and many approvals", env("  approval: {groups: [release-managers], minApprovals: 5}\n"), ""},
		{"environment too many approvals for users", env("  approval: {users: [ann], minApprovals: 2}\n"), "minApprovals cannot exceed the number of users"},
		{"environment empty policy", env("  approval: {minApprovals: 1}\n"), "must name at least one user or group"},
		{"environment zero approvals", env("  approval: {users: [ann], minApprovals: 0}\n"), "should be greater than or equal to 1"},
		{"environment no clusters", "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: e}\nspec: {clusters: []}\n", "should have at least 1 items"},
		{"environment batch without batch", env("  rollout: {type: Batch}\n"), "batch must be set when type is Batch"},
		{"environment batch pause without pause", env("  rollout: {type: Batch, batch: {batches: 3, between: Pause}}\n"), "pause must be set when between is Pause"},
		{"environment batch ok", env("  rollout: {type: Batch, batch: {batches: 3, between: Approval}}\n"), ""},
		{"environment bad namespace template", env("  namespaceTemplate: \"{project}_{env}\"\n"), "namespaceTemplate"},
		{"environment namespace template with the Project's namespace", env("  namespaceTemplate: \"{namespace}-{project}-{environment}\"\n"), ""},
		{"environment namespace template with an unknown placeholder", env("  namespaceTemplate: \"{team}-{project}\"\n"), "namespaceTemplate"},
		{"environment adopts existing namespaces", env("  existingNamespaces: Adopt\n"), ""},
		{"environment takes existing namespaces over", env("  existingNamespaces: TakeOver\n"), "existingNamespaces"},
		{"environment allows pod annotations", env("  allowedPodAnnotations: [\"prometheus.io/*\", \"*.example.com/owner\"]\n"), ""},
		{"environment allows an annotation pattern with a space", env("  allowedPodAnnotations: [\"sidecar.istio.io/ inject\"]\n"), "allowedPodAnnotations"},
		{"environment allows an empty annotation pattern", env("  allowedPodAnnotations: [\"\"]\n"), "allowedPodAnnotations"},

		{"project", project(nil), ""},
		{"project absolute pipeline file", project(func(p string) string { return p + "  pipelineFile: /etc/passwd\n" }), "pipelineFile must be a relative path"},
		{"project escaping pipeline file", project(func(p string) string { return p + "  pipelineFile: ../x.yaml\n" }), "pipelineFile must be a relative path"},
		{"project gitlab url with credentials", project(func(p string) string {
			return strings.Replace(p, "https://gitlab.example.com\"", "https://root:pw@gitlab.example.com\"", 1)
		}), "url must be an http(s) URL without credentials"},
		{"project file clone url", project(func(p string) string {
			return strings.Replace(p, "https://gitlab.example.com/group/app.git", "file:///etc", 1)
		}), "cloneURL must be an http(s) or ssh URL"},
		{"project ext clone url", project(func(p string) string {
			return strings.Replace(p, "https://gitlab.example.com/group/app.git", "ext::sh -c touch% /tmp/pwned", 1)
		}), "cloneURL must be an http(s) or ssh URL"},
		{"project scp-like clone url", project(func(p string) string {
			return strings.Replace(p, "https://gitlab.example.com/group/app.git", "git@gitlab.example.com:group/app.git", 1)
		}), ""},
		{"project upper-case image", project(func(p string) string {
			return strings.Replace(p, "harbor.example.com/group/app", "harbor.example.com/Group/App", 1)
		}), "spec.image.repository"},
		{"project single-segment path", project(func(p string) string {
			return strings.Replace(p, "projectPath: group/app", "projectPath: app", 1)
		}), "spec.gitlab.projectPath"},
		{"project repeated environment", project(func(p string) string { return p + "  promotion: {environments: [dev, prod, dev]}\n" }), "environments must not repeat"},

		{"build", build(sha, "refs/heads/main"), ""},
		{"build short sha", build("da15608", "refs/heads/main"), "spec.revision"},
		{"build upper-case sha", build(strings.ToUpper(sha), "refs/heads/main"), "spec.revision"},
		{"build branch name as revision", build("main", "refs/heads/main"), "spec.revision"},
		{"build ref not under refs/", build(sha, "main"), "spec.ref"},
		{"build ref with ..", build(sha, "refs/heads/../../x"), "must not contain '..'"},
		{"build ref with option", build(sha, "refs/heads/--upload-pack=x"), "component starting with '-'"},

		{"release pinned", release("harbor.example.com/group/app@"+digest, ""), ""},
		{"release tag and digest", release("harbor.example.com/group/app:v1@"+digest, ""), ""},
		{"release tag only", release("harbor.example.com/group/app:v1", ""), "image must be pinned by digest"},
		{"release short digest", release("harbor.example.com/group/app@sha256:abc", ""), "image must be pinned by digest"},
		{"release reserved annotation", release("harbor.example.com/group/app@"+digest, ", deploy: {podAnnotations: {ferry.dev/x: \"y\"}}"), "reserved"},

		{"approval", approval("Approve", ""), ""},
		{"rejection with comment", approval("Reject", "error budget spent"), ""},
		{"rejection without comment", approval("Reject", ""), "a rejection needs a comment"},
		{"approval unknown decision", approval("Maybe", ""), "spec.decision"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create(t, c, ns, tc.manifest)
			check(t, err, tc.wantErr)
		})
	}
}

// TestUpdateValidation checks the immutability rules: each object is created valid, changed, and
// the change is accepted or refused.
func TestUpdateValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)
	buildManifest := fmt.Sprintf("apiVersion: ferry.dev/v1alpha1\nkind: Build\nmetadata: {generateName: b-}\nspec: {project: app, revision: %q, ref: refs/heads/main, trigger: {kind: Push, user: ann}}\n", sha)
	releaseManifest := fmt.Sprintf("apiVersion: ferry.dev/v1alpha1\nkind: Release\nmetadata: {generateName: r-}\nspec: {project: app, image: \"harbor.example.com/group/app@%s\", revision: %q, requestedBy: ann}\n", digest, sha)
	approvalManifest := "apiVersion: ferry.dev/v1alpha1\nkind: Approval\nmetadata: {generateName: a-}\nspec: {release: r, environment: prod, decision: Approve}\n"
	otherDigest := "sha256:" + strings.Repeat("e", 64)

	cases := []struct {
		name     string
		manifest string
		mutate   func(u *unstructured.Unstructured)
		wantErr  string
	}{
		{"build revision", buildManifest, set("spec", "revision", strings.Repeat("b", 40)), "revision is immutable"},
		{"build project", buildManifest, set("spec", "project", "other"), "project is immutable"},
		{"build ref", buildManifest, set("spec", "ref", "refs/heads/dev"), "ref is immutable"},
		{"build trigger", buildManifest, set("spec", "trigger", map[string]any{"kind": "Push", "user": "mallory"}), "trigger is immutable"},
		{"build cancel", buildManifest, set("spec", "cancelled", true), ""},
		{"build trigger removed", buildManifest, func(u *unstructured.Unstructured) { unstructured.RemoveNestedField(u.Object, "spec", "trigger") }, "trigger is immutable"},
		{"build labels", buildManifest, func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"x": "y"}) }, ""},
		{"release image", releaseManifest, set("spec", "image", "harbor.example.com/group/app@"+otherDigest), "image is immutable"},
		{"release project", releaseManifest, set("spec", "project", "other"), "project is immutable"},
		{"release revision", releaseManifest, set("spec", "revision", strings.Repeat("c", 40)), "spec is immutable"},
		{"release requestedBy", releaseManifest, set("spec", "requestedBy", "mallory"), "spec is immutable"},
		{"release rollback", releaseManifest, set("spec", "rollback", true), "spec is immutable"},
		{"release build added", releaseManifest, set("spec", "build", "other-build"), "spec is immutable"},
		{"release deploy added", releaseManifest, set("spec", "deploy", map[string]any{"replicas": int64(9)}), "spec is immutable"},
		{"release labels", releaseManifest, func(u *unstructured.Unstructured) { u.SetLabels(map[string]string{"x": "y"}) }, ""},
		{"approval decision", approvalManifest, set("spec", "decision", "Reject"), "an Approval is immutable"},
		{"approval comment", approvalManifest, set("spec", "comment", "changed my mind"), "an Approval is immutable"},
		{"approval environment", approvalManifest, set("spec", "environment", "dev"), "an Approval is immutable"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := create(t, c, ns, tc.manifest)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(u)
			check(t, c.Update(context.Background(), u), tc.wantErr)
		})
	}

	t.Run("cancelled build cannot resume", func(t *testing.T) {
		u, err := create(t, c, ns, buildManifest)
		if err != nil {
			t.Fatal(err)
		}
		set("spec", "cancelled", true)(u)
		if err := c.Update(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		set("spec", "cancelled", false)(u)
		check(t, c.Update(context.Background(), u), "a cancelled Build cannot be resumed")
	})
}

func set(path ...any) func(u *unstructured.Unstructured) {
	value := path[len(path)-1]
	fields := make([]string, 0, len(path)-1)
	for _, p := range path[:len(path)-1] {
		fields = append(fields, p.(string))
	}
	return func(u *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(u.Object, value, fields...); err != nil {
			panic(err)
		}
	}
}

// TestSamplesApply creates every sample under config/samples in the real API server.
func TestSamplesApply(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)
	files, err := filepath.Glob("../../config/samples/ferry_*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	kinds := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				break
			}
			if u.GetNamespace() != "" {
				u.SetNamespace(ns)
			}
			if err := c.Create(context.Background(), u); err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if u.GetNamespace() == "" {
				t.Cleanup(func() { _ = c.Delete(context.Background(), u) })
			}
			kinds[u.GetKind()] = true
		}
	}
	for _, kind := range []string{"Cluster", "Environment", "Project", "Build", "Release", "Approval", "Freeze"} {
		if !kinds[kind] {
			t.Errorf("no sample of kind %s", kind)
		}
	}
}
