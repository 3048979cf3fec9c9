package gitlab

import (
	"net/http"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		header http.Header
		want   time.Duration
		ok     bool
	}{
		{"none", http.Header{}, 0, false},
		{"seconds", http.Header{"Retry-After": {"7"}}, 7 * time.Second, true},
		{"date", http.Header{"Retry-After": {now.Add(3 * time.Second).Format(http.TimeFormat)}}, 3 * time.Second, true},
		{"past date", http.Header{"Retry-After": {now.Add(-time.Hour).Format(http.TimeFormat)}}, 0, true},
		{"ratelimit reset", http.Header{"Ratelimit-Reset": {"1795341605"}}, time.Unix(1795341605, 0).Sub(now), true},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0, false},
	}
	for _, c := range cases {
		got, ok := retryAfter(c.header, now)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: got %s %v, want %s %v", c.name, got, ok, c.want, c.ok)
		}
	}
}

func TestBackoffIsBounded(t *testing.T) {
	minWait, maxWait := 100*time.Millisecond, 2*time.Second
	for attempt := range 40 {
		d := backoff(minWait, maxWait, attempt, nil)
		if d < minWait/2 || d > maxWait {
			t.Errorf("attempt %d: backoff %s outside [%s, %s]", attempt, d, minWait/2, maxWait)
		}
	}
	resp := &http.Response{Header: http.Header{"Retry-After": {"3600"}}}
	if d := backoff(minWait, maxWait, 0, resp); d != maxWait {
		t.Errorf("a Retry-After of an hour must be cut to %s, got %s", maxWait, d)
	}
	resp = &http.Response{Header: http.Header{"Retry-After": {"1"}}}
	if d := backoff(minWait, maxWait, 0, resp); d != time.Second {
		t.Errorf("Retry-After 1: got %s", d)
	}
}
