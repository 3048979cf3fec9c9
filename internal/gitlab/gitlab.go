// Package gitlab is Ferry's client for the parts of GitLab's REST API it uses: commit statuses,
// merge request notes and project members' roles. It wraps gitlab.com/gitlab-org/api/client-go with what a reporter needs:
// retries with backoff on 5xx, 429 and connection errors (honouring Retry-After), GitLab's commit
// status state machine (a repeated state is "already reported", not a failure), and a transport
// that sends the Project's token only to the Project's own GitLab host and refuses redirects
// elsewhere.
package gitlab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"

	"github.com/ferryci/ferry/internal/text"
)

// State is a GitLab commit status state. GitLab accepts pending, running, success, failed,
// canceled and skipped; Ferry reports the first five.
type State string

// Commit status states.
const (
	StatePending  State = "pending"
	StateRunning  State = "running"
	StateSuccess  State = "success"
	StateFailed   State = "failed"
	StateCanceled State = "canceled"
)

// Terminal reports whether s ends a build.
func (s State) Terminal() bool {
	return s == StateSuccess || s == StateFailed || s == StateCanceled
}

// ShouldReport reports whether next may be posted after last was: never the same state twice
// (GitLab answers 400), never running→pending (GitLab refuses to go back), and nothing after a
// terminal state (GitLab would open a second status row for the same build).
func ShouldReport(last, next State) bool {
	switch {
	case next == "" || next == last:
		return false
	case last.Terminal():
		return false
	case last == StateRunning && next == StatePending:
		return false
	}
	return true
}

// ProjectRef names a GitLab project by numeric ID or by full path; the ID wins when both are set.
type ProjectRef struct {
	ID   int64
	Path string
}

func (p ProjectRef) pid() any {
	if p.ID != 0 {
		return p.ID
	}
	return p.Path
}

// String is the ID or the path.
func (p ProjectRef) String() string {
	if p.ID != 0 {
		return strconv.FormatInt(p.ID, 10)
	}
	return p.Path
}

// CommitStatus is one commit status to post.
type CommitStatus struct {
	State State
	// Name labels the status in GitLab; Ferry uses "ferry".
	Name string
	// Ref is the branch or tag; empty lets GitLab pick the first branch containing the commit.
	Ref string
	// TargetURL links the status (≤ 255 characters; a longer URL is left out).
	TargetURL string
	// Description is one line (≤ 255 characters; longer text is cut).
	Description string
}

// API is what Ferry asks of GitLab. *Client implements it; tests use FakeAPI.
type API interface {
	// SetCommitStatus posts a commit status. It returns ErrAlreadyReported when GitLab refuses the
	// transition because the status is already in (or past) that state.
	SetCommitStatus(ctx context.Context, project ProjectRef, sha string, status CommitStatus) error
	// FindMergeRequestNote reports whether a note of the merge request contains marker, looking
	// at the newest notes first.
	FindMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, marker string) (bool, error)
	// CreateMergeRequestNote adds a note to a merge request (iid is the project-local number).
	CreateMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, body string) error
	// MemberAccess returns a user's role in the project, inherited memberships included; NoAccess
	// when the user is not a member.
	MemberAccess(ctx context.Context, project ProjectRef, userID int64) (AccessLevel, error)
}

// ErrAlreadyReported is GitLab's HTTP 400 "Cannot transition status via :run from :running": the
// status already has that state (or a later one), which for an idempotent reporter is success.
var ErrAlreadyReported = errors.New("GitLab already has this commit status")

// ErrForeignHost is returned when a request or a redirect would take the token to another host.
var ErrForeignHost = errors.New("refusing to send the GitLab token to another host")

// APIError is an answer from GitLab that is not a success.
type APIError struct {
	StatusCode int
	// Message is GitLab's error message.
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("GitLab answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("GitLab answered %d: %s", e.StatusCode, e.Message)
}

// IsPermanent reports whether retrying err cannot help: a 4xx answer other than 408 and 429 (no
// permission, project or commit not found, invalid input), or a refused foreign host.
func IsPermanent(err error) bool {
	if errors.Is(err, ErrForeignHost) {
		return true
	}
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		c := apiErr.StatusCode
		return c >= 400 && c < 500 && c != http.StatusRequestTimeout && c != http.StatusTooManyRequests
	}
	return false
}

