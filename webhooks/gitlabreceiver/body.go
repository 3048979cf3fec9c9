package gitlabreceiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// A delivery's body is read in two steps, so that what an unauthenticated sender costs is bounded
// however large its body:
//
//  1. The envelope. At most DefaultMaxConcurrentReads deliveries at once (a slot each) read the
//     beginning of their body, at most prefixLimit bytes within PrefixTimeout, through a streaming
//     decoder that stops as soon as it has the project (and a system hook's event_name). GitLab
//     puts the project in the first 1.5 KB of every push, tag push, merge request and note hook
//     (TestEnvelopeWithinPrefix checks every payload of the corpus); only a tag's annotation comes
//     before it, hence a limit far above that. The token is checked against this envelope: a wrong
//     token costs the bytes read so far, and the rest is never read.
//  2. The rest, once the token matches. A body that fits within prefixLimit is read under its slot;
//     a larger one gives its slot back and waits for room in the body budget, a byte budget shared
//     by all authenticated bodies, so that small pushes never queue behind large bodies and even a
//     holder of a valid token cannot make the receiver hold more than the budget.

// prefixLimit bounds what is read of a body before its token is checked. A push, merge request or
// note hook names its project within its first 1.5 KB; a tag push carries the tag's annotation
// before the project, which people fill with release notes, so the limit leaves room for
// annotations of a few hundred KB. A body whose envelope is not complete within it is refused.
const prefixLimit = 256 << 10

// Defaults of the limits on body reads.
const (
	// DefaultMaxConcurrentReads is how many deliveries read their envelope (or their whole body
	// when it fits within the envelope's limit) at once. Each costs at most about 5 times
	// prefixLimit (the bytes read, the decoder's buffer, the token it decodes): 32 slots hold at
	// most about 40 MiB, and a normal delivery holds one for well under a millisecond.
	DefaultMaxConcurrentReads = 32
	// DefaultPrefixTimeout bounds reading the envelope: GitLab sends the body right after the
	// headers, and the envelope is a few KB. A sender that trickles its body cannot hold a slot
	// longer than this.
	DefaultPrefixTimeout = 5 * time.Second
	// DefaultBodyMemoryBytes is the budget of authenticated bodies larger than prefixLimit when
	// MaxBodyBytes does not need more: room for one body of GitLab's 25 MiB limit with its decoded
	// fields (about twice its size), or hundreds of merge request hooks with long descriptions.
	DefaultBodyMemoryBytes = 64 << 20
	// bodyReadTimeout bounds a whole request, body included, as the server's ReadTimeout does.
	bodyReadTimeout = 60 * time.Second
)

// bodyCost is what an authenticated body of n bytes may hold while it is read and decoded: the
// body itself and the fields decoded from it (strings copied out of the body, at most its size;
// decodeTrigger decodes only the fields Ferry reads, see BenchmarkParseAmplification).
func bodyCost(n int64) int64 { return 2 * n }

// limits are the receiver's bounds on concurrent body reads.
type limits struct {
	// slots bounds the deliveries that read their envelope, or a body within prefixLimit.
	slots *semaphore.Weighted
	// large bounds the authenticated deliveries larger than prefixLimit that wait for or hold
	// budget: each keeps the envelope it read while it waits.
	large *semaphore.Weighted
	// budget is the byte budget of authenticated bodies larger than prefixLimit.
	budget     *semaphore.Weighted
	budgetSize int64
	// waiting counts the deliveries waiting for room in the budget.
	waiting atomic.Int64
}

func newLimits(opts Options) *limits {
	return &limits{
		slots:      semaphore.NewWeighted(int64(opts.MaxConcurrentReads)),
		large:      semaphore.NewWeighted(int64(opts.MaxConcurrentReads)),
		budget:     semaphore.NewWeighted(opts.BodyMemoryBytes),
		budgetSize: opts.BodyMemoryBytes,
	}
}

// errBusy is a delivery refused because the receiver reads as many bodies as it may.
var errBusy = errors.New("the receiver is reading as many webhook bodies as it may; GitLab may redeliver")

