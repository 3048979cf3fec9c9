package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// TokensKey is the key of a token Secret that holds the token list.
const TokensKey = "tokens.yaml"

// minTokenLength keeps guessable tokens out.
const minTokenLength = 16

// TokenEntry maps one sign-in token to the identity it signs in as. A token file is a YAML list
// of them:
//
//   - token: 9c1f…            # at least 16 characters
//     user: alice
//     groups: [release-managers]
type TokenEntry struct {
	// Token is the secret the person types or follows a link with.
	Token string `json:"token"`
	// User is the username the UI acts for.
	User string `json:"user"`
	// Groups are the person's groups, as RBAC should see them.
	Groups []string `json:"groups,omitempty"`
}

// ParseTokens reads a token list; source names it in errors. Errors never contain a token.
func ParseTokens(source string, data []byte) ([]TokenEntry, error) {
	var entries []TokenEntry
	if err := yaml.UnmarshalStrict(data, &entries); err != nil {
		return nil, fmt.Errorf("%s: not a YAML list of {token, user, groups}: %w", source, err)
	}
	seen := map[[32]byte]int{}
	for i, e := range entries {
		switch {
		case len(e.Token) < minTokenLength:
			return nil, fmt.Errorf("%s: entry %d (user %q): token must be at least %d characters", source, i, e.User, minTokenLength)
		case strings.TrimSpace(e.User) == "":
			return nil, fmt.Errorf("%s: entry %d: user is empty", source, i)
		case strings.HasPrefix(e.User, "system:"):
			return nil, fmt.Errorf("%s: entry %d: user %q: names starting with system: are reserved by Kubernetes", source, i, e.User)
		}
		for _, g := range e.Groups {
			if strings.HasPrefix(g, "system:") {
				return nil, fmt.Errorf("%s: entry %d (user %q): group %q: groups starting with system: are Kubernetes' own and the UI never signs anyone in with one", source, i, e.User, g)
			}
		}
		sum := sha256.Sum256([]byte(e.Token))
		if j, dup := seen[sum]; dup {
			return nil, fmt.Errorf("%s: entries %d and %d have the same token", source, j, i)
		}
		seen[sum] = i
	}
	return entries, nil
}

// MatchToken returns the identity of the entry whose token is token. Every entry is compared in
// constant time, so how long it takes says nothing about the tokens.
func MatchToken(entries []TokenEntry, token string) (Identity, bool) {
	got := sha256.Sum256([]byte(token))
	var match Identity
	found := 0
	for _, e := range entries {
		want := sha256.Sum256([]byte(e.Token))
		if subtle.ConstantTimeCompare(got[:], want[:]) == 1 {
			match = Identity{User: e.User, Groups: append([]string(nil), e.Groups...)}
			found = 1
		}
	}
	return match, found == 1 && token != ""
}

// TokenSource returns the current token list.
type TokenSource interface {
	Tokens(ctx context.Context) ([]TokenEntry, error)
}

// TokenFile reads the token list from a file at every sign-in, so edits take effect at once.
type TokenFile string

// Tokens reads and parses the file.
func (f TokenFile) Tokens(context.Context) ([]TokenEntry, error) {
	data, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("failed to read the UI's token file: %w", err)
	}
	return ParseTokens(string(f), data)
}

// TokenSecret reads the token list from key tokens.yaml of a Secret.
type TokenSecret struct {
	Reader          client.Reader
	Namespace, Name string
}

// Tokens reads and parses the Secret.
func (s TokenSecret) Tokens(ctx context.Context) ([]TokenEntry, error) {
	secret := &corev1.Secret{}
	if err := s.Reader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, secret); err != nil {
		return nil, fmt.Errorf("failed to read the UI's token Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	data, ok := secret.Data[TokensKey]
	if !ok {
		return nil, fmt.Errorf("secret %s/%s has no key %s", s.Namespace, s.Name, TokensKey)
	}
	return ParseTokens(fmt.Sprintf("secret %s/%s key %s", s.Namespace, s.Name, TokensKey), data)
}
