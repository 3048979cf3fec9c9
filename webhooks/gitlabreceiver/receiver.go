// Package gitlabreceiver is Ferry's GitLab webhook receiver: POST /hooks/gitlab authenticates a delivery
// against the webhook Secret of the Project it names, decides whether the event builds (tracked
// branch or tag, merge request opened or updated with new commits, not a deletion), and creates
// the Build. Nothing else happens in the request: the Build controller does the work, so the answer
// comes in milliseconds, far within GitLab's 10 s. The Build's name derives from the Project, ref
// and commit, so retries, redeliveries, parallel duplicates and later deliveries of the same commit
// (a re-push, GitLab's "Test" button) make one Build; the answer tells a redelivery ("already
// received") from a reuse ("reused").
//
// A merge request from a fork, or by a user without the Developer role (read through GitLab's
// members API), does not build until a member comments /ok-to-test for its commit. Comments on
// merge requests (Note Hook) carry commands — /retest, /retest force, /cancel, /ok-to-test — that
// run in the background (commands.go: roles from GitLab, one reply note per comment, retried on
// GitLab's 429 and 5xx without acting twice).
//
// Every answer to an event Ferry does not build is a 2xx with a short reason, because GitLab
// disables hooks that keep failing; 4xx is kept for a wrong token (401), an oversized body (413),
// a body that did not arrive in time (408) and a body that is not a GitLab event (400); 503 says
// the receiver is reading as many bodies as it may (see body.go for how reads are bounded).
package gitlabreceiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

// Path is where the receiver accepts deliveries.
const Path = "/hooks/gitlab"

// DefaultMaxBodyBytes is GitLab's own limit for webhook bodies (REQUEST_BODY_SIZE_LIMIT, 25 MiB):
// GitLab sends nothing larger, and a lower cap could refuse real deliveries. Real payloads are 1 to
// 13 KB and a push carries at most its 20 newest commits, but their messages and changed-file lists
// are unbounded, and a merge request hook carries its description (up to 1,048,576 characters, up
// to 4 bytes each, 6 when JSON escapes them) up to three times: itself and the previous and current
// values in changes. What a large body costs is bounded by the body budget (BodyMemoryBytes), not
// by this cap, and nothing is read past the envelope before the token matches.
const DefaultMaxBodyBytes = 25 << 20

// Options configure the receiver.
type Options struct {
	// Addr is the listen address, for example ":8090" or "127.0.0.1:0".
	Addr string
	// MaxBodyBytes caps the body; a larger one is refused with 413 before it is read. Default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxConcurrentReads bounds the deliveries that read their envelope (and the bodies that fit
	// within its limit) at once; a delivery waits up to PrefixTimeout for a slot, else it is
	// answered 503. Default DefaultMaxConcurrentReads.
	MaxConcurrentReads int
	// PrefixTimeout bounds reading the envelope, before the token is checked (and a body that fits
	// within the envelope's limit). Default DefaultPrefixTimeout.
	PrefixTimeout time.Duration
	// BodyMemoryBytes is the byte budget of authenticated bodies larger than the envelope's limit:
	// each holds twice its size (the body and what is decoded from it) while it is read and
	// decoded, and waits up to RequestTimeout for room, else it is answered 503. Default
	// DefaultBodyMemoryBytes, or twice MaxBodyBytes when that is more; a smaller budget than that
	// is refused, since a body of the maximum size could never be read.
	BodyMemoryBytes int64
	// SecretTTL is how long a webhook Secret is used before it is read again. Default 10 s. A
	// token that does not match a cached Secret makes it re-read at once (at most once a second),
	// so a rotation takes effect immediately; a revoked token stops working after SecretTTL.
	SecretTTL time.Duration
	// SignatureTolerance bounds how old (or new) a signed delivery's webhook-timestamp may be.
	// Default 5 minutes, as the Standard Webhooks specification suggests.
	SignatureTolerance time.Duration
	// RequestTimeout bounds the API calls of one delivery. Default 8 s, within GitLab's 10 s.
	RequestTimeout time.Duration
	// NewGitLabAPI makes the GitLab clients that merge request commands and the /ok-to-test check
	// use. Default: gitlab.New with production retries.
	NewGitLabAPI func(baseURL, token string) (gitlab.API, error)
}

