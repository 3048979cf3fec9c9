package registry

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Proxy is a reverse proxy in front of a registry that records what clients send — blob uploads
// with their bytes, cross-repository mounts, manifest PUTs — and injects faults. Clients use its
// Host in image references; it keeps the Host header, so the registry's upload Locations point
// back at the proxy.
type Proxy struct {
	*Server

	mu       sync.Mutex
	stats    Stats
	sessions map[string]int64
	faults   []*faultState
}

// Stats is what clients sent through a Proxy.
type Stats struct {
	// Requests counts every request, including those answered by a fault.
	Requests int
	// Faults counts the requests answered by an injected fault.
	Faults int
	// BlobChecks counts HEAD requests on blobs (existence checks before an upload).
	BlobChecks int
	// Uploads are the blob uploads the registry committed, in order.
	Uploads []Upload
	// Mounts are the blobs the registry mounted from another repository.
	Mounts []Mount
	// Manifests are the manifest PUTs, in order, whatever their outcome.
	Manifests []ManifestPut
	// BytesIn counts every request body byte forwarded to the registry.
	BytesIn int64
}

// Upload is one committed blob upload.
type Upload struct {
	// Repository is where the blob was uploaded.
	Repository string
	// Digest is the blob's digest.
	Digest string
	// Bytes is how much of it went over the wire (all PATCH and PUT bodies of the session).
	Bytes int64
}

// Mount is a blob the registry linked from another repository instead of receiving it.
type Mount struct {
	// Repository is where the blob was mounted.
	Repository string
	// From is the repository it came from.
	From string
	// Digest is the blob's digest.
	Digest string
}

// ManifestPut is one manifest PUT.
type ManifestPut struct {
	// Repository is the manifest's repository.
	Repository string
	// Reference is the tag or digest it was put under.
	Reference string
	// MediaType is the request's Content-Type.
	MediaType string
	// Bytes is the manifest's size.
	Bytes int64
	// Status is the registry's answer.
	Status int
}

// UploadedDigests returns the digests of the committed blob uploads, sorted.
func (s Stats) UploadedDigests() []string {
	out := make([]string, 0, len(s.Uploads))
	for _, u := range s.Uploads {
		out = append(out, u.Digest)
	}
	slices.Sort(out)
	return out
}

// BlobBytes is the number of bytes of committed blob uploads.
func (s Stats) BlobBytes() int64 {
	var n int64
	for _, u := range s.Uploads {
		n += u.Bytes
	}
	return n
}

// StoredManifests returns the manifest PUTs the registry accepted.
func (s Stats) StoredManifests() []ManifestPut {
	var out []ManifestPut
	for _, m := range s.Manifests {
		if m.Status >= 200 && m.Status < 300 {
			out = append(out, m)
		}
	}
	return out
}

// ManifestBytes is the number of bytes of accepted manifest PUTs.
func (s Stats) ManifestBytes() int64 {
	var n int64
	for _, m := range s.StoredManifests() {
		n += m.Bytes
	}
	return n
}

// Fault makes a Proxy answer matching requests itself instead of forwarding them.
type Fault struct {
	// Match selects the requests; nil matches every request.
	Match func(*http.Request) bool
	// Status is the HTTP status to answer with (503, 429, …); 0 drops the connection without an
	// answer.
	Status int
	// Times is how many matching requests fail; a negative number means every one.
	Times int
}

// MatchBlobUploads matches the requests of a blob upload (POST, PATCH and PUT under
// /blobs/uploads/), but not existence checks.
func MatchBlobUploads(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/blobs/uploads/")
}

// MatchManifestPuts matches manifest PUTs.
func MatchManifestPuts(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
}

// MatchV2 matches every registry API request (everything under /v2/).
func MatchV2(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/v2/")
}

type faultState struct {
	Fault
	left int
}

