package tektoninstall

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ferryci/ferry/internal/controlplane"
)

func fakeImages() map[string]string {
	images := map[string]string{"shell": "registry.test/ferry/tekton/shell@sha256:5e11"}
	for _, c := range Commands {
		images[c] = "registry.test/ferry/tekton/" + c + "@sha256:" + c
	}
	return images
}

// Tekton's own manifests of the version Ferry is built with resolve completely: no ko:// reference
// and no outside image is left, the namespace comes first and every CRD before what uses it.
func TestManifestsResolveTektonsRelease(t *testing.T) {
	dir, err := controlplane.TektonConfigDir()
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Manifests(dir, fakeImages())
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) < 30 {
		t.Fatalf("read %d objects from %s, want Tekton's whole release", len(objs), dir)
	}
	if objs[0].GetKind() != "Namespace" || objs[0].GetName() != Namespace {
		t.Errorf("first object is %s %s, want Namespace %s", objs[0].GetKind(), objs[0].GetName(), Namespace)
	}
	lastCRD, firstOther := -1, len(objs)
	deployments := map[string]bool{}
	coschedule := "(no feature-flags ConfigMap)"
	for i, u := range objs {
		if u.GetKind() == "ConfigMap" && u.GetName() == featureFlags {
			coschedule, _, _ = unstructured.NestedString(u.Object, "data", "coschedule")
		}
		switch u.GetKind() {
		case "CustomResourceDefinition":
			lastCRD = i
		case "Namespace":
		default:
			firstOther = min(firstOther, i)
		}
		if u.GetKind() == "Deployment" {
			deployments[u.GetName()] = true
			for _, c := range containers(t, u) {
				img := c["image"].(string)
				if !strings.HasPrefix(img, "registry.test/") {
					t.Errorf("Deployment %s runs %s, not an image this installation built", u.GetName(), img)
				}
				args, _ := c["args"].([]any)
				for i, a := range args {
					if s, _ := a.(string); strings.HasSuffix(s, "-image") || strings.HasSuffix(s, "-image-win") {
						if v, _ := args[i+1].(string); !strings.HasPrefix(v, "registry.test/") {
							t.Errorf("Deployment %s: %s %s is not an image this installation built", u.GetName(), s, v)
						}
					}
				}
			}
		}
		if strings.Contains(toString(u), "ko://") {
			t.Errorf("%s %s still holds a ko:// reference", u.GetKind(), u.GetName())
		}
	}
	if lastCRD > firstOther {
		t.Errorf("a CRD (object %d) comes after another object (%d)", lastCRD, firstOther)
	}
	// No affinity assistant pod beside each Build with a step cache.
	if coschedule != "disabled" {
		t.Errorf("feature-flags coschedule = %q, want disabled", coschedule)
	}
	for _, d := range []string{"tekton-pipelines-controller", "tekton-pipelines-webhook", "tekton-events-controller"} {
		if !deployments[d] {
			t.Errorf("no Deployment %s in the manifests (have %v)", d, deployments)
		}
	}
}

// A ko:// reference to a command that was not built, or to something that is not one of
// Tekton's commands, is refused and named.
func TestManifestsRefuseUnknownImages(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("deploy.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: other, namespace: tekton-pipelines}
spec:
  template:
    spec:
      containers:
      - name: a
        image: ko://github.com/tektoncd/pipeline/cmd/resolvers
      - name: b
        image: ko://example.com/evil/cmd/miner
`)
	_, err := Manifests(dir, fakeImages())
	if err == nil {
		t.Fatal("manifests with unbuilt images were accepted")
	}
	for _, want := range []string{"deploy.yaml", "Deployment other", "no image was built for ko://github.com/tektoncd/pipeline/cmd/resolvers", "ko://example.com/evil/cmd/miner is not one of Tekton's commands"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	write("deploy.yaml", "kind: [")
	if _, err := Manifests(dir, fakeImages()); err == nil || !strings.Contains(err.Error(), "deploy.yaml") {
		t.Errorf("a broken manifest gave %v, want an error naming the file", err)
	}
}

func containers(t *testing.T, u *unstructured.Unstructured) []map[string]any {
	t.Helper()
	list, _, err := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, c := range list {
		out = append(out, c.(map[string]any))
	}
	return out
}

func toString(u *unstructured.Unstructured) string {
	data, _ := u.MarshalJSON()
	return string(data)
}