// The receiver finds Projects in every namespace, reads their webhook Secrets one at a time, and
// creates Builds.
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=create;get;list;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// Receiver is a manager Runnable serving POST /hooks/gitlab on its own listener. Every replica runs
// it: it needs no leader.
type Receiver struct {
	opts   Options
	cache  cache.Cache
	reader client.Reader
	// apiReader reads Builds (to reuse one, to answer a command) without a cache.
	apiReader client.Reader
	// createBuild POSTs a Build to the API server.
	createBuild func(context.Context, *ferryv1.Build) error
	secrets     *secretCache
	log         logr.Logger
	now         func() time.Time

	limits  *limits
	addr    atomic.Pointer[string]
	bufPool sync.Pool

	// patchBuild patches a Build (/cancel).
	patchBuild func(context.Context, client.Object, client.Patch, ...client.PatchOption) error
	// deletePreview deletes the Preview of a merged or closed merge request; nil turns that off.
	deletePreview func(context.Context, client.Object, ...client.DeleteOption) error
	// newAPI makes GitLab clients (Options.NewGitLabAPI).
	newAPI func(baseURL, token string) (gitlab.API, error)
	// jobs are the merge request commands running in the background, jobKeys their keys.
	jobs        sync.WaitGroup
	jobKeys     sync.Map
	jobsCtx     context.Context
	stopJobsCtx context.CancelFunc
}

// New registers the receiver's Project index with the manager and returns the receiver; add it
// with mgr.Add.
func New(mgr ctrl.Manager, opts Options) (*Receiver, error) {
	opts, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &ferryv1.Project{}, projectIndex, projectIndexKeys); err != nil {
		return nil, fmt.Errorf("failed to index Projects by GitLab project: %w", err)
	}
	create, err := buildCreator(mgr.GetConfig(), mgr.GetScheme())
	if err != nil {
		return nil, err
	}
	r := newReceiver(opts, mgr.GetClient(), mgr.GetAPIReader(), create, mgr.GetLogger().WithName("gitlab-receiver"))
	r.cache = mgr.GetCache()
	r.patchBuild = mgr.GetClient().Patch
	r.deletePreview = mgr.GetClient().Delete
	return r, nil
}

// withDefaults fills in the options' defaults and checks them.
func withDefaults(opts Options) (Options, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxConcurrentReads <= 0 {
		opts.MaxConcurrentReads = DefaultMaxConcurrentReads
	}
	if opts.PrefixTimeout <= 0 {
		opts.PrefixTimeout = DefaultPrefixTimeout
	}
	switch need := bodyCost(opts.MaxBodyBytes); {
	case opts.BodyMemoryBytes <= 0:
		opts.BodyMemoryBytes = max(DefaultBodyMemoryBytes, need)
	case opts.BodyMemoryBytes < need:
		return opts, fmt.Errorf("the receiver's body memory budget of %d bytes cannot hold one body of the maximum size (%d bytes, which holds %d while it is read and decoded)",
			opts.BodyMemoryBytes, opts.MaxBodyBytes, need)
	}
	if opts.SecretTTL <= 0 {
		opts.SecretTTL = 10 * time.Second
	}
	if opts.SignatureTolerance <= 0 {
		opts.SignatureTolerance = 5 * time.Minute
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 8 * time.Second
	}
	return opts, nil
}

