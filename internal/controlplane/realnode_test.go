//go:build linux

package controlplane_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil/realnode"
)

// webWorkload is a Deployment of the web image behind a Service, with a readiness probe.
func webWorkload(image string) (*appsv1.Deployment, *corev1.Service) {
	labels := map[string]string{"app": "web"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ImagePullSecrets: nil,
					Containers: []corev1.Container{{
						Name: "web", Image: image,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	return d, svc
}

// diagnose describes the node and the pods of the default namespace for a failure message.
func diagnose(ctx context.Context, c *controlplane.Cluster, clientset kubernetes.Interface) string {
	var b strings.Builder
	b.WriteString(c.NodeDiagnostics(ctx))
	pods, err := clientset.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		fmt.Fprintf(&b, "--- pods: %v\n", err)
		return b.String()
	}
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "--- pod %s %s ip=%s:", p.Name, p.Status.Phase, p.Status.PodIP)
		for _, cs := range p.Status.ContainerStatuses {
			fmt.Fprintf(&b, " %s ready=%v restarts=%d state=%+v last=%+v", cs.Name, cs.Ready, cs.RestartCount, cs.State, cs.LastTerminationState)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestRealClusterRunsAServiceAndKeepsPodTrafficOnTheMachine(t *testing.T) {
	realnode.Require(t)
	ctx := t.Context()
	before := realnode.ReadHostState(t)
	e := realnode.NewEnv(t)
	dir := filepath.Join(t.TempDir(), "real")
	c, err := controlplane.StartCluster(ctx, controlplane.ClusterOptions{APIServer: controlplane.APIServerOptions{Name: "real", Dir: dir}, RealNode: e.NodeOptions()})
	if err != nil {
		t.Fatal(err)
	}
	slotN := c.NodeSlot()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = c.Stop()
		}
	})
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 1 {
		t.Fatalf("want one node, got %v (%v)", nodes, err)
	}
	if _, fake := nodes.Items[0].Annotations[controlplane.KwokNodeAnnotation]; fake {
		t.Fatal("the real node carries kwok's annotation")
	}
	if v := nodes.Items[0].Status.NodeInfo.ContainerRuntimeVersion; !strings.HasPrefix(v, "containerd://") {
		t.Fatalf("the node runs %q, want containerd", v)
	}

	d, svc := webWorkload(e.Web)
	if _, err := clientset.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, err = clientset.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := clientset.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && got.Status.AvailableReplicas == 2, nil
	}); err != nil {
		pods, _ := clientset.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		t.Fatalf("the Deployment did not become available: %v; pods: %+v", err, pods)
	}

	// The endpoint slice controller lists both pods as ready endpoints (kube-proxy then programs
	// the Service; before, it rejects connections to it).
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		slices, err := clientset.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=web"})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, s := range slices.Items {
			for _, ep := range s.Endpoints {
				if ep.Conditions.Ready != nil && *ep.Conditions.Ready {
					ready++
				}
			}
		}
		return ready == 2, nil
	}); err != nil {
		t.Fatalf("the Service's endpoints did not become ready: %v\n%s", err, diagnose(ctx, c, clientset))
	}

	// The Service answers through kube-proxy, from the node's network as a pod would reach it.
	base := "http://" + svc.Spec.ClusterIP
	var body string
	var getErr error
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, body, getErr = realnode.Get(ctx, c, base+"/")
		return getErr == nil, nil
	}); err != nil {
		t.Fatalf("the Service did not answer: %v\n%s", getErr, diagnose(ctx, c, clientset))
	}
	if !strings.HasPrefix(body, "hello from web-") {
		t.Fatalf("the Service answered %q", body)
	}

	// Pods reach the host's address (the registry) and nothing else outside the cluster.
	rule, err := c.NodeExec(ctx, "iptables", "-S", controlplane.EgressChain)
	if err != nil || !strings.Contains(rule, "-j DROP") {
		t.Fatalf("the egress rule is not in place (%v):\n%s", err, rule)
	}
	if _, got, err := realnode.Get(ctx, c, base+"/dial?addr="+e.Registry.Host); err != nil || strings.TrimSpace(got) != "connected" {
		t.Fatalf("a pod cannot reach the registry on the host's address: %q %v", got, err)
	}
	blocked := []string{"1.1.1.1:443", "192.0.2.1:80"}
	if ifaceAddrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaceAddrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() && !ipn.IP.Equal(e.Host.IP) {
				blocked = append(blocked, net.JoinHostPort(ipn.IP.String(), "22"))
			}
		}
	}
	for _, addr := range blocked {
		_, got, err := realnode.Get(ctx, c, base+"/dial?addr="+addr)
		if err != nil {
			t.Fatalf("the web pod did not answer: %v\n%s", err, diagnose(ctx, c, clientset))
		}
		if !strings.HasPrefix(got, "failed:") {
			t.Errorf("a pod reached %s, outside what pods may reach: %q", addr, got)
		}
	}

	// Dialing from the node's network must not end the threads that started the node: the kernel
	// kills a child whose forking thread ends (Pdeathsig), and a Go thread locked into another
	// namespace and left locked ends with its goroutine. Many dials reach every thread.
	for i := range 200 {
		conn, err := c.DialContext(ctx, "tcp", net.JoinHostPort(svc.Spec.ClusterIP, "80"))
		if err != nil {
			t.Fatalf("dial %d to the Service: %v\n%s", i, err, diagnose(ctx, c, clientset))
		}
		_ = conn.Close()
	}
	if err := c.Healthy(); err != nil {
		t.Fatalf("the node did not survive dials from its network: %v", err)
	}

	if err := c.Stop(); err != nil {
		t.Fatalf("failed to stop the cluster: %v", err)
	}
	stopped = true
	realnode.CheckNothingLeft(t, dir, slotN, before)
}

