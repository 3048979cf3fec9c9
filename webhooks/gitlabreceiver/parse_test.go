package gitlabreceiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	gl "gitlab.com/gitlab-org/api/client-go"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// corpusDir is the GitLab webhook corpus (see testdata/gitlab-webhooks/SOURCES.md).
const corpusDir = "testdata/gitlab-webhooks"

// corpusPayload is one payload of the corpus with the X-Gitlab-Event GitLab sends it with.
type corpusPayload struct {
	file, event string
	body        []byte
}

// corpusPayloads reads every payload of the corpus: bundles carry their headers; bare payloads get
// the event GitLab names for their object_kind (System Hook when they have none).
func corpusPayloads(t testing.TB) []corpusPayload {
	t.Helper()
	var out []corpusPayload
	err := filepath.WalkDir(corpusDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".json") || strings.HasPrefix(d.Name(), "headers_") {
			return err
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(corpusDir, path)
		var bundle struct {
			Headers map[string]string `json:"headers"`
			Body    json.RawMessage   `json:"body"`
		}
		if json.Unmarshal(raw, &bundle) == nil && bundle.Headers != nil && bundle.Body != nil {
			out = append(out, corpusPayload{file: rel, event: http.Header{"X-Gitlab-Event": {bundle.Headers["X-Gitlab-Event"]}}.Get("X-Gitlab-Event"), body: bundle.Body})
			return nil
		}
		var kind struct {
			ObjectKind string `json:"object_kind"`
		}
		if err := json.Unmarshal(raw, &kind); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		event := map[string]string{
			"push": pushHook, "tag_push": tagPushHook, "merge_request": mergeRequestHook, "note": "Note Hook",
			"pipeline": "Pipeline Hook", "build": "Job Hook", "release": "Release Hook",
		}[kind.ObjectKind]
		if event == "" {
			event = systemHook
		}
		out = append(out, corpusPayload{file: rel, event: event, body: raw})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) < 50 {
		t.Fatalf("only %d payloads in the corpus", len(out))
	}
	return out
}

// libraryTrigger is what the receiver read of a delivery with the GitLab client library's event
// types, before it decoded only the fields it reads: the reference decodeTrigger must agree with.
func libraryTrigger(header string, kind ferryv1.TriggerKind, body []byte) (*trigger, error) {
	eventType := gl.EventTypeSystemHook
	if !strings.EqualFold(header, systemHook) {
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
		return pushTrigger(ev.Ref, ev.After, ev.CheckoutSHA, gitlabUser{ev.UserUsername, ev.UserID, ev.UserEmail})
	case *gl.PushSystemEvent:
		return pushTrigger(ev.Ref, ev.After, ev.CheckoutSHA, gitlabUser{ev.UserUsername, ev.UserID, ev.UserEmail})
	case *gl.TagEvent:
		return tagTrigger(ev.Ref, ev.After, ev.CheckoutSHA, gitlabUser{ev.UserUsername, ev.UserID, ev.UserEmail})
	case *gl.TagPushSystemEvent:
		return tagTrigger(ev.Ref, ev.After, ev.CheckoutSHA, gitlabUser{ev.UserUsername, ev.UserID, ev.UserEmail})
	case *gl.MergeEvent:
		p := &mergeRequestPayload{}
		if ev.User != nil {
			p.User = &struct {
				Username string `json:"username"`
				ID       int64  `json:"id"`
				Email    string `json:"email"`
			}{Username: ev.User.Username, ID: ev.User.ID, Email: ev.User.Email}
		}
		a := &p.ObjectAttributes
		o := ev.ObjectAttributes
		a.IID, a.Action, a.OldRev, a.TargetBranch, a.SourceBranch = o.IID, o.Action, o.OldRev, o.TargetBranch, o.SourceBranch
		a.SourceProjectID, a.TargetProjectID, a.LastCommit.ID = o.SourceProjectID, o.TargetProjectID, o.LastCommit.ID
		a.AuthorID = o.AuthorID
		return mergeRequestTrigger(p)
	}
	return nil, ignore("%s events are not built", header)
}

