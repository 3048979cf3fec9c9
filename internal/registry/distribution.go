package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/sirupsen/logrus"

	// The registry's token access controller and storage drivers register themselves by name.
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// DistributionOptions configure StartDistribution.
type DistributionOptions struct {
	// Addr is the address to listen on; default 127.0.0.1 on a free port.
	Addr string
	// Users are the accounts of the token service, username → password. Harbor robot accounts
	// look like `robot$team-a+ci`.
	Users map[string]string
	// Access decides what each user may do; default AllowAuthenticated.
	Access Access
	// Service is the token service name in challenges and tokens; default "harbor-registry".
	Service string
	// StorageDir keeps blobs and manifests on disk there; "" keeps them in memory.
	StorageDir string
	// Log receives the registry's log lines. The distribution registry logs through logrus's
	// global logger, so this sets its output for the whole process; nil discards them.
	Log io.Writer
}

// logrusMu serialises changes to logrus's global logger.
var logrusMu sync.Mutex

// StartDistribution starts the CNCF distribution registry in this process with token
// authentication as Harbor does it: requests without a token get
// `WWW-Authenticate: Bearer realm="<URL>/service/token",service="harbor-registry",scope="…"`,
// the token service at /service/token checks Basic credentials and issues RS256 JWTs with the
// actions Access allows (others silently dropped), and the registry verifies them. Like Harbor,
// the registry also accepts Basic credentials directly on /v2/, and answers wrong ones with
// `Basic realm="harbor"`.
func StartDistribution(opts DistributionOptions) (*Server, error) {
	service := opts.Service
	if service == "" {
		service = HarborService
	}
	ts, certPEM, err := newTokenService(service, opts.Users, opts.Access)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "ferry-registry-")
	if err != nil {
		return nil, fmt.Errorf("failed to make a directory for the registry: %w", err)
	}
	certPath := filepath.Join(tmp, "token-root.crt")
	if err := os.WriteFile(certPath, certPEM, 0o600); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, fmt.Errorf("failed to write the token certificate: %w", err)
	}
	ln, err := listen(opts.Addr)
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	base := "http://" + ln.Addr().String()

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		_ = ln.Close()
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	storage := configuration.Storage{
		"inmemory":    configuration.Parameters{},
		"delete":      configuration.Parameters{"enabled": true},
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	if opts.StorageDir != "" {
		delete(storage, "inmemory")
		storage["filesystem"] = configuration.Parameters{"rootdirectory": opts.StorageDir}
	}
	cfg := &configuration.Configuration{
		Storage: storage,
		Auth: configuration.Auth{"token": configuration.Parameters{
			"realm":            base + TokenPath,
			"autoredirect":     true,
			"autoredirectpath": TokenPath,
			"service":          service,
			"issuer":           HarborIssuer,
			"rootcertbundle":   certPath,
		}},
	}
	cfg.HTTP.Secret = hex.EncodeToString(secret)

	logrusMu.Lock()
	if opts.Log != nil {
		logrus.SetOutput(opts.Log)
	} else {
		logrus.SetOutput(io.Discard)
	}
	logrusMu.Unlock()

	ctx, cancel := context.WithCancel(context.Background())
	app, err := newApp(ctx, cfg)
	if err != nil {
		cancel()
		_ = ln.Close()
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle(TokenPath, ts)
	mux.Handle("/", harborFront(ts, app))
	s := serveListener(ln, mux)
	s.TokenURL = base + TokenPath
	s.cleanup = append(s.cleanup, func() {
		_ = app.Shutdown()
		cancel()
		_ = os.RemoveAll(tmp)
	})
	return s, nil
}

// newApp builds the registry application; distribution panics on configuration errors.
func newApp(ctx context.Context, cfg *configuration.Configuration) (app *handlers.App, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("failed to configure the distribution registry: %v", r)
		}
	}()
	return handlers.NewApp(ctx, cfg), nil
}

// harborFront lets Basic credentials through the way Harbor does: valid ones are exchanged for a
// token covering what the request needs, wrong ones are answered with `Basic realm="harbor"`.
// Bearer and anonymous requests go to the registry unchanged.
func harborFront(ts *tokenService, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The realm of the challenge is built from the request's Host, as Harbor does, so that it
		// names the address the client used (the proxy in front, say).
		if r.TLS == nil && r.Header.Get("X-Forwarded-Proto") == "" {
			r = r.Clone(r.Context())
			r.Header.Set("X-Forwarded-Proto", "http")
		}
		if _, _, sent := r.BasicAuth(); !sent {
			next.ServeHTTP(w, r)
			return
		}
		user, ok := checkBasic(ts.users, r)
		if !ok {
			writeBasicChallenge(w)
			return
		}
		signed, err := ts.issue(user, ts.grant(user, scopesFor(r)), time.Now())
		if err != nil {
			writeRegistryError(w, http.StatusInternalServerError, "UNKNOWN", "internal server error")
			return
		}
		r.Header.Set("Authorization", "Bearer "+signed)
		next.ServeHTTP(w, r)
	})
}

// scopesFor returns the token scopes a /v2/ request needs.
func scopesFor(r *http.Request) []string {
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		return nil
	}
	var name string
	for _, kind := range []string{"/blobs/", "/manifests/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i > 0 {
			name = rest[:i]
			break
		}
	}
	if name == "" {
		return nil
	}
	actions := "pull"
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodDelete:
		actions = "delete"
	default:
		actions = "pull,push"
	}
	scopes := []string{"repository:" + name + ":" + actions}
	if from := r.URL.Query().Get("from"); from != "" {
		scopes = append(scopes, "repository:"+from+":pull")
	}
	return scopes
}
