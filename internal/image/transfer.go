package image

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Transfer is what a Client did with each blob and manifest.
type Transfer struct {
	// Uploaded are the blobs sent to the registry.
	Uploaded []Blob `json:"uploaded,omitempty"`
	// Mounted are the blobs the registry linked from another repository.
	Mounted []Blob `json:"mounted,omitempty"`
	// Existing are the digests of blobs that were already in the repository.
	Existing []string `json:"existing,omitempty"`
	// Manifests is how many manifests were PUT (an image under its digest or a tag, an index).
	Manifests int `json:"manifests"`
	// ManifestBytes is their size.
	ManifestBytes int64 `json:"manifestBytes"`
}

// Blob is one blob a Client uploaded or had mounted.
type Blob struct {
	// Digest is the blob's digest.
	Digest string `json:"digest"`
	// Bytes went over the wire (0 for a mount).
	Bytes int64 `json:"bytes,omitempty"`
	// From is the repository a mounted blob came from.
	From string `json:"from,omitempty"`
}

// UploadedBytes is the number of blob and manifest bytes sent.
func (t Transfer) UploadedBytes() int64 {
	n := t.ManifestBytes
	for _, b := range t.Uploaded {
		n += b.Bytes
	}
	return n
}

// observer sits under go-containerregistry's retry and auth transports: it refuses plain HTTP to
// registries that are not on loopback (unless insecure), and records what happens to each blob.
type observer struct {
	inner    http.RoundTripper
	insecure bool
	log      io.Writer

	sent atomic.Int64

	mu       sync.Mutex
	sessions map[string]int64
	t        Transfer
}

func newObserver(inner http.RoundTripper, insecure bool, log io.Writer) *observer {
	return &observer{inner: inner, insecure: insecure, log: log, sessions: map[string]int64{}}
}

// RoundTrip implements http.RoundTripper.
func (o *observer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !o.insecure && !isLoopback(req.URL.Hostname()) {
		return nil, fmt.Errorf("refusing plain HTTP to the registry %s: only loopback registries are reached without TLS, unless you allow it (--insecure-registry)", req.URL.Host)
	}
	var body *countingBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &countingBody{ReadCloser: req.Body, sent: &o.sent}
		req = req.Clone(req.Context())
		req.Body = body
	}
	resp, err := o.inner.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	var n int64
	if body != nil {
		n = body.n.Load()
	}
	o.record(req, resp.StatusCode, n)
	return resp, nil
}

// record interprets one request of the registry API.
func (o *observer) record(req *http.Request, status int, n int64) {
	rest, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	if !ok {
		return
	}
	q := req.URL.Query()
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case strings.Contains(rest, "/blobs/uploads"):
		switch req.Method {
		case http.MethodPost:
			if q.Get("mount") != "" && status == http.StatusCreated {
				o.t.Mounted = append(o.t.Mounted, Blob{Digest: q.Get("mount"), From: q.Get("from")})
				o.logf("  %s mounted from %s\n", short(q.Get("mount")), q.Get("from"))
			}
		case http.MethodPatch:
			o.sessions[req.URL.Path] += n
		case http.MethodPut:
			total := o.sessions[req.URL.Path] + n
			delete(o.sessions, req.URL.Path)
			if status == http.StatusCreated {
				o.t.Uploaded = append(o.t.Uploaded, Blob{Digest: q.Get("digest"), Bytes: total})
				o.logf("  %s uploaded (%s)\n", short(q.Get("digest")), humanBytes(total))
			}
		}
	case strings.Contains(rest, "/blobs/") && req.Method == http.MethodHead && status == http.StatusOK:
		d := rest[strings.LastIndex(rest, "/")+1:]
		if !slices.Contains(o.t.Existing, d) {
			o.t.Existing = append(o.t.Existing, d)
			o.logf("  %s already in the registry\n", short(d))
		}
	case strings.Contains(rest, "/manifests/") && req.Method == http.MethodPut && status >= 200 && status < 300:
		o.t.Manifests++
		o.t.ManifestBytes += n
	}
}

func (o *observer) logf(format string, args ...any) {
	_, _ = fmt.Fprintf(o.log, format, args...)
}

func (o *observer) transfer() Transfer {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.t
	t.Uploaded = slices.Clone(t.Uploaded)
	t.Mounted = slices.Clone(t.Mounted)
	t.Existing = slices.Clone(t.Existing)
	return t
}

type countingBody struct {
	io.ReadCloser
	n    atomic.Int64
	sent *atomic.Int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	c.sent.Add(int64(n))
	return n, err
}

// short abbreviates a digest for progress lines.
func short(digest string) string {
	if i := strings.Index(digest, ":"); i >= 0 && len(digest) > i+13 {
		return digest[:i+13]
	}
	return digest
}

// humanBytes formats a size for people.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
