// Package clusters turns Cluster objects into clients for the clusters they describe: it reads the
// kubeconfig Secret (or the in-cluster configuration), probes the API server, and caches one client
// per Cluster until its credentials change. The Cluster controller and the Release controller share
// one Cache.
package clusters

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// DefaultKubeConfigKey is the Secret key read when a Cluster's kubeConfigSecretRef names none.
const DefaultKubeConfigKey = "kubeconfig"

// DefaultProbeTimeout bounds one probe of a cluster's API server.
const DefaultProbeTimeout = 10 * time.Second

// Error is a failure to reach a cluster, with the condition reason it maps to. Its message never
// contains a credential.
type Error struct {
	// Reason is one of the Cluster condition reasons: SecretNotFound, InvalidKubeConfig,
	// ClusterUnreachable.
	Reason string
	// Message says what is wrong and where.
	Message string
	// Down is set when the cluster was not tried because it is known to be down.
	Down bool
}

func (e *Error) Error() string { return e.Message }

// ReasonOf returns the condition reason of err, ClusterUnreachable for errors that are not an *Error.
func ReasonOf(err error) string {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Reason
	}
	return ferryv1.ClusterUnreachableReason
}

// Loader builds REST configs for Cluster objects.
type Loader struct {
	// Reader reads Secrets in Namespace.
	Reader client.Reader
	// Namespace is Ferry's own namespace, where kubeconfig Secrets live.
	Namespace string
	// InClusterConfig returns the configuration of the cluster Ferry runs in. Default
	// rest.InClusterConfig.
	InClusterConfig func() (*rest.Config, error)
}

// RESTConfig returns the client configuration for cluster and a fingerprint that changes when the
// credentials change.
func (l *Loader) RESTConfig(ctx context.Context, cluster *ferryv1.Cluster) (*rest.Config, string, error) {
	if cluster.Spec.InCluster {
		inCluster := l.InClusterConfig
		if inCluster == nil {
			inCluster = rest.InClusterConfig
		}
		cfg, err := inCluster()
		if err != nil {
			return nil, "", &Error{Reason: ferryv1.InvalidKubeConfigReason, Message: fmt.Sprintf("inCluster is set but Ferry is not running in a cluster: %v", err)}
		}
		return cfg, "in-cluster", nil
	}
	ref := cluster.Spec.KubeConfigSecretRef
	if ref == nil {
		return nil, "", &Error{Reason: ferryv1.InvalidKubeConfigReason, Message: "neither kubeConfigSecretRef nor inCluster is set"}
	}
	key := ref.Key
	if key == "" {
		key = DefaultKubeConfigKey
	}
	where := fmt.Sprintf("Secret %s/%s", l.Namespace, ref.Name)
	secret := &corev1.Secret{}
	if err := l.Reader.Get(ctx, types.NamespacedName{Namespace: l.Namespace, Name: ref.Name}, secret); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, "", &Error{Reason: ferryv1.SecretNotFoundReason, Message: where + " not found"}
		}
		return nil, "", fmt.Errorf("failed to read %s: %w", where, err)
	}
	data, ok := secret.Data[key]
	if !ok || len(data) == 0 {
		return nil, "", &Error{Reason: ferryv1.SecretNotFoundReason, Message: fmt.Sprintf("%s has no key %q", where, key)}
	}
	cfg, err := parseKubeConfig(data)
	if err != nil {
		return nil, "", &Error{Reason: ferryv1.InvalidKubeConfigReason, Message: fmt.Sprintf("the kubeconfig in %s (key %q) is invalid: %s", where, key, redact(err.Error(), data))}
	}
	sum := sha256.Sum256(data)
	return cfg, hex.EncodeToString(sum[:]), nil
}

func parseKubeConfig(data []byte) (*rest.Config, error) {
	raw, err := clientcmd.Load(data)
	if err != nil {
		return nil, err
	}
	if raw.CurrentContext == "" && len(raw.Contexts) != 1 {
		return nil, errors.New("it sets no current-context")
	}
	if raw.CurrentContext == "" {
		for name := range raw.Contexts {
			raw.CurrentContext = name
		}
	}
	cfg, err := clientcmd.NewDefaultClientConfig(*raw, nil).ClientConfig()
	if err != nil {
		return nil, err
	}
	if _, err := url.Parse(cfg.Host); err != nil || cfg.Host == "" {
		return nil, fmt.Errorf("its server %q is not a URL", redactURL(cfg.Host))
	}
	return cfg, nil
}

// Probe asks the API server for its version.
func Probe(ctx context.Context, cfg *rest.Config) (string, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 || cfg.Timeout > DefaultProbeTimeout {
		cfg.Timeout = DefaultProbeTimeout
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return "", &Error{Reason: ferryv1.InvalidKubeConfigReason, Message: fmt.Sprintf("cannot build a client for %s: %v", redactURL(cfg.Host), err)}
	}
	type result struct {
		version string
		err     error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := dc.ServerVersion()
		if err != nil {
			ch <- result{err: err}
			return
		}
		ch <- result{version: v.GitVersion}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case r := <-ch:
		if r.err != nil {
			return "", unreachable(cfg.Host, r.err)
		}
		return r.version, nil
	}
}

