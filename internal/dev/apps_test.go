package dev

import (
	"context"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
)

// TestPreviewHosts: PROJECT.mr-IID.localhost names a merge request's preview only in its
// canonical form, and where the preview runs comes from its Preview object.
func TestPreviewHosts(t *testing.T) {
	for env, want := range map[string]int64{"mr-1": 1, "mr-42": 42, "mr-0": 0, "mr-07": 0, "mr-+7": 0, "mr-": 0, "mr-x": 0, "dev": 0, "staging": 0} {
		iid, ok := previewIID(env)
		if ok != (want != 0) || (ok && iid != want) {
			t.Errorf("previewIID(%q) = %d %v, want %d", env, iid, ok, want)
		}
	}
	p := &appProxy{}
	if project, env, ok := p.route("python-web.mr-3.localhost:8080"); !ok || project != "python-web" || env != "mr-3" {
		t.Errorf("route = %q %q %v", project, env, ok)
	}

	pv := func(name, project string, iid int64, cluster, ns string) *ferryv1.Preview {
		return &ferryv1.Preview{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name},
			Spec:       ferryv1.PreviewSpec{Project: project, MergeRequestIID: iid, Build: "b"},
			Status:     ferryv1.PreviewStatus{Cluster: cluster, Namespace: ns},
		}
	}
	hub := fake.NewClientBuilder().WithScheme(manager.Scheme()).WithObjects(
		pv("app-mr-1", "app", 1, "", ""),
		pv("app-mr-2", "app", 2, "elsewhere", "app-mr-2"),
		pv("app-mr-3", "other", 3, "nonprod", "app-mr-3"),
	).Build()
	p = &appProxy{hub: hub, clusters: map[string]*controlplane.Cluster{"nonprod": {}}}
	for iid, want := range map[int64]string{
		1: "has not been deployed yet",
		2: "cluster elsewhere of preview demo/app-mr-2 is not one of ferry dev's",
		3: "is of other !3, not of app !3",
		4: "merge request !4 of app has no preview",
	} {
		if _, _, err := p.resolvePreview(context.Background(), "app", iid); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("preview of !%d: %v, want %q", iid, err, want)
		}
	}
}
