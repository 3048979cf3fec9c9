package dev

import (
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// uiTokensFile is where the people's UI sign-in tokens are, in the data directory.
const uiTokensFile = "ui-tokens.yaml" //nolint:gosec // G101: a file name, not a credential

// configureUI turns the approval UI on: on the port of the last start when it is free, with a
// sign-in token per person (kept in the data directory, so sign-in links stay valid across starts),
// and as the link target of the commit statuses Ferry reports to GitLab.
func (e *env) configureUI(opts *manager.Options) error {
	addr, err := e.uiAddr()
	if err != nil {
		return err
	}
	entries := make([]auth.TokenEntry, 0, len(People))
	for _, p := range People {
		entries = append(entries, auth.TokenEntry{Token: e.uiToken(p.Name), User: p.Name, Groups: p.Groups})
	}
	data, err := yaml.Marshal(entries)
	if err != nil {
		return err
	}
	path := filepath.Join(e.dir, uiTokensFile)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("failed to write the UI's sign-in tokens: %w", err)
	}
	opts.UIAddr = addr
	opts.UIBaseURL = "http://" + addr
	opts.UI.TokenFile = path
	return nil
}

// uiToken is a person's UI sign-in token.
func (e *env) uiToken(person string) string { return e.st.secret("ui/"+person, "", 24) }

// uiWaiting says what the UI still waits for, "" when it serves.
func (e *env) uiWaiting() string {
	if e.mgr.UI == nil || e.mgr.UI.Addr() == "" {
		return "the UI"
	}
	return ""
}

// uiUser adds the UI's URL and a person's sign-in token and link to the endpoints. The link carries
// the token in its fragment, which browsers never send to a server.
func (e *env) uiUser(ep *Endpoints, p Person, u *UserEndpoint) {
	if e.mgr.UI == nil || e.mgr.UI.Addr() == "" {
		return
	}
	ep.UIURL = "http://" + e.mgr.UI.Addr()
	u.UIToken = e.uiToken(p.Name)
	u.UISignInURL = ep.UIURL + "/signin#token=" + u.UIToken
}
