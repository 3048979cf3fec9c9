package v1alpha1_test

import (
	"context"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestPreviewSettingsValidation: the API server refuses preview settings without a cluster or
// with a TTL or cap out of range, naming the field, and fills in the defaults.
func TestPreviewSettingsValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)
	project := func(preview string) string {
		return `apiVersion: ferry.dev/v1alpha1
kind: Project
metadata: {generateName: p-}
spec:
  gitlab: {url: "https://gitlab.example.com", projectPath: group/app, webhookSecretRef: {name: hook}}
  repository: {cloneURL: "https://gitlab.example.com/group/app.git"}
  image: {repository: harbor.example.com/group/app}
  preview: ` + preview + "\n"
	}
	cases := []struct {
		name, preview, wantErr string
	}{
		{"enabled with cluster", "{enabled: true, cluster: previews}", ""},
		{"disabled without cluster", "{enabled: false}", ""},
		{"enabled without cluster", "{enabled: true}", "cluster is required when previews are enabled"},
		{"bad cluster name", "{enabled: true, cluster: Previews_1}", "spec.preview.cluster"},
		{"ttl too short", "{enabled: true, cluster: c, ttl: 10s}", "ttl must be between 1m and 720h"},
		{"ttl too long", "{enabled: true, cluster: c, ttl: 800h}", "ttl must be between 1m and 720h"},
		{"cap zero", "{enabled: true, cluster: c, maxPreviews: 0}", "spec.preview.maxPreviews"},
		{"cap too high", "{enabled: true, cluster: c, maxPreviews: 101}", "spec.preview.maxPreviews"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := create(t, c, ns, project(tc.preview))
			check(t, err, tc.wantErr)
		})
	}

	u, err := create(t, c, ns, project("{enabled: true, cluster: previews}"))
	if err != nil {
		t.Fatal(err)
	}
	p := &ferryv1.Project{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: u.GetName()}, p); err != nil {
		t.Fatal(err)
	}
	if got := p.Spec.Preview; got.TTL == nil || got.TTL.Duration != ferryv1.DefaultPreviewTTL || got.MaxPreviews != ferryv1.DefaultMaxPreviews {
		t.Errorf("defaults = ttl %v, maxPreviews %d", got.TTL, got.MaxPreviews)
	}
}
