package gitsource

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	"golang.org/x/net/proxy"
)

// Limits bound one ReadFile or Checkout: how long it may take and how much the server may send.
// A zero field takes the operation's default (ReadFileLimits, CheckoutLimits).
type Limits struct {
	// Timeout bounds the whole operation, from connecting to the last byte of the pack: a server
	// that trickles a byte now and then is cut off here.
	Timeout time.Duration
	// StallTimeout fails the operation when the server sent nothing for this long: a server that
	// accepts the connection and never answers is cut off here.
	StallTimeout time.Duration
	// MaxFetchBytes caps what is read from the server: the refs it advertises and the pack,
	// counted on the wire (after HTTP content decoding).
	MaxFetchBytes int64
	// MaxInflatedBytes caps what the pack's objects inflate to (plus a fixed overhead per object
	// for go-git's bookkeeping), checked from each object's header before the object is read.
	// Default 4 × MaxFetchBytes.
	MaxInflatedBytes int64
}

// ReadFileLimits are ReadFile's defaults. ReadFile fetches the commit and its trees without blobs
// (a partial fetch, where the server allows one) and then the one file: well under a MiB for most
// repositories. 16 MiB leaves room for the refs a large GitLab project advertises (every merge
// request has one: 100,000 of them take about 8 MiB) plus the trees of a repository of some
// 300,000 files, or a whole small repository from a server without partial fetches. What the
// objects inflate to is held in memory: the same 16 MiB keeps a few concurrent reads well within
// the manager's 512 MiB.
var ReadFileLimits = Limits{Timeout: time.Minute, StallTimeout: 20 * time.Second, MaxFetchBytes: 16 << 20, MaxInflatedBytes: 16 << 20}

// CheckoutLimits are Checkout's defaults: the whole tree of one commit, written to disk, in a
// pipeline step whose own timeout bounds it too. Source code inflates 3-5×.
var CheckoutLimits = Limits{Timeout: 15 * time.Minute, StallTimeout: time.Minute, MaxFetchBytes: 2 << 30, MaxInflatedBytes: 8 << 30}

// withDefaults fills l's zero fields from def. MaxInflatedBytes follows MaxFetchBytes in def's
// proportion when only the latter is set.
func (l Limits) withDefaults(def Limits) Limits {
	if l.Timeout <= 0 {
		l.Timeout = def.Timeout
	}
	if l.StallTimeout <= 0 {
		l.StallTimeout = def.StallTimeout
	}
	if l.StallTimeout > l.Timeout {
		l.StallTimeout = l.Timeout
	}
	if l.MaxInflatedBytes <= 0 {
		if l.MaxFetchBytes > 0 {
			l.MaxInflatedBytes = l.MaxFetchBytes * max(1, def.MaxInflatedBytes/def.MaxFetchBytes)
		} else {
			l.MaxInflatedBytes = def.MaxInflatedBytes
		}
	}
	if l.MaxFetchBytes <= 0 {
		l.MaxFetchBytes = def.MaxFetchBytes
	}
	return l
}

// ErrTimeout says the git server did not answer, or did not finish, in time.
var ErrTimeout = errors.New("timed out")

// ErrTooLarge says the git server sent more than a limit allows.
var ErrTooLarge = errors.New("too large")

// limitError is a limit that ended an operation; its message names the server and the limit.
type limitError struct {
	kind error // ErrTimeout or ErrTooLarge
	msg  string
}

func (e *limitError) Error() string { return e.msg }
func (e *limitError) Unwrap() error { return e.kind }

func limitErrorf(kind error, format string, args ...any) *limitError {
	return &limitError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// Dialing and TLS are bounded on their own, within StallTimeout.
const (
	dialTimeout         = 15 * time.Second
	tlsHandshakeTimeout = 15 * time.Second
	idleConnTimeout     = 90 * time.Second
	// git http-backend sends its headers before upload-pack starts counting objects.
	responseHeaderTimeout = time.Minute
)

// httpTransport is shared by every fetch, so that connections to a server are reused. Each
// operation wraps it to count and time what it reads.
var httpTransport = sync.OnceValue(func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.TLSHandshakeTimeout = tlsHandshakeTimeout
	t.IdleConnTimeout = idleConnTimeout
	t.ExpectContinueTimeout = time.Second
	// A backstop: each operation's StallTimeout (usually shorter) covers the wait for headers.
	t.ResponseHeaderTimeout = responseHeaderTimeout
	return t
})

// wire is one operation's connection to the server: it cuts the operation off when the server
// stalls, takes too long or sends too much, and remembers why.
type wire struct {
	host   string
	limits Limits
	read   atomic.Int64
	// stall runs while the operation expects bytes from the server, not while it parses what
	// arrived or writes a checkout.
	stall     *time.Timer
	expecting atomic.Bool
	cancel    context.CancelCauseFunc
	// id names the wire to the SSH dialer (see sshDialerScheme).
	id string
}