// Options tune a Client. Zero values are production defaults.
type Options struct {
	// Transport carries the requests; default a shared pooled transport.
	Transport http.RoundTripper
	// Timeout bounds one HTTP attempt. Default 20 s.
	Timeout time.Duration
	// RetryMax is how many times a failed request is retried. Default 4.
	RetryMax int
	// RetryWaitMin and RetryWaitMax bound the exponential backoff between attempts; a
	// Retry-After longer than RetryWaitMax is cut to it. Defaults 500 ms and 10 s.
	RetryWaitMin, RetryWaitMax time.Duration
	// UserAgent defaults to "ferry".
	UserAgent string
}

var sharedTransport = &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	MaxIdleConns:          100,
	MaxIdleConnsPerHost:   10,
	IdleConnTimeout:       90 * time.Second,
	TLSHandshakeTimeout:   10 * time.Second,
	ExpectContinueTimeout: time.Second,
}

// Client talks to one GitLab instance with one token.
type Client struct {
	api  *gl.Client
	base *url.URL
}

var _ API = (*Client)(nil)

// New returns a client for the GitLab instance at baseURL (for example https://gitlab.example.com
// or https://example.com/gitlab) that authenticates with token. The token is only ever sent to
// baseURL's scheme and host.
func New(baseURL, token string, opts Options) (*Client, error) {
	base, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" || base.User != nil {
		return nil, fmt.Errorf("invalid GitLab URL %q: want http(s)://host[/path] without credentials", redactURL(baseURL))
	}
	if opts.Transport == nil {
		opts.Transport = sharedTransport
	}
	if opts.Timeout == 0 {
		opts.Timeout = 20 * time.Second
	}
	if opts.RetryMax == 0 {
		opts.RetryMax = 4
	}
	if opts.RetryWaitMin == 0 {
		opts.RetryWaitMin = 500 * time.Millisecond
	}
	if opts.RetryWaitMax == 0 {
		opts.RetryWaitMax = 10 * time.Second
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "ferry"
	}
	guard := &hostGuard{scheme: base.Scheme, host: base.Host, next: opts.Transport}
	httpClient := &http.Client{Transport: guard, Timeout: opts.Timeout, CheckRedirect: guard.checkRedirect}
	api, err := gl.NewClient(token,
		gl.WithBaseURL(base.String()+"/api/v4/"),
		gl.WithHTTPClient(httpClient),
		gl.WithCustomRetry(checkRetry),
		gl.WithCustomBackoff(backoff),
		gl.WithCustomRetryMax(opts.RetryMax),
		gl.WithCustomRetryWaitMinMax(opts.RetryWaitMin, opts.RetryWaitMax),
		gl.WithUserAgent(opts.UserAgent),
	)
	if err != nil {
		return nil, fmt.Errorf("failed to create a GitLab client for %s: %w", base.Host, err)
	}
	return &Client{api: api, base: base}, nil
}

// Host is the host the client sends its token to.
func (c *Client) Host() string { return c.base.Host }

// SetCommitStatus posts a commit status.
func (c *Client) SetCommitStatus(ctx context.Context, project ProjectRef, sha string, st CommitStatus) error {
	opt := &gl.SetCommitStatusOptions{State: gl.BuildStateValue(st.State)}
	if st.Name != "" {
		opt.Name = &st.Name
	}
	if st.Ref != "" {
		opt.Ref = &st.Ref
	}
	if st.TargetURL != "" && len(st.TargetURL) <= 255 {
		opt.TargetURL = &st.TargetURL
	}
	if d := text.OneLine(st.Description, 255); d != "" {
		opt.Description = &d
	}
	_, _, err := c.api.Commits.SetCommitStatus(project.pid(), sha, opt, gl.WithContext(ctx))
	if err == nil {
		return nil
	}
	err = convert(err)
	var apiErr *APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusBadRequest && strings.Contains(apiErr.Message, "Cannot transition status via") {
		return ErrAlreadyReported
	}
	return fmt.Errorf("failed to set commit status %s on %s@%s: %w", st.State, project, short(sha), err)
}

// FindMergeRequestNote looks through the newest 500 notes of a merge request for marker.
func (c *Client) FindMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, marker string) (bool, error) {
	opt := &gl.ListMergeRequestNotesOptions{
		ListOptions: gl.ListOptions{PerPage: 100, Page: 1},
		OrderBy:     gl.Ptr("created_at"),
		Sort:        gl.Ptr("desc"),
	}
	for range 5 {
		notes, resp, err := c.api.Notes.ListMergeRequestNotes(project.pid(), iid, opt, gl.WithContext(ctx))
		if err != nil {
			return false, fmt.Errorf("failed to list notes of merge request !%d of %s: %w", iid, project, convert(err))
		}
		for _, n := range notes {
			if strings.Contains(n.Body, marker) {
				return true, nil
			}
		}
		if resp == nil || resp.NextPage == 0 {
			return false, nil
		}
		opt.Page = resp.NextPage
	}
	return false, nil
}

