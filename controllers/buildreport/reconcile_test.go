package buildreport

import (
	"context"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

// TestReconcileOutcomes drives Reconcile with a fake client and a function-field GitLab.
func TestReconcileOutcomes(t *testing.T) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ferryv1.AddToScheme(scheme))
	project := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop"},
		Spec: ferryv1.ProjectSpec{GitLab: ferryv1.GitLabProject{
			URL: "https://gitlab.example.com", ProjectPath: "g/shop", TokenSecretRef: &ferryv1.SecretKeyReference{Name: "tok"},
		}},
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "tok"}, Data: map[string][]byte{"token": []byte("glpat-x")}}
	transient := errors.New("GitLab answered 503")
	permanent := &gitlab.APIError{StatusCode: 403, Message: "403 Forbidden"}
	cases := []struct {
		name         string
		answer       error
		wantErr      bool
		wantRecorded string
		wantEvent    bool
	}{
		{"reported", nil, false, "pending", false},
		{"already in that state", gitlab.ErrAlreadyReported, false, "pending", false},
		{"GitLab down: retried with backoff", transient, true, "", false},
		{"no permission: an event, no retry loop", permanent, false, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := build()
			b.UID = "uid-1"
			c0 := fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&ferryv1.Build{}).WithObjects(project, secret, b).Build()
			recorder := events.NewFakeRecorder(10)
			var got []gitlab.CommitStatus
			r := &Reconciler{Client: c0, APIReader: c0, Recorder: recorder, NewAPI: func(baseURL, token string) (gitlab.API, error) {
				if baseURL != "https://gitlab.example.com" || token != "glpat-x" {
					t.Errorf("client for %s with token %q", baseURL, token)
				}
				return &gitlab.FakeAPI{SetCommitStatusFn: func(_ context.Context, p gitlab.ProjectRef, sha string, st gitlab.CommitStatus) error {
					got = append(got, st)
					return c.answer
				}}, nil
			}}
			_, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(b)})
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v", err)
			}
			if len(got) != 1 || got[0].State != gitlab.StatePending || got[0].Name != "ferry" || got[0].Ref != "main" {
				t.Errorf("posted %+v", got)
			}
			cur := &ferryv1.Build{}
			_ = c0.Get(context.Background(), client.ObjectKeyFromObject(b), cur)
			if cur.Status.ReportedState != c.wantRecorded {
				t.Errorf("reportedState = %q, want %q", cur.Status.ReportedState, c.wantRecorded)
			}
			select {
			case ev := <-recorder.Events:
				if !c.wantEvent || !strings.Contains(ev, "Warning GitLabReportFailed") || !strings.Contains(ev, "403") {
					t.Errorf("event %q", ev)
				}
			default:
				if c.wantEvent {
					t.Error("no event")
				}
			}
			// A second Reconcile after success reports nothing again.
			if c.wantRecorded != "" {
				got = nil
				if _, err := r.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(b)}); err != nil || len(got) != 0 {
					t.Errorf("second Reconcile posted %+v (err %v)", got, err)
				}
			}
		})
	}
}
