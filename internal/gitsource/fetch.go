package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/format/packfile"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/sideband"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage"
)

// Host is the lower-case host name of a clone URL, without the port: what Ferry counts fetches
// by.
func Host(rawURL string) (string, error) {
	if err := ValidateURL(rawURL); err != nil {
		return "", err
	}
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return "", errors.New("the clone URL cannot be parsed")
	}
	return strings.ToLower(ep.Host), nil
}

// fetcher is one operation (ReadFile or Checkout) against one repository: one or two fetches of
// upload-pack sharing the operation's deadline, byte counts and inflated budget. It speaks to
// go-git's transports directly rather than through Remote.Fetch: that is where a per-operation
// HTTP client, a partial-fetch filter and a check of the pack before go-git parses it fit.
type fetcher struct {
	req    Request
	ep     *transport.Endpoint
	host   string
	auth   transport.AuthMethod
	wire   *wire
	ctx    context.Context
	budget int64

	sess transport.UploadPackSession
	adv  *packp.AdvRefs
	used bool // sess has served a fetch
}

// open validates the request and starts the operation's clocks; stop ends them.
func open(ctx context.Context, req Request, def Limits) (*fetcher, func(), error) {
	if err := req.validate(); err != nil {
		return nil, nil, err
	}
	auth, err := req.Credentials.authMethod(req.URL)
	if err != nil {
		return nil, nil, err
	}
	ep, err := transport.NewEndpoint(req.URL)
	if err != nil {
		return nil, nil, errors.New("the clone URL cannot be parsed")
	}
	host := ep.Host
	if ep.Port != 0 {
		host = net.JoinHostPort(ep.Host, strconv.Itoa(ep.Port))
	}
	l := req.Limits.withDefaults(def)
	w, ctx, stop := newWire(ctx, host, l)
	f := &fetcher{req: req, ep: ep, host: host, auth: auth, wire: w, ctx: ctx, budget: l.MaxInflatedBytes}
	return f, func() {
		if f.sess != nil {
			_ = f.sess.Close()
		}
		stop()
	}, nil
}

// session opens an upload-pack session and reads the server's refs and capabilities. An HTTP
// session is stateless and serves several fetches; an SSH one serves one.
func (f *fetcher) session() (transport.UploadPackSession, *packp.AdvRefs, error) {
	if f.sess != nil {
		if !f.used || f.ep.Protocol == "http" || f.ep.Protocol == "https" {
			return f.sess, f.adv, nil
		}
		_ = f.sess.Close()
		f.sess = nil
	}
	tr, err := f.wire.transport(f.ep)
	if err != nil {
		return nil, nil, err
	}
	sess, err := tr.NewUploadPackSession(f.ep, f.auth)
	if err != nil {
		return nil, nil, err
	}
	adv, err := sess.AdvertisedReferencesContext(f.ctx)
	if err != nil {
		_ = sess.Close()
		return nil, nil, err
	}
	f.sess, f.adv, f.used = sess, adv, false
	return sess, adv, nil
}

// capabilities reads the server's capabilities (the first session's).
func (f *fetcher) capabilities() (*capability.List, error) {
	_, adv, err := f.session()
	if err != nil {
		return nil, err
	}
	return adv.Capabilities, nil
}

