package controlplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
)

// slotFile remembers a cluster's slot in its directory, so that a restarted cluster gets its node
// address and pod range back when they are free.
const slotFile = "node-slot"

// startRealCluster starts an API server, controller-manager and scheduler on the host and a real
// node in namespaces of its own (see node_linux.go), and waits until the node is Ready.
func startRealCluster(ctx context.Context, opts ClusterOptions) (_ *Cluster, err error) {
	if err := RealNodesAvailable(); err != nil {
		return nil, err
	}
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	if err := checkBinaries(assets, append(append([]string{}, clusterBinaries[:2]...), nodeBinaries...)); err != nil {
		return nil, err
	}
	c := &Cluster{Name: opts.APIServer.Name, real: true}
	if opts.APIServer.Dir == "" {
		dir, err := os.MkdirTemp("", "ferry-"+opts.APIServer.Name+"-")
		if err != nil {
			return nil, err
		}
		opts.APIServer.Dir, c.removeDir = dir, dir
	}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()
	if err := os.MkdirAll(opts.APIServer.Dir, 0o700); err != nil {
		return nil, err
	}
	hn, err := AcquireHostNetwork()
	if err != nil {
		return nil, err
	}
	c.hostNet = hn
	hostIP := hn.IP
	s, err := acquireSlot(readSlot(opts.APIServer.Dir))
	if err != nil {
		return nil, err
	}
	c.slot = s
	if err := os.WriteFile(filepath.Join(opts.APIServer.Dir, slotFile), []byte(strconv.Itoa(int(s.n))+"\n"), 0o600); err != nil {
		return nil, err
	}
	cfg := nodeConfig{
		Name:             opts.APIServer.Name + "-node",
		Dir:              filepath.Join(opts.APIServer.Dir, "node"),
		Slot:             s,
		HostIP:           hostIP,
		Registry:         opts.RealNode.Registry,
		RegistryUsername: opts.RealNode.RegistryUsername,
		RegistryPassword: opts.RealNode.RegistryPassword,
		SandboxImage:     opts.RealNode.SandboxImage,
		Assets:           assets,
	}
	// The node's namespaces and link come first: the API server listens on the host's address on
	// that link.
	n, err := prepareNode(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c.node = n

	ca, err := newCertAuthority(opts.APIServer.Name + "-ca")
	if err != nil {
		return nil, err
	}
	opts.APIServer.real = &realServing{address: hostIP, ca: ca}
	api, err := StartAPIServer(ctx, opts.APIServer)
	if err != nil {
		return nil, err
	}
	c.APIServer = api
	certDir := api.Env.ControlPlane.GetAPIServer().CertDir

	logDir := filepath.Join(api.Dir, "logs")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return nil, err
	}
	c.logDir = logDir
	c.children = []child{
		{"kube-controller-manager", filepath.Join(assets, "kube-controller-manager"), []string{
			"--kubeconfig=" + api.KubeconfigPath,
			"--controllers=*",
			"--service-account-private-key-file=" + filepath.Join(certDir, "sa-signer.key"),
			"--root-ca-file=" + filepath.Join(certDir, "ca.crt"),
			// A loaded machine can delay a heartbeat; a real node is not gone for that.
			"--node-monitor-grace-period=2m",
			"--leader-elect=false",
			"--secure-port=0",
			"--use-service-account-credentials=false",
			"--concurrent-deployment-syncs=10",
			"--concurrent-replicaset-syncs=10",
		}},
		{"kube-scheduler", filepath.Join(assets, "kube-scheduler"), []string{
			"--kubeconfig=" + api.KubeconfigPath,
			"--leader-elect=false",
			"--secure-port=0",
		}},
	}
	for _, ch := range c.children {
		p, err := startProcess(ch.name, ch.path, ch.args, c.logDir)
		if err != nil {
			return nil, err
		}
		c.processes = append(c.processes, p)
	}

	kubeletKubeconfig := filepath.Join(api.Dir, "kubelet.kubeconfig")
	if err := api.UserKubeconfig(kubeletKubeconfig, "system:node:"+cfg.Name, "system:nodes"); err != nil {
		return nil, err
	}
	proxyKubeconfig := filepath.Join(api.Dir, "kube-proxy.kubeconfig")
	if err := api.UserKubeconfig(proxyKubeconfig, "system:kube-proxy"); err != nil {
		return nil, err
	}
	n.cfg.KubeletKubeconfig, n.cfg.ProxyKubeconfig = kubeletKubeconfig, proxyKubeconfig
	n.cfg.ClientCAFile = filepath.Join(certDir, "ca.crt")
	if err := n.startDaemons(ctx); err != nil {
		return nil, err
	}
	clientset, err := kubernetes.NewForConfig(api.Config)
	if err != nil {
		return nil, err
	}
	c.nodes = 1
	if err := c.waitNodesReady(ctx, clientset, 1); err != nil {
		return nil, err
	}
	if c.volumes, err = startVolumes(ctx, clientset, filepath.Join(api.Dir, "volumes")); err != nil {
		return nil, err
	}
	return c, nil
}

