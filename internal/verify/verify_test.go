package verify

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestValidatePathRefusesWhatLeavesTheProxy: from the attacker's side, a path from a repository's
// .ferry.yaml that would reach the member cluster's API with the manager's credentials (dot
// segments, percent-encoded dots, backslashes) is refused; ordinary paths and queries pass.
func TestValidatePathRefusesWhatLeavesTheProxy(t *testing.T) {
	for _, p := range []string{"/", "/healthz", "/api/v1/status?full=1&x=a/b", "/a.b/c..d/.well-known"} {
		if err := ValidatePath(p); err != nil {
			t.Errorf("ValidatePath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{
		"", "healthz", "/../../secrets", "/a/../../../api/v1/secrets", "/./x", "/..", "/%2e%2e/secrets",
		"/..%2fsecrets", `/\..\secrets`, "/x#frag", "/x y", "/x\n", "/é",
	} {
		if err := ValidatePath(p); err == nil {
			t.Errorf("ValidatePath(%q) = nil, want an error", p)
		}
	}
}

func TestProxyURL(t *testing.T) {
	u, err := ProxyURL("https://10.0.0.1:6443/prefix/", Service{Namespace: "shop-prod", Name: "shop", Port: 8080}, "/api/ping?x=1")
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://10.0.0.1:6443/prefix/api/v1/namespaces/shop-prod/services/shop:8080/proxy/api/ping?x=1"; u.String() != want {
		t.Errorf("ProxyURL = %s, want %s", u, want)
	}
	if _, err := ProxyURL("https://10.0.0.1:6443", Service{Namespace: "n", Name: "s", Port: 1}, "/../../secrets"); err == nil {
		t.Error("ProxyURL accepted a path with dot segments")
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		check ferryv1.VerificationCheck
		field string
	}{
		{ferryv1.VerificationCheck{Name: "x"}, "http"},
		{ferryv1.VerificationCheck{Name: "x", HTTP: &ferryv1.HTTPCheck{Path: "/"}, Job: &ferryv1.JobCheck{Image: "i"}}, "http"},
		{ferryv1.VerificationCheck{Name: "x", HTTP: &ferryv1.HTTPCheck{Path: "/a/../b"}}, "http.path"},
		{ferryv1.VerificationCheck{Name: "x", HTTP: &ferryv1.HTTPCheck{Path: "/", BodyMatch: "(unclosed"}}, "http.bodyMatch"},
		{ferryv1.VerificationCheck{Name: "x", Job: &ferryv1.JobCheck{Image: " "}}, "job.image"},
	} {
		errs := Validate(&tc.check)
		if len(errs) != 1 || errs[0].Field != tc.field {
			t.Errorf("Validate(%+v) = %v, want one error on %s", tc.check, errs, tc.field)
		}
	}
	if errs := Validate(&ferryv1.VerificationCheck{Name: "x", HTTP: &ferryv1.HTTPCheck{Path: "/", BodyMatch: `^ok\s*$`}}); len(errs) != 0 {
		t.Errorf("a valid check was refused: %v", errs)
	}
}

func TestRedactHidesCredentialsAndShortens(t *testing.T) {
	in := `error: password=hunter2 token: abc.def "api_key": "s3cr3t" Authorization: Bearer eyJhbGciOi secret=xyz`
	out := Redact(in)
	for _, leaked := range []string{"hunter2", "abc.def", "s3cr3t", "eyJhbGciOi", "xyz"} {
		if strings.Contains(out, leaked) {
			t.Errorf("Redact left %q in %q", leaked, out)
		}
	}
	if !strings.Contains(out, "error:") || !strings.Contains(out, "[redacted]") {
		t.Errorf("Redact = %q", out)
	}
	if long := Redact(strings.Repeat("x", 5000)); len([]rune(long)) != MaxOutput {
		t.Errorf("Redact kept %d characters, want %d", len([]rune(long)), MaxOutput)
	}
}

// proxyServer stands in for a member cluster's API server: it answers the service proxy path of
// shop-prod/shop:8080 with handler, and records every path it is asked for.
func proxyServer(t *testing.T, handler http.HandlerFunc) (*rest.Config, func() []string) {
	t.Helper()
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.RequestURI())
		mu.Unlock()
		const prefix = "/api/v1/namespaces/shop-prod/services/shop:8080/proxy"
		if !strings.HasPrefix(r.URL.Path, prefix+"/") {
			http.Error(w, "not the proxy", http.StatusTeapot)
			return
		}
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return &rest.Config{Host: srv.URL}, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), paths...)
	}
}

var shop = Service{Namespace: "shop-prod", Name: "shop", Port: 8080}

func TestHTTPTry(t *testing.T) {
	cfg, paths := proxyServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/api/v1/namespaces/shop-prod/services/shop:8080/proxy/healthz":
			_, _ = w.Write([]byte("ok\n"))
		case "/api/v1/namespaces/shop-prod/services/shop:8080/proxy/slow":
			time.Sleep(150 * time.Millisecond)
			_, _ = w.Write([]byte("ok\n"))
		case "/api/v1/namespaces/shop-prod/services/shop:8080/proxy/created":
			w.WriteHeader(http.StatusCreated)
		default:
			http.Error(w, "no such page; db password=hunter2", http.StatusNotFound)
		}
	})
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		check  ferryv1.HTTPCheck
		passed bool
		want   string
	}{
		{"status and body", ferryv1.HTTPCheck{Path: "/healthz", BodyMatch: `^ok\s*$`}, true, "GET /healthz: 200 in "},
		{"another expected status", ferryv1.HTTPCheck{Path: "/created", ExpectStatus: 201}, true, "GET /created: 201"},
		{"wrong status", ferryv1.HTTPCheck{Path: "/nope"}, false, "GET /nope: 404 in "},
		{"wrong body", ferryv1.HTTPCheck{Path: "/healthz", BodyMatch: "^ready"}, false, `body does not match "^ready": ok`},
		{"too slow", ferryv1.HTTPCheck{Path: "/slow", MaxLatency: &metav1.Duration{Duration: 20 * time.Millisecond}}, false, "slower than maxLatency 20ms"},
		{"a path that leaves the proxy", ferryv1.HTTPCheck{Path: "/../../../secrets"}, false, "may not contain '.' or '..' segments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := HTTPTry(ctx, cfg, shop, &tc.check)
			if out.Passed != tc.passed || !strings.Contains(out.Message, tc.want) {
				t.Errorf("HTTPTry = %+v, want passed=%v and a message with %q", out, tc.passed, tc.want)
			}
			if strings.Contains(out.Message, "hunter2") {
				t.Errorf("the message leaks the body's password: %s", out.Message)
			}
		})
	}
	for _, p := range paths() {
		if !strings.HasPrefix(p, "/api/v1/namespaces/shop-prod/services/shop:8080/proxy/") {
			t.Errorf("a request left the service proxy: %s", p)
		}
	}
}

// TestHTTPTryWithoutAnswer: a Service that never answers fails the try once the request's time
// is up, and says so.
func TestHTTPTryWithoutAnswer(t *testing.T) {
	cfg, _ := proxyServer(t, func(_ http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	out := HTTPTry(context.Background(), cfg, shop, &ferryv1.HTTPCheck{Path: "/hang", MaxLatency: &metav1.Duration{Duration: 10 * time.Millisecond}})
	if out.Passed || !strings.Contains(out.Message, "no answer within") {
		t.Errorf("HTTPTry = %+v, want a failure without an answer", out)
	}
}
