package build_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	ftestutil "github.com/ferryci/ferry/internal/testutil"
)

// TestBuildControllerCachesOnlyFerrysRuns: the manager that runs the Build controller holds only
// Ferry's PipelineRuns and TaskRuns (labelled app.kubernetes.io/managed-by=ferry, which Tekton
// copies from the PipelineRun to its TaskRuns) in its cache; other teams' Tekton runs in the
// same namespace or elsewhere are neither listed, watched nor kept in its memory.
func TestBuildControllerCachesOnlyFerrysRuns(t *testing.T) {
	e := newEnv(t)
	sha := e.commit(okFile)
	ctx := context.Background()
	elsewhere := ftestutil.Namespace(t, e.c)
	var unrelated []string
	for _, ns := range []string{e.ns, elsewhere} {
		// Somebody else's runs; one even claims to be of a Ferry Build.
		meta := metav1.ObjectMeta{Namespace: ns, Name: "someone-elses", Labels: map[string]string{ferryv1.BuildLabel: "app-main-0", ferryv1.ManagedByLabel: "tekton"}}
		for _, o := range []client.Object{
			&pipelinev1.PipelineRun{ObjectMeta: meta, Spec: pipelinev1.PipelineRunSpec{PipelineRef: &pipelinev1.PipelineRef{Name: "theirs"}}},
			&pipelinev1.TaskRun{ObjectMeta: meta, Spec: pipelinev1.TaskRunSpec{TaskRef: &pipelinev1.TaskRef{Name: "theirs"}}},
		} {
			if err := e.c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
		unrelated = append(unrelated, ns+"/someone-elses")
	}

	m := ftestutil.StartManager(t, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage})
	e.createBuild("app-main-1", sha, "refs/heads/main")
	pr := e.waitPipelineRun("app-main-1")
	tr := &pipelinev1.TaskRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: pr.Name + "-build", Labels: pr.Labels},
		Spec:       pipelinev1.TaskRunSpec{TaskSpec: &pr.Spec.PipelineSpec.Tasks[0].TaskSpec.TaskSpec},
	}
	if err := e.c.Create(ctx, tr); err != nil {
		t.Fatal(err)
	}

	cached := func(list client.ObjectList) ([]string, error) {
		if err := m.GetCache().List(ctx, list); err != nil {
			return nil, err
		}
		var keys []string
		switch l := list.(type) {
		case *pipelinev1.PipelineRunList:
			for _, o := range l.Items {
				keys = append(keys, o.Namespace+"/"+o.Name)
			}
		case *pipelinev1.TaskRunList:
			for _, o := range l.Items {
				keys = append(keys, o.Namespace+"/"+o.Name)
			}
		}
		return keys, nil
	}
	for _, tc := range []struct {
		list  client.ObjectList
		ferry string
	}{
		{&pipelinev1.PipelineRunList{}, e.ns + "/" + pr.Name},
		{&pipelinev1.TaskRunList{}, e.ns + "/" + tr.Name},
	} {
		var keys []string
		ftestutil.Eventually(t, fmt.Sprintf("Ferry's %s in the cache", tc.ferry), func() (bool, error) {
			var err error
			keys, err = cached(tc.list)
			return slices.Contains(keys, tc.ferry), fmt.Errorf("cached %v: %w", keys, err)
		})
		for _, u := range unrelated {
			if slices.Contains(keys, u) {
				t.Errorf("the manager's cache holds %s, which is not Ferry's: %v", u, keys)
			}
		}
	}
}
