package pipelinefile

import (
	"strings"
	"testing"
	"time"
)

// TestParseVerification: an application's checks come through deploy.verification as written
// (they reach the Release with the Build's deploy settings).
func TestParseVerification(t *testing.T) {
	f, err := Parse(".ferry.yaml", []byte(`stack: debian-12
ports: [8080]
deploy:
  verification:
  - name: smoke
    http: {path: /healthz, bodyMatch: "^ok", times: 3, interval: 5s, maxLatency: 300ms}
  - name: e2e
    job: {image: registry.example.com/shop/e2e:1, args: [--smoke], timeout: 2m}
`))
	if err != nil {
		t.Fatal(err)
	}
	checks := f.Deploy.Verification
	if len(checks) != 2 || checks[0].HTTP.Path != "/healthz" || checks[0].HTTP.Times != 3 || checks[0].HTTP.IntervalOrDefault() != 5*time.Second ||
		checks[0].HTTP.MaxLatency.Duration != 300*time.Millisecond || checks[1].Job.TimeoutOrDefault() != 2*time.Minute || checks[1].Job.Args[0] != "--smoke" {
		t.Errorf("checks = %+v", checks)
	}
}

// TestParseVerificationErrors: from the repository's side, a path that would leave the Service's
// proxy, a regular expression that does not compile, a check with neither or both kinds and
// values out of range are refused, each naming its field.
func TestParseVerificationErrors(t *testing.T) {
	_, err := Parse(".ferry.yaml", []byte(`stack: debian-12
deploy:
  verification:
  - name: sneaky
    http: {path: "/../../api/v1/secrets"}
  - name: regex
    http: {path: /, bodyMatch: "(unclosed", expectStatus: 42, times: 1000, interval: 1ms, maxLatency: 5m}
  - name: nothing
  - name: both
    http: {path: /}
    job: {image: x}
  - name: Bad Name
    job: {image: x, timeout: 3h}
  - name: regex
    http: {path: /}
`))
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		`deploy.verification[0].http.path: "/../../api/v1/secrets" may not contain '.' or '..' segments`,
		"deploy.verification[1].http.bodyMatch: not a regular expression",
		"deploy.verification[1].http.expectStatus: 42 is not an HTTP status",
		"deploy.verification[1].http.times: 1000 tries",
		"deploy.verification[1].http.interval: 1ms; 1s to 1h are allowed",
		"deploy.verification[1].http.maxLatency: 5m0s",
		"deploy.verification[2].http: a check must set exactly one of http and job",
		"deploy.verification[3].http: a check must set exactly one of http and job",
		`deploy.verification[4].name: "Bad Name" must be lower-case`,
		"deploy.verification[4].job.timeout: 3h0m0s; 1s to 1h are allowed",
		`deploy.verification[5].name: "regex" is used by another check`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the errors do not say %q", want)
		}
	}
}
