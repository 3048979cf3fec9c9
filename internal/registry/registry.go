// Package registry runs real OCI registries inside the process, on loopback, for tests and for
// `ferry dev`: go-containerregistry's small in-memory registry, and the CNCF distribution registry
// (what Harbor is built on) with token authentication the way Harbor answers it — a token service
// that checks robot-style credentials (`robot$project+name`) and issues RS256 JWTs the registry
// verifies. A recording Proxy in front of either counts what clients upload and mount, and can
// inject faults (errors, dropped connections). SeedBaseImages pushes small, reproducible stack and
// runtime images, so that nothing ever has to be pulled from the internet.
package registry

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// Server is a registry listening on a loopback port of this process.
type Server struct {
	// Host is host:port, the registry part of an image reference (127.0.0.1:34567).
	Host string
	// URL is the registry's base URL, http://127.0.0.1:34567.
	URL string
	// TokenURL is the token service's URL (the realm of its Bearer challenges), empty when the
	// registry does not use token authentication.
	TokenURL string

	srv     *http.Server
	cleanup []func()
	once    sync.Once
}

// Ref returns the image reference of repository (and an optional ":tag" or "@digest" suffix) on
// this registry: Ref("team-a/app:v1") is "127.0.0.1:34567/team-a/app:v1".
func (s *Server) Ref(repository string) string {
	return s.Host + "/" + strings.TrimPrefix(repository, "/")
}

// Close stops the server at once, closing its connections, and releases what it holds.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		// Close, not Shutdown: a test or `ferry dev` stopping its registry does not wait for
		// clients, and a connection a fault left half-read would hold Shutdown up.
		err = s.srv.Close()
		for i := len(s.cleanup) - 1; i >= 0; i-- {
			s.cleanup[i]()
		}
	})
	return err
}

// listen opens addr, default 127.0.0.1 on a free port.
func listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	return ln, nil
}

// serve starts handler on addr and returns the running Server.
func serve(addr string, handler http.Handler) (*Server, error) {
	ln, err := listen(addr)
	if err != nil {
		return nil, err
	}
	return serveListener(ln, handler), nil
}

// serveListener serves handler on ln.
func serveListener(ln net.Listener, handler http.Handler) *Server {
	s := &Server{
		Host: ln.Addr().String(),
		URL:  "http://" + ln.Addr().String(),
		srv:  &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second},
	}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Printf("registry on %s stopped: %v", s.Host, err)
		}
	}()
	return s
}

// MemoryOptions configure StartMemory.
type MemoryOptions struct {
	// Addr is the address to listen on; default 127.0.0.1 on a free port.
	Addr string
	// Users, when not empty, makes the registry require HTTP Basic authentication with one of these
	// username → password pairs, answering `WWW-Authenticate: Basic realm="harbor"` (Harbor's
	// challenge for clients that already sent credentials) to everything else.
	Users map[string]string
	// Log receives one line per request; nil discards them.
	Log io.Writer
}

// StartMemory starts go-containerregistry's in-memory registry. Its blobs are shared by all
// repositories (a blob pushed anywhere exists everywhere), unlike distribution's and Harbor's.
func StartMemory(opts MemoryOptions) (*Server, error) {
	logw := opts.Log
	if logw == nil {
		logw = io.Discard
	}
	h := ggcrregistry.New(ggcrregistry.Logger(log.New(logw, "registry: ", 0)))
	if len(opts.Users) > 0 {
		h = basicAuth(opts.Users, h)
	}
	return serve(opts.Addr, h)
}

// basicAuth requires one of users on every request.
func basicAuth(users map[string]string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := checkBasic(users, r); !ok {
			writeBasicChallenge(w)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkBasic returns the user of a request's valid Basic credentials.
func checkBasic(users map[string]string, r *http.Request) (string, bool) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", false
	}
	want, known := users[user]
	// Compare in constant time even for unknown users, so timing does not reveal which exist.
	match := subtle.ConstantTimeCompare([]byte(pass), []byte(want)) == 1
	return user, known && match
}

// writeBasicChallenge answers 401 the way Harbor does when credentials were sent and are wrong.
func writeBasicChallenge(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Basic realm="harbor"`)
	writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

// writeRegistryError writes the distribution-spec error body.
func writeRegistryError(w http.ResponseWriter, status int, code, message string) {
	type diagnostic struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string][]diagnostic{"errors": {{Code: code, Message: message}}})
}
