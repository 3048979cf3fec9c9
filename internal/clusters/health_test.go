package clusters

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// clock is a settable time.
type clock struct{ t time.Time }

func newClock() *clock               { return &clock{t: time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)} }
func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

// down reports an error that says the cluster was not tried because it is known to be down.
func down(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Down
}

// failuresOf is the count of failures in a row the Cache holds for a cluster.
func failuresOf(c *Cache, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healthOf(name).failures
}

// TestHealthBackoff: after a failure nobody gets a client until the backoff has passed, then one
// caller at a time; the backoff doubles up to its maximum; an answer clears it.
func TestHealthBackoff(t *testing.T) {
	clk := newClock()
	c := &Cache{Now: clk.now}
	if err := c.admit("east"); err != nil {
		t.Fatalf("a cluster never tried: %v", err)
	}
	c.recordFailure("east", "the API server at https://10.0.0.1 did not answer: i/o timeout")
	err := c.admit("east")
	if !down(err) || !strings.Contains(err.Error(), "i/o timeout") || !strings.Contains(err.Error(), "known to be down") {
		t.Fatalf("right after a failure: %v", err)
	}
	if d, msg := c.Down("east"); !d || !strings.Contains(msg, "i/o timeout") {
		t.Errorf("Down = %v %q", d, msg)
	}
	if got := c.RetryIn("east"); got != DownBackoff {
		t.Errorf("RetryIn = %s, want %s", got, DownBackoff)
	}
	// Failures of requests admitted before it was known down do not lengthen the backoff.
	c.recordFailure("east", "again")
	if got := c.RetryIn("east"); got != DownBackoff {
		t.Errorf("RetryIn after a concurrent failure = %s", got)
	}

	clk.add(DownBackoff)
	if err := c.admit("east"); err != nil {
		t.Fatalf("after the backoff, the first caller: %v", err)
	}
	if err := c.admit("east"); !down(err) {
		t.Fatalf("after the backoff, a second caller while the first tries: %v", err)
	}
	c.recordFailure("east", "still nothing")
	if got := c.RetryIn("east"); got != 2*DownBackoff {
		t.Errorf("second backoff = %s, want %s", got, 2*DownBackoff)
	}
	for range 10 {
		clk.add(c.RetryIn("east"))
		if err := c.admit("east"); err != nil {
			t.Fatal(err)
		}
		c.recordFailure("east", "still nothing")
	}
	if got := c.RetryIn("east"); got != MaxDownBackoff {
		t.Errorf("backoff after many failures = %s, want %s", got, MaxDownBackoff)
	}
	// A caller that got through and never reported: after probeWindow another one may try.
	clk.add(MaxDownBackoff)
	if err := c.admit("east"); err != nil {
		t.Fatal(err)
	}
	clk.add(probeWindow)
	if err := c.admit("east"); err != nil {
		t.Errorf("after the probe window: %v", err)
	}
	c.recordSuccess("east")
	if err := c.admit("east"); err != nil {
		t.Errorf("after an answer: %v", err)
	}
	if d, _ := c.Down("east"); d || c.RetryIn("east") != 0 {
		t.Errorf("still down after an answer")
	}
	// Other clusters are not affected.
	c.recordFailure("west", "x")
	if err := c.admit("east"); err != nil {
		t.Errorf("east refused because west is down: %v", err)
	}
}

// hangUp accepts TCP connections and closes them at once, counting them.
func hangUp(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = conn.Close()
		}
	}()
	return l.Addr().String(), accepted
}

func testCache(t *testing.T, server string, objs ...client.Object) (*Cache, *clock) {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := ferryv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: s3cr3t-t0ken}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`, server)
	objs = append(objs,
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ferry-system", Name: "east"}, Data: map[string][]byte{DefaultKubeConfigKey: []byte(kubeconfig)}})
	reader := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).Build()
	clk := newClock()
	clk.t = time.Now()
	return &Cache{Loader: &Loader{Reader: reader, Namespace: "ferry-system"}, Reader: reader, Scheme: s, Now: clk.now}, clk
}

func eastCluster() *ferryv1.Cluster {
	return &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "east"}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: "east"}}}
}

// TestClientFailsFastOnAClusterKnownDown: a request that gets no answer marks the cluster down;
// the next callers are answered at once without a connection, and the message carries no
// credential.
func TestClientFailsFastOnAClusterKnownDown(t *testing.T) {
	addr, accepted := hangUp(t)
	c, clk := testCache(t, "https://"+addr, eastCluster())
	ctx := context.Background()
	cl, err := c.Client(ctx, "east")
	if err != nil {
		t.Fatal(err)
	}
	err = cl.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{})
	if err == nil || !IsUnreachable(err) {
		t.Fatalf("request to a cluster that hangs up: %v (unreachable %v)", err, IsUnreachable(err))
	}
	before := accepted.Load()
	if before == 0 {
		t.Fatal("no connection was made")
	}
	for range 5 {
		_, err := c.Client(ctx, "east")
		if !down(err) || !IsUnreachable(err) || !strings.Contains(err.Error(), "the API server at https://"+addr) {
			t.Fatalf("Client of a cluster known down = %v", err)
		}
		if strings.Contains(err.Error(), "s3cr3t") {
			t.Fatalf("the message carries the token: %s", err)
		}
	}
	// A client handed out before is not sent to it either (nor retried by client-go).
	if err := cl.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{}); !IsUnreachable(err) || !strings.Contains(err.Error(), "cluster east is known to be down") {
		t.Errorf("request with an earlier client: %v", err)
	}
	if got := accepted.Load(); got != before {
		t.Errorf("%d connections to a cluster known down", got-before)
	}
	// After the backoff one caller tries again.
	clk.add(DownBackoff)
	if _, err := c.Client(ctx, "east"); err != nil {
		t.Errorf("after the backoff: %v", err)
	}
}

// TestSeedFromClusterStatus: a fresh process believes the Cluster controller's last probe.
func TestSeedFromClusterStatus(t *testing.T) {
	addr, accepted := hangUp(t)
	cl := eastCluster()
	now := metav1.Now()
	cl.Status = ferryv1.ClusterStatus{LastProbeTime: &now, Conditions: []metav1.Condition{{
		Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.ClusterUnreachableReason,
		Message: "the API server at https://" + addr + " did not answer: connection refused", LastTransitionTime: now,
	}}}
	c, _ := testCache(t, "https://"+addr, cl)
	_, err := c.Client(context.Background(), "east")
	if !down(err) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Client = %v", err)
	}
	if accepted.Load() != 0 {
		t.Errorf("dialed a cluster the Cluster controller found down")
	}
	if failuresOf(c, "east") != 1 {
		t.Errorf("failures = %d", failuresOf(c, "east"))
	}
}

func TestIsUnreachable(t *testing.T) {
	cases := map[error]bool{
		nil: false,
		&Error{Reason: ferryv1.ClusterUnreachableReason}: true,
		&Error{Reason: ferryv1.SecretNotFoundReason}:     false,
		context.DeadlineExceeded:                         true,
		fmt.Errorf("failed to read x: %w", &net.OpError{Op: "dial", Err: fmt.Errorf("connection refused")}): true,
		fmt.Errorf("conflict"): false,
	}
	for err, want := range cases {
		if got := IsUnreachable(err); got != want {
			t.Errorf("IsUnreachable(%v) = %v, want %v", err, got, want)
		}
	}
}
