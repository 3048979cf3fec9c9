package gitlabreceiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// zeroSHA is what GitLab sends as after (or checkout_sha's absence) when a ref is deleted.
const zeroSHA = "0000000000000000000000000000000000000000"

var fullSHA = regexp.MustCompile(`^[0-9a-f]{40}$`)

// envelope is the part of every GitLab payload that says what it is and which project it is about.
// It is decoded from the beginning of every delivery's body (scanEnvelope), before the token is
// checked, and again from the whole body once it is (decodeEnvelope).
type envelope struct {
	ObjectKind string    `json:"object_kind"`
	EventName  string    `json:"event_name"`
	ProjectID  flexInt64 `json:"project_id"`
	Project    struct {
		ID                flexInt64 `json:"id"`
		PathWithNamespace string    `json:"path_with_namespace"`
	} `json:"project"`

	// sawProject and sawProjectID say whether scanEnvelope decoded those members.
	sawProject, sawProjectID bool
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
		return &notAProjectID{value: string(b)}
	}
	*f = flexInt64(n)
	return nil
}

// notAProjectID is a project ID that is not a number.
type notAProjectID struct{ value string }

func (e *notAProjectID) Error() string { return e.value + " is not a project ID" }

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
	user     gitlabUser
	// Merge requests only.
	mergeRequestIID int64
	sourceBranch    string
	sourceProjectID int64
	targetProjectID int64
	// authorID is the merge request's author (object_attributes.author_id), whose role decides
	// whether it builds before a member says /ok-to-test.
	authorID int64
}

// gitlabUser is who caused an event: user_username, user_id and user_email of a push, the user
// object of a merge request. Approvals map it to a Kubernetes user.
type gitlabUser struct {
	name  string
	id    int64
	email string
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

// pushPayload is what Ferry reads of a push or tag push (project or system hook), under the names
// and types of the GitLab client library's PushEvent and TagEvent.
type pushPayload struct {
	Ref          string `json:"ref"`
	After        string `json:"after"`
	CheckoutSHA  string `json:"checkout_sha"`
	UserUsername string `json:"user_username"`
	UserID       int64  `json:"user_id"`
	UserEmail    string `json:"user_email"`
}

func (p *pushPayload) user() gitlabUser { return gitlabUser{p.UserUsername, p.UserID, p.UserEmail} }

// mergeRequestPayload is what Ferry reads of a merge request hook, under the names and types of the
// GitLab client library's MergeEvent.
type mergeRequestPayload struct {
	User *struct {
		Username string `json:"username"`
		ID       int64  `json:"id"`
		Email    string `json:"email"`
	} `json:"user"`
	ObjectAttributes struct {
		IID             int64  `json:"iid"`
		Action          string `json:"action"`
		OldRev          string `json:"oldrev"`
		TargetBranch    string `json:"target_branch"`
		SourceBranch    string `json:"source_branch"`
		SourceProjectID int64  `json:"source_project_id"`
		TargetProjectID int64  `json:"target_project_id"`
		AuthorID        int64  `json:"author_id"`
		LastCommit      struct {
			ID string `json:"id"`
		} `json:"last_commit"`
	} `json:"object_attributes"`
}

// decodeTrigger decodes a delivery of a kind Ferry builds and says what to build, or why not (an
// *ignored), or why the payload is unusable (a *payloadError).
//
// It decodes only the fields Ferry reads: encoding/json skips the others without allocating, so
// decoding costs at most the strings it keeps, never more than the body. The GitLab client
// library's event types decode everything, commits and labels included, and a payload of 25 MiB
// of empty commits made it allocate 1.9 GiB (BenchmarkParseAmplification); TestDecodeTriggerAgrees
// checks that both read the same trigger from every payload of the corpus.
func decodeTrigger(header string, kind ferryv1.TriggerKind, env *envelope, body []byte) (*trigger, error) {
	isSystem := strings.EqualFold(header, systemHook)
	if !isSystem && env.ObjectKind != "" && env.ObjectKind != wantObjectKind[kind] {
		return nil, badPayload("X-Gitlab-Event %q does not match the body's object_kind %q", header, env.ObjectKind)
	}
	switch kind {
	case ferryv1.TriggerPush, ferryv1.TriggerTag:
		var p pushPayload
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, badPayload("failed to parse the %s payload: %v", header, err)
		}
		if kind == ferryv1.TriggerTag {
			return tagTrigger(p.Ref, p.After, p.CheckoutSHA, p.user())
		}
		return pushTrigger(p.Ref, p.After, p.CheckoutSHA, p.user())
	case ferryv1.TriggerMergeRequest:
		var p mergeRequestPayload
		if err := json.Unmarshal(body, &p); err != nil {
			return nil, badPayload("failed to parse the %s payload: %v", header, err)
		}
		return mergeRequestTrigger(&p)
	}
	return nil, ignore("%s events are not built", header)
}

// pushTrigger builds checkout_sha of a branch push; a deletion (after all zeros, no
// checkout_sha) is ignored.
func pushTrigger(ref, after, checkoutSHA string, user gitlabUser) (*trigger, error) {
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
func tagTrigger(ref, after, checkoutSHA string, user gitlabUser) (*trigger, error) {
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
func mergeRequestTrigger(ev *mergeRequestPayload) (*trigger, error) {
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
		ref:             mergeRequestRef(a.IID),
		name:            a.TargetBranch,
		revision:        a.LastCommit.ID,
		mergeRequestIID: a.IID,
		sourceBranch:    a.SourceBranch,
		sourceProjectID: a.SourceProjectID,
		targetProjectID: a.TargetProjectID,
		authorID:        a.AuthorID,
	}
	if ev.User != nil {
		t.user = gitlabUser{ev.User.Username, ev.User.ID, ev.User.Email}
		if t.authorID == 0 && a.Action == "open" {
			// Who opens a merge request is its author.
			t.authorID = ev.User.ID
		}
	}
	return t, nil
}

// mergeRequestRef is the ref GitLab keeps a merge request's head under.
func mergeRequestRef(iid int64) string { return fmt.Sprintf("refs/merge-requests/%d/head", iid) }

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
