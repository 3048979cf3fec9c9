package controlplane

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ferryci/ferry/config/crd"
	webhookconfig "github.com/ferryci/ferry/config/webhook"
)

// APIServerOptions configure an API server.
type APIServerOptions struct {
	// Name names the control plane in logs and file names. Default "apiserver".
	Name string

	// Dir keeps the control plane's files: logs, kubeconfig and, when Persistent, etcd's data. A new
	// temporary directory is used when empty and removed on Stop.
	Dir string

	// Persistent keeps etcd's data in Dir, so that a later start with the same Dir finds every object
	// again.
	Persistent bool

	// Restartable keeps etcd's data and the API server's serving certificate in Dir (fresh at every
	// StartAPIServer unless Persistent), so that Halt and Restart stop and start the same control
	// plane again: same address, same certificates, same objects. Kubeconfigs stay valid.
	Restartable bool

	// FerryCRDs installs Ferry's CRDs.
	FerryCRDs bool

	// TektonCRDs installs Tekton Pipelines' CRDs from the Go module cache.
	TektonCRDs bool

	// FerryWebhooks installs Ferry's admission webhook configurations (config/webhook), pointed at
	// a local webhook server: run the manager with the host, port and certificate directory found
	// in Env.WebhookInstallOptions. Without a webhook server, requests they cover are refused.
	FerryWebhooks bool

	// APIServerFlags are extra kube-apiserver flags, name to value.
	APIServerFlags map[string]string

	// real configures an API server that real nodes and their pods talk to.
	real *realServing
}

// realServing is how the API server of a cluster with a real node differs from envtest's: it
// listens on the host's address for nodes, its certificate names that address and the kubernetes
// Service's ClusterIP, pods get service account tokens, kubelets are authorized by the Node
// authorizer and accept the API server's own client certificate.
type realServing struct {
	address net.IP
	ca      *certAuthority
}