// newReceiver returns a receiver that finds Projects with reader (which must have the Project
// index), reads webhook Secrets with apiReader and creates Builds with create.
func newReceiver(opts Options, reader, apiReader client.Reader, create func(context.Context, *ferryv1.Build) error, log logr.Logger) *Receiver {
	newAPI := opts.NewGitLabAPI
	if newAPI == nil {
		newAPI = func(baseURL, token string) (gitlab.API, error) { return gitlab.New(baseURL, token, gitlab.Options{}) }
	}
	jobsCtx, stop := context.WithCancel(context.Background())
	return &Receiver{
		newAPI:      newAPI,
		jobsCtx:     jobsCtx,
		stopJobsCtx: stop,
		opts:        opts,
		reader:      reader,
		apiReader:   apiReader,
		createBuild: create,
		secrets:     newSecretCache(apiReader, opts.SecretTTL),
		limits:      newLimits(opts),
		log:         log,
		now:         time.Now,
	}
}

// buildCreator returns a function that POSTs Builds. Builds are created at webhook speed: a client
// of its own, without client-side rate limiting (the API server's priority and fairness protects
// it), so that a burst of pushes is not queued behind the controllers' requests; and the API
// server's answer is only checked, not decoded, which is most of a create's cost on this side.
func buildCreator(base *rest.Config, scheme *runtime.Scheme) (func(context.Context, *ferryv1.Build) error, error) {
	cfg := rest.CopyConfig(base)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		cfg.QPS = -1
	}
	cfg.GroupVersion = &ferryv1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.ContentType = runtime.ContentTypeJSON
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("failed to create the receiver's API client: %w", err)
	}
	return func(ctx context.Context, b *ferryv1.Build) error {
		b.APIVersion, b.Kind = ferryv1.GroupVersion.String(), "Build"
		body, err := json.Marshal(b)
		if err != nil {
			return err
		}
		return rc.Post().Namespace(b.Namespace).Resource("builds").Body(body).Do(ctx).Error()
	}, nil
}

// NeedLeaderElection is false: every replica answers webhooks.
func (r *Receiver) NeedLeaderElection() bool { return false }

// Addr is the address the receiver listens on, "" until it does.
func (r *Receiver) Addr() string {
	if a := r.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// ReadyCheck fails until the receiver listens, for /readyz.
func (r *Receiver) ReadyCheck(*http.Request) error {
	if r.Addr() == "" {
		return errors.New("the GitLab receiver is not listening yet")
	}
	return nil
}

// Start waits for the Project cache, listens, and serves until ctx ends.
func (r *Receiver) Start(ctx context.Context) error {
	if !r.cache.WaitForCacheSync(ctx) {
		return errors.New("the GitLab receiver's Project cache did not sync")
	}
	l, err := net.Listen("tcp", r.opts.Addr)
	if err != nil {
		return fmt.Errorf("failed to listen for GitLab webhooks on %s: %w", r.opts.Addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, r)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       bodyReadTimeout, // shortened to PrefixTimeout until the token is checked
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    1 << 20,
		// Not ctx itself: when the manager stops (a rolling upgrade), deliveries already begun
		// are answered and their Builds recorded while the server drains, instead of failing
		// with the manager's context.
		BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	addr := l.Addr().String()
	r.addr.Store(&addr)
	r.log.Info("Serving GitLab webhooks", "address", addr, "path", Path)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("the GitLab receiver stopped: %w", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		// Deliveries still arriving after 10 s (a client that stalls) are cut off; GitLab may
		// redeliver them.
		_ = srv.Close()
		if !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("failed to shut the GitLab receiver down: %w", err)
		}
		r.log.Info("Closed deliveries still being received 10s after the receiver began to stop")
	}
	r.stopJobs(10 * time.Second)
	return nil
}

// answer is the JSON body of every response. GitLab stores the first 8 KB of it in the hook's
// log, where people read it: keep it short.
type answer struct {
	Result  string   `json:"result"`
	Builds  []string `json:"builds,omitempty"`
	Reason  string   `json:"reason,omitempty"`
	Message string   `json:"message,omitempty"`
	Error   string   `json:"error,omitempty"`
}

// Results reported in answers and metrics.
const (
	resultCreated      = "created"
	resultDuplicate    = "duplicate"
	resultReused       = "reused"
	resultAccepted     = "accepted"
	resultIgnored      = "ignored"
	resultUnauthorized = "unauthorized"
	resultTooLarge     = "too_large"
	resultTimeout      = "timeout"
	resultBadRequest   = "bad_request"
	resultBusy         = "busy"
	resultError        = "error"
)

func (r *Receiver) reply(w http.ResponseWriter, status int, a answer) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(a)
}

