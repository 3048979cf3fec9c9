package controlplane

import (
	"context"
	"os"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"
)

func TestTektonVersionMatchesGoMod(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(root + "/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(tektonModule+" "+tektonVersion) + `(\s|$)`)
	if !want.Match(data) {
		t.Fatalf("go.mod does not require %s %s; update tektonVersion in assets.go", tektonModule, tektonVersion)
	}
}

func TestAPIServerServesFerryAndTektonCRDs(t *testing.T) {
	ctx := t.Context()
	api, err := StartAPIServer(ctx, APIServerOptions{FerryCRDs: true, TektonCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := api.Stop(); err != nil {
			t.Error(err)
		}
	})
	clientset, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, gv := range []string{"ferry.dev/v1alpha1", "tekton.dev/v1"} {
		resources, err := clientset.Discovery().ServerResourcesForGroupVersion(gv)
		if err != nil {
			t.Fatalf("%s is not served: %v", gv, err)
		}
		names := map[string]bool{}
		for _, r := range resources.APIResources {
			names[r.Name] = true
		}
		switch gv {
		case "ferry.dev/v1alpha1":
			for _, want := range []string{"clusters", "environments", "projects", "builds", "releases", "approvals"} {
				if !names[want] {
					t.Errorf("%s does not serve %s (serves %v)", gv, want, names)
				}
			}
		case "tekton.dev/v1":
			for _, want := range []string{"pipelineruns", "taskruns", "pipelines", "tasks"} {
				if !names[want] {
					t.Errorf("%s does not serve %s", gv, want)
				}
			}
		}
	}
	if _, err := os.Stat(api.KubeconfigPath); err != nil {
		t.Errorf("kubeconfig not written: %v", err)
	}
}

// TestTwoSimulatedClustersRunDeployments starts two clusters side by side and has a Deployment
// become Available on each: the scheduler places pods on kwok's node and kwok makes them ready.
func TestTwoSimulatedClustersRunDeployments(t *testing.T) {
	ctx := t.Context()
	clusters := make([]*Cluster, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i, name := range []string{"east", "west"} {
		wg.Go(func() {
			clusters[i], errs[i] = StartCluster(ctx, ClusterOptions{APIServer: APIServerOptions{Name: name}})
		})
	}
	wg.Wait()
	for i, c := range clusters {
		if c != nil {
			t.Cleanup(func() {
				if err := c.Stop(); err != nil {
					t.Error(err)
				}
			})
		}
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	if clusters[0].Config.Host == clusters[1].Config.Host {
		t.Fatalf("both clusters serve at %s", clusters[0].Config.Host)
	}

	for _, c := range clusters {
		clientset := kubernetes.NewForConfigOrDie(c.Config)
		ns := createNamespace(ctx, t, clientset, "app")
		dep := deployment(ns, "web", 3, nil)
		if _, err := clientset.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(ctx, t, c.Name+": deployment available with 3 replicas", func() (bool, error) {
			d, err := clientset.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return d.Status.AvailableReplicas == 3 && d.Status.UpdatedReplicas == 3, nil
		})
	}
}

// TestUnreadyAnnotationKeepsPodsUnready shows how a failing rollout is simulated: pods with the
// annotation run but never become ready, so the Deployment never becomes Available.
func TestUnreadyAnnotationKeepsPodsUnready(t *testing.T) {
	ctx := t.Context()
	c, err := StartCluster(ctx, ClusterOptions{APIServer: APIServerOptions{Name: "flaky"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	clientset := kubernetes.NewForConfigOrDie(c.Config)
	ns := createNamespace(ctx, t, clientset, "app")
	dep := deployment(ns, "broken", 2, map[string]string{UnreadyAnnotation: "true"})
	if _, err := clientset.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(ctx, t, "two running pods that are not ready", func() (bool, error) {
		pods, err := clientset.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		running := 0
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning {
				continue
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionFalse {
					running++
				}
			}
		}
		return running == 2, nil
	})
	d, err := clientset.AppsV1().Deployments(ns).Get(ctx, "broken", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Status.AvailableReplicas != 0 {
		t.Fatalf("availableReplicas = %d, want 0", d.Status.AvailableReplicas)
	}
}

// TestStopLeavesNoProcess checks that stopping a cluster ends every child it started.
func TestStopLeavesNoProcess(t *testing.T) {
	ctx := t.Context()
	c, err := StartCluster(ctx, ClusterOptions{APIServer: APIServerOptions{Name: "ephemeral"}})
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, p := range c.processes {
		pids = append(pids, p.cmd.Process.Pid)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d is still running after Stop", pid)
		}
	}
	if _, err := os.Stat(c.Dir); !os.IsNotExist(err) {
		t.Errorf("temporary directory %s was not removed", c.Dir)
	}
}

// TestStopWithOpenWatches stops an API server that clients still watch: a pod's controller
// killed without its connection closing, or a kubelet still running, leaves a watch open, and
// the stop must not wait for it.
func TestStopWithOpenWatches(t *testing.T) {
	ctx := t.Context()
	api, err := StartAPIServer(ctx, APIServerOptions{Name: "watched"})
	if err != nil {
		t.Fatal(err)
	}
	clientset, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		w, err := clientset.CoreV1().Namespaces().Watch(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
	}
	if err := api.Stop(); err != nil {
		t.Fatal(err)
	}
}

func createNamespace(ctx context.Context, t *testing.T, clientset kubernetes.Interface, prefix string) string {
	t.Helper()
	ns, err := clientset.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// No token controller runs, so nothing else creates the default ServiceAccount pods need.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}
	if _, err := clientset.CoreV1().ServiceAccounts(ns.Name).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return ns.Name
}

func deployment(ns, name string, replicas int32, annotations map[string]string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: annotations},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app@sha256:" + strings.Repeat("a", 64)}},
				},
			},
		},
	}
}

