package gitlabreceiver

import (
	"errors"
	"os"
	"strings"
	"testing"
)

func TestParseCommands(t *testing.T) {
	cases := []struct {
		name, note string
		want       []string // command names, unknown ones prefixed with "?"
		more       int
	}{
		{"retest", "/retest", []string{"retest"}, 0},
		{"force", "/retest force", []string{"retest force"}, 0},
		{"case and spaces", "/Retest   FORCE  \r", []string{"retest force"}, 0},
		{"cancel and ok", "LGTM\n/ok-to-test\nthanks\n/cancel", []string{"ok-to-test", "cancel"}, 0},
		{"mid-line is text", "please /retest this", nil, 0},
		{"indented is text", "  /retest", nil, 0},
		{"quoted is text", "> /retest", nil, 0},
		{"in a code block", "```\n/retest\n```\n~~~\n/cancel\n~~~", nil, 0},
		{"after a code block", "```sh\nmake\n```\n/cancel", []string{"cancel"}, 0},
		{"a path is text", "/usr/bin/env is missing", nil, 0},
		{"unknown", "/deploy prod", []string{"?deploy"}, 0},
		{"wrong argument", "/retest please", []string{"?retest …"}, 0},
		{"repeated once", "/retest\n/retest", []string{"retest"}, 0},
		{"capped", "/a\n/b\n/c\n/d\n/e\n/f\n/g", []string{"?a", "?b", "?c", "?d", "?e"}, 2},
		{"empty", "", nil, 0},
	}
	for _, c := range cases {
		cmds, more := parseCommands(c.note)
		var got []string
		for _, cmd := range cmds {
			if cmd.known {
				got = append(got, cmd.name)
			} else {
				got = append(got, "?"+cmd.name)
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") || more != c.more {
			t.Errorf("%s: parseCommands(%q) = %v, %d more; want %v, %d", c.name, c.note, got, more, c.want, c.more)
		}
	}
}

// typeKey is how the sample writes the comment's object type.
const typeKey = `"noteable_type": ` //nolint:misspell // GitLab's field name

func TestDecodeNote(t *testing.T) {
	sample, err := os.ReadFile("testdata/gitlab-webhooks/go-gitlab/note_merge_request.json")
	if err != nil {
		t.Fatal(err)
	}
	env, err := decodeEnvelope(sample)
	if err != nil {
		t.Fatal(err)
	}
	with := func(old, repl string) []byte { return []byte(strings.Replace(string(sample), old, repl, 1)) }
	cmd := `"note": "/retest force"`
	n, err := decodeNote(env, with(`"note": "This MR needs work."`, cmd))
	if err != nil {
		t.Fatal(err)
	}
	if n.noteID != 1244 || n.authorID != 1 || n.author != "root" || n.mr.mergeRequestIID != 1 || n.mr.revision != "562e173be03b8ff2efb05345d12df18815438a4b" ||
		n.mr.ref != "refs/merge-requests/1/head" || n.mr.name != "markdown" || n.state != "opened" || len(n.commands) != 1 || n.commands[0].name != cmdRetestForce {
		t.Errorf("decoded %+v %+v", n, n.mr)
	}
	for _, c := range []struct {
		name    string
		body    []byte
		ignored string
	}{
		{"no command", sample, "has no command"},
		{"commit comment", with(typeKey+`"MergeRequest"`, typeKey+`"Commit"`), "a comment on Commit"},
		{"issue comment", with(typeKey+`"MergeRequest"`, typeKey+`"Issue"`), "a comment on Issue"},
		{"snippet comment", with(typeKey+`"MergeRequest"`, typeKey+`"Snippet"`), "a comment on Snippet"},
		{"edited", []byte(strings.Replace(string(with(`"note": "This MR needs work."`, cmd)), `"action": "create"`, `"action": "update"`, 1)), "an update comment runs no command"},
		{"system", []byte(strings.Replace(string(with(`"note": "This MR needs work."`, cmd)), `"system": false`, `"system": true`, 1)), "system note"},
		{"another project's MR", []byte(strings.Replace(string(with(`"note": "This MR needs work."`, cmd)), `"target_project_id": 5`, `"target_project_id": 6`, 1)), "another GitLab project"},
	} {
		_, err := decodeNote(env, c.body)
		var ig *ignored
		if !errors.As(err, &ig) || !strings.Contains(ig.reason, c.ignored) {
			t.Errorf("%s: %v, want ignored because %q", c.name, err, c.ignored)
		}
	}
	if _, err := decodeNote(env, with(`"merge_request": {`, `"merge_requestX": {`)); err == nil {
		t.Error("a merge request comment without its merge request was accepted")
	}
}

func TestDefuse(t *testing.T) {
	got := defuse("Ferry:\n/merge\n  /close\n- `/retest`: ok")
	for _, line := range strings.Split(got, "\n") {
		if strings.HasPrefix(strings.TrimLeft(line, " \t"), "/") {
			t.Errorf("line %q would run a quick action", line)
		}
	}
}
