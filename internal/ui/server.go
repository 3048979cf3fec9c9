// Package ui is Ferry's web UI for release managers: what waits for their decision, what a
// Release would change, how its rollouts go, what runs where, Builds with their logs, and every
// decision ever made. Pages are Go templates rendered on the server and embedded in the binary;
// a little JavaScript swaps in fresh parts of a page when the objects behind it change (watch →
// server-sent events).
//
// The UI runs as a ServiceAccount of its own that may impersonate nobody. What a person may see
// is what RBAC lets them list, and a person's build logs are theirs to read when RBAC lets them
// read pod logs: the UI asks the API server about the person (SubjectAccessReview). Its only
// writes are a person's decisions (Approvals) and re-requests of expired gates (an annotation on
// a Release): RBAC must let the person do them, and the UI names the person on what it writes
// (ferryv1.AssertedIdentityAnnotation). Ferry's admission webhook believes that name from the
// UI's identity alone and judges the decision as the person's, exactly as for kubectl.
package ui

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/ui/auth"
)

// The UI reads Ferry's objects and Tekton's TaskRuns everywhere and the logs of pods; asks the API
// server what people may do; creates Approvals and patches Releases for people (the admission
// webhook lets it do nothing else with them); and keeps its session Secret in Ferry's namespace,
// which the install creates empty, and reads its sign-in Secrets there, by name (a Secret named
// otherwise needs its own rule). It impersonates nobody, and it reads no other Secret: to list
// the commits between two images it needs to read Projects' GitLab tokens, which
// config/rbac/ui/gitlab_token_reader_role.yaml grants per namespace.
// +kubebuilder:rbac:groups=ferry.dev,resources=releases;approvals;environments;freezes;projects;builds,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=approvals,verbs=create
// +kubebuilder:rbac:groups=ferry.dev,resources=releases,verbs=patch
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,resourceNames=ferry-ui-session,verbs=get;list;watch;update
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,resourceNames=ferry-ui-oidc;ferry-ui-tokens,verbs=get

// Options configure the UI.
type Options struct {
	// Addr is the listen address, for example ":8082" or "127.0.0.1:0".
	Addr string
	// Namespace is Ferry's namespace: the session, token and OIDC client Secrets live there.
	Namespace string
	// ExternalURL is the URL people reach the UI at (the manager's --ui-url). An https URL makes
	// the cookies Secure; the OIDC redirect URI is <ExternalURL>/signin/oidc/callback.
	ExternalURL string
	// LogDir is where the local executor writes Builds' logs; the UI reads a Build's log at the
	// path the executor gives it there (its namespace, name and UID), never where the Build's
	// status points.
	LogDir string

	Config
}

// Config is how people sign in and how their sessions are kept.
type Config struct {
	// OIDCIssuerURL turns on sign-in with an OpenID provider, for example https://gitlab.example.com.
	OIDCIssuerURL string
	// OIDCClientID is the UI's application ID at the provider.
	OIDCClientID string
	// OIDCClientSecret names a Secret in Ferry's namespace whose key "client-secret" is the
	// application's secret.
	OIDCClientSecret string
	// OIDCUsernameClaim, OIDCUsernamePrefix, OIDCGroupsClaim and OIDCGroupsPrefix map the ID
	// token to a Kubernetes identity; set them as the API server's --oidc-* flags are set. An
	// empty OIDCGroupsClaim takes no groups from the provider.
	OIDCUsernameClaim, OIDCUsernamePrefix, OIDCGroupsClaim, OIDCGroupsPrefix string
	// OIDCAllowUnprefixed accepts an OIDCUsernamePrefix or OIDCGroupsPrefix that is empty. Without
	// it the UI refuses to start with OIDC sign-in and no username prefix, or a groups claim and
	// no groups prefix: anyone can create a GitLab group (or pick a username) that is named like
	// one RBAC or an approval policy trusts, such as release-managers.
	OIDCAllowUnprefixed bool

	// TokenFile is a file of sign-in tokens (see auth.TokenEntry), for `ferry dev`.
	TokenFile string
	// TokenSecret names a Secret in Ferry's namespace whose key tokens.yaml lists sign-in tokens.
	TokenSecret string

	// SessionSecret names the Secret in Ferry's namespace that holds the session key. Default
	// DefaultSessionSecret; created when missing.
	SessionSecret string
	// SessionTTL is how long a sign-in lasts. Default 12h.
	SessionTTL time.Duration

	// CertDir, when it holds tls.crt and tls.key, makes the UI serve HTTPS.
	CertDir string
}

// DefaultSessionSecret holds the UI's session key.
const DefaultSessionSecret = "ferry-ui-session"

// OIDCClientSecretKey is the key of the OIDC client Secret.
const OIDCClientSecretKey = "client-secret"