func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
	}
}

// TestClusterHaltAndRestart stops every process of a simulated cluster and starts it again: the
// address, the certificates (so its kubeconfig still works) and the objects survive, and its
// controllers carry on.
func TestClusterHaltAndRestart(t *testing.T) {
	ctx := t.Context()
	c, err := StartCluster(ctx, ClusterOptions{APIServer: APIServerOptions{Name: "restartable", Restartable: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Error(err)
		}
	})
	clientset := kubernetes.NewForConfigOrDie(c.Config)
	ns := createNamespace(ctx, t, clientset, "app")
	if _, err := clientset.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "before", 2, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, clientset, ns, "before", 2)
	host := c.Config.Host
	var pids []int
	for _, p := range c.processes {
		pids = append(pids, p.cmd.Process.Pid)
	}

	if err := c.Halt(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("process %d is still running after Halt", pid)
		}
	}
	if _, err := clientset.Discovery().ServerVersion(); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("a halted cluster answered: %v", err)
	}

	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Config.Host != host {
		t.Errorf("address changed from %s to %s", host, c.Config.Host)
	}
	// The kubeconfig written at the first start still works: same address, same CA, same users.
	kubeconfigClient := kubernetes.NewForConfigOrDie(kubeconfigConfig(t, c.KubeconfigPath))
	waitAvailable(ctx, t, kubeconfigClient, ns, "before", 2)
	if _, err := kubeconfigClient.AppsV1().Deployments(ns).Create(ctx, deployment(ns, "after", 1, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAvailable(ctx, t, kubeconfigClient, ns, "after", 1)

	// Halting twice or restarting a running cluster is harmless; a cluster that is not restartable
	// says so.
	if err := c.Restart(ctx); err != nil {
		t.Errorf("Restart of a running cluster: %v", err)
	}
	plain := &Cluster{APIServer: &APIServer{}, Name: "plain"}
	if err := plain.Halt(); err == nil || !strings.Contains(err.Error(), "Restartable") {
		t.Errorf("Halt of a cluster that is not restartable: %v", err)
	}
}

func waitAvailable(ctx context.Context, t *testing.T, clientset kubernetes.Interface, ns, name string, replicas int32) {
	t.Helper()
	waitFor(ctx, t, "deployment "+name+" available", func() (bool, error) {
		d, err := clientset.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.AvailableReplicas == replicas && d.Status.UpdatedReplicas == replicas, nil
	})
}

func kubeconfigConfig(t *testing.T, path string) *rest.Config {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
