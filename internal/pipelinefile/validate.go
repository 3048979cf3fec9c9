package pipelinefile

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/verify"
)

// Names of the steps Ferry adds around the user's build steps; a user step may not take them.
const (
	CloneStep    = "clone"
	AssembleStep = "assemble"
)

// MaxTimeout is the longest timeout a pipeline file may ask for; the Project and the platform cap
// it further.
const MaxTimeout = 24 * time.Hour

var (
	stepNameRE    = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	envNameRE     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	userRE        = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`)
	catalogNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
)

// maxStepName keeps "step-<name>", Tekton's container name, within a DNS label.
const maxStepName = 50

// validator collects the problems of a decoded file.
type validator struct {
	f    *File
	errs ErrorList
}

func (v *validator) errorf(path, format string, args ...any) {
	v.errs = append(v.errs, v.f.Errorf(path, format, args...))
}

// validate checks a decoded file against the rules the JSON Schema states and those it cannot
// (uniqueness, paths that stay inside the repository, timeouts that fit together). The problems come
// back in the order of the file.
func validate(f *File) ErrorList {
	v := &validator{f: f}
	v.layer("stack", f.Stack, true)
	v.layer("runtime", f.Runtime, false)
	if f.Build != nil {
		v.build(f.Build)
	}
	v.artifacts(f.Artifacts)
	if f.Workdir != "" {
		v.absolutePath("workdir", f.Workdir)
	}
	for i, arg := range f.Entrypoint {
		if i == 0 && arg == "" {
			v.errorf("entrypoint[0]", "the program to run must not be empty")
		}
	}
	v.envMap("env", f.Env, 128)
	v.ports("ports", f.Ports)
	if f.User != "" && !userRE.MatchString(f.User) {
		v.errorf("user", "%q must be a user name or uid, optionally with :group or :gid", f.User)
	}
	if f.Deploy != nil {
		v.deploy(f.Deploy)
	}
	v.timeout("timeout", f.Timeout, MaxTimeout)
	return v.errs
}

// layer checks a stack or runtime: a catalog name or an image reference.
func (v *validator) layer(field, value string, required bool) {
	switch {
	case value == "":
		if required {
			v.errorf(field, "required: name the OS stack, a catalog name such as debian-12 or an image reference")
		}
	case catalog.IsReference(value):
		if _, err := name.ParseReference(value); err != nil {
			v.errorf(field, "%q is not a valid image reference: %v", value, err)
		}
	case !catalogNameRE.MatchString(value):
		v.errorf(field, "%q is neither a catalog name (lower-case letters, digits, '.' and '-') nor an image reference", value)
	}
}

func (v *validator) build(b *Build) {
	if b.Image == "" {
		v.errorf("build.image", "required: the builder image the steps run in, for example golang:1.26")
	} else if _, err := name.ParseReference(b.Image); err != nil {
		v.errorf("build.image", "%q is not a valid image reference: %v", b.Image, err)
	}
	if len(b.Steps) == 0 {
		v.errorf("build.steps", "required: at least one step")
	}
	if len(b.Steps) > 32 {
		v.errorf("build.steps", "%d steps; at most 32 are allowed", len(b.Steps))
	}
	seen := map[string]bool{}
	for i, s := range b.Steps {
		p := fmt.Sprintf("build.steps[%d]", i)
		switch {
		case s.Name == "":
			v.errorf(p+".name", "required: name the step, for example test")
		case len(s.Name) > maxStepName:
			v.errorf(p+".name", "%q is longer than %d characters", s.Name, maxStepName)
		case !stepNameRE.MatchString(s.Name):
			v.errorf(p+".name", "%q must be lower-case letters, digits and '-', starting with a letter and not ending with '-'", s.Name)
		case s.Name == CloneStep || s.Name == AssembleStep:
			v.errorf(p+".name", "%q is the name of one of Ferry's own steps; choose another", s.Name)
		case seen[s.Name]:
			v.errorf(p+".name", "%q is used by an earlier step; step names must be unique", s.Name)
		}
		seen[s.Name] = true
		if strings.TrimSpace(s.Run) == "" {
			v.errorf(p+".run", "required: the shell script the step runs")
		}
		v.envMap(p+".env", s.Env, 64)
		limit := MaxTimeout
		if v.f.Timeout != nil && v.f.Timeout.Duration > 0 {
			limit = v.f.Timeout.Duration
		}
		v.timeout(p+".timeout", s.Timeout, limit)
	}
}

func (v *validator) artifacts(artifacts []string) {
	if len(artifacts) > 256 {
		v.errorf("artifacts", "%d entries; at most 256 are allowed", len(artifacts))
	}
	seen := map[string]bool{}
	for i, a := range artifacts {
		p := fmt.Sprintf("artifacts[%d]", i)
		clean := path.Clean(strings.ReplaceAll(a, `\`, "/"))
		switch {
		case a == "":
			v.errorf(p, "must not be empty")
		case strings.HasPrefix(a, "/") || strings.HasPrefix(a, `\`) || (len(a) > 1 && a[1] == ':'):
			v.errorf(p, "%q must be relative to the repository root", a)
		case clean == ".." || strings.HasPrefix(clean, "../"):
			v.errorf(p, "%q leaves the repository", a)
		case clean == ".git" || strings.HasPrefix(clean, ".git/"):
			v.errorf(p, "%q is git's own data, never part of an image", a)
		case seen[clean]:
			v.errorf(p, "%q is listed twice", a)
		}
		seen[clean] = true
	}
}

func (v *validator) absolutePath(field, p string) {
	switch {
	case !strings.HasPrefix(p, "/"):
		v.errorf(field, "%q must be an absolute path such as /app", p)
	case path.Clean(p) != p:
		v.errorf(field, "%q is not a clean path; write %q", p, path.Clean(p))
	case p == "/":
		v.errorf(field, "the root directory cannot hold the application; use a directory such as /app")
	}
}

func (v *validator) envMap(field string, env map[string]string, limit int) {
	if len(env) > limit {
		v.errorf(field, "%d variables; at most %d are allowed", len(env), limit)
	}
	for _, k := range sortedKeys(env) {
		if !envNameRE.MatchString(k) {
			v.errorf(mapPath(field, k), "%q is not a valid variable name: letters, digits and '_', not starting with a digit", k)
		}
	}
}

func (v *validator) ports(field string, ports []int32) {
	if len(ports) > 16 {
		v.errorf(field, "%d ports; at most 16 are allowed", len(ports))
	}
	seen := map[int32]bool{}
	for i, port := range ports {
		p := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case port < 1 || port > 65535:
			v.errorf(p, "%d is not a TCP port (1-65535)", port)
		case seen[port]:
			v.errorf(p, "port %d is listed twice", port)
		}
		seen[port] = true
	}
}

func (v *validator) timeout(field string, d *metav1.Duration, limit time.Duration) {
	if d == nil {
		return
	}
	switch t := d.Duration; {
	case t <= 0:
		v.errorf(field, "must be longer than 0s")
	case t > limit:
		v.errorf(field, "%s is longer than %s, the most allowed here", t, limit)
	}
}

func (v *validator) deploy(d *ferryv1.DeploySpec) {
	if d.Replicas != nil && (*d.Replicas < 0 || *d.Replicas > 1000) {
		v.errorf("deploy.replicas", "%d replicas; 0 to 1000 are allowed", *d.Replicas)
	}
	v.ports("deploy.ports", d.Ports)
	if hc := d.HealthCheck; hc != nil {
		switch {
		case hc.Path == "":
			v.errorf("deploy.healthCheck.path", "required: the HTTP path to probe, for example /healthz")
		case !strings.HasPrefix(hc.Path, "/") || len(hc.Path) > 1024:
			v.errorf("deploy.healthCheck.path", "%q must start with '/' (at most 1024 characters)", hc.Path)
		}
		if hc.Port < 1 || hc.Port > 65535 {
			v.errorf("deploy.healthCheck.port", "%d is not a TCP port (1-65535)", hc.Port)
		}
		if hc.InitialDelaySeconds < 0 || hc.InitialDelaySeconds > 3600 {
			v.errorf("deploy.healthCheck.initialDelaySeconds", "%d seconds; 0 to 3600 are allowed", hc.InitialDelaySeconds)
		}
	}
	if r := d.Resources; r != nil {
		v.resources("deploy.resources.requests", r.Requests)
		v.resources("deploy.resources.limits", r.Limits)
		for res, req := range r.Requests {
			if lim, ok := r.Limits[res]; ok && req.Cmp(lim) > 0 {
				v.errorf(mapPath("deploy.resources.requests", string(res)), "request %s is more than the limit %s", req.String(), lim.String())
			}
		}
	}
	v.verification("deploy.verification", d.Verification)
	if len(d.PodAnnotations) > 32 {
		v.errorf("deploy.podAnnotations", "%d annotations; at most 32 are allowed", len(d.PodAnnotations))
	}
	for _, k := range sortedKeys(d.PodAnnotations) {
		p := mapPath("deploy.podAnnotations", k)
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			v.errorf(p, "%q is not a valid annotation key: %s", k, strings.Join(errs, "; "))
		} else if strings.HasPrefix(k, ferryv1.ReservedAnnotationPrefix) {
			v.errorf(p, "annotation keys under %s are Ferry's own", ferryv1.ReservedAnnotationPrefix)
		}
	}
}

// verification checks the application's verification checks: what the CRD's schema says, and
// what only a parser can judge (a path that stays inside the Service's proxy, a regular
// expression that compiles).
func (v *validator) verification(field string, checks []ferryv1.VerificationCheck) {
	if len(checks) > 16 {
		v.errorf(field, "%d checks; at most 16 are allowed", len(checks))
	}
	seen := map[string]bool{}
	for i := range checks {
		c := &checks[i]
		p := fmt.Sprintf("%s[%d]", field, i)
		switch {
		case c.Name == "":
			v.errorf(p+".name", "required: a name for the check, for example smoke")
		case len(c.Name) > 40 || !checkNameRE.MatchString(c.Name):
			v.errorf(p+".name", "%q must be lower-case letters, digits and '-', at most 40 characters", c.Name)
		case seen[c.Name]:
			v.errorf(p+".name", "%q is used by another check", c.Name)
		}
		seen[c.Name] = true
		for _, fe := range verify.Validate(c) {
			v.errorf(p+"."+fe.Field, "%v", fe.Err)
		}
		if h := c.HTTP; h != nil {
			if h.Port < 0 || h.Port > 65535 {
				v.errorf(p+".http.port", "%d is not a TCP port (1-65535)", h.Port)
			}
			if h.ExpectStatus != 0 && (h.ExpectStatus < 100 || h.ExpectStatus > 599) {
				v.errorf(p+".http.expectStatus", "%d is not an HTTP status (100-599)", h.ExpectStatus)
			}
			if h.Times < 0 || h.Times > 100 {
				v.errorf(p+".http.times", "%d tries; 1 to 100 are allowed", h.Times)
			}
			if len(h.BodyMatch) > 1024 {
				v.errorf(p+".http.bodyMatch", "longer than 1024 characters")
			}
			if h.Interval != nil && (h.Interval.Duration < time.Second || h.Interval.Duration > time.Hour) {
				v.errorf(p+".http.interval", "%s; 1s to 1h are allowed", h.Interval.Duration)
			}
			if h.MaxLatency != nil && (h.MaxLatency.Duration <= 0 || h.MaxLatency.Duration > time.Minute) {
				v.errorf(p+".http.maxLatency", "%s; more than 0s and at most 60s are allowed", h.MaxLatency.Duration)
			}
		}
		if j := c.Job; j != nil {
			if len(j.Image) > 1024 {
				v.errorf(p+".job.image", "longer than 1024 characters")
			}
			if j.Timeout != nil && (j.Timeout.Duration < time.Second || j.Timeout.Duration > time.Hour) {
				v.errorf(p+".job.timeout", "%s; 1s to 1h are allowed", j.Timeout.Duration)
			}
			if len(j.Command) > 32 || len(j.Args) > 32 {
				v.errorf(p+".job", "at most 32 command and 32 args items are allowed")
			}
		}
	}
}

var checkNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

func (v *validator) resources(field string, list corev1.ResourceList) {
	names := make([]string, 0, len(list))
	for k := range list {
		names = append(names, string(k))
	}
	slices.Sort(names)
	for _, k := range names {
		q := list[corev1.ResourceName(k)]
		p := mapPath(field, k)
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			v.errorf(p, "%q is not a resource name such as cpu or memory", k)
		} else if q.Sign() < 0 {
			v.errorf(p, "%s is negative", q.String())
		}
	}
}

// setDefaults fills what the file leaves out: the workdir, and deploy settings from the top-level
// ports, so that a Build records everything a Release needs.
func setDefaults(f *File) {
	if f.Workdir == "" {
		f.Workdir = DefaultWorkdir
	}
	if f.Deploy == nil {
		f.Deploy = &ferryv1.DeploySpec{}
	}
	if f.Deploy.Replicas == nil {
		f.Deploy.Replicas = ptr.To[int32](1)
	}
	if len(f.Deploy.Ports) == 0 && len(f.Ports) > 0 {
		f.Deploy.Ports = slices.Clone(f.Ports)
	}
}
