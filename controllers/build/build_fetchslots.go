package build

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Waiting for a git server.
const (
	// fetchWait is how soon a Build that found no free fetch slot tries again (plus up to as much
	// again, so that waiting Builds do not come back together).
	fetchWait = 2 * time.Second
	// DefaultHostBackoff is how long Builds leave a git server alone after a fetch from it timed
	// out; it doubles with each further timeout, up to maxHostBackoff, and ends with a success.
	DefaultHostBackoff = 30 * time.Second
	maxHostBackoff     = 5 * time.Minute
	// followerWait is how long a Build waits for another Build's fetch of the same file before it
	// gives its worker back.
	followerWait = time.Second
)

// fetchSlots shares the Build workers that fetch pipeline files: at most share of them fetch from
// one git server, or for one namespace, at once, and a server that just timed out is left alone
// for a while. A fetch holds its worker until it ends (at most the fetch timeout), so without
// this a hung server, or one tenant's Projects pointing at several, would hold every worker and
// stop every namespace's Builds.
type fetchSlots struct {
	mu      sync.Mutex
	busy    map[string]int
	backoff map[string]hostBackoff
}

// hostBackoff is a git server's backoff after timeouts.
type hostBackoff struct {
	since, until time.Time
	timeouts     int
}

// slotWait says why a fetch cannot start yet and when to try again.
type slotWait struct {
	after   time.Duration
	message string
}

// acquire takes a slot for a fetch from host for a Build of namespace; release gives it back.
// Without a free slot it returns how long to wait and why.
func (s *fetchSlots) acquire(host, namespace string, share int, now time.Time) (release func(), wait *slotWait) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bo, ok := s.backoff[host]
	if ok && now.After(bo.until.Add(maxHostBackoff)) {
		// Long enough ago that the next timeout starts again from the base.
		delete(s.backoff, host)
	}
	if ok && now.Before(bo.until) {
		return nil, &slotWait{
			after: bo.until.Sub(now),
			message: fmt.Sprintf("Waiting for git server %s: a fetch from it timed out at %s; the next attempt is at %s",
				host, bo.since.UTC().Format(time.RFC3339), bo.until.UTC().Format(time.RFC3339)),
		}
	}
	hostKey, nsKey := "host\x00"+host, "namespace\x00"+namespace
	switch {
	case s.busy[hostKey] >= share:
		return nil, &slotWait{after: jitter(fetchWait), message: fmt.Sprintf("Waiting to fetch from git server %s: %d Builds are fetching from it, its share of the workers", host, share)}
	case s.busy[nsKey] >= share:
		return nil, &slotWait{after: jitter(fetchWait), message: fmt.Sprintf("Waiting to fetch: %d Builds of namespace %s are fetching from git servers, its share of the workers", share, namespace)}
	}
	if s.busy == nil {
		s.busy = map[string]int{}
	}
	s.busy[hostKey]++
	s.busy[nsKey]++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			for _, k := range []string{hostKey, nsKey} {
				if s.busy[k]--; s.busy[k] <= 0 {
					delete(s.busy, k)
				}
			}
		})
	}, nil
}

// timedOut starts or lengthens host's backoff and returns how long it lasts.
func (s *fetchSlots) timedOut(host string, base time.Duration, now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.backoff == nil {
		s.backoff = map[string]hostBackoff{}
	}
	bo := s.backoff[host]
	d := base << min(bo.timeouts, 10)
	d = min(d, max(maxHostBackoff, base))
	bo.timeouts++
	bo.since, bo.until = now, now.Add(d)
	s.backoff[host] = bo
	return d
}

// answered ends host's backoff: it answered a fetch.
func (s *fetchSlots) answered(host string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.backoff, host)
}

func jitter(d time.Duration) time.Duration {
	return d + rand.N(d) //nolint:gosec // G404: spreading retries needs no secure randomness
}
