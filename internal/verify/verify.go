// Package verify runs the checks of a Release's verification after a rollout, against one member
// cluster: HTTP checks sent to the application's Service through the cluster's API server (the
// service proxy, /api/v1/namespaces/NS/services/NAME:PORT/proxy/PATH, which reaches a remote
// cluster's Services with nothing but its rest config), and Job checks run in the application's
// namespace. Each function does one thing and never waits: the Release controller keeps the
// progress in the Release's status and calls again, after a restart too.
package verify

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/text"
)

// MaxOutput is how many characters of a check's output (a body, a Job's log) a message keeps.
const MaxOutput = 512

// Outcome is what one try of a check saw.
type Outcome struct {
	// Passed says whether the try passed.
	Passed bool
	// Message says what was seen: a status and a latency, or why the try failed with the output.
	Message string
}

// FieldError names the field of a check that is refused, relative to the check (http.path).
type FieldError struct {
	Field string
	// Value is the refused value (shortened), empty when the field is missing.
	Value string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Validate checks what the CRD's schema cannot: that a path stays inside the service proxy and a
// bodyMatch compiles. It returns the refused fields.
func Validate(c *ferryv1.VerificationCheck) []*FieldError {
	var errs []*FieldError
	if (c.HTTP == nil) == (c.Job == nil) {
		errs = append(errs, fieldErr("http", "a check must set exactly one of http and job"))
	}
	if h := c.HTTP; h != nil {
		if err := ValidatePath(h.Path); err != nil {
			errs = append(errs, &FieldError{Field: "http.path", Value: text.Truncate(h.Path, 64), Err: err})
		}
		if h.BodyMatch != "" {
			if _, err := regexp.Compile(h.BodyMatch); err != nil {
				errs = append(errs, &FieldError{Field: "http.bodyMatch", Value: text.Truncate(h.BodyMatch, 64), Err: fmt.Errorf("not a regular expression: %w", err)})
			}
		}
	}
	if j := c.Job; j != nil && strings.TrimSpace(j.Image) == "" {
		errs = append(errs, fieldErr("job.image", "required: the image to run"))
	}
	return errs
}

// ValidatePath refuses a path that could leave the Service's proxy and reach the cluster's API
// with the manager's credentials: "." and ".." segments, percent-encoding, backslashes, fragments,
// and anything not starting with "/".
func ValidatePath(p string) error {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("%q must start with '/'", text.Truncate(p, 64))
	case len(p) > 1024:
		return errors.New("longer than 1024 characters")
	case strings.ContainsAny(p, "%\\#"):
		return fmt.Errorf("%q may not contain '%%', '\\' or '#'", text.Truncate(p, 64))
	}
	for _, r := range p {
		if r <= ' ' || r >= 0x7f {
			return fmt.Errorf("%q may contain only printable ASCII characters", text.Truncate(p, 64))
		}
	}
	pathPart, _, _ := strings.Cut(p, "?")
	for seg := range strings.SplitSeq(pathPart, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%q may not contain '.' or '..' segments", text.Truncate(p, 64))
		}
	}
	return nil
}

var secretRE = regexp.MustCompile(`(?i)((?:password|passwd|pwd|token|secret|authorization|api[-_]?key|access[-_]?key|bearer|basic)["']?\s*[:=]?\s*["']?(?:(?:bearer|basic)\s+)?)[^\s"',;&<>]+`)

// Redact hides what looks like a credential in output (password=…, "token": "…", Bearer …)
// and shortens it to MaxOutput characters: it goes into a Release's status and events.
func Redact(s string) string {
	s = strings.ToValidUTF8(s, "?")
	s = secretRE.ReplaceAllString(s, "${1}[redacted]")
	s = strings.Join(strings.Fields(s), " ")
	return text.Truncate(s, MaxOutput)
}