// errTooLarge is a body over MaxBodyBytes.
var errTooLarge = errors.New("the body is too large")

// errReadTimeout is a body that did not arrive in time.
var errReadTimeout = errors.New("the body did not arrive in time")

// body is what the receiver has read of a delivery's body.
type body struct {
	buf *bytes.Buffer
	// complete says that buf holds the whole body.
	complete bool
	// release gives back the slot or the budget the body holds; nil when it holds none.
	release func()
}

// bytes is the body read so far.
func (b *body) bytes() []byte { return b.buf.Bytes() }

// done releases what the body holds. The buffer returns to the pool unless it grew large.
func (r *Receiver) done(b *body) {
	if b.release != nil {
		b.release()
		b.release = nil
	}
	if b.buf != nil {
		r.release(b.buf)
		b.buf = nil
	}
}

// acquireSlot waits for a slot to read a body, at most as long as a slot can be held (the prefix
// timeout), so that a waiter gets one unless as many deliveries as there are slots are ahead of it.
func (r *Receiver) acquireSlot(ctx context.Context) (func(), error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.PrefixTimeout)
	defer cancel()
	if err := r.limits.slots.Acquire(ctx, 1); err != nil {
		return nil, errBusy
	}
	return func() { r.limits.slots.Release(1) }, nil
}

// readEnvelope reads the beginning of the body, at most prefixLimit bytes within PrefixTimeout,
// and decodes the envelope from it: object_kind, event_name, project_id and project; other members
// are skipped. It stops as soon as the envelope is known, and returns what it read in a pooled
// buffer: every byte the decoder consumed. The error names what is wrong with the body.
func (r *Receiver) readEnvelope(w http.ResponseWriter, req *http.Request, header string) (*envelope, *body, error) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(r.opts.PrefixTimeout))
	buf, _ := r.bufPool.Get().(*bytes.Buffer)
	if buf == nil {
		buf = &bytes.Buffer{}
	}
	buf.Reset()
	b := &body{buf: buf}
	in := &recordingReader{r: req.Body}
	limited := &io.LimitedReader{R: in, N: prefixLimit}
	env, err := scanEnvelope(io.TeeReader(limited, buf), header)
	var typeErr *json.UnmarshalTypeError
	var badID *notAProjectID
	switch {
	case err == nil:
	case isTimeout(in.err):
		err = errReadTimeout
	case in.err != nil:
		err = fmt.Errorf("failed to read the body: %w", in.err)
	case isSyntaxError(err):
		err = malformed(bytes.TrimSpace(buf.Bytes()))
	case limited.N == 0:
		// The limit cut the body short: what was read may still name the project.
		if env != nil && (env.sawProject || env.sawProjectID) {
			err = nil
			break
		}
		err = fmt.Errorf("the payload names no project (project.path_with_namespace or project_id) within its first %d bytes; GitLab names it within the first 2 KB", prefixLimit)
	case errors.Is(err, io.EOF) && len(bytes.TrimSpace(buf.Bytes())) == 0:
		err = errors.New("the body is empty; GitLab sends a JSON object")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = malformed(bytes.TrimSpace(buf.Bytes()))
	case errors.As(err, &typeErr), errors.As(err, &badID):
		err = fmt.Errorf("unexpected payload: %w", err)
	}
	if err != nil {
		r.release(buf)
		return nil, nil, err
	}
	b.complete = in.eof || (req.ContentLength >= 0 && int64(buf.Len()) >= req.ContentLength)
	return env, b, nil
}

// recordingReader records whether its reader reached the end, and the error that is not the end.
type recordingReader struct {
	r   io.Reader
	eof bool
	err error
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	switch {
	case errors.Is(err, io.EOF):
		r.eof = true
	case err != nil:
		r.err = err
	}
	return n, err
}

