package gitlabreceiver

import (
	"encoding/json"
	"regexp"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// noteHook is the X-Gitlab-Event of comments ("Comments" in GitLab's webhook settings).
const noteHook = "Note Hook"

// Merge request commands, written at the start of a line of a comment.
const (
	cmdRetest      = "retest"
	cmdRetestForce = "retest force"
	cmdCancel      = "cancel"
	cmdOKToTest    = "ok-to-test"
)

// knownCommands is how replies list the commands.
const knownCommands = "`/retest`, `/retest force`, `/cancel` and `/ok-to-test`"

// maxCommands bounds the commands one comment runs; the rest are named in the reply and ignored.
const maxCommands = 5

// command is one command line of a comment.
type command struct {
	// name is one of the cmd constants, or what was written when it is none of them.
	name string
	// known says whether name is a command Ferry runs.
	known bool
}

// text is the command as written, for replies.
func (c command) text() string { return "/" + c.name }

// commandLine is a line that starts with a slash and a word: a command, Ferry's or not. Anything
// else — text before the slash, a path such as /usr/bin — is not.
var commandLine = regexp.MustCompile(`^/([A-Za-z][A-Za-z0-9_-]{0,31})(?:[ \t]+([^\r\n]*?))?[ \t]*$`)

// parseCommands reads the commands of a comment: lines that start with "/word", outside fenced
// code blocks, as GitLab's own quick actions are read. A command in the middle of a line, in a
// quote ("> /retest") or in a code block is text. It returns at most maxCommands distinct commands
// and how many more lines looked like commands.
func parseCommands(note string) (cmds []command, more int) {
	inFence := false
	seen := map[string]bool{}
	for line := range strings.SplitSeq(note, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if t := strings.TrimSpace(line); strings.HasPrefix(t, "```") || strings.HasPrefix(t, "~~~") {
			inFence = !inFence
			continue
		}
		if inFence {
			continue
		}
		m := commandLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		c := command{name: strings.ToLower(m[1])}
		args := strings.Fields(m[2])
		switch {
		case c.name == cmdRetest && len(args) == 0, c.name == cmdCancel && len(args) == 0, c.name == cmdOKToTest && len(args) == 0:
			c.known = true
		case c.name == cmdRetest && len(args) == 1 && strings.EqualFold(args[0], "force"):
			c.name, c.known = cmdRetestForce, true
		case len(args) > 0 && (c.name == cmdRetest || c.name == cmdCancel || c.name == cmdOKToTest):
			// A known command with arguments it does not take: say so, with the name only.
			c.name += " …"
		}
		if seen[c.name] {
			continue
		}
		seen[c.name] = true
		if len(cmds) == maxCommands {
			more++
			continue
		}
		cmds = append(cmds, c)
	}
	return cmds, more
}

// notePayload is what Ferry reads of a Note Hook, under the names of the GitLab client library's
// MergeCommentEvent.
type notePayload struct {
	User *struct {
		ID       int64  `json:"id"`
		Username string `json:"username"`
		Email    string `json:"email"`
	} `json:"user"`
	ObjectAttributes struct {
		ID           int64  `json:"id"`
		Note         string `json:"note"`
		NoteableType string `json:"noteable_type"` //nolint:misspell // GitLab's field name
		AuthorID     int64  `json:"author_id"`
		System       bool   `json:"system"`
		Action       string `json:"action"`
	} `json:"object_attributes"`
	MergeRequest *struct {
		IID             int64  `json:"iid"`
		State           string `json:"state"`
		SourceBranch    string `json:"source_branch"`
		TargetBranch    string `json:"target_branch"`
		SourceProjectID int64  `json:"source_project_id"`
		TargetProjectID int64  `json:"target_project_id"`
		AuthorID        int64  `json:"author_id"`
		LastCommit      struct {
			ID string `json:"id"`
		} `json:"last_commit"`
	} `json:"merge_request"`
}

// noteCommands is a comment on a merge request with its commands: what a command job needs.
type noteCommands struct {
	noteID   int64
	commands []command
	more     int
	// author is who wrote the comment (GitLab's user ID and username).
	authorID int64
	author   string
	// mr is the merge request as the comment saw it: its head is "that commit".
	mr *trigger
	// state is the merge request's state (opened, closed, merged, locked).
	state string
}

// decodeNote reads a Note Hook: the comment's commands, or why it has none to run (an *ignored),
// or why the payload is unusable (a *payloadError). env names the GitLab project the delivery is
// authenticated for; a comment on another project's merge request runs nothing.
func decodeNote(env *envelope, body []byte) (*noteCommands, error) {
	if env.ObjectKind != "" && env.ObjectKind != "note" {
		return nil, badPayload("X-Gitlab-Event %q does not match the body's object_kind %q", noteHook, env.ObjectKind)
	}
	var p notePayload
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, badPayload("failed to parse the %s payload: %v", noteHook, err)
	}
	a := p.ObjectAttributes
	switch {
	case a.NoteableType != "MergeRequest":
		kind := a.NoteableType
		if kind == "" {
			kind = "an unnamed object"
		}
		return nil, ignore("a comment on %s runs no command: Ferry reads commands in merge request comments only", kind)
	case a.System:
		return nil, ignore("a system note runs no command")
	case a.Action != "" && a.Action != "create":
		return nil, ignore("an %s comment runs no command (only a new comment does, so that editing one never runs it twice)", a.Action)
	case p.MergeRequest == nil || p.MergeRequest.IID <= 0:
		return nil, badPayload("a merge request comment without merge_request.iid")
	case a.ID <= 0:
		return nil, badPayload("a comment without object_attributes.id")
	}
	cmds, more := parseCommands(a.Note)
	if len(cmds) == 0 {
		return nil, ignore("the comment has no command (Ferry's commands are %s, each at the start of a line)", strings.ReplaceAll(knownCommands, "`", ""))
	}
	mr := p.MergeRequest
	if target := env.project().id; target != 0 && mr.TargetProjectID != 0 && mr.TargetProjectID != target {
		return nil, ignore("the comment is on a merge request of another GitLab project (target_project_id %d, not %d)", mr.TargetProjectID, target)
	}
	n := &noteCommands{
		noteID:   a.ID,
		commands: cmds,
		more:     more,
		authorID: a.AuthorID,
		state:    mr.State,
		mr: &trigger{
			kind:            ferryv1.TriggerMergeRequest,
			ref:             mergeRequestRef(mr.IID),
			name:            mr.TargetBranch,
			revision:        mr.LastCommit.ID,
			mergeRequestIID: mr.IID,
			sourceBranch:    mr.SourceBranch,
			sourceProjectID: mr.SourceProjectID,
			targetProjectID: mr.TargetProjectID,
			authorID:        mr.AuthorID,
		},
	}
	if p.User != nil {
		if n.authorID == 0 {
			n.authorID = p.User.ID
		}
		if p.User.ID == n.authorID {
			n.author = p.User.Username
			n.mr.user = gitlabUser{p.User.Username, p.User.ID, p.User.Email}
		}
	}
	if n.authorID <= 0 {
		return nil, badPayload("a comment without its author (object_attributes.author_id)")
	}
	return n, nil
}
