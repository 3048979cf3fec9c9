package gitlabreceiver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// byteCounter counts the bytes read through it.
type byteCounter struct {
	r io.Reader
	n atomic.Int64
}

func (c *byteCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestEnvelopeWithinPrefix shows, over every payload of the corpus, that GitLab names the project
// within the first 2 KB of every event that has one (push, tag push, merge request, note, system
// hooks alike), far within prefixLimit, and that the envelope read from the beginning of the body
// is the envelope of the whole body.
func TestEnvelopeWithinPrefix(t *testing.T) {
	maxEnd := int64(0)
	for _, p := range corpusPayloads(t) {
		full, err := decodeEnvelope(p.body)
		if err != nil {
			t.Errorf("%s: %v", p.file, err)
			continue
		}
		// Where the project member ends.
		dec := json.NewDecoder(bytes.NewReader(p.body))
		_, _ = dec.Token()
		end := int64(-1)
		for dec.More() {
			key, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatalf("%s: %v", p.file, err)
			}
			if key == "project" {
				end = dec.InputOffset()
				break
			}
		}
		in := &byteCounter{r: bytes.NewReader(p.body)}
		env, err := scanEnvelope(in, p.event)
		if err != nil {
			t.Errorf("%s: %v", p.file, err)
			continue
		}
		kind := eventKind(p.event, env)
		if want := eventKind(p.event, full); kind != want {
			t.Errorf("%s: the envelope's event kind %q differs from the whole body's %q", p.file, kind, want)
		}
		// A system hook Ferry does not build is answered from its event_name alone.
		if got, want := env.project(), full.project(); end >= 0 && (kind != "" || !strings.EqualFold(p.event, systemHook)) && got != want {
			t.Errorf("%s: the envelope's project %+v differs from the whole body's %+v", p.file, got, want)
		}
		if end < 0 {
			t.Logf("%-70s %5d bytes, no project (%s)", p.file, len(p.body), p.event)
			continue
		}
		maxEnd = max(maxEnd, end)
		if end > 2048 {
			t.Errorf("%s: the project ends at byte %d, after the first 2 KB", p.file, end)
		}
		// Only a payload without a project ID (GitLab before 8.x) is read on, looking for one.
		if in.n.Load() >= int64(len(p.body)) && len(p.body) > 4096 && full.project().id != 0 {
			t.Errorf("%s: the whole body (%d bytes) was read to find the project at byte %d", p.file, len(p.body), end)
		}
		t.Logf("%-70s %5d bytes, project ends at %4d, %5d read (%s)", p.file, len(p.body), end, in.n.Load(), p.event)
	}
	t.Logf("the project ends at byte %d at the latest; the envelope's limit is %d", maxEnd, prefixLimit)
}