// readRest reads the rest of an authenticated body. A body that fits within prefixLimit is read
// under the slot it holds (and within the prefix deadline); a larger one gives its slot back and
// waits, at most RequestTimeout, for its cost in the body budget, then reads the rest within the
// request's read deadline. A body over MaxBodyBytes is errTooLarge.
func (r *Receiver) readRest(w http.ResponseWriter, req *http.Request, start time.Time, b *body) error {
	if b.complete {
		return nil
	}
	if req.ContentLength >= 0 && req.ContentLength <= prefixLimit {
		return readAll(b, req.Body, req.ContentLength)
	}
	// Larger, or of unknown length (GitLab always sends Content-Length): the worst case is charged.
	size := req.ContentLength
	if size < 0 {
		size = r.opts.MaxBodyBytes
	}
	if b.release != nil {
		b.release() // the slot: small deliveries never wait behind this one
		b.release = nil
	}
	if !r.limits.large.TryAcquire(1) {
		return errBusy
	}
	ctx, cancel := context.WithTimeout(req.Context(), r.opts.RequestTimeout)
	defer cancel()
	cost := bodyCost(size)
	r.limits.waiting.Add(1)
	err := r.limits.budget.Acquire(ctx, cost)
	r.limits.waiting.Add(-1)
	if err != nil {
		r.limits.large.Release(1)
		return errBusy
	}
	b.release = func() {
		r.limits.budget.Release(cost)
		r.limits.large.Release(1)
	}
	_ = http.NewResponseController(w).SetReadDeadline(start.Add(bodyReadTimeout))
	// Exactly the room the body needs (one more byte to notice a body over the cap), instead of a
	// buffer that doubles past it.
	full := bytes.NewBuffer(make([]byte, 0, size+1+bytes.MinRead))
	full.Write(b.buf.Bytes())
	r.release(b.buf)
	b.buf = full
	return readAll(b, req.Body, r.opts.MaxBodyBytes)
}

// readAll reads the rest of the body into b, refusing one longer than limit bytes in all.
func readAll(b *body, src io.Reader, limit int64) error {
	left := limit - int64(b.buf.Len())
	if left < 0 {
		return errTooLarge
	}
	n, err := b.buf.ReadFrom(io.LimitReader(src, left+1))
	switch {
	case n > left:
		return errTooLarge
	case isTimeout(err):
		return errReadTimeout
	case err != nil:
		return fmt.Errorf("failed to read the body: %w", err)
	}
	b.complete = true
	return nil
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

func isSyntaxError(err error) bool {
	var syn *json.SyntaxError
	return errors.As(err, &syn)
}

// errNotObject is a body whose JSON value is not an object.
var errNotObject = errors.New("the body must be a JSON object")

// scanEnvelope decodes the envelope from the start of a JSON object, member by member, and stops
// as soon as it knows the project (with its ID when the payload has one before or in the project)
// and, for a system hook, the event_name. Values of other members are skipped token by token, so
// that nothing is kept of them but what the decoder buffers of one token. The envelope returned with
// an error is what was decoded before it.
func scanEnvelope(src io.Reader, header string) (*envelope, error) {
	dec := json.NewDecoder(src)
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errNotObject
	}
	env := &envelope{}
	system := strings.EqualFold(header, systemHook)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return env, err
		}
		key, _ := tok.(string)
		switch key {
		case "object_kind":
			err = dec.Decode(&env.ObjectKind)
		case "event_name":
			err = dec.Decode(&env.EventName)
		case "project_id":
			err = dec.Decode(&env.ProjectID)
			env.sawProjectID = true
		case "project":
			err = dec.Decode(&env.Project)
			env.sawProject = true
		default:
			err = skipValue(dec)
		}
		if err != nil {
			return env, err
		}
		if system && env.EventName != "" && eventKind(header, env) == "" {
			// A system hook event Ferry does not build: nothing more is needed to answer it.
			return env, nil
		}
		if env.sawProject && (env.project().id != 0 || env.sawProjectID) && (!system || env.EventName != "") {
			return env, nil
		}
	}
	if _, err := dec.Token(); err != nil {
		return env, err
	}
	return env, nil
}

// skipValue consumes one JSON value from dec.
func skipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if d, ok := tok.(json.Delim); ok {
			switch d {
			case '{', '[':
				depth++
			case '}', ']':
				depth--
			}
		}
		if depth == 0 {
			return nil
		}
	}
}