// NodeSlot is the slot of the cluster's real node on this machine, -1 for a simulated cluster.
func (c *Cluster) NodeSlot() int {
	if c.slot == nil {
		return -1
	}
	return int(c.slot.n)
}

// SlotOf is the slot the real node of the cluster in dir last used, -1 when none.
func SlotOf(dir string) int { return readSlot(dir) }

// HostLeftovers lists what a cluster in dir whose node had the given slot left on this machine:
// processes (their command line names dir, or they are the node's and carry NodeEnv), mounts
// under dir, the node's link and cgroups. After Stop — and, for a run that was killed, after the
// next start — there must be none.
func HostLeftovers(dir string, slotN int) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	self := strconv.Itoa(os.Getpid())
	for _, p := range procs {
		pid := filepath.Base(filepath.Dir(p))
		if pid == self {
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		environ, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "environ"))
		if strings.Contains(string(data), dir) || strings.Contains(string(environ), NodeEnv+"="+dir) {
			out = append(out, fmt.Sprintf("process %s: %s", pid, strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " "))))
		}
	}
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if strings.Contains(line, dir) {
				out = append(out, "mount "+line)
			}
		}
	}
	if slotN < 0 || slotN >= maxSlots {
		return out
	}
	s := &slot{n: uint8(slotN)}
	if _, err := net.InterfaceByName(s.vethName()); err == nil {
		out = append(out, "link "+s.vethName())
	}
	roots, _ := cgroupRoots()
	for _, r := range roots {
		if _, err := os.Stat(filepath.Join(r, s.cgroupName())); err == nil {
			out = append(out, "cgroup "+filepath.Join(r, s.cgroupName()))
		}
	}
	return out
}

// KernelTunables are the kernel settings the kubelet would change on the host; real nodes leave
// them as they are.
func KernelTunables() []string {
	names := make([]string, 0, len(kernelTunables))
	for name := range kernelTunables {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// readSlot is the slot a cluster directory last used, -1 when none.
func readSlot(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, slotFile))
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return -1
	}
	return n
}

// stopNode stops the real node and gives its slot back.
func (c *Cluster) stopNode() error {
	var errs []error
	if c.node != nil {
		errs = append(errs, c.node.stop())
		c.node = nil
	}
	if c.slot != nil {
		c.slot.release()
		c.slot = nil
	}
	return errors.Join(errs...)
}

// releaseHostNet gives the host's address for nodes back. It comes last: the API server listens
// on that address and, as it stops, deletes its lease through it; without the address that request
// hangs until its 10 s timeout and the stop with it.
func (c *Cluster) releaseHostNet() error {
	if c.hostNet == nil {
		return nil
	}
	err := c.hostNet.Release()
	c.hostNet = nil
	return err
}

// DialContext dials addr as a pod of the cluster's real node would: ClusterIPs of Services, pod
// addresses and node ports are reachable. Simulated clusters run no network.
func (c *Cluster) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.node == nil {
		return nil, fmt.Errorf("cluster %s has no real node: nothing listens in a simulated cluster", c.Name)
	}
	return c.node.dialContext(ctx, network, addr)
}

// HostIP is the address by which the cluster's node and pods reach this machine; nil for a
// simulated cluster.
func (c *Cluster) HostIP() net.IP {
	if c.node == nil {
		return nil
	}
	return c.node.cfg.HostIP
}

// NodeExec runs a command inside the real node's namespaces (for tests and diagnostics: iptables,
// crictl-like checks) and returns its combined output.
func (c *Cluster) NodeExec(ctx context.Context, args ...string) (string, error) {
	if c.node == nil {
		return "", fmt.Errorf("cluster %s has no real node", c.Name)
	}
	return c.node.nsenter(ctx, args...)
}

// NodeDiagnostics describes the real node's state for an error message: whether its daemons still
// run, the end of kube-proxy's and the kubelet's logs, and the Service rules kube-proxy programmed.
func (c *Cluster) NodeDiagnostics(ctx context.Context) string {
	if c.node == nil {
		return "cluster " + c.Name + " has no real node"
	}
	var b strings.Builder
	if err := c.node.exited(); err != nil {
		fmt.Fprintf(&b, "%v\n", err)
	} else {
		b.WriteString("containerd, the kubelet and kube-proxy are running\n")
	}
	for _, name := range []string{"kube-proxy", "kubelet"} {
		fmt.Fprintf(&b, "--- end of %s's log:\n%s\n", name, tailFile(filepath.Join(c.node.logs, name+".log"), 3000))
	}
	for _, table := range []string{"nat", "filter"} {
		out, err := c.node.nsenter(ctx, "iptables-save", "-t", table)
		if err != nil {
			fmt.Fprintf(&b, "--- iptables-save -t %s: %v\n", table, err)
			continue
		}
		fmt.Fprintf(&b, "--- Service rules (iptables -t %s):\n", table)
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "KUBE-SVC") || strings.Contains(line, "KUBE-SEP") || strings.Contains(line, "REJECT") || strings.Contains(line, "KUBE-SERVICES") {
				b.WriteString(line + "\n")
			}
		}
	}
	return b.String()
}