// ServeHTTP handles one delivery.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	d := &delivery{}
	status, a := r.handle(w, req, start, d)
	if d.body != nil {
		r.done(d.body)
	}
	if !d.complete && req.ContentLength != 0 {
		// Do not let the server read the rest of the body to keep the connection.
		w.Header().Set("Connection", "close")
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(r.opts.PrefixTimeout.Round(time.Second)/time.Second)+1))
	}
	r.reply(w, status, a)
	observe(req.Header.Get("X-Gitlab-Event"), a.Result, time.Since(start))
}

// delivery is what handle read of a delivery's body.
type delivery struct {
	body *body
	// complete says whether the whole body was read.
	complete bool
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request, start time.Time, d *delivery) (int, answer) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, answer{Result: resultBadRequest, Error: "only POST is accepted"}
	}
	// Authentication needs the beginning of the body (the project is named in it), but a delivery
	// without a token is refused before a byte of it is read.
	token := req.Header.Get("X-Gitlab-Token")
	if token == "" {
		return http.StatusUnauthorized, answer{Result: resultUnauthorized, Error: errUnauthorized.Error()}
	}
	header := req.Header.Get("X-Gitlab-Event")
	if !mayBuild(header) {
		// Nothing to build, so nothing to read or authenticate: the same answer whatever the body.
		return http.StatusOK, answer{Result: resultIgnored, Reason: ignoredEventReason(header, nil)}
	}
	if req.ContentLength > r.opts.MaxBodyBytes {
		return http.StatusRequestEntityTooLarge, answer{Result: resultTooLarge, Error: fmt.Sprintf("the body is larger than %d bytes", r.opts.MaxBodyBytes)}
	}
	release, err := r.acquireSlot(req.Context())
	if err != nil {
		return http.StatusServiceUnavailable, answer{Result: resultBusy, Error: err.Error()}
	}
	env, b, err := r.readEnvelope(w, req, header)
	if err != nil {
		release()
		return bodyErrorAnswer(err, r.opts.MaxBodyBytes)
	}
	b.release = release
	d.body = b
	d.complete = b.complete
	kind := eventKind(header, env)
	isNote := strings.EqualFold(header, noteHook)
	if kind == "" && !isNote {
		// A system hook event Ferry does not build: nothing to authenticate either.
		return http.StatusOK, answer{Result: resultIgnored, Reason: ignoredEventReason(header, env)}
	}
	key := env.project()
	if key.path == "" && key.id == 0 {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: "the payload names no project (project.path_with_namespace or project_id)"}
	}

	ctx, cancel := context.WithTimeout(req.Context(), r.opts.RequestTimeout)
	defer cancel()
	projects, lookupErr := findProjects(ctx, r.reader, req.Header.Get("X-Gitlab-Instance"), key)
	if lookupErr != nil {
		r.log.Error(lookupErr, "Failed to look up the Projects of a delivery")
		return http.StatusServiceUnavailable, answer{Result: resultError, Error: "Ferry could not look up its Projects; GitLab may redeliver"}
	}
	candidates, authErr := r.matchToken(ctx, token, projects)
	if authErr != nil {
		r.log.Error(authErr, "Failed to read a webhook Secret")
		return http.StatusServiceUnavailable, answer{Result: resultError, Error: "Ferry could not read the webhook Secret; GitLab may redeliver"}
	}
	if len(candidates) == 0 {
		r.log.V(1).Info("Refused an unauthenticated delivery", "project", key.path, "projectID", key.id, "event", header)
		return http.StatusUnauthorized, answer{Result: resultUnauthorized, Error: errUnauthorized.Error()}
	}

	// The token matches: the rest of the body may be read.
	if err := r.readRest(w, req, start, b); err != nil {
		return bodyErrorAnswer(err, r.opts.MaxBodyBytes)
	}
	d.complete = true
	payload := b.bytes()
	authenticated, err := r.verifySignatures(req.Header, payload, candidates)
	if err != nil {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: err.Error()}
	}
	if len(authenticated) == 0 {
		return http.StatusUnauthorized, answer{Result: resultUnauthorized, Error: errUnauthorized.Error()}
	}
	full, err := decodeEnvelope(payload)
	if err != nil {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: err.Error()}
	}
	if full.project() != key {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: "the payload names its project twice, differently (project and project_id must name one project)"}
	}
	if isNote {
		n, err := decodeNote(full, payload)
		// The comment is decoded (into strings of its own): the body goes back to the pool.
		r.done(b)
		return r.handleNote(n, err, authenticated)
	}
	if kind = eventKind(header, full); kind == "" {
		return http.StatusOK, answer{Result: resultIgnored, Reason: ignoredEventReason(header, full)}
	}
	var ended int64
	if kind == ferryv1.TriggerMergeRequest && r.deletePreview != nil {
		ended = endedMergeRequest(payload)
	}
	trig, err := decodeTrigger(header, kind, full, payload)
	if ended > 0 {
		r.done(b)
		notBuilt := ""
		if ig := (*ignored)(nil); errors.As(err, &ig) {
			notBuilt = ig.reason
		}
		return r.endPreviews(ctx, ended, notBuilt, authenticated)
	}
	// What the Build needs is decoded: the body and what it holds go back before the API calls.
	r.done(b)
	var bad *payloadError
	if errors.As(err, &bad) {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: bad.msg}
	}
	var ig *ignored
	if errors.As(err, &ig) {
		return http.StatusOK, answer{Result: resultIgnored, Reason: ig.reason}
	}
	if err := validRef(trig.ref); err != nil {
		return http.StatusOK, answer{Result: resultIgnored, Reason: "Ferry cannot build this ref: " + err.Error()}
	}
	buildCtx, cancelBuild := context.WithTimeout(req.Context(), r.opts.RequestTimeout)
	defer cancelBuild()
	return r.createBuilds(buildCtx, req.Header, trig, authenticated)
}

