package local

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"sort"
	"strings"
	"sync"
)

// redacted replaces a secret in a log.
const redacted = "[redacted]"

// minSecretLength is the shortest value redacted: shorter ones would take ordinary words with them.
const minSecretLength = 4

// maxHeldBytes is how much of an unfinished line the redactor holds back before it writes it.
const maxHeldBytes = 64 << 10

// redactor writes to w with every secret replaced by [redacted]. Once it knows secrets it writes
// whole lines, holding back an unfinished one (up to maxHeldBytes, then all but the last
// secret's length), so that a secret split across writes is still found. It is safe for
// concurrent use.
type redactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets []string
	longest int
	held    []byte
}

func newRedactor(w io.Writer) *redactor { return &redactor{w: w} }

// AddSecrets adds values to redact; empty and very short ones are ignored.
func (r *redactor) AddSecrets(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		v = strings.TrimSpace(v)
		if len(v) < minSecretLength {
			continue
		}
		r.secrets = append(r.secrets, v)
		r.longest = max(r.longest, len(v))
	}
	// Longest first, so that a secret containing another is replaced whole.
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
}

// Redact replaces the secrets in s.
func (r *redactor) Redact(s string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.redact([]byte(s)))
}

func (r *redactor) redact(b []byte) []byte {
	for _, s := range r.secrets {
		b = bytes.ReplaceAll(b, []byte(s), []byte(redacted))
	}
	return b
}

// Write writes the complete lines of held+p, redacted, and holds the rest back.
func (r *redactor) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.secrets) == 0 {
		return r.w.Write(p)
	}
	r.held = append(r.held, p...)
	cut := bytes.LastIndexByte(r.held, '\n') + 1
	if cut == 0 && len(r.held) > maxHeldBytes {
		// One very long line: redact what is held and keep back as much as the longest secret
		// could still need from the next write.
		r.held = r.redact(r.held)
		cut = max(0, len(r.held)-(r.longest-1))
	}
	if cut == 0 {
		return len(p), nil
	}
	out := r.redact(r.held[:cut])
	r.held = append(r.held[:0], r.held[cut:]...)
	if _, err := r.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what is held back.
func (r *redactor) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.held) == 0 {
		return nil
	}
	out := r.redact(r.held)
	r.held = r.held[:0]
	_, err := r.w.Write(out)
	return err
}

// dockerConfigSecrets are the secret values of a Docker config.json: passwords, auth strings
// (and the passwords inside them) and tokens. Names and registry hosts are not secret.
func dockerConfigSecrets(data []byte) []string {
	if len(data) == 0 {
		return nil
	}
	var cfg struct {
		Auths map[string]struct {
			Auth          string `json:"auth"`
			Password      string `json:"password"`
			IdentityToken string `json:"identitytoken"`
			RegistryToken string `json:"registrytoken"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil
	}
	var out []string
	for _, a := range cfg.Auths {
		out = append(out, a.Auth, a.Password, a.IdentityToken, a.RegistryToken)
		if raw, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
			if _, password, ok := strings.Cut(string(raw), ":"); ok {
				out = append(out, password)
			}
		}
	}
	return out
}
