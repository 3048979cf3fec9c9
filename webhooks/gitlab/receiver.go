// Package gitlab is Ferry's GitLab webhook receiver: POST /hooks/gitlab authenticates a delivery
// against the webhook Secret of the Project it names, decides whether the event builds (tracked
// branch or tag, merge request opened or updated with new commits, not a deletion), and creates
// the Build. Nothing else happens in the request: the Build controller does the work, so the answer
// comes in milliseconds, far within GitLab's 10 s. The Build's name derives from the delivery, so
// retries, redeliveries and parallel duplicates make one Build.
//
// Every answer to an event Ferry does not build is a 2xx with a short reason, because GitLab
// disables hooks that keep failing; 4xx is kept for a wrong token (401), an oversized body (413)
// and a body that is not a GitLab event (400).
package gitlab

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Path is where the receiver accepts deliveries.
const Path = "/hooks/gitlab"

// DefaultMaxBodyBytes is GitLab's own limit for webhook bodies (REQUEST_BODY_SIZE_LIMIT).
const DefaultMaxBodyBytes = 25 << 20

// Options configure the receiver.
type Options struct {
	// Addr is the listen address, for example ":8090" or "127.0.0.1:0".
	Addr string
	// MaxBodyBytes caps the body; a larger one is refused with 413 before it is read. Default
	// DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// SecretTTL is how long a webhook Secret is used before it is read again. Default 10 s. A
	// token that does not match a cached Secret makes it re-read at once (at most once a second),
	// so a rotation takes effect immediately; a revoked token stops working after SecretTTL.
	SecretTTL time.Duration
	// SignatureTolerance bounds how old (or new) a signed delivery's webhook-timestamp may be.
	// Default 5 minutes, as the Standard Webhooks specification suggests.
	SignatureTolerance time.Duration
	// RequestTimeout bounds the API calls of one delivery. Default 8 s, within GitLab's 10 s.
	RequestTimeout time.Duration
}

// The receiver finds Projects in every namespace, reads their webhook Secrets one at a time, and
// creates Builds.
// +kubebuilder:rbac:groups=ferry.dev,resources=projects,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=builds,verbs=create
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get

// Receiver is a manager Runnable serving POST /hooks/gitlab on its own listener. Every replica runs
// it: it needs no leader.
type Receiver struct {
	opts   Options
	cache  cache.Cache
	reader client.Reader
	// createBuild POSTs a Build to the API server.
	createBuild func(context.Context, *ferryv1.Build) error
	secrets     *secretCache
	log         logr.Logger
	now         func() time.Time

	addr    atomic.Pointer[string]
	bufPool sync.Pool
}

// New registers the receiver's Project index with the manager and returns the receiver; add it
// with mgr.Add.
func New(mgr ctrl.Manager, opts Options) (*Receiver, error) {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
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
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &ferryv1.Project{}, projectIndex, projectIndexKeys); err != nil {
		return nil, fmt.Errorf("failed to index Projects by GitLab project: %w", err)
	}
	create, err := buildCreator(mgr.GetConfig(), mgr.GetScheme())
	if err != nil {
		return nil, err
	}
	return &Receiver{
		opts:        opts,
		cache:       mgr.GetCache(),
		reader:      mgr.GetClient(),
		createBuild: create,
		secrets:     newSecretCache(mgr.GetAPIReader(), opts.SecretTTL),
		log:         mgr.GetLogger().WithName("gitlab-receiver"),
		now:         time.Now,
	}, nil
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
		ReadTimeout:       60 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    1 << 20,
		BaseContext:       func(net.Listener) context.Context { return ctx },
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
		return fmt.Errorf("failed to shut the GitLab receiver down: %w", err)
	}
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
	resultIgnored      = "ignored"
	resultUnauthorized = "unauthorized"
	resultTooLarge     = "too_large"
	resultBadRequest   = "bad_request"
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
	status, a := r.handle(w, req)
	r.reply(w, status, a)
	observe(req.Header.Get("X-Gitlab-Event"), a.Result, time.Since(start))
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) (int, answer) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return http.StatusMethodNotAllowed, answer{Result: resultBadRequest, Error: "only POST is accepted"}
	}
	// Authentication needs the body (the project is named in it), but a delivery without a token
	// is refused before a byte of it is read.
	token := req.Header.Get("X-Gitlab-Token")
	if token == "" {
		return http.StatusUnauthorized, answer{Result: resultUnauthorized, Error: errUnauthorized.Error()}
	}
	body, err := r.readBody(req)
	switch {
	case errors.Is(err, errTooLarge):
		// Do not let the server read the rest of it to keep the connection.
		w.Header().Set("Connection", "close")
		return http.StatusRequestEntityTooLarge, answer{Result: resultTooLarge, Error: fmt.Sprintf("the body is larger than %d bytes", r.opts.MaxBodyBytes)}
	case err != nil:
		w.Header().Set("Connection", "close")
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: err.Error()}
	}
	defer r.release(body)
	payload := body.Bytes()

	env, err := decodeEnvelope(payload)
	if err != nil {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: err.Error()}
	}
	header := req.Header.Get("X-Gitlab-Event")
	kind := eventKind(header, env)
	if kind == "" {
		// Nothing to build, so nothing to authenticate: the same answer whatever the project.
		return http.StatusOK, answer{Result: resultIgnored, Reason: ignoredEventReason(header, env)}
	}
	trig, err := decodeTrigger(header, kind, env, payload)
	var bad *payloadError
	if errors.As(err, &bad) {
		return http.StatusBadRequest, answer{Result: resultBadRequest, Error: bad.msg}
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
	projects, authErr := r.authenticate(ctx, req.Header, token, payload, projects)
	if authErr != nil {
		r.log.Error(authErr, "Failed to read a webhook Secret")
		return http.StatusServiceUnavailable, answer{Result: resultError, Error: "Ferry could not read the webhook Secret; GitLab may redeliver"}
	}
	if len(projects) == 0 {
		r.log.V(1).Info("Refused an unauthenticated delivery", "project", key.path, "projectID", key.id, "event", header)
		return http.StatusUnauthorized, answer{Result: resultUnauthorized, Error: errUnauthorized.Error()}
	}
	var ig *ignored
	if errors.As(err, &ig) {
		return http.StatusOK, answer{Result: resultIgnored, Reason: ig.reason}
	}
	if err := validRef(trig.ref); err != nil {
		return http.StatusOK, answer{Result: resultIgnored, Reason: "Ferry cannot build this ref: " + err.Error()}
	}
	return r.createBuilds(ctx, req.Header, trig, projects)
}

