package controlplane

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
)

// A real node runs containerd, the kubelet and kube-proxy inside namespaces of its own, under a
// small init process (ferry-pause) that is PID 1 of the node's PID namespace:
//
//   - network: the node has one link to the host (eth0 ↔ ferry-n<slot>), its pods' bridge cni0,
//     and its own iptables (kube-proxy's and the kubelet's chains, and Ferry's egress rule);
//   - mount: /run, /var/lib and /var/log are private to the node (containerd's hard-coded
//     /run/containerd, libcni's cache in /var/lib/cni, the kubelet's /var/log/containers), every
//     container mount lives there, and the kernel tunables the kubelet insists on are shadowed so
//     that the host's stay as they are;
//   - PID: when the init process dies — on Stop, or when the process that started it is killed
//     (it has a parent-death signal) — the kernel kills every process of the node, containers and
//     shims included, and the namespaces go with them.
//
// What remains on the host are the node's cgroups (directories) and, for the life of the node,
// the host end of its link with two routes; both are removed on Stop, and by the next holder of
// the slot after a kill.

// NodeEnv is set in the environment of a real node's processes to the node's directory, so that
// they can be found by it (their command lines name paths inside the node).
const NodeEnv = "FERRY_NODE"

// nodeBinaries are the binaries a real node needs besides the control plane's.
var nodeBinaries = []string{"kubelet", "kube-proxy", "ferry-pause"}

// nodeCommands are the commands from Debian packages a real node needs, with the package.
var nodeCommands = []struct{ name, pkg string }{
	{"containerd", "containerd"},
	{"runc", "runc"},
	{"iptables", "iptables"},
	{"ip", "iproute2"},
	{"nsenter", "util-linux"},
}

// cniPlugins are the CNI plugins a real node's network uses (containernetworking-plugins).
var cniPlugins = []string{"bridge", "host-local", "portmap", "loopback"}

// cniBinDir is where Debian's containernetworking-plugins installs the plugins.
const cniBinDir = "/usr/lib/cni"

// kernelTunables are the values the kubelet sets on the host unless they are already set. Each is
// shadowed inside the node's mount namespace by a file with this value, so the kubelet finds them
// as it wants them and the host's stay untouched.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// RealNodesAvailable returns nil when this machine can run real nodes, else an error that names
// everything missing and how to get it.
func RealNodesAvailable() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root: real nodes create namespaces, links and cgroups (run as root)")
	}
	var pkgs []string
	for _, c := range nodeCommands {
		if _, err := exec.LookPath(c.name); err != nil {
			pkgs = append(pkgs, c.pkg)
		}
	}
	for _, p := range cniPlugins {
		if _, err := os.Stat(filepath.Join(cniBinDir, p)); err != nil {
			pkgs = append(pkgs, "containernetworking-plugins")
			break
		}
	}
	if len(pkgs) > 0 {
		missing = append(missing, "Debian packages "+strings.Join(pkgs, ", ")+" (hack/deps.sh real-nodes, or apt-get install "+strings.Join(pkgs, " ")+")")
	}
	if dir, err := AssetsDir(); err == nil {
		if err := checkBinaries(dir, nodeBinaries); err != nil {
			missing = append(missing, err.Error())
		}
	}
	if data, err := os.ReadFile("/proc/filesystems"); err != nil || !bytes.Contains(data, []byte("overlay")) {
		missing = append(missing, "the overlay filesystem in the kernel (containerd's snapshotter)")
	}
	if roots, err := cgroupRoots(); err != nil || len(roots) == 0 {
		missing = append(missing, "mounted cgroups (/sys/fs/cgroup)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("this machine cannot run real nodes; missing: %s", strings.Join(missing, "; "))
	}
	return nil
}

