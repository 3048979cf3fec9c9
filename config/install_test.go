// Package config_test checks the install manifests: they render with kustomize, install into a
// real API server, and the manager runs with exactly the permissions they grant.
package config_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui"
)

func TestInstallManifests(t *testing.T) {
	ctx := t.Context()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	kubectl := filepath.Join(assets, "kubectl")
	rendered, err := exec.Command(kubectl, "kustomize", "default").Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default: %v", stderr(err))
	}

	api, err := controlplane.StartAPIServer(ctx, controlplane.APIServerOptions{Name: "install"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Stop() })
	apply := exec.Command(kubectl, "--kubeconfig", api.KubeconfigPath, "apply", "--server-side", "--field-manager=install-test", "-f", "-")
	apply.Stdin = bytes.NewReader(rendered)
	if out, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}

	scheme := manager.Scheme()
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(api.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"clusters", "environments", "projects", "builds", "releases", "approvals"} {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		testutil.Eventually(t, "CRD "+name+" established", func() (bool, error) {
			if err := admin.Get(ctx, client.ObjectKey{Name: name + ".ferry.dev"}, crd); err != nil {
				return false, err
			}
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					return true, nil
				}
			}
			return false, nil
		})
	}
	dep := &appsv1.Deployment{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: "ferry-manager"}, dep); err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 2 {
		t.Errorf("manager replicas = %d, want 2", *dep.Spec.Replicas)
	}
	if args := strings.Join(dep.Spec.Template.Spec.Containers[0].Args, " "); !strings.Contains(args, "--leader-elect=true") {
		t.Errorf("manager args %q do not elect a leader", args)
	}
	svc := &corev1.Service{}
	for _, name := range []string{"ferry-metrics", "ferry-webhook-service"} {
		if err := admin.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: name}, svc); err != nil {
			t.Errorf("Service %s: %v", name, err)
		}
	}

	// Run the manager as its ServiceAccount: everything below works only if the generated RBAC
	// grants what the manager uses.
	sa := rest.CopyConfig(api.Config)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:ferry-system:ferry-manager"}
	certDir := t.TempDir()
	mgr, err := manager.New(sa, manager.Options{
		Namespace:         "ferry-system",
		MetricsAddr:       "0",
		ProbeAddr:         "0",
		LeaderElect:       true,
		WebhookPort:       freePort(t),
		WebhookHost:       "127.0.0.1",
		WebhookCertDir:    certDir,
		WebhookCertSecret: manager.DefaultWebhookCertSecret,
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})

	// Webhook certificate: issued into the Secret, written for the server, CA injected.
	testutil.Eventually(t, "the webhook CA injected into ferry-mutating-webhook-configuration", func() (bool, error) {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "ferry-mutating-webhook-configuration"}, cfg); err != nil {
			return false, err
		}
		return len(cfg.Webhooks) > 0 && len(cfg.Webhooks[0].ClientConfig.CABundle) > 0, nil
	})
	if _, err := os.Stat(filepath.Join(certDir, "tls.crt")); err != nil {
		t.Errorf("serving certificate not written: %v", err)
	}

	// Cluster controller: reads a kubeconfig Secret in ferry-system, probes, writes status and events.
	kubeconfig, err := os.ReadFile(api.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: "self"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}); err != nil {
		t.Fatal(err)
	}
	if err := admin.Create(ctx, &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "self"}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: "self"}}}); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "Cluster self Ready", func() (bool, error) {
		c := &ferryv1.Cluster{}
		if err := admin.Get(ctx, client.ObjectKey{Name: "self"}, c); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(c.Status.Conditions, ferryv1.ReadyCondition), nil
	})

	// Leader election: the manager holds the Lease in its namespace.
	testutil.EventuallyWithin(t, 30*time.Second, "the leader election Lease", func() (bool, error) {
		var leases = &metav1.PartialObjectMetadataList{}
		leases.SetGroupVersionKind(coordinationLeaseListGVK)
		if err := admin.List(ctx, leases, client.InNamespace("ferry-system")); err != nil {
			return false, err
		}
		for _, l := range leases.Items {
			if l.Name == "ferry-manager.ferry.dev" {
				return true, nil
			}
		}
		return false, nil
	})

	t.Run("least privilege", func(t *testing.T) {
		checkLeastPrivilege(t, admin)
	})
	t.Run("the UI as its ServiceAccount", func(t *testing.T) {
		runUI(t, api.Config, admin)
	})
}

