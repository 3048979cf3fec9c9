package cluster_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

const ferryNamespace = "ferry-system"

// A token that must never appear in a condition, event or log line.
const secretToken = "s3cr3t-t0ken-that-must-not-leak-0123456789"

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

func startManager(t *testing.T) {
	t.Helper()
	testutil.StartManager(t, manager.Options{Controllers: []string{"cluster"}})
}

func TestClusterController(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	ensureNamespace(t, c, ferryNamespace)

	target, err := controlplane.StartAPIServer(ctx, controlplane.APIServerOptions{Name: "target"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = target.Stop() })
	targetKubeconfig, err := os.ReadFile(target.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}

	startManager(t)

	unreachable := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: gone
  cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: %q}
contexts:
- name: gone
  context: {cluster: gone, user: u}
current-context: gone
`, secretToken)
	malformed := "apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user: {token: \"" + secretToken + "\"\nclusters: [oops\n"
	noContext := strings.Replace(unreachable, "current-context: gone\n", "current-context: elsewhere\n", 1)

	cases := []struct {
		name        string
		secret      map[string][]byte // nil: no Secret
		key         string
		wantStatus  metav1.ConditionStatus
		wantReason  string
		wantMessage []string
	}{
		{
			name:        "reachable",
			secret:      map[string][]byte{"kubeconfig": targetKubeconfig},
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ferryv1.ClusterReachableReason,
			wantMessage: []string{strings.TrimSuffix(target.Config.Host, "/"), "v1.35.4"},
		},
		{
			name:        "custom-key",
			secret:      map[string][]byte{"config": targetKubeconfig},
			key:         "config",
			wantStatus:  metav1.ConditionTrue,
			wantReason:  ferryv1.ClusterReachableReason,
			wantMessage: []string{"v1.35.4"},
		},
		{
			name:        "missing-secret",
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.SecretNotFoundReason,
			wantMessage: []string{"Secret ferry-system/missing-secret not found"},
		},
		{
			name:        "missing-key",
			secret:      map[string][]byte{"other": targetKubeconfig},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.SecretNotFoundReason,
			wantMessage: []string{`has no key "kubeconfig"`},
		},
		{
			name:        "malformed",
			secret:      map[string][]byte{"kubeconfig": []byte(malformed)},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.InvalidKubeConfigReason,
			wantMessage: []string{"Secret ferry-system/malformed", "is invalid"},
		},
		{
			name:        "unknown-context",
			secret:      map[string][]byte{"kubeconfig": []byte(noContext)},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.InvalidKubeConfigReason,
			wantMessage: []string{"elsewhere"},
		},
		{
			name:        "unreachable",
			secret:      map[string][]byte{"kubeconfig": []byte(unreachable)},
			wantStatus:  metav1.ConditionFalse,
			wantReason:  ferryv1.ClusterUnreachableReason,
			wantMessage: []string{"https://127.0.0.1:1", "did not answer", "connection refused"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.secret != nil {
				createSecret(t, c, tc.name, tc.secret)
			}
			cl := &ferryv1.Cluster{
				ObjectMeta: metav1.ObjectMeta{Name: tc.name},
				Spec:       ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: tc.name, Key: tc.key}},
			}
			if err := c.Create(ctx, cl); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Delete(ctx, cl) })
			cond := waitReady(t, c, tc.name, tc.wantReason)
			if cond.Status != tc.wantStatus {
				t.Errorf("Ready = %s, want %s (%s)", cond.Status, tc.wantStatus, cond.Message)
			}
			for _, want := range tc.wantMessage {
				if !strings.Contains(cond.Message, want) {
					t.Errorf("message %q does not contain %q", cond.Message, want)
				}
			}
			assertNoSecretLeak(t, c, tc.name)
			if tc.wantStatus == metav1.ConditionTrue {
				got := &ferryv1.Cluster{}
				if err := c.Get(ctx, client.ObjectKey{Name: tc.name}, got); err != nil {
					t.Fatal(err)
				}
				if got.Status.ServerVersion != "v1.35.4" || got.Status.LastProbeTime == nil || got.Status.ObservedGeneration != got.Generation {
					t.Errorf("status = %+v, want serverVersion v1.35.4, lastProbeTime and observedGeneration", got.Status)
				}
			}
		})
	}

	// A Secret that appears or changes is probed at once: the watch on Secrets re-queues the Cluster.
	t.Run("secret-fixed-later", func(t *testing.T) {
		cl := &ferryv1.Cluster{
			ObjectMeta: metav1.ObjectMeta{Name: "fixed-later"},
			Spec:       ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: "fixed-later"}},
		}
		if err := c.Create(ctx, cl); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Delete(ctx, cl) })
		waitReady(t, c, "fixed-later", ferryv1.SecretNotFoundReason)
		createSecret(t, c, "fixed-later", map[string][]byte{"kubeconfig": []byte(unreachable)})
		waitReady(t, c, "fixed-later", ferryv1.ClusterUnreachableReason)
		s := &corev1.Secret{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ferryNamespace, Name: "fixed-later"}, s); err != nil {
			t.Fatal(err)
		}
		s.Data["kubeconfig"] = targetKubeconfig
		if err := c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
		waitReady(t, c, "fixed-later", ferryv1.ClusterReachableReason)
		assertNoSecretLeak(t, c, "fixed-later")
	})
}

// TestInClusterOutsideACluster: inCluster on a manager that does not run in a cluster is reported,
// not a crash.
func TestInClusterOutsideACluster(t *testing.T) {
	c := testutil.CurrentHub(t).Client
	ensureNamespace(t, c, ferryNamespace)
	startManager(t)
	cl := &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "self"}, Spec: ferryv1.ClusterSpec{InCluster: true}}
	if err := c.Create(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), cl) })
	cond := waitReady(t, c, "self", ferryv1.InvalidKubeConfigReason)
	if !strings.Contains(cond.Message, "not running in a cluster") {
		t.Errorf("message = %q", cond.Message)
	}
}

func waitReady(t *testing.T, c client.Client, name, reason string) metav1.Condition {
	t.Helper()
	var got metav1.Condition
	testutil.Eventually(t, "Cluster "+name+" Ready reason "+reason, func() (bool, error) {
		cl := &ferryv1.Cluster{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, cl); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(cl.Status.Conditions, ferryv1.ReadyCondition)
		if cond == nil {
			return false, fmt.Errorf("no Ready condition")
		}
		got = *cond
		return cond.Reason == reason, fmt.Errorf("reason %s: %s", cond.Reason, cond.Message)
	})
	return got
}

// assertNoSecretLeak checks the Cluster's status and its events for the token.
func assertNoSecretLeak(t *testing.T, c client.Client, name string) {
	t.Helper()
	cl := &ferryv1.Cluster{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, cl); err != nil {
		t.Fatal(err)
	}
	if s := fmt.Sprintf("%+v", cl.Status); strings.Contains(s, secretToken) {
		t.Errorf("status of Cluster %s contains the token: %s", name, s)
	}
	events := &corev1.EventList{}
	if err := c.List(context.Background(), events); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if strings.Contains(e.Message, secretToken) {
			t.Errorf("event %s contains the token: %s", e.Name, e.Message)
		}
	}
}

func ensureNamespace(t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
}

func createSecret(t *testing.T, c client.Client, name string, data map[string][]byte) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ferryNamespace, Name: name}, Data: data}
	if err := c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), s) })
}
