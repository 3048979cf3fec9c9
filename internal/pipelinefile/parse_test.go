package pipelinefile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"
)

const full = `# A complete pipeline file.
stack: debian-12
runtime: python-3.12
build:
  image: python:3.12
  steps:
    - name: test
      run: pip install -r requirements.txt && pytest
      env: {PYTHONDONTWRITEBYTECODE: "1"}
      timeout: 10m
artifacts: ["app/", "requirements.txt"]
workdir: /srv/app
entrypoint: ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
cmd: ["--workers", "2"]
env: {PORT: "8080"}
ports: [8080, 9090]
user: "1000:1000"
deploy:
  replicas: 2
  healthCheck: {path: /healthz, port: 8080}
  resources:
    requests: {cpu: 250m, memory: 256Mi}
    limits: {memory: 512Mi}
  podAnnotations: {prometheus.io/scrape: "true"}
timeout: 20m
`

func TestParseFull(t *testing.T) {
	f, err := Parse(".ferry.yaml", []byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if f.Stack != "debian-12" || f.Runtime != "python-3.12" || f.Workdir != "/srv/app" || f.User != "1000:1000" {
		t.Errorf("file = %+v", f)
	}
	if f.Build == nil || f.Build.Image != "python:3.12" || len(f.Build.Steps) != 1 {
		t.Fatalf("build = %+v", f.Build)
	}
	s := f.Build.Steps[0]
	if s.Name != "test" || s.Env["PYTHONDONTWRITEBYTECODE"] != "1" || s.Timeout.Duration != 10*time.Minute {
		t.Errorf("step = %+v", s)
	}
	if f.Timeout.Duration != 20*time.Minute || len(f.Ports) != 2 || f.Env["PORT"] != "8080" {
		t.Errorf("file = %+v", f)
	}
	d := f.Deploy
	if *d.Replicas != 2 || d.HealthCheck.Path != "/healthz" || d.HealthCheck.Port != 8080 {
		t.Errorf("deploy = %+v", d)
	}
	if q := d.Resources.Requests["cpu"]; q.Cmp(resource.MustParse("250m")) != 0 {
		t.Errorf("cpu request = %s", q.String())
	}
	// deploy.ports defaults to the top-level ports.
	if len(d.Ports) != 2 || d.Ports[0] != 8080 {
		t.Errorf("deploy.ports = %v", d.Ports)
	}
	if p := f.Position("build.steps[0].run"); p.Line != 8 || p.Column != 12 {
		t.Errorf("position of build.steps[0].run = %+v", p)
	}
	// An unrecorded path falls back to its nearest recorded parent.
	if p := f.Position("build.steps[0].nothing"); p.Line != 7 {
		t.Errorf("position fallback = %+v", p)
	}
}

func TestParseDefaults(t *testing.T) {
	f, err := Parse(".ferry.yaml", []byte("stack: registry.example.com/base/debian@sha256:"+strings.Repeat("a", 64)+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Workdir != DefaultWorkdir || f.Deploy == nil || f.Deploy.Replicas == nil || *f.Deploy.Replicas != 1 || f.Deploy.Ports != nil {
		t.Errorf("defaults: %+v deploy %+v", f, f.Deploy)
	}
}

// TestParseErrors: every problem names the file, the line, the column and the field path.
func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want []string // each an exact line of the error
	}{
		{"empty", "", []string{".ferry.yaml: the file is empty: it needs at least a stack"}},
		{"comment only", "# nothing\n", []string{".ferry.yaml: the file is empty: it needs at least a stack"}},
		{"not a mapping", "- a\n", []string{".ferry.yaml:1:1: must be a mapping (key: value lines), not a list"}},
		{"syntax", "stack: debian-12\nbuild:\n  image: [x\n", []string{".ferry.yaml:3: invalid YAML: did not find expected ',' or ']'"}},
		{"two documents", "stack: a\n---\nstack: b\n", []string{".ferry.yaml:2:1: a pipeline file holds one YAML document; remove the second one (after ---)"}},
		{"missing stack", "runtime: python-3.12\n", []string{".ferry.yaml:1:1: stack: required field is missing"}},
		{"unknown field", "stack: debian-12\nbuid:\n  image: x\n", []string{`.ferry.yaml:2:1: buid: unknown field (did you mean "build"?) (known fields: artifacts, build, cmd, deploy, entrypoint, env, ports, runtime, stack, timeout, user, workdir)`}},
		{"unknown nested field", "stack: debian-12\nbuild:\n  image: golang:1.26\n  steps:\n    - name: test\n      script: go test\n", []string{
			".ferry.yaml:5:7: build.steps[0].run: required field is missing",
			`.ferry.yaml:6:7: build.steps[0].script: unknown field (known fields: env, name, run, timeout)`,
		}},
		{"bad step name", "stack: debian-12\nbuild:\n  image: golang:1.26\n  steps:\n    - name: Test\n      run: go test ./...\n", []string{
			`.ferry.yaml:5:13: build.steps[0].name: "Test" must be lower-case letters, digits and '-', starting with a letter and not ending with '-'`,
		}},
		{"reserved and duplicate step names", "stack: debian-12\nbuild:\n  image: golang:1.26\n  steps:\n    - {name: clone, run: x}\n    - {name: a, run: x}\n    - {name: a, run: y}\n", []string{
			`.ferry.yaml:5:14: build.steps[0].name: "clone" is the name of one of Ferry's own steps; choose another`,
			`.ferry.yaml:7:14: build.steps[2].name: "a" is used by an earlier step; step names must be unique`,
		}},
		{"number where a string belongs", "stack: debian-12\nenv:\n  PORT: 8080\n", []string{
			`.ferry.yaml:3:9: env.PORT: must be a string, not the number 8080: quote it ("8080") if it is meant as text`,
		}},
		{"boolean where a string belongs", "stack: debian-12\nentrypoint: [run, yes, true]\n", []string{
			`.ferry.yaml:2:24: entrypoint[2]: must be a string, not the boolean true: quote it ("true") if it is meant as text`,
		}},
		{"string where a number belongs", "stack: debian-12\nports: [http]\n", []string{
			`.ferry.yaml:2:9: ports[0]: must be a whole number, not the string "http"`,
		}},
		{"port out of range", "stack: debian-12\nports: [8080, 70000, 8080]\n", []string{
			".ferry.yaml:2:15: ports[1]: 70000 is not a TCP port (1-65535)",
			".ferry.yaml:2:22: ports[2]: port 8080 is listed twice",
		}},
		{"int32 overflow", "stack: debian-12\nports: [99999999999]\n", []string{".ferry.yaml:2:9: ports[0]: 99999999999 is out of range"}},
		{"relative workdir", "stack: debian-12\nworkdir: app\n", []string{`.ferry.yaml:2:10: workdir: "app" must be an absolute path such as /app`}},
		{"unclean workdir", "stack: debian-12\nworkdir: /srv/../app/\n", []string{`.ferry.yaml:2:10: workdir: "/srv/../app/" is not a clean path; write "/app"`}},
		{"artifacts escaping", "stack: debian-12\nartifacts:\n  - /etc/passwd\n  - ../other\n  - app/../../x\n  - .git/config\n  - ''\n  - app\n  - app/\n", []string{
			`.ferry.yaml:3:5: artifacts[0]: "/etc/passwd" must be relative to the repository root`,
			`.ferry.yaml:4:5: artifacts[1]: "../other" leaves the repository`,
			`.ferry.yaml:5:5: artifacts[2]: "app/../../x" leaves the repository`,
			`.ferry.yaml:6:5: artifacts[3]: ".git/config" is git's own data, never part of an image`,
			`.ferry.yaml:7:5: artifacts[4]: must not be empty`,
			`.ferry.yaml:9:5: artifacts[6]: "app/" is listed twice`,
		}},
		{"env keys", "stack: debian-12\nenv:\n  1BAD: x\n  ok_NAME: y\n  has-dash: z\n", []string{
			`.ferry.yaml:3:9: env["1BAD"]: "1BAD" is not a valid variable name: letters, digits and '_', not starting with a digit`,
			`.ferry.yaml:5:13: env.has-dash: "has-dash" is not a valid variable name: letters, digits and '_', not starting with a digit`,
		}},
		{"durations", "stack: debian-12\ntimeout: 5m\nbuild:\n  image: golang\n  steps:\n    - {name: a, run: x, timeout: 10m}\n    - {name: b, run: x, timeout: soon}\n    - {name: c, run: x, timeout: 0s}\n", []string{
			`.ferry.yaml:7:34: build.steps[1].timeout: "soon" is not a duration: write it like 90s, 10m or 1h30m`,
		}},
		{"step timeout longer than the file's", "stack: debian-12\ntimeout: 5m\nbuild:\n  image: golang\n  steps:\n    - {name: a, run: x, timeout: 10m}\n", []string{
			".ferry.yaml:6:34: build.steps[0].timeout: 10m0s is longer than 5m0s, the most allowed here",
		}},
		{"zero and huge timeouts", "stack: debian-12\ntimeout: 48h\nbuild:\n  image: golang\n  steps:\n    - {name: c, run: x, timeout: 0s}\n", []string{
			".ferry.yaml:2:10: timeout: 48h0m0s is longer than 24h0m0s, the most allowed here",
			".ferry.yaml:6:34: build.steps[0].timeout: must be longer than 0s",
		}},
		{"stack reference and name", "stack: Debian 12\nruntime: reg.example.com/Runtime:1\n", []string{
			`.ferry.yaml:1:8: stack: "Debian 12" is neither a catalog name (lower-case letters, digits, '.' and '-') nor an image reference`,
			`.ferry.yaml:2:10: runtime: "reg.example.com/Runtime:1" is not a valid image reference: could not parse reference: reg.example.com/Runtime:1`,
		}},
		{"build without steps", "stack: debian-12\nbuild:\n  image: golang\n  steps: []\n", []string{".ferry.yaml:4:10: build.steps: required: at least one step"}},
		{"deploy", "stack: debian-12\ndeploy:\n  replicas: -1\n  healthCheck: {path: healthz, port: 0}\n  resources:\n    requests: {memory: 1Gi, cpu: lots}\n    limits: {memory: 512Mi}\n  podAnnotations: {ferry.dev/x: y}\n  strategy: rolling\n", []string{
			".ferry.yaml:6:34: deploy.resources.requests.cpu: \"lots\" is not a quantity: write it like 250m, 2, 512Mi or 1Gi",
			".ferry.yaml:9:3: deploy.strategy: unknown field (known fields: healthCheck, podAnnotations, ports, replicas, resources, verification)",
		}},
		{"deploy values", "stack: debian-12\ndeploy:\n  replicas: -1\n  healthCheck: {path: healthz, port: 0}\n  resources:\n    requests: {memory: 1Gi}\n    limits: {memory: 512Mi}\n  podAnnotations: {ferry.dev/x: y, \"bad key\": z}\n", []string{
			".ferry.yaml:3:13: deploy.replicas: -1 replicas; 0 to 1000 are allowed",
			`.ferry.yaml:4:23: deploy.healthCheck.path: "healthz" must start with '/' (at most 1024 characters)`,
			".ferry.yaml:4:38: deploy.healthCheck.port: 0 is not a TCP port (1-65535)",
			".ferry.yaml:6:24: deploy.resources.requests.memory: request 1Gi is more than the limit 512Mi",
			`.ferry.yaml:8:33: deploy.podAnnotations["ferry.dev/x"]: annotation keys under ferry.dev/ are Ferry's own`,
			`.ferry.yaml:8:47: deploy.podAnnotations["bad key"]: "bad key" is not a valid annotation key: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')`,
		}},
		{"duplicate key", "stack: debian-12\nstack: debian-13\n", []string{".ferry.yaml:2:1: stack: duplicate key"}},
		{"merge key", "base: &b {image: golang}\n", []string{".ferry.yaml:1:1: base: unknown field (known fields: artifacts, build, cmd, deploy, entrypoint, env, ports, runtime, stack, timeout, user, workdir)", ".ferry.yaml:1:1: stack: required field is missing"}},
		{"merge into build", "stack: debian-12\nbuild:\n  <<: {image: golang}\n  steps: [{name: a, run: x}]\n", []string{
			".ferry.yaml:3:3: build: merge keys (<<) are not supported; write the fields out",
			".ferry.yaml:3:3: build.image: required field is missing",
		}},
		{"mapping for a list", "stack: debian-12\nports: {http: 80}\n", []string{".ferry.yaml:2:8: ports: must be a list, not a mapping"}},
		{"user", "stack: debian-12\nuser: \"root; rm -rf /\"\n", []string{`.ferry.yaml:2:7: user: "root; rm -rf /" must be a user name or uid, optionally with :group or :gid`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(".ferry.yaml", []byte(tc.in))
			if err == nil {
				t.Fatalf("no error; parsed %+v", f)
			}
			if !IsInvalid(err) {
				t.Errorf("IsInvalid(%v) = false", err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestAliasesAndLimits: aliases are followed (and count), a file that expands without bound is
// refused, and a file larger than MaxSize is refused before parsing.
func TestAliasesAndLimits(t *testing.T) {
	f, err := Parse("p.yaml", []byte("stack: &s debian-12\nruntime: *s\n"))
	if err != nil || f.Runtime != "debian-12" {
		t.Fatalf("alias: %+v, %v", f, err)
	}
	// 300 steps that all alias one step whose env aliases a map of 300 entries: small on disk,
	// 90000 values once expanded.
	var b strings.Builder
	b.WriteString("stack: debian-12\nbuild:\n  image: golang\n  steps:\n")
	b.WriteString("    - &s {name: a, run: x, env: &e {")
	for i := range 300 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("V" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ": v")
	}
	b.WriteString("}}\n")
	for range 299 {
		b.WriteString("    - *s\n")
	}
	_, err = Parse("p.yaml", []byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "the file expands to more than 20000 values") {
		t.Errorf("billion laughs: %v", err)
	}
	_, err = Parse("p.yaml", []byte("stack: debian-12\n#"+strings.Repeat("x", MaxSize)))
	var e *Error
	if !errors.As(err, &e) || !strings.Contains(e.Message, "the limit is 262144") {
		t.Errorf("oversized: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir, ""); err == nil || !IsInvalid(err) || !strings.Contains(err.Error(), ".ferry.yaml: no pipeline file in the repository") {
		t.Errorf("missing file: %v", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "ci"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ci", "ferry.yaml"), []byte("stack: debian-12\nports: [x]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, "ci/ferry.yaml"); err == nil || err.Error() != `ci/ferry.yaml:2:9: ports[0]: must be a whole number, not the string "x"` {
		t.Errorf("error = %v", err)
	}
}

func TestErrorf(t *testing.T) {
	f, err := Parse(".ferry.yaml", []byte("# header\nstack:   debian-13\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Errorf("stack", "not in the catalog").Error(); got != ".ferry.yaml:2:10: stack: not in the catalog" {
		t.Errorf("Errorf = %q", got)
	}
	if got := f.Errorf("runtime", "x").Error(); got != ".ferry.yaml:2:1: runtime: x" {
		t.Errorf("Errorf for an absent field = %q", got)
	}
}
