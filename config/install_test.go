// Package config_test checks the install manifests: they render with kustomize, install into a
// real API server, and the manager runs with exactly the permissions they grant.
package config_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
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
}

func stderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return err.Error() + ": " + string(ee.Stderr)
	}
	return err.Error()
}
