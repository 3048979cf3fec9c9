package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

const (
	// maxBody is how much of an answer's body is read and matched.
	maxBody = 64 << 10
	// defaultRequestTimeout bounds a request of a check without maxLatency.
	defaultRequestTimeout = 10 * time.Second
)

// Service is the application's Service on a cluster.
type Service struct {
	Namespace string
	Name      string
	Port      int32
}

// ProxyURL is the URL of path on the Service through the API server at host: the service proxy.
func ProxyURL(host string, svc Service, path string) (*url.URL, error) {
	if err := ValidatePath(path); err != nil {
		return nil, err
	}
	base, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("the cluster's address cannot be read: %w", err)
	}
	if base.Scheme == "" {
		base, err = url.Parse("https://" + host)
		if err != nil {
			return nil, fmt.Errorf("the cluster's address cannot be read: %w", err)
		}
	}
	p, query, _ := strings.Cut(path, "?")
	u := *base
	u.Path = strings.TrimSuffix(base.Path, "/") + "/api/v1/namespaces/" + svc.Namespace + "/services/" + svc.Name + ":" + strconv.Itoa(int(svc.Port)) + "/proxy" + p
	u.RawPath = ""
	u.RawQuery = query
	return &u, nil
}

// HTTPTry sends one GET of an HTTP check to the Service through the API server of the cluster cfg
// reaches, and says whether the answer passed: its status, its body (when bodyMatch is set) and
// its latency (when maxLatency is set).
func HTTPTry(ctx context.Context, cfg *rest.Config, svc Service, chk *ferryv1.HTTPCheck) Outcome {
	what := "GET " + chk.Path
	u, err := ProxyURL(cfg.Host, svc, chk.Path)
	if err != nil {
		return Outcome{Message: what + ": " + err.Error()}
	}
	var body *regexp.Regexp
	if chk.BodyMatch != "" {
		if body, err = regexp.Compile(chk.BodyMatch); err != nil {
			return Outcome{Message: what + ": bodyMatch is not a regular expression: " + err.Error()}
		}
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return Outcome{Message: what + ": no HTTP client for the cluster: " + err.Error()}
	}
	timeout := defaultRequestTimeout
	if chk.MaxLatency != nil {
		// A slower answer fails anyway; wait a little longer to say how slow it was.
		timeout = chk.MaxLatency.Duration + time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Outcome{Message: what + ": " + err.Error()}
	}
	start := time.Now()
	resp, err := hc.Do(req)
	if err != nil {
		return Outcome{Message: fmt.Sprintf("%s: no answer within %s: %s", what, timeout, Redact(stripURL(err, u)))}
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	latency := time.Since(start)
	if err != nil {
		return Outcome{Message: fmt.Sprintf("%s: the answer's body could not be read: %s", what, Redact(stripURL(err, u)))}
	}
	want := chk.ExpectStatus
	if want == 0 {
		want = http.StatusOK
	}
	got := fmt.Sprintf("%s: %d in %s", what, resp.StatusCode, latency.Round(time.Millisecond))
	switch {
	case resp.StatusCode != int(want):
		return Outcome{Message: fmt.Sprintf("%s, want %d; body: %s", got, want, Redact(string(data)))}
	case body != nil && !body.Match(data):
		return Outcome{Message: fmt.Sprintf("%s, body does not match %q: %s", got, chk.BodyMatch, Redact(string(data)))}
	case chk.MaxLatency != nil && latency > chk.MaxLatency.Duration:
		return Outcome{Message: fmt.Sprintf("%s, slower than maxLatency %s", got, chk.MaxLatency.Duration)}
	}
	return Outcome{Passed: true, Message: got}
}

// stripURL is an error's text without the request's URL (the API server's address), which says
// nothing about the application.
func stripURL(err error, u *url.URL) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return strings.ReplaceAll(err.Error(), u.String(), "the service proxy")
}