func unreachable(host string, err error) error {
	host = redactURL(host)
	switch {
	case apierrors.IsUnauthorized(err):
		return &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("the API server at %s refused the credentials (401 Unauthorized)", host)}
	case apierrors.IsForbidden(err):
		return &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("the API server at %s forbids reading its version with these credentials (403 Forbidden)", host)}
	}
	msg := err.Error()
	// client-go quotes the whole request URL; the host is already named.
	msg = regexp.MustCompile(`Get "[^"]*": `).ReplaceAllString(msg, "")
	return &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("the API server at %s did not answer: %s", host, redactUserinfo(msg))}
}

// sensitiveRE finds the values of kubeconfig fields that hold credentials, in valid or broken YAML.
var sensitiveRE = regexp.MustCompile(`(?i)(token|password|secret|key-data|certificate-data|authority-data)["']?\s*:\s*["']?([^\s"',}\]]+)`)

// redact removes from msg every credential value found in the kubeconfig text, so that a parser
// quoting its input cannot leak a token or key.
func redact(msg string, kubeconfig []byte) string {
	for _, m := range sensitiveRE.FindAllSubmatch(kubeconfig, -1) {
		if v := string(m[2]); len(v) >= 4 {
			msg = strings.ReplaceAll(msg, v, "[redacted]")
		}
	}
	return msg
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

var userinfoRE = regexp.MustCompile(`://[^/@\s]+@`)

func redactUserinfo(s string) string { return userinfoRE.ReplaceAllString(s, "://") }

// Cache holds one client per Cluster and rebuilds it when the Cluster's credentials change. It
// keeps a health record per cluster, fed by every request its clients make: a cluster whose last
// attempt got no answer is known to be down, and Client answers at once instead of dialing it,
// until a backoff has passed (see admit). Its clients have short timeouts (see tune).
type Cache struct {
	// Loader reads credentials.
	Loader *Loader
	// Reader reads Cluster objects.
	Reader client.Reader
	// Scheme is the scheme of the clients handed out.
	Scheme *runtime.Scheme
	// Now returns the current time. Default time.Now.
	Now func() time.Time

	mu      sync.Mutex
	entries map[string]*entry
	health  map[string]*health
}

type entry struct {
	fingerprint string
	// config is for probes: its requests are always sent. client (and clientConfig) do not send
	// requests to the cluster while it is known to be down.
	config       *rest.Config
	clientConfig *rest.Config
	client       client.Client
}

// Client returns a client for the named Cluster. The credentials are re-read on every call (from
// the manager's cache), and the client is rebuilt only when they changed. A cluster known to be
// down gets no client until its backoff has passed, then one caller at a time: the others get a
// ClusterUnreachable *Error (Down set) at once, without a request.
func (c *Cache) Client(ctx context.Context, name string) (client.Client, error) {
	cl, _, err := c.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := c.admit(name); err != nil {
		return nil, err
	}
	return cl, nil
}

// RESTConfig returns the client configuration for the named Cluster, under the same rule as
// Client.
func (c *Cache) RESTConfig(ctx context.Context, name string) (*rest.Config, error) {
	_, cfg, err := c.get(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := c.admit(name); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[name]; ok && e.config == cfg {
		return e.clientConfig, nil
	}
	return cfg, nil
}

func (c *Cache) get(ctx context.Context, name string) (client.Client, *rest.Config, error) {
	cluster := &ferryv1.Cluster{}
	if err := c.Reader.Get(ctx, types.NamespacedName{Name: name}, cluster); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, nil, &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("Cluster %s not found", name)}
		}
		return nil, nil, err
	}
	cl, cfg, err := c.ForCluster(ctx, cluster)
	if err != nil {
		return nil, nil, err
	}
	c.seedFromStatus(cluster)
	return cl, cfg, nil
}

// ForCluster returns a client for cluster, reusing the cached one while the credentials are the
// same, and a configuration to probe it with. Whatever the cluster's health, both are handed out;
// the configuration sends every request (the Cluster controller probes with it), the client none
// while the cluster is known to be down.
func (c *Cache) ForCluster(ctx context.Context, cluster *ferryv1.Cluster) (client.Client, *rest.Config, error) {
	cfg, fingerprint, err := c.Loader.RESTConfig(ctx, cluster)
	if err != nil {
		c.Invalidate(cluster.Name)
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[cluster.Name]; ok && e.fingerprint == fingerprint {
		return e.client, e.config, nil
	}
	// New credentials (perhaps a corrected address): what was known of the old ones says nothing.
	delete(c.health, cluster.Name)
	clientCfg := c.tune(cluster.Name, cfg, true)
	cl, err := client.New(clientCfg, client.Options{Scheme: c.Scheme})
	if err != nil {
		return nil, nil, &Error{Reason: ferryv1.InvalidKubeConfigReason, Message: fmt.Sprintf("cannot build a client for cluster %s: %s", cluster.Name, redactUserinfo(err.Error()))}
	}
	if c.entries == nil {
		c.entries = map[string]*entry{}
	}
	probeCfg := c.tune(cluster.Name, cfg, false)
	c.entries[cluster.Name] = &entry{fingerprint: fingerprint, config: probeCfg, clientConfig: clientCfg, client: cl}
	return cl, probeCfg, nil
}

// Invalidate forgets the client of the named Cluster and what was known of its health.
func (c *Cache) Invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, name)
	delete(c.health, name)
}
