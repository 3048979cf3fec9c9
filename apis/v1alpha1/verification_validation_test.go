package v1alpha1_test

import (
	"strings"
	"testing"

	"github.com/ferryci/ferry/internal/testutil"
)

// TestVerificationValidation: the schema and CEL rules of verification checks (an Environment's
// and a Release's deploy settings) against the real API server, each refusal naming the field,
// and the defaults (expectStatus 200, one try, 10s apart, a Job's 5m timeout).
func TestVerificationValidation(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ns := testutil.Namespace(t, c)

	env := func(check string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: v}\nspec:\n  clusters: [a]\n  verification:\n  - " + check + "\n"
	}
	release := func(check string) string {
		return "apiVersion: ferry.dev/v1alpha1\nkind: Release\nmetadata: {generateName: r-}\nspec:\n  project: shop\n  image: registry.example.com/shop@sha256:" + strings.Repeat("a", 64) + "\n  deploy:\n    ports: [8080]\n    verification:\n    - " + check + "\n"
	}
	for _, tc := range []struct {
		name     string
		manifest string
		wantErr  []string
	}{
		{"an HTTP check", env(`{name: smoke, http: {path: /healthz, bodyMatch: "^ok", maxLatency: 500ms, times: 5, interval: 2s}}`), nil},
		{"a Job check", env(`{name: e2e, job: {image: "registry.example.com/e2e:1", args: [--smoke], timeout: 10m}}`), nil},
		{"an application's check", release(`{name: smoke, http: {path: "/api/ping?full=1"}}`), nil},
		{"neither http nor job", env(`{name: nothing}`), []string{"spec.verification[0]", "exactly one of http and job"}},
		{"both http and job", env(`{name: both, http: {path: /}, job: {image: x}}`), []string{"spec.verification[0]", "exactly one of http and job"}},
		{"a path without a slash", env(`{name: p, http: {path: healthz}}`), []string{"spec.verification[0].http.path"}},
		{"a percent-encoded path", env(`{name: p, http: {path: "/%2e%2e/secrets"}}`), []string{"spec.verification[0].http.path"}},
		{"a status that is none", env(`{name: p, http: {path: /, expectStatus: 700}}`), []string{"spec.verification[0].http.expectStatus"}},
		{"no tries", env(`{name: p, http: {path: /, times: 0}}`), []string{"spec.verification[0].http.times"}},
		{"an interval under a second", env(`{name: p, http: {path: /, interval: 10ms}}`), []string{"spec.verification[0].http.interval", "between 1s and 1h"}},
		{"a latency bound over a minute", env(`{name: p, http: {path: /, maxLatency: 2m}}`), []string{"spec.verification[0].http.maxLatency"}},
		{"a Job without an image", env(`{name: j, job: {args: [x]}}`), []string{"spec.verification[0].job.image"}},
		{"a Job timeout over an hour", env(`{name: j, job: {image: x, timeout: 2h}}`), []string{"spec.verification[0].job.timeout", "between 1s and 1h"}},
		{"a name that is no DNS label", env(`{name: "Smoke Test", http: {path: /}}`), []string{"spec.verification[0].name"}},
		{"a soak", "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: s}\nspec:\n  clusters: [a]\n  soak: {duration: 2h}\n", nil},
		{"a soak of a year", "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: s}\nspec:\n  clusters: [a]\n  soak: {duration: 8760h}\n", []string{"spec.soak.duration", "between 1s and 720h"}},
		{"a soak without a duration", "apiVersion: ferry.dev/v1alpha1\nkind: Environment\nmetadata: {name: s}\nspec:\n  clusters: [a]\n  soak: {}\n", []string{"spec.soak.duration"}},
		{"an application's check without http or job", release(`{name: nothing}`), []string{"spec.deploy.verification[0]", "exactly one of http and job"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			obj, err := create(t, c, ns, tc.manifest)
			if len(tc.wantErr) == 0 {
				check(t, err, "")
				if strings.Contains(tc.manifest, "kind: Environment") && strings.Contains(tc.manifest, "path: /healthz") {
					http := obj.Object["spec"].(map[string]any)["verification"].([]any)[0].(map[string]any)["http"].(map[string]any)
					if http["expectStatus"] != int64(200) {
						t.Errorf("expectStatus defaulted to %v, want 200", http["expectStatus"])
					}
				}
				return
			}
			for _, want := range tc.wantErr {
				check(t, err, want)
			}
		})
	}
}