// fetchPack asks for wants, at depth (0: all history) and with a partial-fetch filter (""
// for none), and stores the pack into sto through a packGuard.
func (f *fetcher) fetchPack(sto storage.Storer, wants []plumbing.Hash, depth int, filter packp.Filter) (err error) {
	f.wire.expect()
	defer f.wire.idle()
	sess, adv, err := f.session()
	if err != nil {
		return err
	}
	req := packp.NewUploadPackRequestFromCapabilities(adv.Capabilities)
	// Nothing is had locally that a thin pack's deltas could refer to.
	req.Capabilities.Delete(capability.ThinPack)
	if adv.Capabilities.Supports(capability.NoProgress) {
		if err := req.Capabilities.Set(capability.NoProgress); err != nil {
			return err
		}
	}
	if depth > 0 {
		req.Depth = packp.DepthCommits(depth)
		if err := req.Capabilities.Set(capability.Shallow); err != nil {
			return err
		}
	}
	if filter != "" {
		req.Filter = filter
		if err := req.Capabilities.Set(capability.Filter); err != nil {
			return err
		}
	}
	req.Wants = wants
	f.used = true
	res, err := sess.UploadPack(f.ctx, req)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := res.Close(); err == nil && cerr != nil && !errors.Is(cerr, io.EOF) {
			err = cerr
		}
	}()
	if depth > 0 && len(res.Shallows) > 0 {
		shallows, err := sto.Shallow()
		if err != nil {
			return err
		}
		if err := sto.SetShallow(append(shallows, res.Shallows...)); err != nil {
			return err
		}
	}
	var pack io.Reader = res
	switch {
	case req.Capabilities.Supports(capability.Sideband64k):
		pack = sideband.NewDemuxer(sideband.Sideband64k, res)
	case req.Capabilities.Supports(capability.Sideband):
		pack = sideband.NewDemuxer(sideband.Sideband, res)
	}
	guard := newPackGuard(pack, f.host, f.budget)
	// Once the pack has passed, go-git indexes it (and may take a while for a large one): that
	// is not the server stalling.
	guard.done = f.wire.idle
	err = packfile.UpdateObjectStorage(sto, guard)
	f.budget = guard.budget
	if guard.err != nil && errors.Is(guard.err, ErrTooLarge) {
		// go-git formats some errors with %s: the guard's own is the one to report.
		return guard.err
	}
	return err
}

// fetchCommit fetches the request's commit, with a filter, and returns it: by SHA at depth 1, or,
// when the server does not serve commits by SHA, the Build's ref at a bounded depth.
func (f *fetcher) fetchCommit(sto storage.Storer, filter packp.Filter) (*object.Commit, error) {
	caps, err := f.capabilities()
	if err != nil {
		return nil, err
	}
	hash := plumbing.NewHash(f.req.Revision)
	switch {
	case caps.Supports(capability.AllowReachableSHA1InWant) || caps.Supports(capability.AllowTipSHA1InWant):
		err = f.fetchPack(sto, []plumbing.Hash{hash}, 1, filter)
	case f.req.Ref != "":
		refs, rerr := f.adv.AllReferences()
		if rerr != nil {
			return nil, rerr
		}
		ref, rerr := storer.ResolveReference(refs, plumbing.ReferenceName(f.req.Ref))
		if rerr != nil {
			return nil, fmt.Errorf("failed to fetch %s: ref %s %w (the server does not serve commits by SHA)", f.req.URL, f.req.Ref, ErrNotFound)
		}
		err = f.fetchPack(sto, []plumbing.Hash{ref.Hash()}, fallbackDepth, filter)
	default:
		err = git.ErrExactSHA1NotSupported
	}
	if err != nil {
		return nil, err
	}
	commit, err := object.GetCommit(sto, hash)
	if err != nil {
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return nil, fmt.Errorf("commit %s of %s: %w (the server does not serve commits by SHA and it is not within %d commits of %s)", short(f.req.Revision), f.req.URL, ErrNotFound, fallbackDepth, f.req.Ref)
		}
		return nil, err
	}
	return commit, nil
}

// failed turns an operation's error into one that names the repository and, when a limit ended
// the operation, the limit, and never the credentials.
func (f *fetcher) failed(err error) error {
	var le *limitError
	if cause := context.Cause(f.ctx); errors.As(cause, &le) {
		return fmt.Errorf("failed to fetch %s: %w", f.req.URL, le)
	}
	if errors.Is(err, ErrTooLarge) {
		return fmt.Errorf("failed to fetch %s: %w", f.req.URL, err)
	}
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrAuth) {
		return err
	}
	return classify(f.req, err)
}