// TestRealClusterKilledLeavesNothingAfterTheNextStart kills a process that runs a real cluster
// with SIGKILL: its node dies with it, and the next start on the same directory cleans what the
// kernel cannot (cgroups), runs, and stops cleanly.
func TestRealClusterKilledLeavesNothingAfterTheNextStart(t *testing.T) {
	realnode.Require(t)
	if os.Getenv("FERRY_REAL_CLUSTER_HELPER") != "" {
		return // the child runs TestRealClusterHelper only
	}
	ctx := t.Context()
	before := realnode.ReadHostState(t)
	e := realnode.NewEnv(t)
	dir := filepath.Join(t.TempDir(), "killed")
	ready := filepath.Join(t.TempDir(), "ready")

	cmd := exec.Command(os.Args[0], "-test.run=^TestRealClusterHelper$", "-test.v")
	cmd.Env = append(os.Environ(),
		"FERRY_REAL_CLUSTER_HELPER="+dir, "FERRY_REAL_CLUSTER_READY="+ready,
		"FERRY_REAL_CLUSTER_REGISTRY="+e.Registry.Host, "FERRY_REAL_CLUSTER_USER="+e.User,
		"FERRY_REAL_CLUSTER_PASS="+e.Password, "FERRY_REAL_CLUSTER_PAUSE="+e.Pause)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 5*time.Minute, true, func(context.Context) (bool, error) {
		if cmd.ProcessState != nil {
			return false, fmt.Errorf("the helper exited")
		}
		_, err := os.Stat(ready)
		return err == nil, nil
	}); err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("the helper's cluster did not start: %v\n%s", err, out.String())
	}
	slotN := controlplane.SlotOf(dir)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// Processes and mounts go with the node's namespaces.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, l := range controlplane.HostLeftovers(dir, slotN) {
			if strings.HasPrefix(l, "process") || strings.HasPrefix(l, "mount") {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		t.Fatalf("the killed cluster's processes or mounts are still there: %s", strings.Join(controlplane.HostLeftovers(dir, slotN), "; "))
	}

	c, err := controlplane.StartCluster(ctx, controlplane.ClusterOptions{APIServer: controlplane.APIServerOptions{Name: "killed", Dir: dir}, RealNode: e.NodeOptions()})
	if err != nil {
		t.Fatalf("the next start failed: %v", err)
	}
	if c.NodeSlot() != slotN {
		t.Errorf("the next start took slot %d, not the cluster's slot %d", c.NodeSlot(), slotN)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	realnode.CheckNothingLeft(t, dir, slotN, before)
}

// TestRealClusterHelper starts a real cluster for TestRealClusterKilledLeavesNothingAfterTheNextStart
// and waits to be killed; it does nothing unless that test runs it.
func TestRealClusterHelper(t *testing.T) {
	dir := os.Getenv("FERRY_REAL_CLUSTER_HELPER")
	if dir == "" {
		t.Skip("run by TestRealClusterKilledLeavesNothingAfterTheNextStart")
	}
	_, err := controlplane.StartCluster(context.Background(), controlplane.ClusterOptions{
		APIServer: controlplane.APIServerOptions{Name: "killed", Dir: dir},
		RealNode: &controlplane.RealNodeOptions{
			Registry: os.Getenv("FERRY_REAL_CLUSTER_REGISTRY"), SandboxImage: os.Getenv("FERRY_REAL_CLUSTER_PAUSE"),
			RegistryUsername: os.Getenv("FERRY_REAL_CLUSTER_USER"), RegistryPassword: os.Getenv("FERRY_REAL_CLUSTER_PASS"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(os.Getenv("FERRY_REAL_CLUSTER_READY"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Hour) // until killed
}