// nodeConfig is everything a real node is started with.
type nodeConfig struct {
	Name string
	// Dir keeps the node's files; the image store under it survives restarts.
	Dir string
	// Slot decides the node's addresses.
	Slot *slot
	// HostIP is the host's address on the node's link: the API server, the registry and the git
	// server listen there.
	HostIP net.IP
	// KubeletKubeconfig and ProxyKubeconfig authenticate the kubelet (system:node:<Name>) and
	// kube-proxy (system:kube-proxy).
	KubeletKubeconfig, ProxyKubeconfig string
	// ClientCAFile is the CA whose certificates the kubelet accepts (the API server's kubelet
	// client certificate).
	ClientCAFile string
	// Registry is host:port of the registry the node pulls from over plain HTTP; docker.io is
	// mirrored to it. Empty: no mirror.
	Registry string
	// RegistryUsername and RegistryPassword, when set, let containerd pull from Registry without a
	// pull Secret (the sandbox image, builder images).
	RegistryUsername, RegistryPassword string
	// SandboxImage is the pause image of pod sandboxes.
	SandboxImage string
	// Assets is the directory of kubelet, kube-proxy and ferry-pause.
	Assets string
}

// node is a running real node.
type node struct {
	cfg   nodeConfig
	init  *exec.Cmd
	done  chan struct{}
	procs []*process
	netns *os.File
	logs  string
}

// Node paths relative to nodeConfig.Dir.
const (
	nodeContainerdRoot = "containerd/root"
	nodeKubeletRoot    = "kubelet"
	nodePodLogs        = "pod-logs"
	nodeLogs           = "logs"
	nodeCNIConf        = "cni/net.d"
	nodeCNIState       = "cni/ipam"
	nodeTmp            = "tmp"
)

// nodeRoot is where the node's directory is mounted inside the node.
const nodeRoot = "/run/ferry/node"

// refusedDataDirs are the places a node's directory must not be under: they are private to the
// node and would hide it.
var refusedDataDirs = []string{"/run", "/var/lib", "/var/log", "/proc", "/sys"}

// prepareNode creates the node's files, cgroups and namespaces and links it to the host; its daemons
// start with startDaemons once the API server listens on the host's address.
func prepareNode(ctx context.Context, cfg nodeConfig) (_ *node, err error) {
	abs, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = abs
	for _, p := range refusedDataDirs {
		if cfg.Dir == p || strings.HasPrefix(cfg.Dir, p+"/") {
			return nil, fmt.Errorf("a real node's directory %s cannot be under %s, which is private to the node: choose another data directory", cfg.Dir, p)
		}
	}
	n := &node{cfg: cfg, logs: filepath.Join(cfg.Dir, nodeLogs), done: make(chan struct{})}
	if err := n.prepareDirs(); err != nil {
		return nil, err
	}
	if err := makeCgroups(cfg.Slot.cgroupName()); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = n.stop()
		}
	}()
	if err := n.startInit(); err != nil {
		return nil, err
	}
	if err := n.setupMounts(ctx); err != nil {
		return nil, fmt.Errorf("failed to set up the mounts of node %s (logs in %s): %w", cfg.Name, n.logs, err)
	}
	if err := n.setupNetwork(ctx); err != nil {
		return nil, fmt.Errorf("failed to set up the network of node %s (logs in %s): %w", cfg.Name, n.logs, err)
	}
	return n, nil
}

// startDaemons writes the node's configuration and starts containerd, the kubelet and kube-proxy.
func (n *node) startDaemons(ctx context.Context) error {
	if err := n.writeConfig(); err != nil {
		return err
	}
	if err := n.startContainerd(ctx); err != nil {
		return fmt.Errorf("failed to start containerd on node %s (logs in %s): %w", n.cfg.Name, n.logs, err)
	}
	if err := n.startKubelet(ctx); err != nil {
		return fmt.Errorf("failed to start the kubelet of node %s (logs in %s): %w", n.cfg.Name, n.logs, err)
	}
	return nil
}

