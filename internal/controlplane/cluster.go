package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// KwokNodeAnnotation marks the nodes kwok manages.
const KwokNodeAnnotation = "kwok.x-k8s.io/node"

// ClusterOptions configure a simulated cluster.
type ClusterOptions struct {
	// APIServer configures the cluster's API server. Name defaults to "cluster".
	APIServer APIServerOptions

	// Nodes is the number of fake nodes. Default 1.
	Nodes int

	// StartTimeout bounds the start, node registration included. Default 2m (5m with a real node).
	StartTimeout time.Duration

	// RealNode gives the cluster one real node — containerd, runc, the kubelet and kube-proxy in
	// namespaces of their own — instead of kwok's simulated ones, so that containers run, answer
	// and fail their probes for real. Linux and root only: RealNodesAvailable says what is missing.
	// Nodes is ignored.
	RealNode *RealNodeOptions
}

// RealNodeOptions configure the real node of a cluster.
type RealNodeOptions struct {
	// Registry is host:port of the registry the node pulls from over plain HTTP, listening on
	// HostIP; the node mirrors docker.io to it, so `golang:1.26` resolves there.
	Registry string
	// RegistryUsername and RegistryPassword let the node pull from Registry without a pull Secret
	// (the sandbox image, builder images). Optional.
	RegistryUsername, RegistryPassword string
	// SandboxImage is the pause image of pod sandboxes, in Registry.
	SandboxImage string
}

// Cluster is a simulated Kubernetes cluster: a real API server, controller-manager and scheduler,
// with kwok playing the kubelet of fake nodes. Deployments, ReplicaSets, Services and pods behave as
// on a real cluster, except that no container runs.
type Cluster struct {
	*APIServer

	// Name is the cluster's name.
	Name string

	processes []*process
	children  []child
	logDir    string
	nodes     int

	// A cluster with a real node: the node, its slot on this machine, and a temporary directory to
	// remove on Stop.
	real      bool
	node      *node
	slot      *slot
	hostNet   *HostNetwork
	removeDir string
	// volumes provisions the real node's PersistentVolumes (StorageClassName).
	volumes *volumes
}

// child is a process of a simulated cluster besides etcd and the API server.
type child struct {
	name string
	path string
	args []string
}

// StartCluster starts a simulated cluster and waits until its nodes are Ready.
func StartCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	if opts.APIServer.Name == "" {
		opts.APIServer.Name = "cluster"
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 2 * time.Minute
		if opts.RealNode != nil {
			opts.StartTimeout = 5 * time.Minute
		}
	}
	if opts.RealNode != nil {
		ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
		defer cancel()
		return startRealCluster(ctx, opts)
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	if err := checkBinaries(assets, clusterBinaries); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	api, err := StartAPIServer(ctx, opts.APIServer)
	if err != nil {
		return nil, err
	}
	c := &Cluster{APIServer: api, Name: opts.APIServer.Name}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()

	logDir := filepath.Join(api.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	stages, err := writeStages(assets, api.Dir)
	if err != nil {
		return nil, err
	}
	kubeconfig := api.KubeconfigPath
	c.logDir, c.nodes = logDir, opts.Nodes
	c.children = []child{
		{"kube-controller-manager", filepath.Join(assets, "kube-controller-manager"), []string{
			"--kubeconfig=" + kubeconfig,
			// The token controller needs a signing key the simulated cluster does not have; nothing
			// here mounts service account tokens into running containers anyway.
			"--controllers=*,-serviceaccount-token",
			// The node lifecycle controller marks every pod of a node NotReady when the node's
			// heartbeat is late (a loaded machine, a laptop waking up, a Halt and Restart), and
			// kwok, unlike a kubelet, never reports them ready again: Deployments would stay
			// unavailable forever. A fake node is never really gone.
			"--node-monitor-grace-period=1h",
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--concurrent-deployment-syncs=10",
			"--concurrent-replicaset-syncs=10",
		}},
		{"kube-scheduler", filepath.Join(assets, "kube-scheduler"), []string{
			"--kubeconfig=" + kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		}},
		{"kwok", filepath.Join(assets, "kwok"), []string{
			"--kubeconfig=" + kubeconfig,
			"--manage-all-nodes=true",
			"--config=" + stages,
		}},
	}
	if err := c.startChildren(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startChildren starts the controller-manager, the scheduler and kwok, registers the fake nodes
// (again, after a restart: creating one that exists is fine) and waits until they are Ready.
func (c *Cluster) startChildren(ctx context.Context) error {
	for _, ch := range c.children {
		p, err := startProcess(ch.name, ch.path, ch.args, c.logDir)
		if err != nil {
			return err
		}
		c.processes = append(c.processes, p)
	}
	clientset, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	for i := range c.nodes {
		if err := createNode(ctx, clientset, fmt.Sprintf("kwok-node-%d", i)); err != nil {
			return err
		}
	}
	return c.waitNodesReady(ctx, clientset, c.nodes)
}

func createNode(ctx context.Context, clientset kubernetes.Interface, name string) error {
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("250"),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{KwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels: map[string]string{
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
				"type":                   "kwok",
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    capacity,
			Allocatable: capacity,
			NodeInfo:    corev1.NodeSystemInfo{KubeletVersion: "fake", OperatingSystem: "linux", Architecture: "amd64"},
		},
	}
	_, err := clientset.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create node %s: %w", name, err)
	}
	return nil
}

func (c *Cluster) waitNodesReady(ctx context.Context, clientset kubernetes.Interface, want int) error {
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := c.checkProcesses(); err != nil {
			return false, err
		}
		nodes, err := clientset.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil //nolint:nilerr // the API server may still be settling; keep polling
		}
		ready := 0
		for _, n := range nodes.Items {
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return ready >= want, nil
	})
	if err != nil {
		return fmt.Errorf("nodes of cluster %s did not become Ready (%s): %w", c.Name, c.nodeLogTail(), err)
	}
	return nil
}