// CreateMergeRequestNote adds a note to a merge request. A 5xx answer is not retried here (GitLab
// may have saved the note before its proxy failed, and a retry would post it twice): the caller
// looks for the note (FindMergeRequestNote) before it tries again. 429 is retried, since GitLab's
// rate limiter refuses before anything is saved.
func (c *Client) CreateMergeRequestNote(ctx context.Context, project ProjectRef, iid int64, body string) error {
	ctx = context.WithValue(ctx, noRetryOn5xx{}, true)
	_, _, err := c.api.Notes.CreateMergeRequestNote(project.pid(), iid, &gl.CreateMergeRequestNoteOptions{Body: &body}, gl.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("failed to add a note to merge request !%d of %s: %w", iid, project, convert(err))
	}
	return nil
}

// convert turns client-go's errors into APIError, keeping everything else.
func convert(err error) error {
	if errors.Is(err, gl.ErrNotFound) {
		return &APIError{StatusCode: http.StatusNotFound, Message: "not found"}
	}
	var resp *gl.ErrorResponse
	if errors.As(err, &resp) && resp.Response != nil {
		return &APIError{StatusCode: resp.Response.StatusCode, Message: resp.Message}
	}
	return err
}

// hostGuard refuses requests and redirects to anything but the GitLab instance's scheme and host,
// so that the PRIVATE-TOKEN header (which net/http forwards on redirects, unlike Authorization)
// never leaves it.
type hostGuard struct {
	scheme, host string
	next         http.RoundTripper
}

func (g *hostGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != g.scheme || req.URL.Host != g.host {
		return nil, fmt.Errorf("%w: %s://%s (the Project's GitLab is %s://%s)", ErrForeignHost, req.URL.Scheme, req.URL.Host, g.scheme, g.host)
	}
	return g.next.RoundTrip(req)
}

func (g *hostGuard) checkRedirect(req *http.Request, via []*http.Request) error {
	if req.URL.Scheme != g.scheme || req.URL.Host != g.host {
		return fmt.Errorf("%w: GitLab redirected to %s://%s (the Project's GitLab is %s://%s)", ErrForeignHost, req.URL.Scheme, req.URL.Host, g.scheme, g.host)
	}
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	return nil
}

// checkRetry retries 429, 5xx (except 501) and connection errors; a POST only when the connection
// was never made, so that a note is not posted twice.
func checkRetry(ctx context.Context, resp *http.Response, err error) (bool, error) {
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err != nil {
		if errors.Is(err, ErrForeignHost) {
			return false, err
		}
		if resp != nil && resp.Request != nil && resp.Request.Method == http.MethodGet {
			return true, nil
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return true, nil
		}
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && !dnsErr.IsNotFound {
			return true, nil
		}
		return false, nil
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		return true, nil
	}
	if ctx.Value(noRetryOn5xx{}) != nil {
		return false, nil
	}
	return resp.StatusCode == 0 || (resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented), nil
}

// noRetryOn5xx in a request's context keeps 5xx answers from being retried (see
// CreateMergeRequestNote).
type noRetryOn5xx struct{}

// backoff waits as long as Retry-After (or RateLimit-Reset) asks, else exponentially with jitter,
// never longer than max.
func backoff(minWait, maxWait time.Duration, attempt int, resp *http.Response) time.Duration {
	if resp != nil {
		if d, ok := retryAfter(resp.Header, time.Now()); ok {
			return min(max(d, minWait), maxWait)
		}
	}
	d := minWait << min(attempt, 20)
	if d <= 0 || d > maxWait {
		d = maxWait
	}
	// Full jitter over the upper half keeps many reporters from retrying in step.
	return d/2 + rand.N(d/2+1) //nolint:gosec // G404: jitter needs no cryptographic randomness
}

// retryAfter reads Retry-After (seconds or an HTTP date) or GitLab's RateLimit-Reset (Unix time).
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if v := h.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s >= 0 {
			return time.Duration(s) * time.Second, true
		}
		if t, err := http.ParseTime(v); err == nil {
			return max(t.Sub(now), 0), true
		}
	}
	if v := h.Get("RateLimit-Reset"); v != "" {
		if reset, err := strconv.ParseInt(v, 10, 64); err == nil && reset > 0 {
			return max(time.Unix(reset, 0).Sub(now), 0), true
		}
	}
	return 0, false
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

// redactURL drops credentials from a URL for an error message.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparseable URL)"
	}
	u.User = nil
	return u.String()
}
