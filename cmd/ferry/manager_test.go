package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

type runningManager struct {
	metrics, probes, receiver string
	cancel                    context.CancelFunc
	done                      chan error
}

// startManagerCommand runs `ferry manager` in-process, as a replica would run in a Deployment.
func startManagerCommand(t *testing.T, kubeconfig string) *runningManager {
	t.Helper()
	m := &runningManager{metrics: testutil.FreeAddr(t), probes: testutil.FreeAddr(t), receiver: testutil.FreeAddr(t), done: make(chan error, 1)}
	cmd := newRootCommand()
	cmd.SetArgs([]string{
		"manager", "--kubeconfig", kubeconfig, "--namespace", testutil.FerryNamespace,
		"--metrics-bind-address", m.metrics, "--health-probe-bind-address", m.probes, "--receiver-bind-address", m.receiver,
		"--webhook-port", "0", "--leader-elect", "--leader-election-id", "test-leader",
		"--graceful-shutdown-timeout", "10s", "--zap-log-level", "error",
	})
	var ctx context.Context
	ctx, m.cancel = context.WithCancel(context.Background())
	go func() { m.done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() { m.stop(t) })
	return m
}

func (m *runningManager) stop(t *testing.T) {
	t.Helper()
	if m.cancel == nil {
		return
	}
	m.cancel()
	m.cancel = nil
	select {
	case err := <-m.done:
		if err != nil {
			t.Errorf("ferry manager exited with: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Error("ferry manager did not shut down within 20s of the signal")
	}
}

func TestManagerCommand(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	if err := c.Create(ctx, namespace(testutil.FerryNamespace)); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}

	first := startManagerCommand(t, hub.KubeconfigPath)
	for _, path := range []string{"/healthz", "/readyz"} {
		testutil.Eventually(t, path+" answers 200", func() (bool, error) {
			code, _, err := get("http://" + first.probes + path)
			return code == http.StatusOK, err
		})
	}
	firstHolder := leaseHolder(t, c, "")

	// The leader reconciles.
	createCluster(t, c, "one")
	waitReady(t, c, "one")
	testutil.Eventually(t, "metrics of the cluster controller", func() (bool, error) {
		_, body, err := get("http://" + first.metrics + "/metrics")
		return strings.Contains(body, `controller_runtime_reconcile_total{controller="cluster",result="success"}`), err
	})

	// A second replica waits; when the leader shuts down gracefully it releases the Lease and the
	// second takes over.
	second := startManagerCommand(t, hub.KubeconfigPath)
	testutil.Eventually(t, "the second replica's /healthz", func() (bool, error) {
		code, _, err := get("http://" + second.probes + "/healthz")
		return code == http.StatusOK, err
	})
	if holder := leaseHolder(t, c, ""); holder != firstHolder {
		t.Fatalf("lease moved to %s while the first replica runs", holder)
	}
	// The replica that does not lead still answers GitLab's webhooks.
	testutil.Eventually(t, "the second replica's GitLab receiver", func() (bool, error) {
		resp, err := http.Post("http://"+second.receiver+"/hooks/gitlab", "application/json", strings.NewReader("{}"))
		if err != nil {
			return false, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized, fmt.Errorf("status %d", resp.StatusCode)
	})
	start := time.Now()
	first.stop(t)
	t.Logf("first replica shut down in %s", time.Since(start).Round(time.Millisecond))
	secondHolder := leaseHolder(t, c, firstHolder)
	if secondHolder == firstHolder {
		t.Fatal("the lease did not move")
	}
	createCluster(t, c, "two")
	waitReady(t, c, "two")
}

func namespace(name string) client.Object {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// leaseHolder waits for the leader election Lease to have a holder other than not, and returns it.
func leaseHolder(t *testing.T, c client.Client, not string) string {
	t.Helper()
	var holder string
	testutil.Eventually(t, "a leader other than "+fmt.Sprintf("%q", not), func() (bool, error) {
		lease := &coordinationv1.Lease{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: testutil.FerryNamespace, Name: "test-leader"}, lease); err != nil {
			return false, err
		}
		if lease.Spec.HolderIdentity == nil {
			return false, nil
		}
		holder = *lease.Spec.HolderIdentity
		return holder != "" && holder != not, nil
	})
	return holder
}

func createCluster(t *testing.T, c client.Client, name string) {
	t.Helper()
	hub := testutil.CurrentHub(t)
	kubeconfig, err := os.ReadFile(hub.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: name}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := c.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	cl := &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: name}}}
	if err := c.Create(context.Background(), cl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), cl)
		_ = c.Delete(context.Background(), s)
	})
}

func waitReady(t *testing.T, c client.Client, name string) {
	t.Helper()
	testutil.Eventually(t, "Cluster "+name+" Ready", func() (bool, error) {
		cl := &ferryv1.Cluster{}
		if err := c.Get(context.Background(), client.ObjectKey{Name: name}, cl); err != nil {
			return false, err
		}
		return meta.IsStatusConditionTrue(cl.Status.Conditions, ferryv1.ReadyCondition), nil
	})
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// TestManagerRefusesLocalExecutorInCluster: `ferry manager --executor=local` in a Kubernetes pod
// exits with an error that names the flag allowing it; with the flag it runs.
func TestManagerRefusesLocalExecutorInCluster(t *testing.T) {
	hub := testutil.CurrentHub(t)
	if err := hub.Client.Create(context.Background(), namespace(testutil.FerryNamespace)); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
	logDir := t.TempDir()
	args := []string{
		"manager", "--kubeconfig", hub.KubeconfigPath, "--namespace", testutil.FerryNamespace, "--executor=local", "--log-dir", logDir,
		"--controllers", "build", "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--receiver-bind-address", "0",
		"--ui-bind-address", "0", "--webhook-port", "0", "--leader-elect=false", "--zap-log-level", "error",
	}
	cmd := newRootCommand()
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	err := cmd.ExecuteContext(context.Background())
	if err == nil || !strings.Contains(err.Error(), "refusing to run the local executor in a Kubernetes pod (KUBERNETES_SERVICE_HOST is set)") ||
		!strings.Contains(err.Error(), "--allow-local-executor-in-cluster") {
		t.Fatalf("ferry manager --executor=local in a pod: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cmd = newRootCommand()
	cmd.SetArgs(append(args, "--allow-local-executor-in-cluster"))
	go func() { done <- cmd.ExecuteContext(ctx) }()
	testutil.Eventually(t, "the local executor to take its log directory", func() (bool, error) {
		select {
		case err := <-done:
			t.Fatalf("ferry manager exited: %v", err)
		default:
		}
		_, err := os.Stat(filepath.Join(logDir, ".lock"))
		return err == nil, err
	})
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ferry manager exited with: %v", err)
	}
}