// saUser is the username of a ServiceAccount of ferry-system, with the groups the API server gives it.
func saUser(name string) (string, []string) {
	return "system:serviceaccount:ferry-system:" + name, []string{"system:serviceaccounts", "system:serviceaccounts:ferry-system", "system:authenticated"}
}

// checkLeastPrivilege asks the API server, with the installed RBAC, what the manager's and the
// UI's ServiceAccounts may do that an attacker who took either over would want: become someone
// else, or point another product's webhooks at themselves.
func checkLeastPrivilege(t *testing.T, admin client.Client) {
	t.Helper()
	denied := []authorizationv1.ResourceAttributes{
		{Verb: "impersonate", Resource: "users", Name: "system:admin"},
		{Verb: "impersonate", Resource: "groups", Name: "system:masters"},
		{Verb: "impersonate", Resource: "serviceaccounts", Namespace: "kube-system", Name: "default"},
		{Verb: "impersonate", Group: "authentication.k8s.io", Resource: "userextras", Subresource: "scopes"},
		{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations", Name: "istio-validator"},
		{Verb: "patch", Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Name: "istio-sidecar-injector"},
		{Verb: "list", Group: "admissionregistration.k8s.io", Resource: "validatingwebhookconfigurations"},
		{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings"},
	}
	uiDenied := append(slices.Clone(denied),
		authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "ferry-system", Name: "self"},
		authorizationv1.ResourceAttributes{Verb: "list", Resource: "secrets", Namespace: "ferry-system"},
		authorizationv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "team-shop", Name: "shop-gitlab"},
		authorizationv1.ResourceAttributes{Verb: "create", Resource: "secrets", Namespace: "ferry-system"},
		authorizationv1.ResourceAttributes{Verb: "delete", Group: ferryv1.GroupVersion.Group, Resource: "approvals", Namespace: "team-shop"},
		authorizationv1.ResourceAttributes{Verb: "create", Group: ferryv1.GroupVersion.Group, Resource: "releases", Namespace: "team-shop"},
	)
	for sa, attrs := range map[string][]authorizationv1.ResourceAttributes{"ferry-manager": denied, "ferry-ui": uiDenied} {
		user, groups := saUser(sa)
		for _, a := range attrs {
			review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{User: user, Groups: groups, ResourceAttributes: &a}}
			if err := admin.Create(t.Context(), review); err != nil {
				t.Fatal(err)
			}
			if review.Status.Allowed {
				t.Errorf("%s may %s %s/%s %q in namespace %q", sa, a.Verb, a.Resource, a.Subresource, a.Name, a.Namespace)
			}
		}
	}
}

// runUI runs the UI as `ferry ui` does, as the UI's ServiceAccount: with the installed RBAC it
// fills its session Secret, signs a person in and asks the API server what they may see.
func runUI(t *testing.T, cfg *rest.Config, admin client.Client) {
	t.Helper()
	ctx := t.Context()
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {token: tok-rita-0123456789, user: rita, groups: [release-managers]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	user, groups := saUser("ferry-ui")
	uiCfg := rest.CopyConfig(cfg)
	uiCfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	m, err := manager.New(uiCfg, manager.Options{
		Namespace: "ferry-system", MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"-*"}, ReceiverAddr: "0",
		UIAddr: "127.0.0.1:0", UI: ui.Config{TokenFile: tokens},
	})
	if err != nil {
		t.Fatal(err)
	}
	uctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Start(uctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the UI: %v", err)
		}
	})
	testutil.Eventually(t, "the UI to listen", func() (bool, error) { return m.UI.Addr() != "", nil })
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	base := "http://" + m.UI.Addr()
	page := testutil.GetOK(t, browser, base+"/signin")
	resp, err := browser.PostForm(base+"/signin/token", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "token": {"tok-rita-0123456789"}, "next": {"/releases"}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="signed-in-user">rita<`) {
		t.Fatalf("signing in to the UI running as its ServiceAccount: %d\n%s", resp.StatusCode, body)
	}
	session := &corev1.Secret{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: "ferry-ui-session"}, session); err != nil {
		t.Fatal(err)
	}
	if len(session.Data) == 0 {
		t.Error("the UI signed rita in without a key in its session Secret")
	}
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return err.Error() + ": " + string(ee.Stderr)
	}
	return err.Error()
}
