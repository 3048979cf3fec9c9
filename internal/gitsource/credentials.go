package gitsource

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	gitssh "github.com/go-git/go-git/v5/plumbing/transport/ssh"
	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
	corev1 "k8s.io/api/core/v1"
)

// Keys of a Project's credentials Secret: those of the kubernetes.io/basic-auth and
// kubernetes.io/ssh-auth Secret types, plus known_hosts.
const (
	UsernameKey      = corev1.BasicAuthUsernameKey
	PasswordKey      = corev1.BasicAuthPasswordKey
	SSHPrivateKeyKey = corev1.SSHAuthPrivateKey
	KnownHostsKey    = "known_hosts"
)

// Credentials authenticate a fetch. They are never formatted: String hides them.
type Credentials struct {
	// Username and Password are HTTPS basic-auth credentials (for GitLab, a deploy token or a
	// project access token).
	Username, Password string
	// SSHPrivateKey is a PEM private key for SSH URLs.
	SSHPrivateKey []byte
	// KnownHosts are the accepted host keys for SSH, in OpenSSH's known_hosts format. Required with
	// an SSH key: host keys are always checked.
	KnownHosts []byte
}

// String keeps the secret parts out of logs and errors.
func (c *Credentials) String() string {
	switch {
	case c == nil:
		return "none"
	case len(c.SSHPrivateKey) > 0:
		return "ssh key"
	default:
		return "basic auth for " + c.Username
	}
}

// GoString keeps the secret parts out of %#v.
func (c *Credentials) GoString() string { return c.String() }

// CredentialsFromSecret reads a basic-auth (username, password) or ssh-auth (ssh-privatekey,
// known_hosts) Secret.
func CredentialsFromSecret(s *corev1.Secret) (*Credentials, error) {
	return credentialsFromData(fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name), func(key string) ([]byte, bool) {
		v, ok := s.Data[key]
		if !ok {
			if str, ok2 := s.StringData[key]; ok2 {
				return []byte(str), true
			}
		}
		return v, ok
	})
}

// CredentialsFromDir reads the same keys from a directory where the Secret is mounted, as in a
// pipeline step.
func CredentialsFromDir(dir string) (*Credentials, error) {
	return credentialsFromData("directory "+dir, func(key string) ([]byte, bool) {
		b, err := os.ReadFile(filepath.Join(dir, key))
		return b, err == nil
	})
}

func credentialsFromData(source string, get func(string) ([]byte, bool)) (*Credentials, error) {
	c := &Credentials{}
	if key, ok := get(SSHPrivateKeyKey); ok {
		c.SSHPrivateKey = key
		c.KnownHosts, _ = get(KnownHostsKey)
		if len(c.KnownHosts) == 0 {
			return nil, fmt.Errorf("%s has an SSH key but no %s: Ferry always checks the server's host key", source, KnownHostsKey)
		}
		return c, nil
	}
	user, okUser := get(UsernameKey)
	password, okPassword := get(PasswordKey)
	if !okPassword {
		return nil, fmt.Errorf("%s has neither %s nor %s", source, PasswordKey, SSHPrivateKeyKey)
	}
	c.Password = string(password)
	c.Username = string(user)
	if !okUser || c.Username == "" {
		// GitLab accepts any user name with a personal or project access token.
		c.Username = "oauth2"
	}
	return c, nil
}

// authMethod picks the credentials' kind for the URL's transport.
func (c *Credentials) authMethod(rawURL string) (transport.AuthMethod, error) {
	if c == nil {
		return nil, nil
	}
	ep, err := transport.NewEndpoint(rawURL)
	if err != nil {
		return nil, errors.New("the clone URL cannot be parsed")
	}
	switch ep.Protocol {
	case "http", "https":
		if c.Password == "" {
			return nil, fmt.Errorf("the clone URL %s is HTTP(S) but the credentials are an SSH key; use a basic-auth Secret", rawURL)
		}
		return &githttp.BasicAuth{Username: c.Username, Password: c.Password}, nil
	case "ssh":
		if len(c.SSHPrivateKey) == 0 {
			return nil, fmt.Errorf("the clone URL %s is SSH but the credentials are a password; use an ssh-auth Secret", rawURL)
		}
		user := ep.User
		if user == "" {
			user = "git"
		}
		keys, err := gitssh.NewPublicKeys(user, c.SSHPrivateKey, "")
		if err != nil {
			return nil, errors.New("the SSH private key cannot be parsed")
		}
		callback, err := hostKeyCallback(c.KnownHosts)
		if err != nil {
			return nil, err
		}
		keys.HostKeyCallback = callback
		return keys, nil
	}
	return nil, fmt.Errorf("no credentials for %s URLs", ep.Protocol)
}

// hostKeyCallback checks host keys against known_hosts content. The knownhosts package reads
// files, so the content goes through a temporary file that is removed at once.
func hostKeyCallback(knownHosts []byte) (gossh.HostKeyCallback, error) {
	f, err := os.CreateTemp("", "ferry-known-hosts-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	if _, err := f.Write(knownHosts); err != nil {
		_ = f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	cb, err := knownhosts.New(f.Name())
	if err != nil {
		return nil, fmt.Errorf("the known_hosts entries cannot be parsed: %w", err)
	}
	return cb, nil
}
