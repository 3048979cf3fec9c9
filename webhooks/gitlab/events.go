package gitlab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	gl "gitlab.com/gitlab-org/api/client-go"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// zeroSHA is what GitLab sends as after (or checkout_sha's absence) when a ref is deleted.
const zeroSHA = "0000000000000000000000000000000000000000"

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// envelope is the part of every GitLab payload that says what it is and which project it is about.
// It is decoded for every delivery, before the event itself.
type envelope struct {
	ObjectKind string    `json:"object_kind"`
	EventName  string    `json:"event_name"`
	ProjectID  flexInt64 `json:"project_id"`
	Project    struct {
		ID                flexInt64 `json:"id"`
		PathWithNamespace string    `json:"path_with_namespace"`
	} `json:"project"`
}

// flexInt64 decodes a JSON number, a numeric string or null.
type flexInt64 int64

func (f *flexInt64) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "null" || s == "" {
		*f = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("%s is not a project ID", b)
	}
	*f = flexInt64(n)
	return nil
}

// projectKey is how a payload names its GitLab project.
type projectKey struct {
	path string
	id   int64
}

func (e *envelope) project() projectKey {
	id := int64(e.Project.ID)
	if id == 0 {
		id = int64(e.ProjectID)
	}
	return projectKey{path: e.Project.PathWithNamespace, id: id}
}

// decodeEnvelope checks that body is one well-formed JSON object and reads its envelope. The
// error names the problem and where it is.
func decodeEnvelope(body []byte) (*envelope, error) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return nil, errors.New("the body is empty; GitLab sends a JSON object")
	}
	if trimmed[0] != '{' {
		if !json.Valid(trimmed) {
			return nil, malformed(trimmed)
		}
		return nil, errors.New("the body must be a JSON object")
	}
	e := &envelope{}
	if err := json.Unmarshal(trimmed, e); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) || !json.Valid(trimmed) {
			return nil, malformed(trimmed)
		}
		return nil, fmt.Errorf("unexpected payload: %w", err)
	}
	return e, nil
}

// malformed names where a body stops being JSON.
func malformed(body []byte) error {
	var v any
	err := json.Unmarshal(body, &v)
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	}
	return fmt.Errorf("malformed JSON: %w", err)
}

// trigger is what a delivery asks to build, before the Project's triggers are applied.
type trigger struct {
	kind ferryv1.TriggerKind
	// ref is the full git ref the Build records.
	ref string
	// name is the branch (Push), tag (Tag) or target branch (MergeRequest) the triggers match.
	name     string
	revision string
	user     string
	// Merge requests only.
	mergeRequestIID int64
	sourceBranch    string
	sourceProjectID int64
	targetProjectID int64
}

// ignored is a delivery Ferry answers with a 2xx and does not build; reason says why.
type ignored struct{ reason string }

func (i *ignored) Error() string { return i.reason }

func ignore(format string, args ...any) error {
	return &ignored{reason: fmt.Sprintf(format, args...)}
}

// payloadError is a delivery whose body is not a usable GitLab event: Ferry answers 400.
type payloadError struct{ msg string }

func (p *payloadError) Error() string { return p.msg }

func badPayload(format string, args ...any) error {
	return &payloadError{msg: fmt.Sprintf(format, args...)}
}

// Event header values Ferry builds from.
const (
	pushHook         = "Push Hook"
	tagPushHook      = "Tag Push Hook"
	mergeRequestHook = "Merge Request Hook"
	systemHook       = "System Hook"
)

// eventKind says which kind of build an event header (and, for system hooks, the body's
// event_name) can lead to; "" means the event is never built.
func eventKind(header string, env *envelope) ferryv1.TriggerKind {
	switch {
	case strings.EqualFold(header, pushHook):
		return ferryv1.TriggerPush
	case strings.EqualFold(header, tagPushHook):
		return ferryv1.TriggerTag
	case strings.EqualFold(header, mergeRequestHook):
		return ferryv1.TriggerMergeRequest
	case strings.EqualFold(header, systemHook):
		// System hooks send "System Hook" for every event; the body's event_name says which.
		switch env.EventName {
		case "push":
			return ferryv1.TriggerPush
		case "tag_push":
			return ferryv1.TriggerTag
		}
	}
	return ""
}

// wantObjectKind is the object_kind a webhook body of the kind must carry (when it has one).
var wantObjectKind = map[ferryv1.TriggerKind]string{
	ferryv1.TriggerPush:         "push",
	ferryv1.TriggerTag:          "tag_push",
	ferryv1.TriggerMergeRequest: "merge_request",
}

