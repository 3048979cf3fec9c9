package controlplane

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Tekton Triggers' binaries and CRDs in the assets directory, built by `make triggers`
// (hack/controlplane/build.sh DIR triggers) for the benchmarks that compare Ferry's GitLab receiver
// with Triggers' EventListener. Tests and `ferry dev` never need them.
const (
	triggersSinkBinary         = "triggers-eventlistenersink"
	triggersInterceptorsBinary = "triggers-interceptors"
	triggersCRDDir             = "triggers-crds"
	// triggersCertSecret is the Secret the core interceptors read their serving certificate from
	// (INTERCEPTOR_TLS_SECRET_NAME), in the namespace they run for (SYSTEM_NAMESPACE).
	triggersCertSecret = "tekton-triggers-core-interceptors-certs" //nolint:gosec // G101: a Secret name, not a credential
)

// TriggersAssets returns the assets directory when it holds Tekton Triggers' sink, core
// interceptors and CRDs, else an error that names the command that builds them.
func TriggersAssets() (string, error) {
	dir, err := AssetsDir()
	if err != nil {
		return "", err
	}
	var missing []string
	for _, name := range []string{triggersSinkBinary, triggersInterceptorsBinary, triggersCRDDir} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("tekton Triggers' %s not found in %s: run `make triggers` (hack/controlplane/build.sh %s triggers) to build them from Go modules", strings.Join(missing, ", "), dir, dir)
	}
	return dir, nil
}

// TriggersOptions configure Tekton Triggers' processes.
type TriggersOptions struct {
	// Namespace is where the interceptors keep their certificate Secret (their SYSTEM_NAMESPACE),
	// and where the sink's EventListener lives.
	Namespace string
	// ClientQPS and ClientBurst are the processes' client-side rate limit towards the API server
	// (Knative's -kube-api-qps and -kube-api-burst). Zero: client-go's defaults, 5 requests per
	// second with bursts of 10, as Triggers runs unless told otherwise.
	ClientQPS   float64
	ClientBurst int
	// LogDir keeps the processes' logs.
	LogDir string
}

// Unthrottled is a client rate limit high enough never to delay a request (Knative's flags refuse
// a negative QPS, client-go's way of turning the limit off).
const Unthrottled = 1e6

func (o TriggersOptions) clientFlags() []string {
	if o.ClientQPS == 0 {
		return nil
	}
	return []string{"-kube-api-qps=" + strconv.FormatFloat(o.ClientQPS, 'f', -1, 64), "-kube-api-burst=" + strconv.Itoa(o.ClientBurst)}
}

// TriggersInterceptors are Tekton Triggers' core interceptors (GitLab, GitHub, Bitbucket, CEL,
// Slack) serving HTTPS on a free loopback port, registered as the ClusterInterceptors of the API
// server.
type TriggersInterceptors struct {
	// URL is where they serve; each interceptor is at URL/<name>.
	URL  string
	proc *process
	api  client.Client
}

// coreInterceptors are the ClusterInterceptors the core interceptors serve.
var coreInterceptors = []string{"bitbucket", "cel", "github", "gitlab", "slack"}

// StartTriggersInterceptors installs Triggers' CRDs into the API server and starts the core
// interceptors as a process of this machine, with a serving certificate for 127.0.0.1 in their
// Secret and the core ClusterInterceptors pointed at them.
func StartTriggersInterceptors(ctx context.Context, api *APIServer, c client.Client, opts TriggersOptions) (*TriggersInterceptors, error) {
	dir, err := TriggersAssets()
	if err != nil {
		return nil, err
	}
	if _, err := envtest.InstallCRDs(api.Config, envtest.CRDInstallOptions{Paths: []string{filepath.Join(dir, triggersCRDDir)}, ErrorIfPathMissing: true}); err != nil {
		return nil, fmt.Errorf("failed to install Tekton Triggers' CRDs: %w", err)
	}
	ca, err := newCertAuthority("tekton-triggers-core-interceptors")
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.issue(certRequest{commonName: "tekton-triggers-core-interceptors", ips: []net.IP{net.IPv4(127, 0, 0, 1)}, server: true})
	if err != nil {
		return nil, err
	}
	// The interceptors use the certificate they find in their Secret (knative's certificate keys)
	// instead of making one for a Service name.
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: opts.Namespace, Name: triggersCertSecret},
		Data:       map[string][]byte{"server-key.pem": keyPEM, "server-cert.pem": certPEM, "ca-cert.pem": ca.certPEM},
	}
	if err := c.Create(ctx, secret); err != nil {
		return nil, fmt.Errorf("failed to create the interceptors' certificate Secret: %w", err)
	}
	args := append([]string{"-kubeconfig=" + api.KubeconfigPath, "-listen=127.0.0.1:0"}, opts.clientFlags()...)
	proc, err := startProcessEnv("triggers-interceptors", filepath.Join(dir, triggersInterceptorsBinary), args, opts.LogDir, []string{
		"SYSTEM_NAMESPACE=" + opts.Namespace,
		"INTERCEPTOR_TLS_SVC_NAME=tekton-triggers-core-interceptors",
		"INTERCEPTOR_TLS_SECRET_NAME=" + triggersCertSecret,
		"CONFIG_LOGGING_NAME=config-logging-triggers",
		"CONFIG_OBSERVABILITY_NAME=config-observability-triggers",
		"METRICS_DOMAIN=tekton.dev/triggers",
	})
	if err != nil {
		return nil, err
	}
	ti := &TriggersInterceptors{proc: proc, api: c}
	addr, err := waitListening(ctx, proc, 60*time.Second)
	if err != nil {
		_ = ti.Stop(ctx)
		return nil, err
	}
	ti.URL = "https://" + addr
	for _, name := range coreInterceptors {
		if err := ti.register(ctx, name, ca.certPEM); err != nil {
			_ = ti.Stop(ctx)
			return nil, err
		}
	}
	return ti, nil
}