// Server is a manager Runnable serving the UI on its own listener. Every replica serves it.
type Server struct {
	opts      Options
	cache     cache.Cache
	reader    client.Reader
	apiReader client.Reader
	// writer writes with the UI's own identity: Approvals and re-requests for people.
	writer    client.Client
	config    *rest.Config
	clientset kubernetes.Interface
	log       logr.Logger

	sessions *auth.Sessions
	oidc     *auth.OIDC
	tokens   auth.TokenSource
	access   *accessCache
	events   *eventHub
	changes  *changeFinder
	logs     *logReader
	pages    *pages
	secure   bool
	tls      bool

	addr atomic.Pointer[string]
}

// New makes the UI; add it to the manager with mgr.Add.
func New(mgr ctrl.Manager, opts Options) (*Server, error) {
	if opts.Namespace == "" {
		return nil, errors.New("the UI needs Ferry's namespace")
	}
	if opts.SessionSecret == "" {
		opts.SessionSecret = DefaultSessionSecret
	}
	s := &Server{
		opts:      opts,
		cache:     mgr.GetCache(),
		reader:    mgr.GetClient(),
		apiReader: mgr.GetAPIReader(),
		writer:    mgr.GetClient(),
		config:    mgr.GetConfig(),
		log:       mgr.GetLogger().WithName("ui"),
	}
	var externalHost string
	if opts.ExternalURL != "" {
		u, err := url.Parse(opts.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("invalid UI URL %q: want http(s)://host[:port]", opts.ExternalURL)
		}
		s.secure = u.Scheme == "https"
		externalHost = u.Host
	}
	if opts.CertDir != "" {
		if _, err := os.Stat(filepath.Join(opts.CertDir, "tls.crt")); err == nil {
			s.tls, s.secure = true, true
		}
	}
	cs, err := kubernetes.NewForConfig(s.config)
	if err != nil {
		return nil, err
	}
	s.clientset = cs
	s.sessions = &auth.Sessions{
		Store: &auth.Store{
			Reader: s.reader, APIReader: s.apiReader, Writer: mgr.GetClient(),
			Namespace: opts.Namespace, Name: opts.SessionSecret,
		},
		Cookies:      auth.Cookies{Secure: s.secure, TTL: opts.SessionTTL},
		ExternalHost: externalHost,
	}
	if opts.OIDCIssuerURL != "" {
		if err := checkOIDCPrefixes(opts.Config); err != nil {
			return nil, err
		}
		o, err := auth.NewOIDC(auth.OIDCConfig{
			IssuerURL: opts.OIDCIssuerURL, ClientID: opts.OIDCClientID,
			UsernameClaim: opts.OIDCUsernameClaim, UsernamePrefix: opts.OIDCUsernamePrefix,
			GroupsClaim: opts.OIDCGroupsClaim, GroupsPrefix: opts.OIDCGroupsPrefix,
		})
		if err != nil {
			return nil, err
		}
		s.oidc = o
	}
	switch {
	case opts.TokenFile != "" && opts.TokenSecret != "":
		return nil, errors.New("name either a UI token file or a UI token Secret, not both")
	case opts.TokenFile != "":
		s.tokens = auth.TokenFile(opts.TokenFile)
	case opts.TokenSecret != "":
		s.tokens = auth.TokenSecret{Reader: s.apiReader, Namespace: opts.Namespace, Name: opts.TokenSecret}
	}
	s.access = newAccessCache(s.writer)
	s.events = newEventHub(s.log)
	s.changes = newChangeFinder(s.reader, s.apiReader)
	s.logs = &logReader{reader: s.reader, clientset: s.clientset, logDir: opts.LogDir}
	if s.pages, err = loadPages(); err != nil {
		return nil, err
	}
	return s, nil
}

// NeedLeaderElection is false: every replica serves the UI.
func (s *Server) NeedLeaderElection() bool { return false }

// Addr is the address the UI listens on, "" until it does.
func (s *Server) Addr() string {
	if a := s.addr.Load(); a != nil {
		return *a
	}
	return ""
}

// ReadyCheck fails until the UI listens, for /readyz.
func (s *Server) ReadyCheck(*http.Request) error {
	if s.Addr() == "" {
		return errors.New("the UI is not listening yet")
	}
	return nil
}

