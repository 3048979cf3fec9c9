// Package realnode helps tests run clusters with real nodes: a registry on the host's address for
// nodes with the pause image and a small web server image in it, clusters started against it,
// HTTP through a cluster's node, and a check that the host is left as it was. Tests skip, saying
// why, on machines that cannot run real nodes; `make test` and CI install what they need.
package realnode

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/registry"
)

// Require skips the test when this machine cannot run real nodes, with the reason.
func Require(t testing.TB) {
	t.Helper()
	if err := controlplane.RealNodesAvailable(); err != nil {
		t.Skipf("real nodes are not available here: %v", err)
	}
}

// Env is a registry on the host's address for nodes (Harbor-style token authentication, one
// account) with the pause image and the test web server in it.
type Env struct {
	// Host is the hold on the host's address for nodes.
	Host *controlplane.HostNetwork
	// Registry listens on Host's address.
	Registry *registry.Server
	// User and Password are the registry's account.
	User, Password string
	// Pause is the pause image, Web the web server image (package web), both pinned by digest.
	Pause, Web string
	// Remote are the options of a registry client with the account.
	Remote []remote.Option
}

// NewEnv starts the registry and pushes the images; everything goes when the test ends.
func NewEnv(t testing.TB) *Env {
	t.Helper()
	Require(t)
	hn, err := controlplane.AcquireHostNetwork()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := hn.Release(); err != nil {
			t.Error(err)
		}
	})
	e := &Env{Host: hn, User: "robot$ferry+node", Password: "pull-secret"}
	reg, err := registry.StartDistribution(registry.DistributionOptions{Addr: hn.IP.String() + ":0", Users: map[string]string{e.User: e.Password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	e.Registry = reg
	e.Remote = []remote.Option{remote.WithAuth(&authn.Basic{Username: e.User, Password: e.Password})}
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	e.Pause = e.Push(t, filepath.Join(assets, "ferry-pause"), "ferry/pause:test", "/pause")
	e.Web = e.Push(t, WebBinary(t), "test/web:1", "/web")
	return e
}

// Push pushes a one-binary image (the binary at inImage, its entrypoint) and returns it pinned by
// digest.
func (e *Env) Push(t testing.TB, binary, repoTag, inImage string) string {
	t.Helper()
	img, err := controlplane.BinaryImage(binary, inImage)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(e.Registry.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, e.Remote...); err != nil {
		t.Fatalf("failed to push %s: %v", tag, err)
	}
	digest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return tag.Context().Digest(digest.String()).String()
}

// NodeOptions makes a cluster's node pull from the registry with the account.
func (e *Env) NodeOptions() *controlplane.RealNodeOptions {
	return &controlplane.RealNodeOptions{Registry: e.Registry.Host, RegistryUsername: e.User, RegistryPassword: e.Password, SandboxImage: e.Pause}
}

// StartCluster starts a cluster with a real node that pulls from the registry, stopped when the
// test ends.
func (e *Env) StartCluster(t testing.TB, opts controlplane.APIServerOptions) *controlplane.Cluster {
	t.Helper()
	c, err := controlplane.StartCluster(context.Background(), controlplane.ClusterOptions{APIServer: opts, RealNode: e.NodeOptions()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("failed to stop cluster %s: %v", opts.Name, err)
		}
	})
	return c
}

var (
	binariesMu sync.Mutex
	binaries   = map[string]string{}
)

// StaticBinary builds a static binary (CGO_ENABLED=0) of a Go package with build tags, once per
// test process, for a one-binary image.
func StaticBinary(t testing.TB, pkg string, tags ...string) string {
	t.Helper()
	binariesMu.Lock()
	defer binariesMu.Unlock()
	key := pkg + " " + strings.Join(tags, ",")
	if p, ok := binaries[key]; ok {
		return p
	}
	dir, err := os.MkdirTemp("", "ferry-realnode-bin-")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, path.Base(pkg))
	cmd := exec.Command("go", "build", "-trimpath", "-tags", strings.Join(tags, ","), "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if data, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("failed to build %s: %v\n%s", pkg, err, data)
	}
	binaries[key] = out
	return out
}

// WebBinary builds the test web server (package web) once per test process.
func WebBinary(t testing.TB) string {
	t.Helper()
	return StaticBinary(t, "github.com/ferryci/ferry/internal/testutil/realnode/web")
}

// HTTPClient sends requests through a cluster's node, as a pod would (Service ClusterIPs, pod
// addresses).
func HTTPClient(c *controlplane.Cluster) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: c.DialContext, DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

// Get fetches a URL through a cluster's node, as a pod would.
func Get(ctx context.Context, c *controlplane.Cluster, url string) (int, string, error) {
	client := HTTPClient(c)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// HostState is what a real node may change on the host and must leave as it found it.
type HostState struct {
	IPTables, IP6Tables string
	Tunables            map[string]string
	IPForward           string
}

// ReadHostState reads the host's iptables rules (without counters), the kernel tunables the
// kubelet would set, and net.ipv4.ip_forward.
func ReadHostState(t testing.TB) HostState {
	t.Helper()
	s := HostState{Tunables: map[string]string{}}
	for tool, dst := range map[string]*string{"iptables-save": &s.IPTables, "ip6tables-save": &s.IP6Tables} {
		out, err := exec.Command(tool).Output()
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		var keep []string
		for _, line := range strings.Split(string(out), "\n") {
			if !strings.HasPrefix(line, "#") {
				keep = append(keep, strings.TrimSpace(strings.Split(line, "[")[0]))
			}
		}
		*dst = strings.Join(keep, "\n")
	}
	for _, name := range controlplane.KernelTunables() {
		data, _ := os.ReadFile("/proc/sys/" + name)
		s.Tunables[name] = strings.TrimSpace(string(data))
	}
	data, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	s.IPForward = strings.TrimSpace(string(data))
	return s
}

// CheckNothingLeft fails the test when anything of the cluster in dir (whose node had slot) is
// still on the host, or the host's iptables, kernel tunables or ip_forward changed since before.
func CheckNothingLeft(t testing.TB, dir string, slot int, before HostState) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	left := controlplane.HostLeftovers(dir, slot)
	for len(left) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		left = controlplane.HostLeftovers(dir, slot)
	}
	if len(left) > 0 {
		t.Errorf("left on the host after the cluster stopped: %s", strings.Join(left, "; "))
	}
	after := ReadHostState(t)
	if after.IPTables != before.IPTables || after.IP6Tables != before.IP6Tables {
		t.Errorf("the host's iptables changed:\nbefore:\n%s\nafter:\n%s", before.IPTables, after.IPTables)
	}
	for k, v := range before.Tunables {
		if after.Tunables[k] != v {
			t.Errorf("kernel tunable %s changed from %s to %s", k, v, after.Tunables[k])
		}
	}
	if after.IPForward != before.IPForward {
		t.Errorf("net.ipv4.ip_forward changed from %s to %s", before.IPForward, after.IPForward)
	}
}