// bodyErrorAnswer is the answer to a body that could not be read or is not a usable payload.
func bodyErrorAnswer(err error, maxBody int64) (int, answer) {
	switch {
	case errors.Is(err, errTooLarge):
		return http.StatusRequestEntityTooLarge, answer{Result: resultTooLarge, Error: fmt.Sprintf("the body is larger than %d bytes", maxBody)}
	case errors.Is(err, errBusy):
		return http.StatusServiceUnavailable, answer{Result: resultBusy, Error: err.Error()}
	case errors.Is(err, errReadTimeout):
		return http.StatusRequestTimeout, answer{Result: resultTimeout, Error: err.Error()}
	}
	return http.StatusBadRequest, answer{Result: resultBadRequest, Error: err.Error()}
}

// release returns a buffer to the pool unless a large body grew it: those are rare and should not
// stay in memory.
func (r *Receiver) release(buf *bytes.Buffer) {
	if buf.Cap() <= 2*prefixLimit {
		r.bufPool.Put(buf)
	}
}

// candidate is a Project whose webhook Secret the delivery's token matches.
type candidate struct {
	project ferryv1.Project
	// signingKey is the Secret's signing key, nil when it has none.
	signingKey []byte
}

// matchToken keeps the Projects whose webhook Secret the delivery's token matches. Only a failure
// to read a Secret is an error.
func (r *Receiver) matchToken(ctx context.Context, token string, projects []ferryv1.Project) ([]candidate, error) {
	var out []candidate
	for i := range projects {
		p := &projects[i]
		key := types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.GitLab.WebhookSecretRef.Name}
		secret, fresh, err := r.secrets.get(ctx, key, false)
		if err != nil {
			return nil, err
		}
		if !fresh && (secret.problem != "" || !secret.tokenMatches(token)) {
			// Perhaps the Secret was just rotated or created: read it again (rate-limited).
			if secret, _, err = r.secrets.get(ctx, key, true); err != nil {
				return nil, err
			}
		}
		if secret.problem != "" {
			r.log.Info("A Project's webhook Secret cannot authenticate deliveries", "project", klog.KObj(p), "problem", secret.problem)
			continue
		}
		if secret.tokenMatches(token) {
			out = append(out, candidate{project: *p, signingKey: secret.signingKey})
		}
	}
	return out, nil
}