// register creates or replaces the ClusterInterceptor name, pointed at the process.
func (ti *TriggersInterceptors) register(ctx context.Context, name string, caBundle []byte) error {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion("triggers.tekton.dev/v1alpha1")
	u.SetKind("ClusterInterceptor")
	u.SetName(name)
	u.SetLabels(map[string]string{"server/type": "https"})
	u.Object["spec"] = map[string]any{"clientConfig": map[string]any{"url": ti.URL + "/" + name, "caBundle": caBundle}}
	err := ti.api.Create(ctx, u)
	if apierrors.IsAlreadyExists(err) {
		old := &unstructured.Unstructured{}
		old.SetGroupVersionKind(u.GroupVersionKind())
		if err = ti.api.Get(ctx, client.ObjectKey{Name: name}, old); err == nil {
			u.SetResourceVersion(old.GetResourceVersion())
			err = ti.api.Update(ctx, u)
		}
	}
	if err != nil {
		return fmt.Errorf("failed to register ClusterInterceptor %s: %w", name, err)
	}
	return nil
}

// Stop stops the process and removes the ClusterInterceptors.
func (ti *TriggersInterceptors) Stop(ctx context.Context) error {
	err := ti.proc.stop(10 * time.Second)
	for _, name := range coreInterceptors {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("triggers.tekton.dev/v1alpha1")
		u.SetKind("ClusterInterceptor")
		u.SetName(name)
		_ = ti.api.Delete(ctx, u)
	}
	return err
}

// EventListenerSink is Tekton Triggers' EventListener sink serving one EventListener, the process an
// EventListener's Deployment runs, on a free port of this machine.
type EventListenerSink struct {
	// URL is where deliveries go.
	URL  string
	proc *process
}

// StartEventListenerSink starts the sink of the EventListener name in opts.Namespace, which must
// exist with the ClusterInterceptors it uses, and waits until it serves. The sink listens on every
// interface (its listen address is only a port); the port is a free one, found just before.
func StartEventListenerSink(ctx context.Context, api *APIServer, name string, opts TriggersOptions) (*EventListenerSink, error) {
	dir, err := TriggersAssets()
	if err != nil {
		return nil, err
	}
	// The sink binds every interface: find a port free on all of them.
	l, err := net.Listen("tcp", ":0") //nolint:gosec // G102: only to find the port the sink will bind
	if err != nil {
		return nil, err
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	args := append([]string{
		"-kubeconfig=" + api.KubeconfigPath,
		"-el-name=" + name, "-el-namespace=" + opts.Namespace, "-port=" + port,
	}, opts.clientFlags()...)
	proc, err := startProcessEnv("triggers-sink-"+name+"-"+port, filepath.Join(dir, triggersSinkBinary), args, opts.LogDir, []string{
		"SYSTEM_NAMESPACE=" + opts.Namespace,
		"NAMESPACE=" + opts.Namespace,
		"NAME=" + name,
		// As an EventListener's Deployment runs it (the default of Triggers' controller).
		"EL_EVENT=disable",
		"K_SINK_TIMEOUT=30",
		"METRICS_DOMAIN=tekton.dev/triggers",
	})
	if err != nil {
		return nil, err
	}
	s := &EventListenerSink{URL: "http://127.0.0.1:" + port, proc: proc}
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/live")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if done, werr := proc.exited(); done {
			return nil, fmt.Errorf("the EventListener sink exited (%w): %s", werr, proc.tail(4096))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = proc.stop(5 * time.Second)
			return nil, fmt.Errorf("the EventListener sink did not serve within 90s: %s", proc.tail(4096))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the sink.
func (s *EventListenerSink) Stop() error { return s.proc.stop(10 * time.Second) }

// waitListening waits for the "listening on ADDRESS" line of the interceptors' output.
func waitListening(ctx context.Context, p *process, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		if addr := listeningAddress(p.logPath); addr != "" {
			return addr, nil
		}
		if done, err := p.exited(); done {
			return "", fmt.Errorf("%s exited (%w): %s", p.name, err, p.tail(4096))
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not listen within %s: %s", p.name, timeout, p.tail(4096))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func listeningAddress(logPath string) string {
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if addr, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
			return strings.TrimSpace(addr)
		}
	}
	return ""
}
