// Package image assembles and pushes Ferry's layered images with go-containerregistry, without a
// Docker daemon: an OS stack, a language runtime that sits on it (its layers start with the
// stack's), and one application layer made reproducibly from the repository, with the container
// config from the pipeline file and labels that record the lineage. It pushes by digest — blobs
// already in the repository are not uploaded, blobs in a sibling repository are mounted, retries
// back off on 429, 5xx and dropped connections, a manifest never goes before its blobs — and
// rebases an application image onto a patched stack without rebuilding it.
package image

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Backoff says how failed registry requests are retried: wait Duration, then Duration×Factor, …,
// Steps attempts in all.
type Backoff = remote.Backoff

// DefaultBackoff retries five times over about 7.5 seconds.
var DefaultBackoff = Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 5}

// ClientOptions configure a Client.
type ClientOptions struct {
	// DockerConfigDir is the directory of the Docker config.json with the registry credentials (a
	// mounted kubernetes.io/dockerconfigjson Secret may name it .dockerconfigjson instead); ""
	// means $DOCKER_CONFIG, else ~/.docker. Credential helpers named there are used too.
	DockerConfigDir string
	// DockerConfig, when set, is the config.json itself, kept in memory (DockerConfigDir is then
	// not read). It may hold only credentials, no credential helper: a helper would be a program
	// run because a Secret names it.
	DockerConfig []byte
	// Insecure allows plain HTTP and unverified TLS to every registry. Without it, plain HTTP is
	// allowed only to loopback registries (localhost, 127.0.0.0/8, ::1).
	Insecure bool
	// Backoff overrides DefaultBackoff.
	Backoff *Backoff
	// Jobs is how many blobs are uploaded at once; default 4.
	Jobs int
	// Log receives progress for people; nil discards.
	Log io.Writer
	// Transport is the HTTP transport underneath; nil means a copy of go-containerregistry's
	// default transport.
	Transport http.RoundTripper
}

// Client talks to registries on behalf of one build, and accounts for what it transferred.
type Client struct {
	opts     ClientOptions
	observer *observer
	keychain authn.Keychain
	log      io.Writer
}

// NewClient makes a Client.
func NewClient(opts ClientOptions) (*Client, error) {
	log := io.Discard
	if opts.Log != nil {
		log = &lockedWriter{w: opts.Log}
	}
	inner := opts.Transport
	if inner == nil {
		t := remote.DefaultTransport.(*http.Transport).Clone()
		if opts.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only with --insecure-registry, asked for explicitly
		}
		inner = t
	}
	var kc authn.Keychain
	var err error
	if opts.DockerConfig != nil {
		kc, err = dockerConfigKeychainFrom(opts.DockerConfig)
	} else {
		kc, err = newDockerConfigKeychain(opts.DockerConfigDir)
	}
	if err != nil {
		return nil, err
	}
	return &Client{
		opts:     opts,
		observer: newObserver(inner, opts.Insecure, log),
		keychain: kc,
		log:      log,
	}, nil
}

// Log returns the client's progress writer, safe for concurrent use: write the caller's own
// progress lines there so that they do not interleave with the client's.
func (c *Client) Log() io.Writer { return c.log }

// lockedWriter serialises writes.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Transfer returns what the client uploaded, mounted and found already present so far.
func (c *Client) Transfer() Transfer { return c.observer.transfer() }

// RemoteOptions are the options of every registry call this client makes (credentials, retries,
// transfer accounting), for packages that make their own go-containerregistry calls.
func (c *Client) RemoteOptions(ctx context.Context) []remote.Option { return c.remoteOptions(ctx) }

// remoteOptions are the options of every registry call.
func (c *Client) remoteOptions(ctx context.Context) []remote.Option {
	backoff := DefaultBackoff
	if c.opts.Backoff != nil {
		backoff = *c.opts.Backoff
	}
	jobs := c.opts.Jobs
	if jobs <= 0 {
		jobs = 4
	}
	return []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.keychain),
		remote.WithTransport(c.observer),
		remote.WithRetryBackoff(backoff),
		remote.WithRetryStatusCodes(http.StatusRequestTimeout, http.StatusTooManyRequests,
			http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout),
		remote.WithJobs(jobs),
		remote.WithUserAgent("ferry"),
	}
}

// ParseReference parses an image reference; with Insecure, its registry may be reached over
// plain HTTP.
func (c *Client) ParseReference(ref string) (name.Reference, error) {
	var opts []name.Option
	if c.opts.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return r, nil
}

// ParseRepository parses a repository (no tag, no digest).
func (c *Client) ParseRepository(repo string) (name.Repository, error) {
	var opts []name.Option
	if c.opts.Insecure {
		opts = append(opts, name.Insecure)
	}
	if strings.Contains(repo, "@") {
		return name.Repository{}, fmt.Errorf("image %q: give the repository without a digest", repo)
	}
	if last := repo[strings.LastIndex(repo, "/")+1:]; strings.Contains(last, ":") && strings.Contains(repo, "/") {
		return name.Repository{}, fmt.Errorf("image %q: give the repository without a tag; the tags are the revision and the extra tags", repo)
	}
	r, err := name.NewRepository(repo, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("image repository %q: %w", repo, err)
	}
	return r, nil
}

// isLoopback reports whether host (without port) is a loopback name or address.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// dockerConfigKeychain finds registry credentials in one Docker config directory.
type dockerConfigKeychain struct {
	cf *configfile.ConfigFile
}

// newDockerConfigKeychain loads dir/config.json (or dir/.dockerconfigjson); dir "" means
// $DOCKER_CONFIG, else ~/.docker. A missing file means anonymous access.
func newDockerConfigKeychain(dir string) (authn.Keychain, error) {
	if dir != "" {
		if _, err := os.Stat(filepath.Join(dir, config.ConfigFileName)); errors.Is(err, os.ErrNotExist) {
			alt := filepath.Join(dir, ".dockerconfigjson")
			if f, err := os.Open(alt); err == nil {
				defer func() { _ = f.Close() }()
				cf, err := config.LoadFromReader(f)
				if err != nil {
					return nil, fmt.Errorf("failed to read the Docker config %s: %w", alt, err)
				}
				return &dockerConfigKeychain{cf: cf}, nil
			}
		}
	}
	cf, err := config.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to read the Docker config: %w", err)
	}
	return &dockerConfigKeychain{cf: cf}, nil
}

// dockerConfigKeychainFrom reads a config.json held in memory; it refuses credential helpers.
func dockerConfigKeychainFrom(data []byte) (authn.Keychain, error) {
	cf, err := config.LoadFromReader(bytes.NewReader(data))
	if err != nil {
		// The parser's message may quote the config: only say where.
		return nil, errors.New("failed to read the Docker config: it is not valid JSON of a config.json")
	}
	if cf.CredentialsStore != "" || len(cf.CredentialHelpers) > 0 {
		return nil, errors.New("the Docker config names a credential helper (credsStore or credHelpers): only credentials written in it (auths) are used here")
	}
	return &dockerConfigKeychain{cf: cf}, nil
}

// Resolve returns the credentials for a registry, or anonymous access.
func (k *dockerConfigKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	for _, key := range []string{target.String(), target.RegistryStr()} {
		if key == name.DefaultRegistry {
			key = authn.DefaultAuthKey
		}
		cfg, err := k.cf.GetAuthConfig(key)
		if err != nil {
			return nil, fmt.Errorf("failed to get the credentials for %s from the Docker config: %w", key, err)
		}
		if cfg.Username != "" || cfg.Password != "" || cfg.Auth != "" || cfg.IdentityToken != "" || cfg.RegistryToken != "" {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}
