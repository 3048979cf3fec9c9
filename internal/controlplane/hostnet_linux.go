package controlplane

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The addresses real nodes use never leave this machine (../shared/TOOLCHAIN.md, "Network rules"):
// node addresses come from 192.0.2.0/24 (TEST-NET-1), pod and service addresses from
// 198.18.0.0/15 (reserved for benchmarks, never routed). Each node lives in a network namespace of
// its own; the host keeps net.ipv4.ip_forward as it is (0 on these machines), so it never forwards
// anything a node or a pod sends, and a node's only routes lead to the host and to its own pods.
const (
	// maxSlots is how many real nodes may run on one machine at once, across every process.
	maxSlots = 64
	// ServiceCIDR is the service range of every cluster with a real node. Services are only
	// reached from inside a cluster (and through Node.DialContext), so clusters share it.
	ServiceCIDR = "198.19.0.0/16"
	// kubernetesServiceIP is the ClusterIP of the kubernetes Service: the first address of
	// ServiceCIDR. The API server's certificate names it.
	kubernetesServiceIP = "198.19.0.1"
	// vethPrefix names the host end of a node's link: ferry-n<slot>.
	vethPrefix = "ferry-n"
	// cgroupPrefix names a node's cgroup root in every hierarchy: /ferry-node-<slot>.
	cgroupPrefix = "ferry-node-"
)

// slot is one of maxSlots places for a real node on this machine. It decides the node's address,
// pod range, link and cgroup names, so that nodes of several clusters, tests and `ferry dev`s
// never collide. A slot is held through an abstract Unix socket: the kernel releases it when the
// holder exits, however it exits, and it leaves no file behind.
type slot struct {
	n    uint8
	hold net.Listener
}

func slotSocket(n uint8) string { return fmt.Sprintf("@ferry-real-node-slot-%d", n) }

// acquireSlot takes the preferred slot when it is free (a node that restarts keeps its address),
// else the first free one. Whatever a killed holder of the slot left on the host is cleaned before
// the slot is handed out.
func acquireSlot(preferred int) (*slot, error) {
	order := make([]uint8, 0, maxSlots)
	if preferred >= 0 && preferred < maxSlots {
		order = append(order, uint8(preferred))
	}
	for n := range uint8(maxSlots) {
		if int(n) != preferred {
			order = append(order, n)
		}
	}
	for _, n := range order {
		l, err := net.Listen("unix", slotSocket(n))
		if err != nil {
			continue // held by a live process
		}
		s := &slot{n: n, hold: l}
		if err := s.cleanLeftovers(); err != nil {
			_ = l.Close()
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("all %d real-node slots of this machine are taken: stop some clusters (ferry dev, tests) first", maxSlots)
}

// release gives the slot back.
func (s *slot) release() { _ = s.hold.Close() }

// NodeIP is the node's address: 192.0.2.(128+slot).
func (s *slot) nodeIP() net.IP { return net.IPv4(192, 0, 2, 128+s.n).To4() }

// podCIDR is the node's pod range: 198.18.<slot>.0/24.
func (s *slot) podCIDR() *net.IPNet {
	return &net.IPNet{IP: net.IPv4(198, 18, s.n, 0).To4(), Mask: net.CIDRMask(24, 32)}
}

// linkExists reports whether the host has a network link of that name.
func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// bridgeIP is the pods' gateway on the node: 198.18.<slot>.1.
func (s *slot) bridgeIP() net.IP { return net.IPv4(198, 18, s.n, 1).To4() }

func (s *slot) vethName() string   { return fmt.Sprintf("%s%d", vethPrefix, s.n) }
func (s *slot) cgroupName() string { return fmt.Sprintf("%s%d", cgroupPrefix, s.n) }

// cleanLeftovers removes what a node of this slot may have left on the host when its process was
// killed: the host end of its link (normally gone with the node's network namespace) and its
// cgroups (directories outlive their processes). Mounts, iptables rules, sysctls and processes of
// a node live in its own namespaces and go with them.
func (s *slot) cleanLeftovers() error {
	if _, err := net.InterfaceByName(s.vethName()); err == nil {
		// The kernel removes the link with the killed node's network namespace, in its own time:
		// gone by now is as good as deleted.
		if out, err := runCmd("ip", "link", "del", s.vethName()); err != nil && linkExists(s.vethName()) {
			return fmt.Errorf("failed to delete the link %s a killed node left behind: %w: %s", s.vethName(), err, out)
		}
	}
	return removeCgroups(s.cgroupName())
}

// cgroupRoots lists the mounted cgroup hierarchies: one directory for cgroup v2, one per
// controller (and named hierarchy) for cgroup v1.
func cgroupRoots() ([]string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	var roots []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 {
			continue
		}
		if fields[2] == "cgroup" || fields[2] == "cgroup2" {
			roots = append(roots, fields[1])
		}
	}
	return roots, sc.Err()
}

// makeCgroups creates a node's cgroup root in every hierarchy. On cgroup v1 the cpuset hierarchy
// needs its CPUs and memory nodes copied from the parent before anything can join it.
func makeCgroups(name string) error {
	roots, err := cgroupRoots()
	if err != nil {
		return err
	}
	for _, root := range roots {
		dir := filepath.Join(root, name)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) { //nolint:gosec // G301: a cgroup, not a data directory
			return fmt.Errorf("failed to create cgroup %s: %w", dir, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			data, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				continue
			}
			if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
				return fmt.Errorf("failed to set %s of cgroup %s: %w", f, dir, err)
			}
		}
	}
	return nil
}

