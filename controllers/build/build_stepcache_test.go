package build

import (
	"context"
	"errors"
	"strings"
	"testing"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

// TestTektonStepCacheUnit: with a step cache, each Project's Builds get a claim of that Project's
// own, created once, owned by the Project and bound as the PipelineRun's cache workspace; a claim
// of that name the Project does not own fails the Build and is never mounted; without cache
// variables nothing is created.
func TestTektonStepCacheUnit(t *testing.T) {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, ferryv1.AddToScheme, pipelinev1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	app, other := unitProject(), unitProject()
	other.Name, other.UID = "other", "other-uid"
	foreign := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: StepCacheClaimName("other")}}
	claimCreates := 0
	c := interceptor.NewClient(fake.NewClientBuilder().WithScheme(scheme).WithObjects(app, other, foreign).Build(), interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			if _, ok := obj.(*corev1.PersistentVolumeClaim); ok {
				claimCreates++
			}
			return c.Create(ctx, obj, opts...)
		},
	})
	cached := &TektonExecutor{Client: c, APIReader: c, Scheme: scheme, Cache: StepCache{Vars: []string{"GOCACHE", "GOMODCACHE"}}}
	ctx := context.Background()

	start := func(t *testing.T, e *TektonExecutor, p *ferryv1.Project, build string) (*pipelinev1.PipelineRun, error) {
		t.Helper()
		b := unitBuild(func(b *ferryv1.Build) { b.Name, b.UID, b.Spec.Project = build, types.UID(build+"-uid"), p.Name })
		if _, err := e.Start(ctx, b, unitPlan(t, b)); err != nil {
			return nil, err
		}
		pr := &pipelinev1.PipelineRun{}
		err := c.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: buildplan.PipelineRunName(b.Name, b.UID)}, pr)
		return pr, err
	}
	cacheClaim := func(pr *pipelinev1.PipelineRun) string {
		for _, w := range pr.Spec.Workspaces {
			if w.Name == buildplan.CacheWorkspace && w.PersistentVolumeClaim != nil {
				return w.PersistentVolumeClaim.ClaimName
			}
		}
		return ""
	}

	t.Run("a Project's Builds share its own claim", func(t *testing.T) {
		for _, build := range []string{"app-main-1", "app-main-2"} {
			pr, err := start(t, cached, app, build)
			if err != nil {
				t.Fatalf("%s: %v", build, err)
			}
			if got := cacheClaim(pr); got != "ferry-cache-app" {
				t.Errorf("%s: cache workspace bound to %q", build, got)
			}
		}
		// The second Build read the claim the first created.
		if claimCreates != 1 {
			t.Errorf("%d creates of the claim, want 1", claimCreates)
		}
		pvc := &corev1.PersistentVolumeClaim{}
		if err := c.Get(ctx, types.NamespacedName{Namespace: "team", Name: "ferry-cache-app"}, pvc); err != nil {
			t.Fatal(err)
		}
		size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		if !metav1.IsControlledBy(pvc, app) || size.Cmp(DefaultStepCacheSize) != 0 || pvc.Spec.StorageClassName != nil ||
			pvc.Labels[ferryv1.ProjectLabel] != "app" || len(pvc.Spec.AccessModes) != 1 || pvc.Spec.AccessModes[0] != corev1.ReadWriteOnce {
			t.Errorf("claim = %+v", pvc)
		}
	})

	t.Run("a claim the Project does not own is refused", func(t *testing.T) {
		_, err := start(t, cached, other, "other-main-1")
		var refused *RunRefusedError
		if !errors.As(err, &refused) || !strings.Contains(err.Error(), "ferry-cache-other") || !strings.Contains(err.Error(), "does not belong to Project other") {
			t.Fatalf("err = %v, want a refusal naming the claim", err)
		}
		var prs pipelinev1.PipelineRunList
		if err := c.List(ctx, &prs, client.MatchingLabels{ferryv1.ProjectLabel: "other"}); err != nil || len(prs.Items) != 0 {
			t.Errorf("PipelineRuns of other: %d, %v", len(prs.Items), err)
		}
	})

	t.Run("no variables, no cache", func(t *testing.T) {
		plain := &TektonExecutor{Client: c, APIReader: c, Scheme: scheme}
		third := unitProject()
		third.Name, third.UID = "third", "third-uid"
		if err := c.Create(ctx, third); err != nil {
			t.Fatal(err)
		}
		pr, err := start(t, plain, third, "third-main-1")
		if err != nil {
			t.Fatal(err)
		}
		if got := cacheClaim(pr); got != "" {
			t.Errorf("cache workspace bound to %q", got)
		}
		err = c.Get(ctx, types.NamespacedName{Namespace: "team", Name: StepCacheClaimName("third")}, &corev1.PersistentVolumeClaim{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("a claim for third: %v", err)
		}
	})
}

// unitPlan is the plan of a Build of unitProject's repository with a one-step pipeline file.
func unitPlan(t *testing.T, b *ferryv1.Build) *buildplan.Plan {
	t.Helper()
	f, err := pipelinefile.Parse(".ferry.yaml", []byte("stack: registry.example.com/stacks/debian@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b\nbuild:\n  image: golang:1.26\n  steps:\n    - name: test\n      run: go test ./...\n"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := buildplan.New(f, buildplan.Inputs{
		BuildName: b.Name, BuildUID: b.UID, Namespace: b.Namespace, Project: b.Spec.Project,
		CloneURL: "https://git.example.com/team/app.git", Revision: b.Spec.Revision, Ref: b.Spec.Ref, PipelineFile: ".ferry.yaml",
		Image: "registry.example.com/team/" + b.Spec.Project, StackImage: "registry.example.com/stacks/debian@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b",
		FerryImage: "registry.example.com/ferry:test",
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
