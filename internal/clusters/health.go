package clusters

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/client-go/rest"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Timeouts of the clients of target clusters. A cluster that accepts connections and never answers
// (or drops packets) costs a caller a few seconds once; after that the cluster is known to be down
// and callers are answered at once (see Cache.Client).
const (
	// DialTimeout bounds opening a TCP connection to an API server.
	DialTimeout = 5 * time.Second
	// TLSHandshakeTimeout bounds the TLS handshake with an API server.
	TLSHandshakeTimeout = 5 * time.Second
	// ResponseHeaderTimeout bounds the wait for an answer once a request is sent.
	ResponseHeaderTimeout = 15 * time.Second
	// RequestTimeout bounds a whole request.
	RequestTimeout = 30 * time.Second
)

// Backoff of a cluster known to be down: after a failure no client is handed out for
// DownBackoff, doubling with each failed attempt up to MaxDownBackoff; then one caller at a
// time gets a client to try again (for at most probeWindow), and the others are answered at once.
const (
	DownBackoff    = 5 * time.Second
	MaxDownBackoff = 30 * time.Second
	probeWindow    = 30 * time.Second
)

// health is what Ferry last saw of one cluster's API server.
type health struct {
	// failures counts attempts in a row that got no answer; 0 means up (or never tried).
	failures int
	// message is the last failure, without credentials.
	message string
	// retryAt is when the cluster may be tried again; probeUntil, when after retryAt one caller
	// got a client to try, until when the others keep being answered at once.
	retryAt, probeUntil time.Time
}

func (c *Cache) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Cache) healthOf(name string) *health {
	if c.health == nil {
		c.health = map[string]*health{}
	}
	h, ok := c.health[name]
	if !ok {
		h = &health{}
		c.health[name] = h
	}
	return h
}

// admit decides whether a caller gets a client of a cluster: always when it is up; when it is
// known to be down, only once its backoff has passed, and then only one caller at a time. The
// refusal is a ClusterUnreachable *Error that repeats the last failure.
func (c *Cache) admit(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.healthOf(name)
	if h.failures == 0 {
		return nil
	}
	now := c.now()
	if now.Before(h.retryAt) || now.Before(h.probeUntil) {
		return &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("%s (known to be down: not tried again before %s)", h.message, h.retryAt.UTC().Format(time.TimeOnly)), Down: true}
	}
	h.probeUntil = now.Add(probeWindow)
	return nil
}

// recordFailure notes that a request to the cluster got no answer. Failures of requests that were
// admitted before the cluster was known to be down do not lengthen its backoff.
func (c *Cache) recordFailure(name, message string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.healthOf(name)
	now := c.now()
	h.message = message
	if h.failures > 0 && now.Before(h.retryAt) {
		return
	}
	h.failures++
	backoff := DownBackoff << min(h.failures-1, 8)
	h.retryAt = now.Add(min(backoff, MaxDownBackoff))
	h.probeUntil = time.Time{}
}

// recordSuccess notes that the cluster answered (with any status).
func (c *Cache) recordSuccess(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.health[name]; ok && h.failures > 0 {
		*h = health{}
	}
}

// Down reports whether the named cluster is known to be down (its last attempt got no answer),
// with the last failure.
func (c *Cache) Down(name string) (bool, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.health[name]; ok && h.failures > 0 {
		return true, h.message
	}
	return false, ""
}

// RetryIn is how long until the named cluster, known to be down, may be tried again; 0 when it
// is not known to be down or may be tried now.
func (c *Cache) RetryIn(name string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.health[name]; ok && h.failures > 0 {
		return max(h.retryAt.Sub(c.now()), 0)
	}
	return 0
}