// authenticated is a Project a delivery is authenticated for.
type authenticated struct {
	project ferryv1.Project
	// deliveryID names the delivery for this Project's Build: the signed webhook-id when the
	// Project's Secret has a signing token, else the Idempotency-Key (possibly empty).
	deliveryID string
}

// verifySignatures keeps the candidates whose Secret has no signing token, or whose signing token
// signed the whole body. A signed delivery is named by its webhook-id, which the signature
// covers, never by the Idempotency-Key, which it does not: GitLab sends the same value in both, so
// a delivery where they differ was altered (a captured delivery replayed under a new
// Idempotency-Key to make a second Build) and is refused.
func (r *Receiver) verifySignatures(h http.Header, body []byte, candidates []candidate) ([]authenticated, error) {
	var out []authenticated
	for _, c := range candidates {
		if c.signingKey == nil {
			out = append(out, authenticated{project: c.project, deliveryID: h.Get("Idempotency-Key")})
			continue
		}
		if err := verifySignature(c.signingKey, h, body, r.now(), r.opts.SignatureTolerance); err != nil {
			r.log.Info("Refused a delivery with a bad webhook signature", "project", klog.KObj(&c.project), "problem", err.Error())
			continue
		}
		id := h.Get("webhook-id")
		if key := h.Get("Idempotency-Key"); key != "" && key != id {
			r.log.Info("Refused a signed delivery whose Idempotency-Key is not its webhook-id", "project", klog.KObj(&c.project))
			return nil, errors.New("the Idempotency-Key header differs from the signed webhook-id; GitLab sends the same value in both")
		}
		out = append(out, authenticated{project: c.project, deliveryID: id})
	}
	return out, nil
}

// mayBuild says whether deliveries with this X-Gitlab-Event header can build; only system hooks
// need their body's event_name to tell.
func mayBuild(header string) bool {
	for _, h := range []string{pushHook, tagPushHook, mergeRequestHook, systemHook, noteHook} {
		if strings.EqualFold(header, h) {
			return true
		}
	}
	return false
}

// ignoredEventReason says why an event kind is not built.
func ignoredEventReason(header string, env *envelope) string {
	switch {
	case header == "":
		return "no X-Gitlab-Event header: not a GitLab webhook Ferry builds from"
	case strings.EqualFold(header, systemHook) && env != nil:
		name := env.EventName
		if name == "" {
			name = env.ObjectKind
		}
		return fmt.Sprintf("system hook event %q is not built (only push and tag_push are)", name)
	default:
		return fmt.Sprintf("%q events are not built (Ferry builds Push Hook, Tag Push Hook and Merge Request Hook, and runs commands of Note Hook)", header)
	}
}

