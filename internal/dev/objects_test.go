package dev

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/pipelinefile"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

// TestDeployExamplesAreValid sends examples/deploy (what a real installation applies) to a real
// API server with Ferry's CRDs in dry-run, so that every field and CEL rule is checked, and checks
// that the pieces fit: the catalog covers the example apps' pipeline files, the Projects' paths
// name the Environments, the Environments name the Clusters.
func TestDeployExamplesAreValid(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ctx := context.Background()
	objs := readManifests(t, filepath.Join("..", "..", "examples", "deploy"))
	kinds := map[string][]*unstructured.Unstructured{}
	for _, o := range objs {
		kinds[o.GetKind()] = append(kinds[o.GetKind()], o)
		if o.GetKind() == "Namespace" {
			if err := hub.Client.Create(ctx, o); client.IgnoreAlreadyExists(err) != nil {
				t.Fatal(err)
			}
		}
	}
	for _, ns := range []string{FerryNamespace} {
		if err := hub.Client.Create(ctx, namespace(ns)); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			continue
		}
		if err := hub.Client.Create(ctx, o.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("%s %s is refused: %v", o.GetKind(), o.GetName(), err)
		}
	}
	for _, kind := range []string{"ConfigMap", "Cluster", "Environment", "Project", "RoleBinding"} {
		if len(kinds[kind]) == 0 {
			t.Errorf("examples/deploy has no %s", kind)
		}
	}

	cm := &corev1.ConfigMap{}
	toTyped(t, kinds["ConfigMap"][0], cm)
	cat, err := catalog.Parse("examples/deploy/catalog.yaml", []byte(cm.Data[catalog.ConfigMapKey]))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Name != catalog.ConfigMapName || cm.Namespace != FerryNamespace {
		t.Errorf("the catalog ConfigMap is %s/%s, Ferry reads %s/%s", cm.Namespace, cm.Name, FerryNamespace, catalog.ConfigMapName)
	}
	examples, err := findExamples(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var projects []string
	for _, u := range kinds["Project"] {
		projects = append(projects, u.GetName())
	}
	for _, name := range examples {
		data, err := os.ReadFile(filepath.Join("..", "..", "examples", name, ferryv1.DefaultPipelineFile))
		if err != nil {
			t.Fatal(err)
		}
		f, err := pipelinefile.Parse(name+"/.ferry.yaml", data)
		if err != nil {
			t.Fatalf("example %s: %v", name, err)
		}
		if _, err := cat.Resolve(catalog.Stack, f.Stack); err != nil {
			t.Errorf("example %s: %v", name, err)
		}
		if _, err := cat.Resolve(catalog.Runtime, f.Runtime); err != nil {
			t.Errorf("example %s: %v", name, err)
		}
		if !slices.Contains(projects, name) {
			t.Errorf("examples/deploy has no Project for the example app %s", name)
		}
	}
	clusters := map[string]bool{}
	for _, u := range kinds["Cluster"] {
		clusters[u.GetName()] = true
	}
	envs := map[string]bool{}
	for _, u := range kinds["Environment"] {
		e := &ferryv1.Environment{}
		toTyped(t, u, e)
		envs[e.Name] = true
		for _, c := range e.Spec.Clusters {
			if !clusters[c] {
				t.Errorf("Environment %s deploys to Cluster %s, which examples/deploy does not define", e.Name, c)
			}
		}
	}
	for _, u := range kinds["Project"] {
		p := &ferryv1.Project{}
		toTyped(t, u, p)
		for _, e := range p.Spec.Promotion.Environments {
			if !envs[e] {
				t.Errorf("Project %s is promoted through Environment %s, which examples/deploy does not define", p.Name, e)
			}
		}
	}
}

// TestFerryDevObjectsAreValid sends what ferry dev writes to a real API server in dry-run.
func TestFerryDevObjectsAreValid(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ctx := context.Background()
	for _, ns := range []string{FerryNamespace, Namespace} {
		if err := hub.Client.Create(ctx, namespace(ns)); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
	}
	rbac, err := rbacObjects(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cm, err := catalogConfigMap(&catalog.Catalog{Stacks: map[string]string{"debian-12": "127.0.0.1:5000/ferry/stacks/debian-12@sha256:" + string(bytes.Repeat([]byte("a"), 64))}})
	if err != nil {
		t.Fatal(err)
	}
	objs := append([]client.Object{cm, clusterObject("nonprod", false), dockerConfigSecret(pushSecret, "127.0.0.1:5000", robotPush, "pw")}, rbac...)
	for _, e := range environments() {
		objs = append(objs, e)
	}
	objs = append(objs, project(projectSpec{
		name: "go-hello", gitlabURL: "http://127.0.0.1:38479", gitlabID: 101,
		cloneURL: "http://127.0.0.1:43459/demo/go-hello.git", repository: "127.0.0.1:38955/demo/go-hello",
	}), project(projectSpec{
		// The example with previews: its preview settings pass the API server's rules too.
		name: previewProject, gitlabURL: "http://127.0.0.1:38479", gitlabID: 102,
		cloneURL: "http://127.0.0.1:43459/demo/" + previewProject + ".git", repository: "127.0.0.1:38955/demo/" + previewProject,
	}))
	for _, o := range objs {
		u, err := toUnstructured(o)
		if err != nil {
			t.Fatal(err)
		}
		if err := hub.Client.Create(ctx, u, client.DryRunAll); err != nil {
			t.Errorf("%s %s is refused: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

// readManifests reads every object of the YAML files in dir (comments-only documents are skipped).
func readManifests(t *testing.T, dir string) []*unstructured.Unstructured {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var objs []*unstructured.Unstructured
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) == 0 {
				continue
			}
			objs = append(objs, u)
		}
	}
	return objs
}

func toTyped(t *testing.T, u *unstructured.Unstructured, out any) {
	t.Helper()
	data, err := yaml.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, out); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
}

// TestFerryDevPeopleReadBuildLogs: the UI shows a Build's log only to whom RBAC lets get pods/log
// in its namespace; in ferry dev the release managers and developers may, there and nowhere else.
func TestFerryDevPeopleReadBuildLogs(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ctx := context.Background()
	if err := hub.Client.Create(ctx, namespace(Namespace)); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	objs, err := rbacObjects(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if err := apply(ctx, hub.Client, objs...); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		group, namespace string
		want             bool
	}{
		{releaseManagersGroup, Namespace, true},
		{developersGroup, Namespace, true},
		{developersGroup, FerryNamespace, false},
		{"strangers", Namespace, false},
	} {
		review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
			User: "someone", Groups: []string{tc.group, "system:authenticated"},
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: tc.namespace, Verb: "get", Resource: "pods", Subresource: "log"},
		}}
		if err := hub.Client.Create(ctx, review); err != nil {
			t.Fatal(err)
		}
		if review.Status.Allowed != tc.want {
			t.Errorf("a member of %s may get pods/log in %s: %t, want %t", tc.group, tc.namespace, review.Status.Allowed, tc.want)
		}
	}
}