// seedFromStatus takes what the Cluster controller last saw when this process has seen nothing of
// the cluster yet: a Cluster whose Ready condition is False with ClusterUnreachable is known to be
// down from its last probe, so that after a restart callers do not all dial it at once.
func (c *Cache) seedFromStatus(cluster *ferryv1.Cluster) {
	cond := meta.FindStatusCondition(cluster.Status.Conditions, ferryv1.ReadyCondition)
	if cond == nil || cond.Status != "False" || cond.Reason != ferryv1.ClusterUnreachableReason {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, seen := c.health[cluster.Name]; seen {
		return
	}
	at := cond.LastTransitionTime.Time
	if p := cluster.Status.LastProbeTime; p != nil && p.After(at) {
		at = p.Time
	}
	h := c.healthOf(cluster.Name)
	h.failures, h.message, h.retryAt = 1, cond.Message, at.Add(DownBackoff)
}

// refuseRequest answers a request to a cluster known to be down, before its backoff has passed,
// without sending it; nil lets it through. Its message is plain on purpose: client-go retries a
// GET whose error reads like a reset connection, and this one must end the retries.
func (c *Cache) refuseRequest(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.health[name]
	if !ok || h.failures == 0 || !c.now().Before(h.retryAt) {
		return nil
	}
	return &Error{Reason: ferryv1.ClusterUnreachableReason, Message: fmt.Sprintf("cluster %s is known to be down: not tried again before %s", name, h.retryAt.UTC().Format(time.TimeOnly)), Down: true}
}

// tune gives a target cluster's configuration short timeouts and a transport that records, for
// every request, whether the API server answered. With failFast, requests to the cluster while it
// is known to be down are answered at once (the clients the Cache hands out); without, they are
// always sent (the Cluster controller's probes).
func (c *Cache) tune(name string, cfg *rest.Config, failFast bool) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	if cfg.Timeout == 0 || cfg.Timeout > RequestTimeout {
		cfg.Timeout = RequestTimeout
	}
	cfg.Dial = (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	host := cfg.Host
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		shortenTimeouts(rt)
		return &healthRecorder{rt: rt, cache: c, cluster: name, host: host, failFast: failFast}
	})
	return cfg
}

// shortenTimeouts sets the TLS handshake and response header timeouts of the *http.Transport under
// rt. Because the configuration has its own Dial, client-go builds a transport for it alone (never
// http.DefaultTransport, never one shared with another configuration), before its first request.
func shortenTimeouts(rt http.RoundTripper) {
	for rt != nil {
		if t, ok := rt.(*http.Transport); ok {
			if t != http.DefaultTransport {
				t.TLSHandshakeTimeout = TLSHandshakeTimeout
				t.ResponseHeaderTimeout = ResponseHeaderTimeout
			}
			return
		}
		w, ok := rt.(utilnet.RoundTripperWrapper)
		if !ok {
			return
		}
		rt = w.WrappedRoundTripper()
	}
}

// healthRecorder records in the Cache whether each request got an answer and, with failFast,
// does not send requests to a cluster known to be down.
type healthRecorder struct {
	rt       http.RoundTripper
	cache    *Cache
	cluster  string
	host     string
	failFast bool
}

func (h *healthRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if h.failFast {
		if err := h.cache.refuseRequest(h.cluster); err != nil {
			return nil, err
		}
	}
	resp, err := h.rt.RoundTrip(req)
	switch {
	case err == nil:
		h.cache.recordSuccess(h.cluster)
	case errors.Is(req.Context().Err(), context.Canceled):
		// The caller gave up (shutdown): that says nothing about the cluster.
	default:
		h.cache.recordFailure(h.cluster, unreachable(h.host, err).Error())
	}
	return resp, err
}

// WrappedRoundTripper lets client-go's transport helpers see through the recorder.
func (h *healthRecorder) WrappedRoundTripper() http.RoundTripper { return h.rt }

// IsUnreachable reports whether err means a cluster did not answer: a connection that could not be
// opened, a timeout, a connection closed mid-answer, or a cluster known to be down. An error the
// API server answered with (a status) is not one.
func IsUnreachable(err error) bool {
	if err == nil {
		return false
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Reason == ferryv1.ClusterUnreachableReason
	}
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