// prepareDirs creates the node's directories. Pod state of an earlier run is dropped (its pods died
// with it); the image store is kept.
func (n *node) prepareDirs() error {
	for _, d := range []string{nodeCNIState, nodeTmp} {
		if err := os.RemoveAll(filepath.Join(n.cfg.Dir, d)); err != nil {
			return fmt.Errorf("failed to clean %s: %w", d, err)
		}
	}
	for _, d := range []string{nodeContainerdRoot, nodeKubeletRoot, nodePodLogs, nodeLogs, nodeCNIConf, nodeCNIState, nodeTmp, "kubelet-pki"} {
		if err := os.MkdirAll(filepath.Join(n.cfg.Dir, d), 0o700); err != nil {
			return err
		}
	}
	return nil
}

// writeConfig writes the configuration of containerd, the CNI network, the kubelet and kube-proxy.
func (n *node) writeConfig() error {
	files := map[string]string{
		"containerd.toml":                  containerdConfig,
		nodeCNIConf + "/10-ferry.conflist": cniConfig,
		"kubelet.yaml":                     kubeletConfig,
		"kube-proxy.yaml":                  proxyConfig,
		"resolv.conf":                      "# Pods of a Ferry real node resolve no name: nothing they send may leave this machine.\n",
	}
	for name, tmpl := range files {
		if err := n.render(name, tmpl); err != nil {
			return err
		}
	}
	return nil
}

// templateData is what the node's configuration templates see.
type templateData struct {
	nodeConfig
	// Root is where the node's directory is mounted inside the node: a short path, as Unix socket
	// paths (the kubelet's) must be.
	Root                                               string
	PodCIDR, BridgeIP, NodeIP, CgroupRoot, ServiceCIDR string
}

func (n *node) render(name, text string) error {
	t, err := template.New(name).Funcs(template.FuncMap{"q": strconv.Quote}).Parse(text)
	if err != nil {
		return fmt.Errorf("failed to parse the %s template: %w", name, err)
	}
	data := templateData{
		nodeConfig:  n.cfg,
		Root:        nodeRoot,
		PodCIDR:     n.cfg.Slot.podCIDR().String(),
		BridgeIP:    n.cfg.Slot.bridgeIP().String(),
		NodeIP:      n.cfg.Slot.nodeIP().String(),
		CgroupRoot:  "/" + n.cfg.Slot.cgroupName(),
		ServiceCIDR: ServiceCIDR,
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, data); err != nil {
		return fmt.Errorf("failed to render %s: %w", name, err)
	}
	return os.WriteFile(filepath.Join(n.cfg.Dir, name), buf.Bytes(), 0o600)
}

// startInit starts ferry-pause as PID 1 of new mount, network, PID, UTS and IPC namespaces.
func (n *node) startInit() error {
	logFile, err := os.OpenFile(filepath.Join(n.logs, "init.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(n.cfg.Assets, "ferry-pause"))
	cmd.Env = append(os.Environ(), NodeEnv+"="+n.cfg.Dir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return fmt.Errorf("failed to start the node's init process in new namespaces: %w", err)
	}
	n.init = cmd
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(n.done)
	}()
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid))
	if err != nil {
		return fmt.Errorf("failed to open the node's network namespace: %w", err)
	}
	n.netns = f
	return nil
}

// pid is the host's view of the node's init process.
func (n *node) pid() string { return strconv.Itoa(n.init.Process.Pid) }

