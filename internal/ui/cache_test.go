package ui_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui"
)

// TestUICachesOnlyWhatIsFerrys: the UI, which reads Builds' TaskRuns to find their pods' logs,
// holds only Ferry's TaskRuns in its cache (labelled app.kubernetes.io/managed-by=ferry, as
// Tekton copies it from Ferry's PipelineRuns), not other teams' Tekton runs; and of the Secrets of
// Ferry's namespace only its session Secret.
func TestUICachesOnlyWhatIsFerrys(t *testing.T) {
	w := newWorld(t, worldOptions{})
	ctx := context.Background()
	theirs := &pipelinev1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "someone-elses", Labels: map[string]string{"tekton.dev/pipelineRun": "theirs"}},
		Spec:       pipelinev1.TaskRunSpec{TaskRef: &pipelinev1.TaskRef{Name: "theirs"}},
	}
	ferrys := &pipelinev1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "shop-b1-build", Labels: map[string]string{"tekton.dev/pipelineRun": "shop-b1", ferryv1.ManagedByLabel: ferryv1.ManagedByValue}},
		Spec:       pipelinev1.TaskRunSpec{TaskRef: &pipelinev1.TaskRef{Name: "build"}},
	}
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: "cluster-kubeconfig-" + randomHex(4)}, StringData: map[string]string{"kubeconfig": "x"}}
	for _, o := range []client.Object{theirs, ferrys, other} {
		if err := w.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = w.c.Delete(context.Background(), other) })

	cache := w.uis[0].GetCache()
	var names []string
	testutil.Eventually(t, "Ferry's TaskRun in the UI's cache", func() (bool, error) {
		list := &pipelinev1.TaskRunList{}
		if err := cache.List(ctx, list, client.InNamespace(w.ns)); err != nil {
			return false, err
		}
		names = names[:0]
		for _, tr := range list.Items {
			names = append(names, tr.Name)
		}
		return slices.Contains(names, ferrys.Name), fmt.Errorf("cached %v", names)
	})
	if slices.Contains(names, theirs.Name) {
		t.Errorf("the UI's cache holds TaskRun %s, which is not Ferry's: %v", theirs.Name, names)
	}
	secrets := &corev1.SecretList{}
	if err := cache.List(ctx, secrets, client.InNamespace(testutil.FerryNamespace)); err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets.Items {
		if s.Name != ui.DefaultSessionSecret {
			t.Errorf("the UI's cache holds Secret %s", s.Name)
		}
	}
}
