package dev

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// stateVersion is the layout of the data directory; a directory written by another version is
// refused rather than half understood.
const stateVersion = 1

// state is what `ferry dev` keeps in DIR/state.json between starts: the ports (so URLs, image
// references and clone URLs stay the same), the generated credentials, and how long starts took.
// The file is mode 0600: it holds the credentials of the local environment.
type state struct {
	// mu guards the maps: the parts of the environment start in parallel.
	mu sync.Mutex

	Version int       `json:"version"`
	Created time.Time `json:"created"`

	// Ports of the listeners whose addresses end up in objects and images.
	Ports map[string]int `json:"ports"`

	// Secrets are generated once: webhook secret tokens (per project), the GitLab API token of
	// Ferry's bot, registry passwords, and per person their GitLab token, git password and UI
	// sign-in token.
	Secrets map[string]string `json:"secrets"`

	// Starts counts completed starts; FirstStartSeconds and LastStartSeconds are their durations.
	Starts            int     `json:"starts"`
	FirstStartSeconds float64 `json:"firstStartSeconds,omitempty"`
	LastStartSeconds  float64 `json:"lastStartSeconds,omitempty"`
}

// Names of the listeners whose ports are kept.
const (
	portRegistry = "registry"
	portGit      = "git"
	portReceiver = "receiver"
	portUI       = "ui"
	portApps     = "apps"
)

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState reads the state of a data directory, or makes a new one (first start) when there is
// none yet.
func loadState(dir string) (*state, bool, error) {
	data, err := os.ReadFile(statePath(dir))
	if errors.Is(err, os.ErrNotExist) {
		return &state{Version: stateVersion, Created: time.Now().UTC().Truncate(time.Second), Ports: map[string]int{}, Secrets: map[string]string{}}, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("failed to read %s: %w", statePath(dir), err)
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, false, fmt.Errorf("failed to parse %s (delete the data directory to start afresh): %w", statePath(dir), err)
	}
	if st.Version != stateVersion {
		return nil, false, fmt.Errorf("%s was written by another version of ferry dev (layout %d, this one reads %d): delete the data directory to start afresh", statePath(dir), st.Version, stateVersion)
	}
	if st.Ports == nil {
		st.Ports = map[string]int{}
	}
	if st.Secrets == nil {
		st.Secrets = map[string]string{}
	}
	return st, st.Starts == 0, nil
}

// save writes the state atomically, readable by its owner only.
func (st *state) save(dir string) error {
	st.mu.Lock()
	data, err := json.MarshalIndent(st, "", "  ")
	st.mu.Unlock()
	if err != nil {
		return err
	}
	return writeFileAtomic(statePath(dir), append(data, '\n'), 0o600)
}

// secret returns the named secret, generating it (hex of n random bytes, with a prefix) the first
// time.
func (st *state) secret(name, prefix string, n int) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	if s, ok := st.Secrets[name]; ok {
		return s
	}
	b := make([]byte, n)
	_, _ = rand.Read(b)
	s := prefix + hex.EncodeToString(b)
	st.Secrets[name] = s
	return s
}

// addr returns the loopback address to listen on for a named port: the port of the last start
// when it is still free, else a new free port (0 lets the listener choose). moved reports a
// kept port that was taken.
func (st *state) addr(name string) (addr string, moved bool) {
	return st.addrOn(name, "127.0.0.1")
}

// addrOn is addr on another address of this machine.
func (st *state) addrOn(name, host string) (addr string, moved bool) {
	st.mu.Lock()
	port, ok := st.Ports[name]
	st.mu.Unlock()
	if !ok {
		return net.JoinHostPort(host, "0"), false
	}
	a := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", a)
	if err != nil {
		return net.JoinHostPort(host, "0"), true
	}
	_ = ln.Close()
	return a, false
}

// setPort records the port a listener got, from its host:port address.
func (st *state) setPort(name, hostPort string) error {
	_, p, err := net.SplitHostPort(hostPort)
	if err != nil {
		return fmt.Errorf("failed to read the port of %s address %q: %w", name, hostPort, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return fmt.Errorf("failed to read the port of %s address %q: %w", name, hostPort, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.Ports[name] = port
	return nil
}

// freePort reserves nothing: it asks the kernel for a free loopback port and returns it, for
// listeners that are started later by someone else (the manager's receiver and UI).
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("failed to find a free port: %w", err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String(), nil
}

// writeFileAtomic writes data to a temporary file next to path and renames it into place.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-")
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("failed to write %s: %w", path, err)
	}
	return nil
}

// lockDataDir takes an exclusive lock on the data directory, so that two `ferry dev` never share
// one; the lock ends with the process.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("another ferry dev is running with the data directory %s: stop it first (Ctrl-C), or pass another --data-dir", dir)
		}
		return nil, fmt.Errorf("failed to lock %s: %w", path, err)
	}
	return f, nil
}

// get returns a secret generated earlier, "" when there is none.
func (st *state) get(name string) string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.Secrets[name]
}