// nsenter runs a command inside the node's namespaces and returns its combined output.
func (n *node) nsenter(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-t", n.pid(), "-m", "-n", "-p", "-u", "-i", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// setupMounts makes the node's private mounts, shadows the kernel tunables and sets its host name.
func (n *node) setupMounts(ctx context.Context) error {
	var b strings.Builder
	b.WriteString("set -e\n")
	// Nothing mounted from here on reaches the host.
	b.WriteString("mount --make-rprivate /\n")
	b.WriteString("mount -t proc -o nosuid,nodev,noexec proc /proc\n")
	for _, d := range []string{"/run", "/var/lib", "/var/log"} {
		fmt.Fprintf(&b, "mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs %s\n", d)
	}
	b.WriteString("mkdir -p /run/containerd /run/ferry/sysctl /var/lib/cni /var/log/containers " + nodeRoot + "\n")
	fmt.Fprintf(&b, "mount --bind %s %s\n", n.cfg.Dir, nodeRoot)
	for name, value := range kernelTunables {
		path := "/proc/sys/" + name
		if _, err := os.Stat(path); err != nil {
			continue
		}
		file := "/run/ferry/sysctl/" + strings.ReplaceAll(name, "/", "_")
		fmt.Fprintf(&b, "echo %s > %s\n", value, file)
		fmt.Fprintf(&b, "mount --bind %s %s\n", file, path)
	}
	fmt.Fprintf(&b, "hostname %s\n", n.cfg.Name)
	_, err := n.nsenter(ctx, "/bin/sh", "-c", b.String())
	return err
}

// setupNetwork links the node to the host, gives it its address and routes, and installs the egress
// rule: pods may reach pods, services and the host, nothing else.
func (n *node) setupNetwork(ctx context.Context) error {
	veth, hostIP, nodeIP := n.cfg.Slot.vethName(), n.cfg.HostIP.String(), n.cfg.Slot.nodeIP().String()
	podCIDR := n.cfg.Slot.podCIDR().String()
	host := [][]string{
		{"link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", n.pid()},
		{"addr", "add", hostIP + "/32", "dev", veth},
		{"link", "set", veth, "up"},
		{"route", "add", nodeIP + "/32", "dev", veth, "src", hostIP},
		{"route", "add", podCIDR, "via", nodeIP, "dev", veth},
	}
	for _, args := range host {
		if out, err := runCmd("ip", args...); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	script := fmt.Sprintf(`set -e
ip link set lo up
ip addr add %[1]s/32 dev eth0
ip link set eth0 up
ip route add %[2]s/32 dev eth0 src %[1]s
# A route for the node's own connections to Services: kube-proxy's DNAT in OUTPUT rewrites them
# to a pod; without it they would fail the routing lookup before. Nothing else has a route out.
ip route add %[4]s dev eth0 src %[1]s
sysctl -qw net.ipv4.ip_forward=1
if [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]; then sysctl -qw net.bridge.bridge-nf-call-iptables=1; fi
iptables -w -N %[5]s
iptables -w -A %[5]s -d %[3]s -j RETURN
iptables -w -A %[5]s -d %[4]s -j RETURN
iptables -w -A %[5]s -d %[2]s/32 -j RETURN
iptables -w -A %[5]s -j DROP
iptables -w -I FORWARD 1 -i cni0 -j %[5]s
iptables -w -N %[6]s
iptables -w -A %[6]s -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
iptables -w -A %[6]s -j DROP
iptables -w -I INPUT 1 -i cni0 -j %[6]s
`, nodeIP, hostIP, podCIDR, ServiceCIDR, EgressChain, podInputChain)
	_, err := n.nsenter(ctx, "/bin/sh", "-c", script)
	return err
}

// EgressChain is the iptables chain in a real node's network namespace that drops forwarded pod
// traffic to anything but pods, services and the host.
const EgressChain = "FERRY-POD-EGRESS"

// podInputChain drops new connections from pods to the node itself (the kubelet's and kube-proxy's
// ports): answers to the node's own connections (probes) pass.
const podInputChain = "FERRY-POD-INPUT"

// startContainerd starts containerd in the node and waits for its socket.
func (n *node) startContainerd(ctx context.Context) error {
	p, err := n.startInNode("containerd", []string{"TMPDIR=" + filepath.Join(nodeRoot, nodeTmp)},
		"containerd", "--config", filepath.Join(nodeRoot, "containerd.toml"))
	if err != nil {
		return err
	}
	sock := fmt.Sprintf("/proc/%s/root/run/containerd/containerd.sock", n.pid())
	return n.waitFor(ctx, p, "containerd's socket", func() bool {
		info, err := os.Stat(sock)
		return err == nil && info.Mode()&os.ModeSocket != 0
	})
}

// startKubelet starts the kubelet and kube-proxy in the node.
func (n *node) startKubelet(context.Context) error {
	if _, err := n.startInNode("kubelet", nil, filepath.Join(n.cfg.Assets, "kubelet"),
		"--config="+filepath.Join(nodeRoot, "kubelet.yaml"),
		"--kubeconfig="+n.cfg.KubeletKubeconfig,
		"--hostname-override="+n.cfg.Name,
		"--node-ip="+n.cfg.Slot.nodeIP().String(),
		"--root-dir="+filepath.Join(nodeRoot, nodeKubeletRoot),
		"--cert-dir="+filepath.Join(nodeRoot, "kubelet-pki"),
		"--node-labels=ferry.dev/node=real",
		"--v=1",
	); err != nil {
		return err
	}
	_, err := n.startInNode("kube-proxy", nil, filepath.Join(n.cfg.Assets, "kube-proxy"),
		"--config="+filepath.Join(nodeRoot, "kube-proxy.yaml"), "--v=1")
	return err
}

// startInNode starts a long-running command inside the node's namespaces, its output in the node's
// log directory.
func (n *node) startInNode(name string, env []string, path string, args ...string) (*process, error) {
	full := append([]string{"-t", n.pid(), "-m", "-n", "-p", "-u", "-i", "--", path}, args...)
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, err
	}
	p, err := startProcessEnv(name, nsenter, full, n.logs, append(env, NodeEnv+"="+n.cfg.Dir))
	if err != nil {
		return nil, err
	}
	n.procs = append(n.procs, p)
	return p, nil
}

// waitFor polls ready until it holds, p exits or ctx ends.
func (n *node) waitFor(ctx context.Context, p *process, what string, ready func() bool) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		if ready() {
			return nil
		}
		if done, err := p.exited(); done {
			return fmt.Errorf("%s exited (%w) before %s was ready; last log lines:\n%s", p.name, err, what, p.tail(2000))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s was not ready: %w; last log lines of %s:\n%s", what, ctx.Err(), p.name, p.tail(2000))
		case <-t.C:
		}
	}
}