func TestScanEnvelope(t *testing.T) {
	cases := []struct {
		name, header, body string
		path               string
		id                 int64
		eventName          string
		// unread is a part of the body that must not be read.
		unread  string
		wantErr string
	}{
		{name: "push", header: pushHook, body: `{"object_kind":"push","project_id":3,"project":{"id":3,"path_with_namespace":"g/app"},"commits":[UNREAD]}`, path: "g/app", id: 3, unread: "UNREAD"},
		{name: "old push, ID before the project", header: pushHook, body: `{"project_id":3,"project":{"path_with_namespace":"g/app"},"commits":[UNREAD]}`, path: "g/app", id: 3, unread: "UNREAD"},
		{name: "merge request", header: mergeRequestHook, body: `{"object_kind":"merge_request","user":{"a":[1,{"b":null}]},"project":{"id":7,"path_with_namespace":"g/mr"},"object_attributes":UNREAD}`, path: "g/mr", id: 7, unread: "UNREAD"},
		{name: "project without ID, ID after it", header: pushHook, body: `{"project":{"path_with_namespace":"g/app"},"x":"y","project_id":"9"}`, path: "g/app", id: 9},
		{name: "no project at all", header: pushHook, body: `{"object_kind":"push","ref":"refs/heads/main"}`},
		{name: "system hook waits for event_name", header: systemHook, body: `{"project":{"id":4,"path_with_namespace":"g/sys"},"event_name":"push","commits":UNREAD}`, path: "g/sys", id: 4, eventName: "push", unread: "UNREAD"},
		{name: "system hook not built", header: systemHook, body: `{"event_name":"group_create","name":UNREAD}`, eventName: "group_create", unread: "UNREAD"},
		{name: "escaped strings", header: pushHook, body: `{"message":"a \"}\" {[","project":{"id":1,"path_with_namespace":"g\/app"},"x":UNREAD}`, path: "g/app", id: 1, unread: "UNREAD"},
		{name: "not an object", header: pushHook, body: `[{"project":{}}]`, wantErr: "must be a JSON object"},
		{name: "bad project ID", header: pushHook, body: `{"project":{"id":"abc"}}`, wantErr: "is not a project ID"},
		{name: "syntax error", header: pushHook, body: `{"a" 1}`, wantErr: "invalid character"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := io.Reader(strings.NewReader(c.body))
			if c.unread != "" {
				// The part that must not be read is behind a reader that fails when reached.
				before, _, _ := strings.Cut(c.body, c.unread)
				src = io.MultiReader(strings.NewReader(before), failingReader{})
			}
			env, err := scanEnvelope(src, c.header)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if key := env.project(); key.path != c.path || key.id != c.id || env.EventName != c.eventName {
				t.Errorf("project %+v, event_name %q", key, env.EventName)
			}
		})
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) {
	return 0, fmt.Errorf("read past the envelope")
}

// testReceiver is a receiver with a fake API (one Project, group/shop, with its webhook Secret)
// served over HTTP by a test server, which counts the bytes the receiver reads of each body.
type testReceiver struct {
	*Receiver
	url string
	// read is what the receiver read of the bodies, in all.
	read   atomic.Int64
	mu     sync.Mutex
	builds []*ferryv1.Build
	// created, when set, is called before a Build is recorded.
	created func()
}

const testToken = "shop-token"

func startTestReceiver(t testing.TB, opts Options, secret map[string]string) *testReceiver {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := ferryv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if secret == nil {
		secret = map[string]string{TokenKey: testToken}
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-webhook"}, Data: map[string][]byte{}}
	for k, v := range secret {
		s.Data[k] = []byte(v)
	}
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop", UID: "uid-shop"},
		Spec: ferryv1.ProjectSpec{
			GitLab:   ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "group/shop", WebhookSecretRef: ferryv1.LocalObjectReference{Name: s.Name}},
			Triggers: ferryv1.Triggers{Branches: []string{"main"}},
		},
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithIndex(&ferryv1.Project{}, projectIndex, projectIndexKeys).WithObjects(p, s).Build()
	opts, err := withDefaults(opts)
	if err != nil {
		t.Fatal(err)
	}
	tr := &testReceiver{}
	tr.Receiver = newReceiver(opts, c, c, func(_ context.Context, b *ferryv1.Build) error {
		if tr.created != nil {
			tr.created()
		}
		tr.mu.Lock()
		defer tr.mu.Unlock()
		tr.builds = append(tr.builds, b)
		return nil
	}, logr.Discard())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// A copy of the request reads the body through a counter; the server keeps the original,
		// whose body it closes early (without reading it) after the answer.
		counted := &byteCounter{r: req.Body}
		r2 := *req
		r2.Body = struct {
			io.Reader
			io.Closer
		}{counted, req.Body}
		tr.ServeHTTP(w, &r2)
		tr.read.Add(counted.n.Load())
	}))
	t.Cleanup(srv.Close)
	tr.url = srv.URL + Path
	return tr
}

func (tr *testReceiver) buildCount() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.builds)
}

