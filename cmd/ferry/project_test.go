package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

func runFerryOnHub(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"--kubeconfig", testutil.CurrentHub(t).KubeconfigPath}, args...))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestProjectWebhookCommand(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ns := testutil.Namespace(t, c)
	ctx := context.Background()
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL: "https://gitlab.example.com", ProjectPath: "team/shop",
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: "shop-webhook"},
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: "shop-gitlab"},
			},
			Repository: ferryv1.Repository{CloneURL: "https://gitlab.example.com/team/shop.git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/shop"},
			Triggers:   ferryv1.Triggers{Branches: []string{"main", "release/*"}, Tags: []string{"v*"}, MergeRequests: true},
		},
	}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}

	out, err := runFerryOnHub(t, "project", "webhook", "shop", "-n", ns, "--receiver-url", "https://ferry.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"https://gitlab.example.com/team/shop/-/hooks",
		"URL:           https://ferry.example.com/hooks/gitlab",
		"Push events, Tag push events, Merge request events, Comments",
		`regular expression ^(main|release/.*)$`,
		"kubectl -n " + ns + " create secret generic shop-webhook --from-literal=token=",
		"Secret " + ns + "/shop-gitlab (key \"token\") is missing",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// --create-secret creates the Secret with a random token and shows it once.
	out, err = runFerryOnHub(t, "project", "webhook", "shop", "-n", ns, "--create-secret", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var setup webhookSetup
	if err := json.Unmarshal([]byte(out), &setup); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	s := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop-webhook"}, s); err != nil {
		t.Fatal(err)
	}
	if len(setup.CreatedToken) != 64 || string(s.Data["token"]) != setup.CreatedToken || !setup.WebhookSecret.HasKey {
		t.Errorf("created token %q, Secret has %q", setup.CreatedToken, s.Data["token"])
	}
	if !setup.URLIsInternal || setup.URL != "http://ferry-receiver.ferry-system.svc:8090/hooks/gitlab" {
		t.Errorf("without --receiver-url: %q", setup.URL)
	}
	out, err = runFerryOnHub(t, "project", "webhook", "shop", "-n", ns, "--create-secret")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, setup.CreatedToken) || !strings.Contains(out, "exists. Read the token") {
		t.Errorf("an existing Secret is neither replaced nor printed:\n%s", out)
	}

	if _, err := runFerryOnHub(t, "project", "webhook", "nope", "-n", ns); err == nil || !strings.Contains(err.Error(), "project "+ns+"/nope not found") {
		t.Errorf("unknown project: %v", err)
	}
}

func TestBranchFilter(t *testing.T) {
	cases := map[string]string{
		"main":                 "main",
		"main,release/*":       "^(main|release/.*)$",
		"*":                    "",
		"main,*":               "",
		"v1.x,hotfix/(urgent)": `^(v1\.x|hotfix/\(urgent\))$`,
	}
	for in, want := range cases {
		if got := branchFilter(strings.Split(in, ",")); got != want {
			t.Errorf("branchFilter(%s) = %q, want %q", in, got, want)
		}
	}
}
