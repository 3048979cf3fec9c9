//go:build !linux

package controlplane

import (
	"context"
	"errors"
	"net"
)

// ServiceCIDR is the service range of every cluster with a real node.
const ServiceCIDR = "198.19.0.0/16"

const kubernetesServiceIP = "198.19.0.1"

// EgressChain is the iptables chain of a real node that drops pod traffic leaving the machine.
const EgressChain = "FERRY-POD-EGRESS"

// NodeEnv names a real node's directory in the environment of its processes.
const NodeEnv = "FERRY_NODE"

var errNoRealNodes = errors.New("real nodes need Linux: namespaces, cgroups, containerd and runc")

// RealNodesAvailable says why this machine cannot run real nodes.
func RealNodesAvailable() error { return errNoRealNodes }

// HostNetwork is the host's address for real nodes; only Linux has them.
type HostNetwork struct {
	// IP is the host's address for nodes.
	IP net.IP
}

// AcquireHostNetwork is not available without real nodes.
func AcquireHostNetwork() (*HostNetwork, error) { return nil, errNoRealNodes }

// Release does nothing.
func (h *HostNetwork) Release() error { return nil }

func startRealCluster(context.Context, ClusterOptions) (*Cluster, error) { return nil, errNoRealNodes }

type node struct{ logs string }

type slot struct{}

func (n *node) exited() error { return nil }

func (c *Cluster) stopNode() error { return nil }

func (c *Cluster) releaseHostNet() error { return nil }

// DialContext is not available without real nodes.
func (c *Cluster) DialContext(context.Context, string, string) (net.Conn, error) {
	return nil, errNoRealNodes
}

// HostIP is nil for a simulated cluster.
func (c *Cluster) HostIP() net.IP { return nil }

// NodeExec is not available without real nodes.
func (c *Cluster) NodeExec(context.Context, ...string) (string, error) { return "", errNoRealNodes }

// NodeSlot is -1: only Linux has real nodes.
func (c *Cluster) NodeSlot() int { return -1 }

// SlotOf is -1: only Linux has real nodes.
func SlotOf(string) int { return -1 }

// HostLeftovers finds nothing: only Linux has real nodes.
func HostLeftovers(string, int) []string { return nil }

// KernelTunables is empty: only Linux has real nodes.
func KernelTunables() []string { return nil }

// NodeDiagnostics says there is no real node: only Linux has them.
func (c *Cluster) NodeDiagnostics(context.Context) string {
	return "cluster " + c.Name + " has no real node"
}