// pushStream is a push hook of size bytes for project group/shop whose commits (each with a list
// of changed files, as GitLab sends them) fill it up; it is generated as it is read, so that
// sending many costs the sender no memory.
func pushStream(size int64, sha string) io.Reader {
	head := `{"object_kind":"push","event_name":"push","before":"` + strings.Repeat("0", 40) + `","after":"` + sha + `","ref":"refs/heads/main","checkout_sha":"` + sha +
		`","user_username":"alice","project_id":1,"project":{"id":1,"path_with_namespace":"group/shop"},"commits":[`
	commit := `{"id":"` + sha + `","message":"update","timestamp":"2024-01-01T00:00:00Z","added":["src/a.go","src/b.go"],"modified":[],"removed":[]},`
	tail := `{}],"total_commits_count":1}`
	n := (size - int64(len(head)) - int64(len(tail))) / int64(len(commit))
	pad := size - int64(len(head)) - int64(len(tail)) - n*int64(len(commit))
	return io.MultiReader(strings.NewReader(head), &repeatReader{unit: []byte(commit), left: n * int64(len(commit))},
		strings.NewReader(strings.Repeat(" ", int(pad))), strings.NewReader(tail))
}

// repeatReader repeats unit for left bytes.
type repeatReader struct {
	unit []byte
	off  int
	left int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && r.left > 0 {
		k := copy(p[n:min(len(p), n+int(min(r.left, int64(len(r.unit)-r.off))))], r.unit[r.off:])
		n += k
		r.off = (r.off + k) % len(r.unit)
		r.left -= int64(k)
	}
	return n, nil
}

// answered is what a delivery was answered.
type answered struct {
	status int
	header http.Header
	// closed says that the receiver closes the connection (Connection: close).
	closed bool
	body   string
}

func deliver(t testing.TB, url, token string, body io.Reader, size int64) answered {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = size
	req.Header.Set("X-Gitlab-Event", pushHook)
	req.Header.Set("X-Gitlab-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return answered{status: resp.StatusCode, header: resp.Header, closed: resp.Close, body: string(b)}
}

// TestWrongTokenReadsOnlyTheEnvelope: a push hook of the maximum size with a wrong token is refused
// having read no more than its beginning, never the commits, and the connection is closed instead
// of reading the rest.
func TestWrongTokenReadsOnlyTheEnvelope(t *testing.T) {
	tr := startTestReceiver(t, Options{}, nil)
	for _, declared := range []bool{true, false} {
		size := int64(DefaultMaxBodyBytes)
		if !declared {
			size = -1 // chunked
		}
		before := tr.read.Load()
		a := deliver(t, tr.url, "wrong", pushStream(DefaultMaxBodyBytes, sha1), size)
		read := tr.read.Load() - before
		if a.status != http.StatusUnauthorized || !a.closed {
			t.Errorf("declared=%v: %d, Connection: close %v: %s", declared, a.status, a.closed, a.body)
		}
		// The project ends at byte 267; the decoder reads ahead a little.
		if read > 8<<10 {
			t.Errorf("declared=%v: the receiver read %d bytes of a wrong-token delivery", declared, read)
		}
		t.Logf("declared=%v: %d bytes read of %d before the 401", declared, read, DefaultMaxBodyBytes)
	}
	if n := tr.buildCount(); n != 0 {
		t.Fatalf("%d Builds", n)
	}
}

// TestProjectAfterPadding: a body that names its project only after megabytes of padding is
// refused once the envelope's limit is passed, whatever its token.
func TestProjectAfterPadding(t *testing.T) {
	tr := startTestReceiver(t, Options{}, nil)
	head := `{"object_kind":"push","padding":"`
	tail := `","project":{"id":1,"path_with_namespace":"group/shop"},"ref":"refs/heads/main","after":"` + sha1 + `","checkout_sha":"` + sha1 + `"}`
	pad := int64(8 << 20)
	for _, token := range []string{testToken, "wrong"} {
		before := tr.read.Load()
		body := io.MultiReader(strings.NewReader(head), &repeatReader{unit: []byte("x"), left: pad}, strings.NewReader(tail))
		a := deliver(t, tr.url, token, body, int64(len(head))+pad+int64(len(tail)))
		read := tr.read.Load() - before
		if a.status != http.StatusBadRequest || !a.closed || !strings.Contains(a.body, "within its first 262144 bytes") {
			t.Errorf("token %s: %d, Connection: close %v: %s", token, a.status, a.closed, a.body)
		}
		if read > prefixLimit {
			t.Errorf("token %s: the receiver read %d bytes, more than the envelope's limit", token, read)
		}
	}
	if n := tr.buildCount(); n != 0 {
		t.Fatalf("%d Builds", n)
	}
}

// heapInUse is the bytes of live and not yet collected heap objects.
func heapInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// TestWrongTokenFloodKeepsTheHeapBounded: 64 push hooks of the maximum size (25 MiB) with wrong
// tokens, 32 at a time, half naming their project at once and half after padding up to the
// envelope's limit, do not grow the heap by more than 64 MiB. Reading them whole, as the receiver
// once did before checking the token, takes 800 MiB for the bodies alone.
func TestWrongTokenFloodKeepsTheHeapBounded(t *testing.T) {
	tr := startTestReceiver(t, Options{}, nil)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 64}}
	base := heapInUse()
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
				if h := heapInUse(); h > peak.Load() {
					peak.Store(h)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	var statuses sync.Map
	var next atomic.Int64
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > 64 {
					return
				}
				body := pushStream(DefaultMaxBodyBytes, sha1)
				if i%2 == 0 {
					body = io.MultiReader(strings.NewReader(`{"object_kind":"push","padding":"`), &repeatReader{unit: []byte("x"), left: DefaultMaxBodyBytes - 40}, strings.NewReader(`"}`))
				}
				req, _ := http.NewRequest(http.MethodPost, tr.url, body)
				req.ContentLength = -1
				req.Header.Set("X-Gitlab-Event", pushHook)
				req.Header.Set("X-Gitlab-Token", "wrong")
				resp, err := client.Do(req)
				if err != nil {
					// The receiver answered and closed the connection while the body was still being sent.
					statuses.Store(i, 0)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				statuses.Store(i, resp.StatusCode)
			}
		})
	}
	wg.Wait()
	close(stop)
	<-sampled
	grew := int64(peak.Load()) - int64(base)
	t.Logf("the heap grew by %.1f MiB at most; the receiver read %.1f MiB of 1600 MiB", float64(grew)/(1<<20), float64(tr.read.Load())/(1<<20))
	if grew > 64<<20 {
		t.Errorf("the heap grew by %d MiB during the flood", grew>>20)
	}
	statuses.Range(func(k, v any) bool {
		if s := v.(int); s != 0 && s != http.StatusUnauthorized && s != http.StatusBadRequest {
			t.Errorf("delivery %d: status %d", k, s)
		}
		return true
	})
}