// newWire starts the operation's clocks. The returned context ends when the operation must stop;
// its cause says why. stop releases the wire.
func newWire(parent context.Context, host string, l Limits) (*wire, context.Context, func()) {
	w := &wire{host: host, limits: l}
	ctx, cancel := context.WithCancelCause(parent)
	w.cancel = cancel
	ctx, cancelTimeout := context.WithTimeoutCause(ctx, l.Timeout,
		limitErrorf(ErrTimeout, "the git server %s did not send everything within %s (timeout)", host, l.Timeout))
	w.stall = time.AfterFunc(l.StallTimeout, func() {
		cancel(limitErrorf(ErrTimeout, "the git server %s sent nothing for %s (stall timeout)", host, l.StallTimeout))
	})
	w.expecting.Store(true)
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	w.id = hex.EncodeToString(b)
	wires.Store(w.id, &wireRef{w: w, ctx: ctx})
	return w, ctx, func() {
		wires.Delete(w.id)
		w.stall.Stop()
		cancelTimeout()
		cancel(context.Canceled)
	}
}

// expect starts the stall clock: the operation waits for the server.
func (w *wire) expect() {
	w.expecting.Store(true)
	w.stall.Reset(w.limits.StallTimeout)
}

// idle stops the stall clock: the operation has what it asked the server for.
func (w *wire) idle() {
	w.expecting.Store(false)
	w.stall.Stop()
}

// received counts n bytes from the server: the stall clock starts again, and the operation ends
// when the total passes the limit.
func (w *wire) received(n int) error {
	if n <= 0 {
		return nil
	}
	if w.expecting.Load() {
		w.stall.Reset(w.limits.StallTimeout)
	}
	if total := w.read.Add(int64(n)); total > w.limits.MaxFetchBytes {
		err := limitErrorf(ErrTooLarge, "the git server %s sent more than %s, the limit", w.host, formatBytes(w.limits.MaxFetchBytes))
		w.cancel(err)
		return err
	}
	return nil
}

// transport is a go-git transport of this operation only: nothing is installed globally.
func (w *wire) transport(ep *transport.Endpoint) (transport.Transport, error) {
	switch ep.Protocol {
	case "http", "https":
		c := &http.Client{
			Transport: &wireRoundTripper{w: w, base: httpTransport()},
			// A redirect would fetch from a URL other than the Project's.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		return githttp.NewClientWithOptions(c, &githttp.ClientOptions{RedirectPolicy: githttp.NoFollowRedirects}), nil
	case "ssh":
		// go-git's SSH transport dials with no deadline and cannot be given a dialer; it can be
		// given a proxy, and golang.org/x/net/proxy lets a package register its own proxy scheme.
		// The "proxy" is this wire: it dials the server directly and watches the connection.
		ep.Proxy = transport.ProxyOptions{URL: sshDialerScheme + "://" + w.id}
		return gitssh.NewClient(nil), nil
	}
	return nil, fmt.Errorf("no transport for %s URLs", ep.Protocol)
}

// wireRoundTripper times and counts every HTTP response body of one operation.
type wireRoundTripper struct {
	w    *wire
	base *http.Transport
}

func (rt *wireRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	res.Body = &wireBody{w: rt.w, rc: res.Body}
	return res, nil
}

type wireBody struct {
	w  *wire
	rc io.ReadCloser
}

func (b *wireBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if lerr := b.w.received(n); lerr != nil {
		return 0, lerr
	}
	return n, err
}

func (b *wireBody) Close() error { return b.rc.Close() }

// sshDialerScheme is the proxy scheme that routes go-git's SSH connections through a wire.
const sshDialerScheme = "ferry-wire"

type wireRef struct {
	w   *wire
	ctx context.Context
}

// wires are the operations in progress, by id, for the SSH dialer.
var wires sync.Map

func init() {
	proxy.RegisterDialerType(sshDialerScheme, func(u *url.URL, _ proxy.Dialer) (proxy.Dialer, error) {
		ref, ok := wires.Load(u.Host)
		if !ok {
			return nil, errors.New("the fetch has ended")
		}
		return sshDialer{ref.(*wireRef)}, nil
	})
}

// sshDialer dials the SSH server directly, bound to the operation's context, and counts and
// times what the server sends.
type sshDialer struct{ ref *wireRef }

func (d sshDialer) Dial(network, addr string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, addr)
}

func (d sshDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(d.ref.ctx, cancel)
	defer stop()
	conn, err := (&net.Dialer{Timeout: dialTimeout}).DialContext(ctx, network, addr)
	if err != nil {
		if cause := context.Cause(d.ref.ctx); cause != nil {
			return nil, cause
		}
		return nil, err
	}
	wc := &wireConn{Conn: conn, w: d.ref.w}
	// Closing the connection is what unblocks go-git when the operation ends: its SSH handshake
	// does not take a context.
	context.AfterFunc(d.ref.ctx, func() { _ = conn.Close() })
	return wc, nil
}

type wireConn struct {
	net.Conn
	w *wire
}

func (c *wireConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if lerr := c.w.received(n); lerr != nil {
		_ = c.Close()
		return 0, lerr
	}
	return n, err
}

// formatBytes writes a size the way the flags take it.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}