// errTooLarge is a body over MaxBodyBytes.
var errTooLarge = errors.New("the body is too large")

// readBody reads at most MaxBodyBytes into a pooled buffer. A declared Content-Length over the cap
// is refused before anything is read; a chunked body is cut one byte past it.
func (r *Receiver) readBody(req *http.Request) (*bytes.Buffer, error) {
	limit := r.opts.MaxBodyBytes
	if req.ContentLength > limit {
		return nil, errTooLarge
	}
	buf, _ := r.bufPool.Get().(*bytes.Buffer)
	if buf == nil {
		buf = &bytes.Buffer{}
	}
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(req.Body, limit+1))
	switch {
	case n > limit:
		err = errTooLarge
	case err != nil:
		err = fmt.Errorf("failed to read the body: %w", err)
	}
	if err != nil {
		r.release(buf)
		return nil, err
	}
	return buf, nil
}

// release returns a buffer to the pool unless a large body grew it: those are rare and should not
// stay in memory.
func (r *Receiver) release(buf *bytes.Buffer) {
	if buf.Cap() <= 1<<20 {
		r.bufPool.Put(buf)
	}
}

// authenticate keeps the Projects whose webhook Secret the delivery's token (and signature, when
// the Secret has a signing token) matches. Only a failure to read a Secret is an error.
func (r *Receiver) authenticate(ctx context.Context, h http.Header, token string, body []byte, projects []ferryv1.Project) ([]ferryv1.Project, error) {
	var out []ferryv1.Project
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
		if !secret.tokenMatches(token) {
			continue
		}
		if secret.signingKey != nil {
			if err := verifySignature(secret.signingKey, h, body, r.now(), r.opts.SignatureTolerance); err != nil {
				r.log.Info("Refused a delivery with a bad webhook signature", "project", klog.KObj(p), "problem", err.Error())
				continue
			}
		}
		out = append(out, *p)
	}
	return out, nil
}

// ignoredEventReason says why an event kind is not built.
func ignoredEventReason(header string, env *envelope) string {
	switch {
	case header == "":
		return "no X-Gitlab-Event header: not a GitLab webhook Ferry builds from"
	case strings.EqualFold(header, systemHook):
		name := env.EventName
		if name == "" {
			name = env.ObjectKind
		}
		return fmt.Sprintf("system hook event %q is not built (only push and tag_push are)", name)
	default:
		return fmt.Sprintf("%q events are not built (Ferry builds Push Hook, Tag Push Hook and Merge Request Hook)", header)
	}
}

// createBuilds creates one Build per Project that tracks the trigger.
func (r *Receiver) createBuilds(ctx context.Context, h http.Header, t *trigger, projects []ferryv1.Project) (int, answer) {
	var created, duplicates, reasons []string
	for i := range projects {
		p := &projects[i]
		if err := tracked(p, t); err != nil {
			reasons = append(reasons, reasonFor(p, err.Error(), len(projects)))
			continue
		}
		b := newBuild(p, t, h.Get("Idempotency-Key"))
		nn := b.Namespace + "/" + b.Name
		err := r.createBuild(ctx, b)
		switch {
		case err == nil:
			created = append(created, nn)
			r.log.Info("Build created", "build", klog.KObj(b), "kind", t.kind, "ref", t.ref, "revision", t.revision,
				"delivery", h.Get("Idempotency-Key"), "webhook", h.Get("X-Gitlab-Webhook-UUID"))
		case isAlreadyExists(err):
			duplicates = append(duplicates, nn)
			r.log.V(1).Info("Delivery already received", "build", klog.KObj(b), "delivery", h.Get("Idempotency-Key"))
		case isInvalid(err):
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
		return http.StatusCreated, answer{Result: resultCreated, Builds: append(created, duplicates...), Reason: strings.Join(reasons, "; ")}
	case len(duplicates) > 0:
		return http.StatusOK, answer{Result: resultDuplicate, Builds: duplicates, Message: "already received"}
	}
	return http.StatusOK, answer{Result: resultIgnored, Reason: strings.Join(reasons, "; ")}
}

// reasonFor prefixes a reason with the Project when a delivery matched several.
func reasonFor(p *ferryv1.Project, reason string, n int) string {
	if n == 1 {
		return reason
	}
	return p.Namespace + "/" + p.Name + ": " + reason
}