// StartProxy starts a recording proxy in front of target, a registry's host:port or URL.
func StartProxy(target string) (*Proxy, error) {
	if !strings.Contains(target, "://") {
		target = "http://" + target
	}
	u, err := url.Parse(target)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("failed to parse the proxy target %q", target)
	}
	p := &Proxy{sessions: map[string]int64{}}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 16},
		// Clients that give up mid-request (faults, cancelled pushes) are not worth a log line.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	s, err := serve("", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serve(rp, w, r)
	}))
	if err != nil {
		return nil, err
	}
	s.cleanup = append(s.cleanup, rp.Transport.(*http.Transport).CloseIdleConnections)
	p.Server = s
	return p, nil
}

// Stats returns a copy of what was recorded since the start or the last Reset.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Uploads = slices.Clone(s.Uploads)
	s.Mounts = slices.Clone(s.Mounts)
	s.Manifests = slices.Clone(s.Manifests)
	return s
}

// Reset forgets what was recorded (faults stay).
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats = Stats{}
	p.sessions = map[string]int64{}
}

// Inject adds a fault; faults are tried in the order they were added.
func (p *Proxy) Inject(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &faultState{Fault: f, left: f.Times})
}

// ClearFaults removes every fault.
func (p *Proxy) ClearFaults() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = nil
}

// takeFault returns the fault that answers r, if any, and uses one of its times.
func (p *Proxy) takeFault(r *http.Request) *Fault {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Requests++
	for _, f := range p.faults {
		if f.left == 0 || (f.Match != nil && !f.Match(r)) {
			continue
		}
		if f.left > 0 {
			f.left--
		}
		p.stats.Faults++
		out := f.Fault
		return &out
	}
	return nil
}

func (p *Proxy) serve(rp *httputil.ReverseProxy, w http.ResponseWriter, r *http.Request) {
	if f := p.takeFault(r); f != nil {
		if f.Status == 0 {
			dropConnection(w)
			return
		}
		// Read what the client sends, as a registry would, and close the connection afterwards.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Connection", "close")
		w.Header().Set("Retry-After", "0")
		writeRegistryError(w, f.Status, "UNAVAILABLE", "fault injected by the test proxy")
		return
	}
	body := &countingReader{r: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	rp.ServeHTTP(rec, r)
	p.record(r, rec.status, body.n.Load())
}

// dropConnection closes the client's connection without answering.
func dropConnection(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	_ = conn.Close()
}

// record interprets one forwarded request.
func (p *Proxy) record(r *http.Request, status int, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.BytesIn += n
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		return
	}
	q := r.URL.Query()
	created := status == http.StatusCreated
	switch {
	case strings.Contains(rest, "/blobs/uploads"):
		repo := rest[:strings.Index(rest, "/blobs/uploads")]
		session := r.URL.Path
		switch r.Method {
		case http.MethodPost:
			switch {
			case q.Get("mount") != "" && created:
				p.stats.Mounts = append(p.stats.Mounts, Mount{Repository: repo, From: q.Get("from"), Digest: q.Get("mount")})
			case q.Get("digest") != "" && created:
				p.stats.Uploads = append(p.stats.Uploads, Upload{Repository: repo, Digest: q.Get("digest"), Bytes: n})
			}
		case http.MethodPatch:
			p.sessions[session] += n
		case http.MethodPut:
			total := p.sessions[session] + n
			delete(p.sessions, session)
			if created && q.Get("digest") != "" {
				p.stats.Uploads = append(p.stats.Uploads, Upload{Repository: repo, Digest: q.Get("digest"), Bytes: total})
			}
		}
	case strings.Contains(rest, "/blobs/") && r.Method == http.MethodHead:
		p.stats.BlobChecks++
	case strings.Contains(rest, "/manifests/") && r.Method == http.MethodPut:
		i := strings.LastIndex(rest, "/manifests/")
		p.stats.Manifests = append(p.stats.Manifests, ManifestPut{
			Repository: rest[:i],
			Reference:  rest[i+len("/manifests/"):],
			MediaType:  r.Header.Get("Content-Type"),
			Bytes:      n,
			Status:     status,
		})
	}
}

type countingReader struct {
	r io.ReadCloser
	n atomic.Int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