// createBuilds creates one Build per Project that tracks the trigger. A Build of the commit on the
// ref that already exists answers the delivery: "already received" when this very delivery made it
// (a retry or "Resend Request"), else "reused".
func (r *Receiver) createBuilds(ctx context.Context, h http.Header, t *trigger, projects []authenticated) (int, answer) {
	var created, duplicates, reused, reasons []string
	for i := range projects {
		p := &projects[i].project
		if err := tracked(p, t); err != nil {
			reasons = append(reasons, reasonFor(p, err.Error(), len(projects)))
			continue
		}
		delivery := projects[i].deliveryID
		b := newBuild(p, t, delivery)
		nn := b.Namespace + "/" + b.Name
		if t.kind == ferryv1.TriggerMergeRequest {
			hold, err := r.needsOKToTest(ctx, p, t)
			if err != nil {
				r.log.Error(err, "Failed to decide whether a merge request may build", "project", klog.KObj(p))
				return http.StatusServiceUnavailable, answer{Result: resultError, Builds: created,
					Error: "Ferry could not read the merge request author's role from GitLab; GitLab may redeliver (nothing is built twice)"}
			}
			if hold != "" {
				exists, err := r.buildExists(ctx, b)
				if err != nil {
					return http.StatusServiceUnavailable, answer{Result: resultError, Builds: created, Error: "Ferry could not read its Builds; GitLab may redeliver"}
				}
				if !exists {
					r.awaitOKToTest(p, t, hold)
					reasons = append(reasons, reasonFor(p, hold, len(projects)))
					continue
				}
				// A member said /ok-to-test for this commit: its Build is there.
			}
		}
		err := r.createBuild(ctx, b)
		switch {
		case err == nil:
			created = append(created, nn)
			r.log.Info("Build created", "build", klog.KObj(b), "kind", t.kind, "ref", t.ref, "revision", t.revision,
				"delivery", delivery, "webhook", h.Get("X-Gitlab-Webhook-UUID"))
		case apierrors.IsAlreadyExists(err):
			same, getErr := r.sameDelivery(ctx, b)
			if getErr != nil {
				r.log.Error(getErr, "Failed to read an existing Build", "build", klog.KObj(b))
			}
			if same || getErr != nil {
				duplicates = append(duplicates, nn)
				r.log.V(1).Info("Delivery already received", "build", klog.KObj(b), "delivery", delivery)
			} else {
				reused = append(reused, nn)
				r.log.Info("Build reused: its commit already has a Build on the ref", "build", klog.KObj(b), "delivery", delivery)
			}
		case apierrors.IsInvalid(err), apierrors.IsBadRequest(err):
			r.log.Error(err, "The API server refused a Build", "build", klog.KObj(b))
			reasons = append(reasons, reasonFor(p, "the API server refused the Build: "+err.Error(), len(projects)))
		default:
			r.log.Error(err, "Failed to create a Build", "build", klog.KObj(b))
			return http.StatusServiceUnavailable, answer{Result: resultError, Builds: created,
				Error: "Ferry could not record the Build; GitLab may redeliver (nothing is built twice)"}
		}
	}
	switch {
	case len(created) > 0:
		return http.StatusCreated, answer{Result: resultCreated, Builds: append(append(created, reused...), duplicates...), Reason: strings.Join(reasons, "; ")}
	case len(reused) > 0:
		return http.StatusOK, answer{Result: resultReused, Builds: append(reused, duplicates...), Reason: strings.Join(reasons, "; "),
			Message: "commit " + t.revision[:7] + " already has a Build on " + t.ref + ": reused, not built again (/retest force on a merge request, or ferry build rerun, builds it again)"}
	case len(duplicates) > 0:
		return http.StatusOK, answer{Result: resultDuplicate, Builds: duplicates, Message: "already received"}
	}
	return http.StatusOK, answer{Result: resultIgnored, Reason: strings.Join(reasons, "; ")}
}

// sameDelivery says whether the existing Build named like b was made by the delivery b comes from.
func (r *Receiver) sameDelivery(ctx context.Context, b *ferryv1.Build) (bool, error) {
	cur := &ferryv1.Build{}
	if err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(b), cur); err != nil {
		return false, err
	}
	return cur.Spec.Trigger.DeliveryID == b.Spec.Trigger.DeliveryID, nil
}

// buildExists says whether a Build named like b exists.
func (r *Receiver) buildExists(ctx context.Context, b *ferryv1.Build) (bool, error) {
	err := r.apiReader.Get(ctx, client.ObjectKeyFromObject(b), &ferryv1.Build{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// reasonFor prefixes a reason with the Project when a delivery matched several.
func reasonFor(p *ferryv1.Project, reason string, n int) string {
	if n == 1 {
		return reason
	}
	return p.Namespace + "/" + p.Name + ": " + reason
}