// nodeLogTail is the end of the log of what plays the nodes, for error messages.
func (c *Cluster) nodeLogTail() string {
	if c.node != nil {
		return "kubelet log: " + tailFile(filepath.Join(c.node.logs, "kubelet.log"), 3000)
	}
	if len(c.processes) > 2 {
		return "kwok log: " + c.processes[2].tail(2000)
	}
	return "no log"
}

// checkProcesses fails when a child process has exited.
func (c *Cluster) checkProcesses() error {
	if c.node != nil {
		if err := c.node.exited(); err != nil {
			return fmt.Errorf("cluster %s: %w", c.Name, err)
		}
	}
	for _, p := range c.processes {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s of cluster %s exited (%w); last log lines:\n%s", p.name, c.Name, err, p.tail(2000))
		}
	}
	return nil
}

// Healthy reports an error when one of the cluster's processes has exited.
func (c *Cluster) Healthy() error { return c.checkProcesses() }

// Stop stops the nodes (a real node with everything it runs), the scheduler, the
// controller-manager, then the API server, and last gives back the host's address for nodes.
func (c *Cluster) Stop() error {
	c.volumes.stop()
	errs := []error{c.stopNode(), c.stopChildren()}
	if c.APIServer != nil {
		errs = append(errs, c.APIServer.Stop())
	}
	errs = append(errs, c.releaseHostNet())
	if c.removeDir != "" {
		errs = append(errs, os.RemoveAll(c.removeDir))
	}
	return errors.Join(errs...)
}

func (c *Cluster) stopChildren() error {
	var errs []error
	for i := len(c.processes) - 1; i >= 0; i-- {
		errs = append(errs, c.processes[i].stop(10*time.Second))
	}
	c.processes = nil
	return errors.Join(errs...)
}

// Halt stops every process of a cluster started with APIServer.Restartable and keeps its data,
// address and certificates: to its clients the cluster is down until Restart.
func (c *Cluster) Halt() error {
	if c.real {
		return fmt.Errorf("cluster %s has a real node: Halt and Restart are for simulated clusters", c.Name)
	}
	if !c.restartable {
		return fmt.Errorf("cluster %s was not started with APIServer.Restartable", c.Name)
	}
	return errors.Join(c.stopChildren(), c.APIServer.Halt())
}

// Restart starts a halted cluster again with the same address, certificates and objects, and
// waits until its nodes are Ready. Workloads carry on where they were.
func (c *Cluster) Restart(ctx context.Context) error {
	if err := c.APIServer.Restart(ctx); err != nil {
		return err
	}
	if len(c.processes) > 0 {
		return nil
	}
	return c.startChildren(ctx)
}