// decodeTrigger parses a delivery of a kind Ferry builds with the GitLab client library and says
// what to build, or why not (an *ignored), or why the payload is unusable (a *payloadError).
func decodeTrigger(header string, kind ferryv1.TriggerKind, env *envelope, body []byte) (*trigger, error) {
	isSystem := strings.EqualFold(header, systemHook)
	if !isSystem && env.ObjectKind != "" && env.ObjectKind != wantObjectKind[kind] {
		return nil, badPayload("X-Gitlab-Event %q does not match the body's object_kind %q", header, env.ObjectKind)
	}
	// The library matches header values exactly; pass GitLab's canonical spelling.
	eventType := gl.EventTypeSystemHook
	if !isSystem {
		eventType = map[ferryv1.TriggerKind]gl.EventType{
			ferryv1.TriggerPush: gl.EventTypePush, ferryv1.TriggerTag: gl.EventTypeTagPush, ferryv1.TriggerMergeRequest: gl.EventTypeMergeRequest,
		}[kind]
	}
	parsed, err := gl.ParseHook(eventType, body)
	if err != nil {
		return nil, badPayload("failed to parse the %s payload: %v", header, err)
	}
	switch ev := parsed.(type) {
	case *gl.PushEvent:
		return pushTrigger(ev.Ref, ev.After, ev.CheckoutSHA, ev.UserUsername)
	case *gl.PushSystemEvent:
		return pushTrigger(ev.Ref, ev.After, ev.CheckoutSHA, ev.UserUsername)
	case *gl.TagEvent:
		return tagTrigger(ev.Ref, ev.After, ev.CheckoutSHA, ev.UserUsername)
	case *gl.TagPushSystemEvent:
		return tagTrigger(ev.Ref, ev.After, ev.CheckoutSHA, ev.UserUsername)
	case *gl.MergeEvent:
		return mergeRequestTrigger(ev)
	}
	return nil, ignore("%s events are not built", header)
}

// pushTrigger builds checkout_sha of a branch push; a deletion (after all zeros, no
// checkout_sha) is ignored.
func pushTrigger(ref, after, checkoutSHA, user string) (*trigger, error) {
	branch, ok := strings.CutPrefix(ref, "refs/heads/")
	if !ok || branch == "" {
		return nil, ignore("ref %q is not a branch", ref)
	}
	if checkoutSHA == "" || after == zeroSHA {
		return nil, ignore("branch %s was deleted", branch)
	}
	if !fullSHA.MatchString(checkoutSHA) {
		return nil, ignore("checkout_sha %q of branch %s is not a 40-hex commit SHA", checkoutSHA, branch)
	}
	return &trigger{kind: ferryv1.TriggerPush, ref: ref, name: branch, revision: checkoutSHA, user: user}, nil
}

// tagTrigger builds the tagged commit: for an annotated tag after is the tag object and
// checkout_sha the commit it points at.
func tagTrigger(ref, after, checkoutSHA, user string) (*trigger, error) {
	tag, ok := strings.CutPrefix(ref, "refs/tags/")
	if !ok || tag == "" {
		return nil, ignore("ref %q is not a tag", ref)
	}
	// A deletion has after all zeros and no checkout_sha; some stored payloads only lack the
	// checkout_sha.
	if checkoutSHA == "" || after == zeroSHA {
		return nil, ignore("tag %s was deleted", tag)
	}
	if !fullSHA.MatchString(checkoutSHA) {
		return nil, ignore("checkout_sha %q of tag %s is not a 40-hex commit SHA", checkoutSHA, tag)
	}
	return &trigger{kind: ferryv1.TriggerTag, ref: ref, name: tag, revision: checkoutSHA, user: user}, nil
}

// mergeRequestTrigger builds the head of a merge request when it is opened, reopened or updated
// with new commits (only then does GitLab send oldrev).
func mergeRequestTrigger(ev *gl.MergeEvent) (*trigger, error) {
	a := ev.ObjectAttributes
	switch a.Action {
	case "open", "reopen":
	case "update":
		if a.OldRev == "" {
			return nil, ignore("merge request !%d was updated without new commits", a.IID)
		}
	case "":
		return nil, ignore("merge request event without an action")
	default:
		return nil, ignore("merge request action %q is not built", a.Action)
	}
	if a.IID <= 0 {
		return nil, badPayload("merge request event without object_attributes.iid")
	}
	if !fullSHA.MatchString(a.LastCommit.ID) {
		return nil, ignore("merge request !%d head %q is not a 40-hex commit SHA", a.IID, a.LastCommit.ID)
	}
	t := &trigger{
		kind:            ferryv1.TriggerMergeRequest,
		ref:             fmt.Sprintf("refs/merge-requests/%d/head", a.IID),
		name:            a.TargetBranch,
		revision:        a.LastCommit.ID,
		mergeRequestIID: a.IID,
		sourceBranch:    a.SourceBranch,
		sourceProjectID: a.SourceProjectID,
		targetProjectID: a.TargetProjectID,
	}
	if ev.User != nil {
		t.user = ev.User.Username
	}
	return t, nil
}

// validRef applies the Build's rules for refs (the API server's CEL rules, checked here so that the
// answer can say why).
func validRef(ref string) error {
	switch {
	case len(ref) > 512:
		return fmt.Errorf("ref is longer than 512 characters")
	case strings.ContainsAny(ref, " \t\r\n"):
		return fmt.Errorf("ref %q contains white space", ref)
	case strings.Contains(ref, ".."), strings.Contains(ref, "/-"):
		return fmt.Errorf("ref %q contains '..' or a component starting with '-'", ref)
	}
	return nil
}