// Start waits for the cache, makes sure the session key exists, and serves until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	if !s.cache.WaitForCacheSync(ctx) {
		return errors.New("the UI's cache did not sync")
	}
	// The session Secret may be refused for a moment while RBAC settles at install time.
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, time.Minute, true, func(ctx context.Context) (bool, error) {
		last = s.sessions.Store.Ensure(ctx)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the UI cannot keep sessions: %w", errors.Join(err, last))
	}
	if err := s.events.watch(ctx, s.cache); err != nil {
		return err
	}
	l, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("failed to listen for the UI on %s: %w", s.opts.Addr, err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Server-sent event streams clear their own write deadline.
		WriteTimeout:   60 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 1 << 20,
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	if s.tls {
		cert, err := tls.LoadX509KeyPair(filepath.Join(s.opts.CertDir, "tls.crt"), filepath.Join(s.opts.CertDir, "tls.key"))
		if err != nil {
			_ = l.Close()
			return fmt.Errorf("failed to load the UI's certificate from %s: %w", s.opts.CertDir, err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		l = tls.NewListener(l, srv.TLSConfig)
	}
	addr := l.Addr().String()
	s.addr.Store(&addr)
	s.log.Info("Serving the UI", "address", addr, "tls", s.tls, "oidc", s.oidc != nil, "tokens", s.tokens != nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("the UI stopped: %w", err)
	case <-ctx.Done():
	}
	s.events.close()
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("failed to shut the UI down: %w", err)
	}
	return nil
}

// Handler serves every page.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("GET /signin", s.signinPage)
	mux.HandleFunc("POST /signin/token", s.signinToken)
	mux.HandleFunc("GET /signin/oidc", s.signinOIDC)
	mux.HandleFunc("GET /signin/oidc/callback", s.signinOIDCCallback)
	mux.HandleFunc("POST /signout", s.signedIn(s.signout))

	mux.HandleFunc("GET /{$}", s.signedIn(s.waitingPage))
	mux.HandleFunc("GET /releases", s.signedIn(s.releasesPage))
	mux.HandleFunc("GET /releases/{namespace}/{name}", s.signedIn(s.releasePage))
	mux.HandleFunc("POST /releases/{namespace}/{name}/decide", s.signedIn(s.decide))
	mux.HandleFunc("POST /releases/{namespace}/{name}/rerequest", s.signedIn(s.rerequest))
	mux.HandleFunc("GET /environments", s.signedIn(s.environmentsPage))
	mux.HandleFunc("GET /environments/{name}/week", s.signedIn(s.weekPage))
	mux.HandleFunc("GET /builds", s.signedIn(s.buildsPage))
	mux.HandleFunc("GET /builds/{namespace}/{name}", s.signedIn(s.buildPage))
	mux.HandleFunc("GET /builds/{namespace}/{name}/log", s.signedIn(s.buildLog))
	mux.HandleFunc("GET /audit", s.signedIn(s.auditPage))
	mux.HandleFunc("GET /previews", s.signedIn(s.previewsPage))
	mux.HandleFunc("GET /events", s.signedIn(s.eventStream))
	return securityHeaders(mux)
}

// securityHeaders keeps the pages from being framed, sniffed or fed foreign scripts.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// sessionHandler is a handler for signed-in people.
type sessionHandler func(w http.ResponseWriter, r *http.Request, sess *auth.Session)

// signedIn passes the request's session on, or sends the browser to sign in: GETs come back to
// where they were going afterwards; other requests are refused.
func (s *Server) signedIn(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.sessions.Get(r)
		if err != nil {
			if !errors.Is(err, auth.ErrNoSession) {
				s.sessions.Clear(w)
			}
			switch {
			case r.Method == http.MethodGet && r.URL.Path != "/events":
				http.Redirect(w, r, "/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			default:
				s.renderError(w, r, nil, http.StatusUnauthorized, "Not signed in", err.Error()+": sign in again.")
			}
			return
		}
		h(w, r, sess)
	}
}

// checkOIDCPrefixes refuses identities from an OpenID provider that could pass for someone RBAC
// or an approval policy trusts: GitLab lets anyone create a group, and pick a username.
func checkOIDCPrefixes(c Config) error {
	if c.OIDCAllowUnprefixed {
		return nil
	}
	if c.OIDCUsernamePrefix == "" {
		return errors.New("OIDC sign-in needs a username prefix (--ui-oidc-username-prefix, e.g. \"gitlab:\", as the API server's --oidc-username-prefix): anyone who can pick a username at the provider could otherwise sign in as a Kubernetes user of that name; --ui-oidc-allow-unprefixed accepts that when only administrators create users there")
	}
	if c.OIDCGroupsClaim != "" && c.OIDCGroupsPrefix == "" {
		return fmt.Errorf("OIDC groups claim %q needs a groups prefix (--ui-oidc-groups-prefix, e.g. \"gitlab:\", as the API server's --oidc-groups-prefix): anyone can create a GitLab group named like one RBAC or an approval policy trusts, such as release-managers; name the prefixed groups there (gitlab:release-managers), or take no groups (--ui-oidc-groups-claim=\"\"), or --ui-oidc-allow-unprefixed when only administrators create groups at the provider", c.OIDCGroupsClaim)
	}
	return nil
}

// redirectURL is the OIDC redirect URI: under the external URL when there is one, else under the
// address the request came to.
func (s *Server) redirectURL(r *http.Request) string {
	if s.opts.ExternalURL != "" {
		return strings.TrimSuffix(s.opts.ExternalURL, "/") + "/signin/oidc/callback"
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/signin/oidc/callback"
}
