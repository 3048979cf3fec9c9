package build

import (
	"strings"
	"testing"
	"time"
)

func TestFetchSlots(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := &fetchSlots{}
	const share = 2

	// A server's share: two fetches at once, whatever their namespaces.
	r1, w := s.acquire("hung.example.com", "a", share, now)
	if w != nil {
		t.Fatalf("first fetch waits: %+v", w)
	}
	r2, w := s.acquire("hung.example.com", "b", share, now)
	if w != nil {
		t.Fatalf("second fetch waits: %+v", w)
	}
	if _, w = s.acquire("hung.example.com", "c", share, now); w == nil || !strings.Contains(w.message, "git server hung.example.com: 2 Builds are fetching from it") || w.after < fetchWait || w.after > 2*fetchWait {
		t.Errorf("third fetch from the server: %+v", w)
	}
	// Another server is not held up.
	r3, w := s.acquire("gitlab.example.com", "c", share, now)
	if w != nil {
		t.Fatalf("another server's fetch waits: %+v", w)
	}
	// A namespace's share: a tenant's Projects on many servers hold no more workers than one server.
	r4, w := s.acquire("other.example.com", "c", share, now)
	if w != nil {
		t.Fatalf("second fetch of namespace c waits: %+v", w)
	}
	if _, w = s.acquire("third.example.com", "c", share, now); w == nil || !strings.Contains(w.message, "2 Builds of namespace c are fetching") {
		t.Errorf("third fetch of namespace c: %+v", w)
	}
	// Releasing gives the slot back, once.
	r1()
	r1()
	if r, w := s.acquire("hung.example.com", "d", share, now); w != nil {
		t.Errorf("after a release: %+v", w)
	} else {
		r()
	}
	r2()
	r3()
	r4()
	if len(s.busy) != 0 {
		t.Errorf("busy after every release: %v", s.busy)
	}

	// A server that timed out is left alone, longer after each timeout, and not after it answered.
	if d := s.timedOut("hung.example.com", 30*time.Second, now); d != 30*time.Second {
		t.Errorf("first backoff %s", d)
	}
	_, w = s.acquire("hung.example.com", "a", share, now.Add(10*time.Second))
	if w == nil || w.after != 20*time.Second || !strings.Contains(w.message, "a fetch from it timed out at 2026-01-02T03:04:05Z; the next attempt is at 2026-01-02T03:04:35Z") {
		t.Errorf("during the backoff: %+v", w)
	}
	if r, w := s.acquire("gitlab.example.com", "a", share, now.Add(10*time.Second)); w != nil {
		t.Errorf("another server during the backoff: %+v", w)
	} else {
		r()
	}
	later := now.Add(31 * time.Second)
	r, w := s.acquire("hung.example.com", "a", share, later)
	if w != nil {
		t.Fatalf("after the backoff: %+v", w)
	}
	r()
	if d := s.timedOut("hung.example.com", 30*time.Second, later); d != time.Minute {
		t.Errorf("second backoff %s", d)
	}
	for range 10 {
		s.timedOut("hung.example.com", 30*time.Second, later)
	}
	if d := s.timedOut("hung.example.com", 30*time.Second, later); d != maxHostBackoff {
		t.Errorf("backoff after many timeouts %s", d)
	}
	s.answered("hung.example.com")
	if r, w := s.acquire("hung.example.com", "a", share, later); w != nil {
		t.Errorf("after an answer: %+v", w)
	} else {
		r()
	}
}