// TestSlowSenderIsCut: a sender that sends its headers and then trickles (here: stops sending) its
// body is answered 408 once the envelope's deadline passes, and gives its slot back: with a single
// slot, the next delivery is served.
func TestSlowSenderIsCut(t *testing.T) {
	tr := startTestReceiver(t, Options{MaxConcurrentReads: 1, PrefixTimeout: 300 * time.Millisecond}, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(strings.TrimSuffix(tr.url, Path), "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	_, err = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: x\r\nX-Gitlab-Event: Push Hook\r\nX-Gitlab-Token: %s\r\nContent-Length: 100000\r\n\r\n{\"object_kind\":", Path, testToken)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing more is sent. A generous deadline only keeps a broken receiver from hanging the test.
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close || !strings.Contains(string(b), "did not arrive in time") {
		t.Fatalf("stalled body: %d, Connection: close %v: %s", resp.StatusCode, resp.Close, b)
	}
	body := pushBody("group/shop", sha1)
	if a := deliver(t, tr.url, testToken, bytes.NewReader(body), int64(len(body))); a.status != http.StatusCreated {
		t.Fatalf("the next delivery: %d %s", a.status, a.body)
	}
}

func pushBody(path, sha string) []byte {
	return fmt.Appendf(nil, `{"object_kind":"push","ref":"refs/heads/main","after":"%s","checkout_sha":"%s","user_username":"alice","project":{"path_with_namespace":%q}}`, sha, sha, path)
}

// TestBusyReceiver: when every slot is taken a delivery waits up to the prefix timeout, then gets
// 503 with Retry-After, having read nothing.
func TestBusyReceiver(t *testing.T) {
	tr := startTestReceiver(t, Options{MaxConcurrentReads: 2, PrefixTimeout: 100 * time.Millisecond}, nil)
	if err := tr.limits.slots.Acquire(context.Background(), 2); err != nil {
		t.Fatal(err)
	}
	body := pushBody("group/shop", sha1)
	a := deliver(t, tr.url, testToken, bytes.NewReader(body), int64(len(body)))
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" || !a.closed || tr.read.Load() != 0 {
		t.Errorf("all slots taken: %d, Retry-After %q, read %d: %s", a.status, a.header.Get("Retry-After"), tr.read.Load(), a.body)
	}
	tr.limits.slots.Release(2)
	if a := deliver(t, tr.url, testToken, bytes.NewReader(body), int64(len(body))); a.status != http.StatusCreated {
		t.Errorf("a free slot: %d %s", a.status, a.body)
	}
}