// exited reports whether one of the node's processes has ended, and which.
func (n *node) exited() error {
	select {
	case <-n.done:
		return fmt.Errorf("the init process of node %s exited", n.cfg.Name)
	default:
	}
	for _, p := range n.procs {
		if done, err := p.exited(); done {
			return fmt.Errorf("%s of node %s exited (%w); last log lines:\n%s", p.name, n.cfg.Name, err, p.tail(2000))
		}
	}
	return nil
}

// stop stops the kubelet, kube-proxy and containerd, then ends the init process: the kernel kills
// whatever is left of the node (containers, shims) and its namespaces go. Then the node's cgroups
// and the slot are given back.
func (n *node) stop() error {
	var errs []error
	for i := len(n.procs) - 1; i >= 0; i-- {
		// kubelet and kube-proxy first, containerd last; a short grace: the init's end kills the rest.
		if err := n.procs[i].stop(3 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	n.procs = nil
	if n.netns != nil {
		_ = n.netns.Close()
		n.netns = nil
	}
	if n.init != nil && n.init.Process != nil {
		_ = n.init.Process.Kill()
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			errs = append(errs, fmt.Errorf("the init process of node %s did not exit", n.cfg.Name))
		}
	}
	// The host end of the link goes with the node's network namespace, a moment after its last
	// process; delete it if the kernel has not yet.
	if _, err := net.InterfaceByName(n.cfg.Slot.vethName()); err == nil {
		_, _ = runCmd("ip", "link", "del", n.cfg.Slot.vethName())
	}
	errs = append(errs, retryRemoveCgroups(n.cfg.Slot.cgroupName()))
	return errors.Join(errs...)
}

// retryRemoveCgroups removes cgroups whose last processes the kernel may still be killing.
func retryRemoveCgroups(name string) error {
	var err error
	for range 50 {
		if err = removeCgroups(name); err == nil {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return err
}

// dialContext dials addr from inside the node's network namespace: services, pods and the node's
// own ports are reachable as they are for a pod.
func (n *node) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if n.netns == nil {
		return nil, errors.New("the node is stopped")
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The socket is created in the namespace of the thread that creates it: the thread is
		// locked, switched in, and switched back before it is unlocked. It must not be thrown away
		// (a locked goroutine that exits ends its thread): the kernel sends a child its death
		// signal (Pdeathsig, setpriv --pdeathsig) when the thread that forked it ends, so ending a
		// thread that once started the node's init or an API server would kill them.
		runtime.LockOSThread()
		home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("failed to open this thread's network namespace: %w", err)}
			return
		}
		defer func() { _ = home.Close() }()
		if err := unix.Setns(int(n.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("failed to enter the node's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread cannot go back: leave it locked so that it ends with this goroutine
			// rather than serve others in the node's namespace.
			if c != nil {
				_ = c.Close()
			}
			ch <- result{err: fmt.Errorf("failed to leave the node's network namespace: %w", err)}
			return
		}
		runtime.UnlockOSThread()
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		return r.c, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.c != nil {
				_ = r.c.Close()
			}
		}()
		return nil, ctx.Err()
	}
}

// runCmd runs a command and returns its combined output.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

const containerdConfig = `version = 2
root = {{q (printf "%s/containerd/root" .Root)}}
state = "/run/containerd"
oom_score = 0

[grpc]
  address = "/run/containerd/containerd.sock"

[ttrpc]
  address = "/run/containerd/containerd.sock.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = {{q (printf "%s/containerd/opt" .Root)}}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {{q .SandboxImage}}
  # root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "` + cniBinDir + `"
    conf_dir = {{q (printf "%s/cni/net.d" .Root)}}
{{- if .Registry}}
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io"]
    endpoint = [{{q (printf "http://%s" .Registry)}}]
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors.{{q .Registry}}]
    endpoint = [{{q (printf "http://%s" .Registry)}}]
{{- if .RegistryUsername}}
  [plugins."io.containerd.grpc.v1.cri".registry.configs.{{q .Registry}}.auth]
    username = {{q .RegistryUsername}}
    password = {{q .RegistryPassword}}
{{- end}}
{{- end}}
`

const cniConfig = `{
  "cniVersion": "1.0.0",
  "name": "ferry",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": {{q (printf "%s/cni/ipam" .Root)}},
              "ranges": [[{"subnet": {{q .PodCIDR}}, "gateway": {{q .BridgeIP}}}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
`

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: {{q .CgroupRoot}}
cgroupsPerQOS: true
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: {{q .NodeIP}}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{q .ClientCAFile}}}
authorization:
  mode: Webhook
clusterDNS: []
clusterDomain: cluster.local
resolvConf: {{q (printf "%s/resolv.conf" .Root)}}
staticPodPath: ""
failSwapOn: false
# root here lacks CAP_SYS_RESOURCE: the kubelet cannot lower its own oom_score_adj.
oomScoreAdj: 0
podLogsDir: {{q (printf "%s/pod-logs" .Root)}}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
protectKernelDefaults: false
maxPods: 110
`

const proxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: {{q .ProxyKubeconfig}}
hostnameOverride: {{q .Name}}
bindAddress: {{q .NodeIP}}
clusterCIDR: {{q .PodCIDR}}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`