// TestDecodeTriggerAgrees: for every payload of the corpus that can build, decoding only the fields
// Ferry reads gives the same trigger (or the same reason not to build) as the GitLab client
// library's event types.
func TestDecodeTriggerAgrees(t *testing.T) {
	compared := 0
	for _, p := range corpusPayloads(t) {
		env, err := decodeEnvelope(p.body)
		if err != nil {
			t.Fatalf("%s: %v", p.file, err)
		}
		kind := eventKind(p.event, env)
		if kind == "" {
			continue
		}
		compared++
		got, gotErr := decodeTrigger(p.event, kind, env, p.body)
		want, wantErr := libraryTrigger(p.event, kind, p.body)
		if fmt.Sprint(gotErr) != fmt.Sprint(wantErr) || (got == nil) != (want == nil) || got != nil && *got != *want {
			t.Errorf("%s:\n got %+v, %v\nwant %+v, %v", p.file, got, gotErr, want, wantErr)
		}
	}
	if compared < 30 {
		t.Fatalf("only %d payloads compared", compared)
	}
	// A field Ferry reads with the wrong type is refused alike.
	body := []byte(`{"object_kind":"push","ref":["refs/heads/main"],"project":{"id":1}}`)
	_, err := decodeTrigger(pushHook, ferryv1.TriggerPush, &envelope{ObjectKind: "push"}, body)
	var bad *payloadError
	if !errors.As(err, &bad) || !strings.Contains(bad.msg, "failed to parse the Push Hook payload") {
		t.Errorf("wrong type: %v", err)
	}
}

// maxSizePush is a push hook of about size bytes: its 20 commits (GitLab sends at most the 20
// newest) list enough changed files to fill it, as a push of a large import would.
func maxSizePush(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"object_kind":"push","event_name":"push","before":"` + strings.Repeat("0", 40) + `","after":"` + sha1 + `","ref":"refs/heads/main","checkout_sha":"` + sha1 +
		`","user_username":"alice","project_id":1,"project":{"id":1,"path_with_namespace":"g/app"},"commits":[`)
	perCommit := size / 20
	for c := range 20 {
		if c > 0 {
			b.WriteByte(',')
		}
		start := b.Len()
		fmt.Fprintf(&b, `{"id":"%s","message":"import","timestamp":"2024-01-01T00:00:00Z","author":{"name":"A","email":"a@example.com"},"added":[`, sha2)
		for i := 0; b.Len()-start < perCommit-64; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"vendor/module%d/file%d.go"`, i%100, i)
		}
		b.WriteString(`],"modified":[],"removed":[]}`)
	}
	b.WriteString(`],"total_commits_count":20}`)
	return b.Bytes()
}

// emptyCommitsPush is a push hook of about size bytes of empty commits: the payload that made the
// GitLab client library allocate most per byte.
func emptyCommitsPush(size int) []byte {
	head := `{"object_kind":"push","ref":"refs/heads/main","after":"` + sha1 + `","checkout_sha":"` + sha1 + `","project":{"id":1,"path_with_namespace":"g/app"},"commits":[{}`
	return []byte(head + strings.Repeat(`,{}`, (size-len(head))/3) + `]}`)
}

// allocated is what fn allocates, in bytes.
func allocated(fn func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// BenchmarkParseAmplification measures what decoding a push hook allocates per byte of its body,
// with the GitLab client library's event types (gl.ParseHook, what the receiver did) and with the
// receiver's decodeTrigger, which decodes only the fields Ferry reads. The body budget charges an
// authenticated body twice its size (the body and at most as much decoded from it); with the
// library, a body's cost depends on its shape, up to tens of times its size, and no budget the
// manager's 512 MiB can hold would bound it.
//
// Figures (bytes allocated per body byte): library_max_push_B_per_B and ferry_max_push_B_per_B for
// a push of DefaultMaxBodyBytes whose 20 commits list many changed files;
// library_empty_commits_B_per_B and ferry_empty_commits_B_per_B for a 4 MiB push of empty commits
// (it scales linearly: 25 MiB of them made the library allocate about 1.9 GiB).
func BenchmarkParseAmplification(b *testing.B) {
	maxPush := maxSizePush(DefaultMaxBodyBytes)
	empty := emptyCommitsPush(4 << 20)
	env := &envelope{ObjectKind: "push"}
	perByte := func(body []byte, fn func([]byte) error) float64 {
		var err error
		n := allocated(func() { err = fn(body) })
		if err != nil {
			b.Fatal(err)
		}
		return float64(n) / float64(len(body))
	}
	library := func(body []byte) error {
		_, err := gl.ParseHook(gl.EventTypePush, body)
		return err
	}
	ferry := func(body []byte) error {
		_, err := decodeTrigger(pushHook, ferryv1.TriggerPush, env, body)
		return err
	}
	for b.Loop() {
		b.ReportMetric(perByte(maxPush, library), "library_max_push_B_per_B")
		b.ReportMetric(perByte(maxPush, ferry), "ferry_max_push_B_per_B")
		b.ReportMetric(perByte(empty, library), "library_empty_commits_B_per_B")
		b.ReportMetric(perByte(empty, ferry), "ferry_empty_commits_B_per_B")
	}
}