// TestLargeBodiesWaitForTheBudget: an authenticated body larger than the envelope's limit waits for
// room in the body budget, without its slot, so small pushes pass it; it builds once there is room,
// and is answered 503 when there is none within RequestTimeout. Even a holder of the token cannot
// make the receiver hold more than the budget.
func TestLargeBodiesWaitForTheBudget(t *testing.T) {
	tr := startTestReceiver(t, Options{MaxConcurrentReads: 1, MaxBodyBytes: 4 << 20, BodyMemoryBytes: 8 << 20, RequestTimeout: 30 * time.Second}, nil)
	// The budget is taken.
	if err := tr.limits.budget.Acquire(context.Background(), 8<<20); err != nil {
		t.Fatal(err)
	}
	large := make(chan int, 1)
	go func() {
		a := deliver(t, tr.url, testToken, pushStream(3<<20, sha2), 3<<20)
		if a.status != http.StatusCreated {
			t.Errorf("the large body: %d %s", a.status, a.body)
		}
		large <- a.status
	}()
	eventually(t, "the large body to wait for the budget", func() bool { return tr.limits.waiting.Load() == 1 })
	// A small push is served meanwhile, through the only slot.
	small := pushBody("group/shop", sha1)
	if a := deliver(t, tr.url, testToken, bytes.NewReader(small), int64(len(small))); a.status != http.StatusCreated {
		t.Fatalf("a small push behind a large body: %d %s", a.status, a.body)
	}
	select {
	case <-large:
		t.Fatal("the large body was read without room in the budget")
	default:
	}
	tr.limits.budget.Release(8 << 20)
	<-large
	if n := tr.buildCount(); n != 2 {
		t.Fatalf("%d Builds, want 2", n)
	}

	// No room within RequestTimeout: 503.
	tr.opts.RequestTimeout = 100 * time.Millisecond
	if err := tr.limits.budget.Acquire(context.Background(), 8<<20); err != nil {
		t.Fatal(err)
	}
	defer tr.limits.budget.Release(8 << 20)
	a := deliver(t, tr.url, testToken, pushStream(3<<20, sha2), 3<<20)
	if a.status != http.StatusServiceUnavailable || a.header.Get("Retry-After") == "" {
		t.Errorf("no room in the budget: %d %s", a.status, a.body)
	}
}

func TestBodyMemoryBudgetHoldsTheLargestBody(t *testing.T) {
	if _, err := withDefaults(Options{MaxBodyBytes: 25 << 20, BodyMemoryBytes: 40 << 20}); err == nil || !strings.Contains(err.Error(), "cannot hold one body of the maximum size") {
		t.Errorf("a budget below twice the cap: %v", err)
	}
	opts, err := withDefaults(Options{MaxBodyBytes: 100 << 20})
	if err != nil || opts.BodyMemoryBytes != 200<<20 {
		t.Errorf("the default budget for a 100 MiB cap: %d, %v", opts.BodyMemoryBytes, err)
	}
	if opts, _ := withDefaults(Options{}); opts.BodyMemoryBytes != DefaultBodyMemoryBytes || opts.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Errorf("defaults: %+v", opts)
	}
}

// eventually polls cond until it holds, as testutil.Eventually does (which this package's own tests
// cannot import: testutil imports the manager, which imports this package).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := wait.PollUntilContextCancel(ctx, 10*time.Millisecond, true, func(context.Context) (bool, error) { return cond(), nil }); err != nil {
		t.Fatalf("timed out waiting for %s", what)
	}
}
