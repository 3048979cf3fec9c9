package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// DefaultStepUIDs is the range of users isolated steps run as when Options.StepUIDs is empty.
const DefaultStepUIDs = "2000000-2065535"

// uidLockDir holds one lock file per step user taken on this machine, by any manager.
var uidLockDir = "/run/ferry/step-uids"

// uidPool hands out step users (and groups of the same number), one per running Build. A user is
// taken machine-wide by an exclusive lock on its file in uidLockDir, held by the manager while
// the Build runs and by every step's sandbox while it runs: two Builds never share a user, not
// even Builds of two managers, nor a Build and the leftovers of a crashed manager's step.
type uidPool struct {
	first, last int
	mu          sync.Mutex
}

// parseUIDRange parses "FIRST-LAST".
func parseUIDRange(s string) (*uidPool, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.Atoi(a)
	last, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil {
		return nil, fmt.Errorf("step users %q: want FIRST-LAST, such as %s", s, DefaultStepUIDs)
	}
	// Below 1000 are system accounts; 65534 is nobody; 2^32-1 is (uid_t)-1.
	if first < 1000 || last < first || last >= 1<<32-1 || (first <= 65534 && 65534 <= last) {
		return nil, fmt.Errorf("step users %q: want a range of unused users from 1000 up, without 65534 (nobody)", s)
	}
	return &uidPool{first: first, last: last}, nil
}

func (p *uidPool) String() string { return fmt.Sprintf("%d-%d", p.first, p.last) }

// uidLease is a step user taken until release.
type uidLease struct {
	uid  int
	lock *os.File
}

func (l *uidLease) release() { _ = l.lock.Close() }

// take takes the lowest free user of the range.
func (p *uidPool) take() (*uidLease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ensurePrivateDir(uidLockDir); err != nil {
		return nil, err
	}
	for uid := p.first; uid <= p.last; uid++ {
		f, err := os.OpenFile(filepath.Join(uidLockDir, strconv.Itoa(uid)), os.O_RDWR|os.O_CREATE|noFollow, 0o600)
		if err != nil {
			return nil, fmt.Errorf("failed to take a step user: %w", err)
		}
		locked, err := tryLock(f)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("failed to take a step user: %w", err)
		}
		if locked {
			return &uidLease{uid: uid, lock: f}, nil
		}
		_ = f.Close()
	}
	return nil, fmt.Errorf("every step user of %s is taken by a running Build: widen --local-step-uids", p)
}

// ensurePrivateDir makes dir (and its parents) unless it exists, and checks that it is a
// directory of this user that nobody else may write.
func ensurePrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() || fi.Mode().Perm()&0o022 != 0 || !ownedBySelf(fi) {
		return errors.New(dir + " must be a directory of this user that nobody else may write")
	}
	return nil
}