// configure writes the certificates into certDir and sets the flags.
func (r *realServing) configure(certDir string, apiServer *envtest.APIServer) error {
	certPEM, keyPEM, err := r.ca.issue(certRequest{
		commonName: "kube-apiserver",
		dnsNames:   []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		ips:        []net.IP{r.address, net.IPv4(127, 0, 0, 1), net.ParseIP(kubernetesServiceIP)},
		server:     true,
	})
	if err != nil {
		return err
	}
	clientPEM, clientKeyPEM, err := r.ca.issue(certRequest{commonName: "kube-apiserver-kubelet-client", organizations: []string{"system:masters"}})
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"apiserver.crt": certPEM, "apiserver.key": keyPEM, "ca.crt": r.ca.certPEM,
		"kubelet-client.crt": clientPEM, "kubelet-client.key": clientKeyPEM,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(certDir, name), data, 0o600); err != nil {
			return err
		}
	}
	if err := writeServiceAccountKeys(certDir); err != nil {
		return err
	}
	// envtest picks a free port on loopback unless both address and port are set.
	l, err := net.Listen("tcp", net.JoinHostPort(r.address.String(), "0"))
	if err != nil {
		return fmt.Errorf("failed to find a free port on %s: %w", r.address, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	apiServer.Address = r.address.String()
	apiServer.Port = strconv.Itoa(port)
	apiServer.CA = r.ca.certPEM
	args := apiServer.Configure()
	// envtest turns the ServiceAccount admission plugin off; pods of a real node need their tokens.
	args.Disable("disable-admission-plugins")
	args.Set("enable-admission-plugins", "NodeRestriction")
	args.Set("authorization-mode", "Node,RBAC")
	args.Set("service-cluster-ip-range", ServiceCIDR)
	args.Set("advertise-address", r.address.String())
	args.Set("kubelet-preferred-address-types", "InternalIP")
	args.Set("kubelet-client-certificate", filepath.Join(certDir, "kubelet-client.crt"))
	args.Set("kubelet-client-key", filepath.Join(certDir, "kubelet-client.key"))
	// Webhooks served by pods are called at the pod's address: the host routes to its nodes' pods,
	// not to their services.
	args.Set("enable-aggregator-routing", "true")
	return nil
}

// APIServer is a running etcd and kube-apiserver.
type APIServer struct {
	// Config is an admin (system:masters) client config.
	Config *rest.Config

	// KubeconfigPath is a kubeconfig file with the admin credentials.
	KubeconfigPath string

	// Dir holds the control plane's files.
	Dir string

	// Env is the envtest environment that runs the processes; its WebhookInstallOptions say where
	// the API server expects the webhook server when webhooks are installed.
	Env *envtest.Environment

	tempDir     bool
	restartable bool
	halted      bool
	logFile     *os.File
}

// StartAPIServer starts etcd and kube-apiserver from the binaries in AssetsDir and installs the
// requested CRDs and webhook configurations. Stop it with Stop.
func StartAPIServer(ctx context.Context, opts APIServerOptions) (*APIServer, error) {
	assets, err := AssetsDir()
	if err != nil {
		return nil, err
	}
	name := opts.Name
	if name == "" {
		name = "apiserver"
	}
	a := &APIServer{Dir: opts.Dir, restartable: opts.Restartable}
	if a.Dir == "" {
		if a.Dir, err = os.MkdirTemp("", "ferry-"+name+"-"); err != nil {
			return nil, err
		}
		a.tempDir = true
	}
	if err := os.MkdirAll(a.Dir, 0o700); err != nil {
		return nil, err
	}
	binDir, err := wrapBinaries(filepath.Join(a.Dir, "bin"), assets, apiServerBinaries)
	if err != nil {
		return nil, err
	}

	env := &envtest.Environment{
		BinaryAssetsDirectory:    binDir,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	if opts.FerryWebhooks {
		mutating, validating, err := webhookconfig.Configurations()
		if err != nil {
			return nil, err
		}
		env.WebhookInstallOptions = envtest.WebhookInstallOptions{MutatingWebhooks: mutating, ValidatingWebhooks: validating}
	}
	if opts.Persistent || opts.Restartable {
		env.ControlPlane.Etcd = &envtest.Etcd{DataDir: filepath.Join(a.Dir, "etcd")}
		if !opts.Persistent {
			// Restartable without Persistent: the data lives as long as this control plane.
			if err := os.RemoveAll(env.ControlPlane.Etcd.DataDir); err != nil {
				return nil, err
			}
		}
		if err := os.MkdirAll(env.ControlPlane.Etcd.DataDir, 0o700); err != nil {
			return nil, err
		}
	}
	apiServer := env.ControlPlane.GetAPIServer()
	// The API server's own log, for the messages of a start or stop that goes wrong.
	if err := os.MkdirAll(filepath.Join(a.Dir, "logs"), 0o700); err != nil {
		return nil, err
	}
	apiLog, err := os.OpenFile(filepath.Join(a.Dir, "logs", "kube-apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	a.logFile = apiLog
	apiServer.Out, apiServer.Err = apiLog, apiLog
	if opts.Restartable || opts.real != nil {
		// envtest keeps the serving port across a restart of the same APIServer object, and the
		// certificates when CertDir is fixed. They are made fresh here: the CA lives in memory only.
		apiServer.CertDir = filepath.Join(a.Dir, "apiserver-certs")
		if err := os.RemoveAll(apiServer.CertDir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(apiServer.CertDir, 0o700); err != nil {
			return nil, err
		}
	}
	if opts.real != nil {
		if err := opts.real.configure(apiServer.CertDir, apiServer); err != nil {
			return nil, fmt.Errorf("failed to configure the %s API server for real nodes: %w", name, err)
		}
	}
	// A stop must not wait for watches: a pod killed with its node may leave its connection open,
	// and kube-apiserver otherwise waits for open watches up to its request timeout (60 s). With
	// this, in-flight requests still finish, and what remains is closed 2 s after.
	apiServer.Configure().Set("shutdown-send-retry-after", "true")
	for k, v := range opts.APIServerFlags {
		apiServer.Configure().Set(k, v)
	}
	if opts.FerryCRDs {
		crds, err := crd.CustomResourceDefinitions()
		if err != nil {
			return nil, err
		}
		env.CRDs = crds
	}
	if opts.TektonCRDs {
		dir, err := TektonCRDDir()
		if err != nil {
			return nil, err
		}
		env.CRDDirectoryPaths = []string{dir}
		env.ErrorIfCRDPathMissing = true
	}

	cfg, err := startEnv(ctx, env)
	if err != nil {
		a.cleanup()
		return nil, fmt.Errorf("failed to start the %s control plane (logs in %s): %w", name, a.Dir, err)
	}
	a.Env = env
	a.Config = cfg

	admin, err := env.AddUser(envtest.User{Name: "ferry-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = a.Stop()
		return nil, fmt.Errorf("failed to create the admin user: %w", err)
	}
	kubeconfig, err := admin.KubeConfig()
	if err != nil {
		_ = a.Stop()
		return nil, err
	}
	a.KubeconfigPath = filepath.Join(a.Dir, "kubeconfig")
	if err := os.WriteFile(a.KubeconfigPath, kubeconfig, 0o600); err != nil {
		_ = a.Stop()
		return nil, err
	}
	a.Config = admin.Config()
	return a, nil
}

// startEnv starts the environment, giving up when ctx ends.
func startEnv(ctx context.Context, env *envtest.Environment) (*rest.Config, error) {
	type result struct {
		cfg *rest.Config
		err error
	}
	ch := make(chan result, 1)
	go func() {
		cfg, err := env.Start()
		ch <- result{cfg, err}
	}()
	select {
	case r := <-ch:
		return r.cfg, r.err
	case <-ctx.Done():
		go func() {
			<-ch
			_ = env.Stop()
		}()
		return nil, ctx.Err()
	}
}

// AddUser creates a user that authenticates with a client certificate, for tests of RBAC and of
// admission decisions that depend on who asks.
func (a *APIServer) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := a.Env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to add user %s: %w", name, err)
	}
	return u.Config(), nil
}

// WebhookOptions returns where the API server expects Ferry's webhook server when FerryWebhooks
// is set: host, port and the directory with a serving certificate it trusts.
func (a *APIServer) WebhookOptions() (host string, port int, certDir string) {
	w := a.Env.WebhookInstallOptions
	return w.LocalServingHost, w.LocalServingPort, w.LocalServingCertDir
}

// UserKubeconfig writes a kubeconfig for a new certificate user to path.
func (a *APIServer) UserKubeconfig(path, name string, groups ...string) error {
	u, err := a.Env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return fmt.Errorf("failed to add user %s: %w", name, err)
	}
	data, err := u.KubeConfig()
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}

// Stop stops kube-apiserver and etcd, and removes a temporary directory.
func (a *APIServer) Stop() error {
	var err error
	if a.Env != nil && !a.halted {
		if err = a.Env.Stop(); err != nil {
			err = fmt.Errorf("%w; last lines of the API server's log:\n%s", err, tailFile(filepath.Join(a.Dir, "logs", "kube-apiserver.log"), 3000))
		}
	}
	a.cleanup()
	return err
}

// Halt stops kube-apiserver and etcd of a Restartable API server and keeps everything Restart
// needs: its data, address and certificates. Clients get "connection refused" until Restart.
func (a *APIServer) Halt() error {
	if !a.restartable {
		return fmt.Errorf("the API server in %s was not started with Restartable", a.Dir)
	}
	if a.halted {
		return nil
	}
	if err := a.Env.ControlPlane.Stop(); err != nil {
		return fmt.Errorf("failed to stop the API server in %s: %w", a.Dir, err)
	}
	a.halted = true
	return nil
}

// Restart starts a halted API server again, at the same address with the same certificates and
// objects, and waits until it serves.
func (a *APIServer) Restart(ctx context.Context) error {
	if !a.halted {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- a.Env.ControlPlane.Start() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("failed to restart the API server in %s (logs in %s): %w", a.Dir, a.Dir, err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	a.halted = false
	return nil
}

func (a *APIServer) cleanup() {
	if a.logFile != nil {
		_ = a.logFile.Close()
		a.logFile = nil
	}
	if a.tempDir {
		_ = os.RemoveAll(a.Dir)
	}
}

// wrapBinaries fills dir with scripts that run each named binary from assets so that it dies with
// its parent; without setpriv it links the binaries instead.
func wrapBinaries(dir, assets string, names []string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for _, name := range names {
		target := filepath.Join(assets, name)
		path := filepath.Join(dir, name)
		_ = os.Remove(path)
		if script := deathSignalWrapper(target); script != "" {
			if err := os.WriteFile(path, []byte(script), 0o700); err != nil {
				return "", err
			}
			continue
		}
		if err := os.Symlink(target, path); err != nil {
			return "", err
		}
	}
	return dir, nil
}