// removeCgroups removes a node's cgroup root, deepest first, in every hierarchy. A cgroup that still
// has processes cannot be removed; the error says which.
func removeCgroups(name string) error {
	roots, err := cgroupRoots()
	if err != nil {
		return err
	}
	var errs []error
	for _, root := range roots {
		dir := filepath.Join(root, name)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("failed to remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// hostIPCandidates are the addresses the host may take on its nodes' links, in order of preference.
func hostIPCandidates() []net.IP {
	var ips []net.IP
	for last := 254; last >= 200; last-- {
		ips = append(ips, net.IPv4(192, 0, 2, byte(last)).To4())
	}
	return ips
}

// hostLink is the interface (one end of a veth pair on the host) that holds the host's address for nodes while any process on
// the machine uses real nodes.
const hostLink = "ferry0"

// Abstract Unix socket names: holders of the host network, and the mutex that serialises creating
// and deleting hostLink.
const (
	hostNetHolderPrefix = "@ferry-host-net-holder-"
	hostNetMutex        = "@ferry-host-net-mutex"
)

// HostNetwork is a hold on the host's address for real nodes (HostIP): registry, git server and
// API servers listen on it, nodes and pods reach the host through it. The address lives on a dummy
// link (ferry0) that exists while any process holds the host network or a node slot; the last
// to let go deletes it, and a holder that was killed is noticed by the next.
type HostNetwork struct {
	// IP is the host's address for nodes.
	IP net.IP

	hold net.Listener
}

// AcquireHostNetwork makes sure the host has its address for real nodes and holds it until Release.
func AcquireHostNetwork() (*HostNetwork, error) {
	unlock, err := lockHostNetwork()
	if err != nil {
		return nil, err
	}
	defer unlock()
	hold, err := net.Listen("unix", fmt.Sprintf("%s%d-%d", hostNetHolderPrefix, os.Getpid(), holderSeq.Add(1)))
	if err != nil {
		return nil, fmt.Errorf("failed to hold the host network: %w", err)
	}
	ip, err := ensureHostLink()
	if err != nil {
		_ = hold.Close()
		return nil, err
	}
	return &HostNetwork{IP: ip, hold: hold}, nil
}

var holderSeq atomic.Int64

// Release lets go of the host network; the last holder on the machine deletes the host's link.
func (h *HostNetwork) Release() error {
	if h == nil || h.hold == nil {
		return nil
	}
	unlock, err := lockHostNetwork()
	if err != nil {
		return err
	}
	defer unlock()
	_ = h.hold.Close()
	h.hold = nil
	if hostNetworkInUse() {
		return nil
	}
	if _, err := net.InterfaceByName(hostLink); err != nil {
		return nil
	}
	if out, err := runCmd("ip", "link", "del", hostLink); err != nil {
		return fmt.Errorf("failed to delete the link %s: %w: %s", hostLink, err, out)
	}
	return nil
}

// lockHostNetwork takes the machine-wide mutex of the host's link.
func lockHostNetwork() (func(), error) {
	for range 500 {
		l, err := net.Listen("unix", hostNetMutex)
		if err == nil {
			return func() { _ = l.Close() }, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, errors.New("timed out waiting for another process to finish setting up the host network")
}

// hostNetworkInUse reports whether any process holds the host network or a node slot.
func hostNetworkInUse() bool {
	data, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		path := f[len(f)-1]
		if strings.HasPrefix(path, hostNetHolderPrefix) || strings.HasPrefix(path, strings.TrimSuffix(slotSocket(0), "0")) {
			return true
		}
	}
	return false
}

// ensureHostLink creates the host's link with its address unless it exists, and returns the
// address.
func ensureHostLink() (net.IP, error) {
	if iface, err := net.InterfaceByName(hostLink); err == nil {
		addrs, _ := iface.Addrs()
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				return ipn.IP.To4(), nil
			}
		}
		// A link without its address: an interrupted setup. Start over.
		if out, err := runCmd("ip", "link", "del", hostLink); err != nil {
			return nil, fmt.Errorf("failed to delete the incomplete link %s: %w: %s", hostLink, err, out)
		}
	}
	ip, err := chooseHostIP()
	if err != nil {
		return nil, err
	}
	for _, args := range [][]string{
		// A veth pair with both ends on the host: the dummy driver is not in every kernel.
		{"link", "add", hostLink, "type", "veth", "peer", "name", hostLink + "p"},
		{"addr", "add", ip.String() + "/32", "dev", hostLink},
		{"link", "set", hostLink + "p", "up"},
		{"link", "set", hostLink, "up"},
	} {
		if out, err := runCmd("ip", args...); err != nil {
			_, _ = runCmd("ip", "link", "del", hostLink)
			return nil, fmt.Errorf("failed to set up the host's link for real nodes (ip %s): %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return ip, nil
}

// chooseHostIP picks the first of 192.0.2.254, .253, … that no other interface uses and that is
// neither the default gateway nor a known neighbour.
func chooseHostIP() (net.IP, error) {
	used, err := usedAddresses()
	if err != nil {
		return nil, err
	}
	for _, ip := range hostIPCandidates() {
		if !used[ip.String()] {
			return ip, nil
		}
	}
	return nil, errors.New("no free address in 192.0.2.200-254 for the host side of real nodes")
}

// usedAddresses are the IPv4 addresses the host or its network uses, apart from Ferry's own links.
func usedAddresses() (map[string]bool, error) {
	used := map[string]bool{}
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, fmt.Errorf("failed to list network interfaces: %w", err)
	}
	for _, iface := range ifaces {
		if strings.HasPrefix(iface.Name, vethPrefix) || strings.HasPrefix(iface.Name, hostLink) {
			continue
		}
		addrs, err := iface.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
				used[ipn.IP.To4().String()] = true
			}
		}
	}
	for _, gw := range defaultGateways() {
		used[gw] = true
	}
	for _, n := range arpNeighbours() {
		used[n] = true
	}
	return used, nil
}

// defaultGateways reads the IPv4 default routes' gateways from /proc/net/route.
func defaultGateways() []string {
	data, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return nil
	}
	var gws []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 3 || f[1] != "00000000" {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, binary.LittleEndian.Uint32(raw))
		gws = append(gws, ip.String())
	}
	return gws
}

// arpNeighbours reads the IPv4 neighbours the host knows from /proc/net/arp.
func arpNeighbours() []string {
	data, err := os.ReadFile("/proc/net/arp")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(f[len(f)-1], vethPrefix) {
			out = append(out, f[0])
		}
	}
	return out
}
