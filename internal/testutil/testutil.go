// Package testutil holds helpers shared by Ferry's integration tests: a hub API server with Ferry's
// and Tekton's CRDs, a namespace per test, and polling for asynchronous outcomes.
package testutil

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
)

// DefaultTimeout bounds Eventually.
const DefaultTimeout = 60 * time.Second

// Hub is an API server with Ferry's and Tekton's CRDs, shared by the tests of one package.
type Hub struct {
	*controlplane.APIServer
	// Client is an admin client.
	Client client.Client
}

var (
	hubOnce sync.Once
	hub     *Hub
	hubErr  error
)

// StartHub starts the package's hub API server once; RunWithHub stops it.
func StartHub(ctx context.Context, opts controlplane.APIServerOptions) (*Hub, error) {
	hubOnce.Do(func() {
		opts.FerryCRDs = true
		opts.TektonCRDs = true
		if opts.Name == "" {
			opts.Name = "hub"
		}
		var api *controlplane.APIServer
		api, hubErr = controlplane.StartAPIServer(ctx, opts)
		if hubErr != nil {
			return
		}
		var c client.Client
		c, hubErr = client.New(api.Config, client.Options{Scheme: manager.Scheme()})
		if hubErr != nil {
			_ = api.Stop()
			return
		}
		hub = &Hub{APIServer: api, Client: c}
	})
	return hub, hubErr
}

// hubOptions are RunWithHub's, for the hub CurrentHub starts on first use.
var hubOptions *controlplane.APIServerOptions

// RunWithHub is a TestMain body: it runs the tests and stops the hub. The hub starts when a test
// first asks for it (CurrentHub), so that a run of unit tests alone never starts an API server.
func RunWithHub(m *testing.M, opts controlplane.APIServerOptions) int {
	hubOptions = &opts
	code := m.Run()
	if hub != nil {
		if err := hub.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "failed to stop the hub API server:", err)
		}
	}
	return code
}

// CurrentHub returns the hub of RunWithHub, starting it on first use.
func CurrentHub(t testing.TB) *Hub {
	t.Helper()
	if hubOptions == nil {
		t.Fatal("no hub API server: call testutil.RunWithHub from TestMain")
	}
	h, err := StartHub(context.Background(), *hubOptions)
	if err != nil {
		t.Fatalf("failed to start the hub API server: %v", err)
	}
	return h
}

// Namespace creates a namespace for one test and deletes it when the test ends.
func Namespace(t testing.TB, c client.Client) string {
	t.Helper()
	prefix := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(prefix, "-") + "-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatalf("failed to create a namespace: %v", err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

// Eventually polls cond until it returns true, failing the test after DefaultTimeout with the
// description and the last error or message cond returned.
func Eventually(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	EventuallyWithin(t, DefaultTimeout, what, cond)
}

// EventuallyWithin is Eventually with a timeout.
func EventuallyWithin(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s (last: %v)", timeout, what, last)
	}
}

// FerryNamespace is the namespace tests run Ferry's manager for.
const FerryNamespace = "ferry-system"

// StartManager runs Ferry's manager against the hub until the test ends. Unset options get test
// defaults: Ferry's namespace (created if missing), no metrics or probe listeners, no leader
// election, and the hub's webhook serving options when the hub has Ferry's webhooks installed.
func StartManager(t testing.TB, opts manager.Options) *manager.Manager {
	t.Helper()
	h := CurrentHub(t)
	if opts.Namespace == "" {
		opts.Namespace = FerryNamespace
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opts.Namespace}}
	if err := h.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.ProbeAddr == "" {
		opts.ProbeAddr = "0"
	}
	if host, port, dir := h.WebhookOptions(); port != 0 && opts.WebhookPort == 0 {
		opts.WebhookHost, opts.WebhookPort, opts.WebhookCertDir = host, port, dir
	}
	m, err := manager.New(h.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager stopped with an error: %v", err)
		}
	})
	if opts.WebhookPort != 0 {
		EventuallyWithin(t, 30*time.Second, "the webhook server to serve", func() (bool, error) {
			err := m.GetWebhookServer().StartedChecker()(nil)
			return err == nil, err
		})
	}
	return m
}

// UserClient returns a client that authenticates as the named user with the given groups, so
// that RBAC and admission webhooks see that identity.
func (h *Hub) UserClient(t testing.TB, name string, groups ...string) client.Client {
	t.Helper()
	cfg, err := h.AddUser(name, groups...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
