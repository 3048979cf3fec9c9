package testutil

import (
	"io"
	"net/http"
	"regexp"
	"testing"
)

// GetOK fetches u with c and returns the body; anything but 200 fails the test with the body.
func GetOK(t testing.TB, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d\n%s", u, resp.StatusCode, body)
	}
	return string(body)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// CSRFToken finds the CSRF token in a page of the UI; a page without one fails the test.
func CSRFToken(t testing.TB, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", page)
	}
	return m[1]
}
