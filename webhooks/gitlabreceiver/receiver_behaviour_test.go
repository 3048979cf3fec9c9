package gitlabreceiver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

func pushBody(path, branch, sha string) []byte {
	return fmt.Appendf(nil, `{"object_kind":"push","event_name":"push","before":"%s","after":"%s","ref":"refs/heads/%s","checkout_sha":"%s","user_username":"alice","project_id":0,"project":{"path_with_namespace":%q}}`,
		strings.Repeat("0", 40), sha, branch, sha, path)
}

func hdr(event, token string) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("X-Gitlab-Event", event)
	if token != "" {
		h.Set("X-Gitlab-Token", token)
	}
	h.Set("X-Gitlab-Instance", instance)
	h.Set("Idempotency-Key", newUUID())
	return h
}

// signDelivery signs a delivery the way GitLab does with a signing token.
func signDelivery(h http.Header, signingToken, id string, at time.Time, body []byte) {
	ts := strconv.FormatInt(at.Unix(), 10)
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", ts)
	h.Set("webhook-signature", gitlabsim.Sign(signingToken, id, ts, body))
}

func sha(n int) string { return fmt.Sprintf("%040x", n) }

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	body := pushBody("group/shop", "main", sha(1))

	unauthorized := map[string]reply{
		"missing token":   post(t, e.r.url, hdr("Push Hook", ""), body),
		"empty token":     post(t, e.r.url, func() http.Header { h := hdr("Push Hook", ""); h["X-Gitlab-Token"] = []string{""}; return h }(), body),
		"wrong token":     post(t, e.r.url, hdr("Push Hook", token+"x"), body),
		"token prefix":    post(t, e.r.url, hdr("Push Hook", token[:len(token)-1]), body),
		"unknown project": post(t, e.r.url, hdr("Push Hook", token), pushBody("group/other", "main", sha(1))),
		"other instance": post(t, e.r.url, func() http.Header {
			h := hdr("Push Hook", token)
			h.Set("X-Gitlab-Instance", "https://gitlab.com")
			return h
		}(), body),
	}
	first := ""
	for name, r := range unauthorized {
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401: %s", name, r.status, r.body)
		}
		// The same answer whether the project exists or not.
		if first == "" {
			first = r.body
		} else if r.body != first {
			t.Errorf("%s: answer %q differs from %q and tells what exists", name, r.body, first)
		}
		if strings.Contains(r.body, token) {
			t.Errorf("%s: the answer contains the token", name)
		}
	}
	if n := len(listBuilds(t, e.c, e.ns, "shop")); n != 0 {
		t.Fatalf("%d Builds after refused deliveries", n)
	}
	if r := post(t, e.r.url, hdr("Push Hook", token), body); r.status != http.StatusCreated {
		t.Fatalf("the right token: %d %s", r.status, r.body)
	}
	// Header names are case-insensitive (Tekton's tests send X-GitLab-Token).
	h := http.Header{"X-GitLab-Event": {"Push Hook"}, "X-GitLab-Token": {token}}
	if r := post(t, e.r.url, h, pushBody("group/shop", "main", sha(2))); r.status != http.StatusCreated {
		t.Fatalf("mixed-case headers: %d %s", r.status, r.body)
	}
}

func TestMisconfiguredSecret(t *testing.T) {
	e := newEnv(t)
	// A Secret without "token" authenticates nothing.
	e.project("notoken", "group/notoken", projectOptions{secret: map[string]string{"previousToken": "old"}})
	// A Project whose Secret does not exist.
	e.project("nosecret", "group/nosecret", projectOptions{secret: map[string]string{}, mutate: func(p *ferryv1.Project) {
		p.Spec.GitLab.WebhookSecretRef.Name = "does-not-exist"
	}})
	// Once a Project created after them is known, the receiver's cache has both.
	e.project("control", "group/control", projectOptions{})
	if r := post(t, e.r.url, hdr("Push Hook", "anything"), pushBody("group/nosecret", "main", sha(1))); r.status != http.StatusUnauthorized {
		t.Errorf("a missing Secret: %d %s", r.status, r.body)
	}
	if r := post(t, e.r.url, hdr("Push Hook", "old"), pushBody("group/notoken", "main", sha(1))); r.status != http.StatusUnauthorized {
		t.Errorf("a Secret without token: %d %s", r.status, r.body)
	}
}

func TestTokenRotation(t *testing.T) {
	e := newEnv(t)
	old := e.project("shop", "group/shop", projectOptions{secret: map[string]string{"token": "old-token"}})
	ctx := context.Background()
	setSecret := func(data map[string]string) {
		s := &corev1.Secret{}
		if err := e.c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "shop-webhook"}, s); err != nil {
			t.Fatal(err)
		}
		s.Data = map[string][]byte{}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		if err := e.c.Update(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	deliver := func(token string) int {
		n++
		return post(t, e.r.url, hdr("Push Hook", token), pushBody("group/shop", "main", sha(n))).status
	}

	// Rotation: the new token becomes "token", the old one "previousToken". The new token works at
	// once (a mismatch re-reads the Secret, at most once a second); the old one keeps working.
	setSecret(map[string]string{"token": "new-token", "previousToken": old})
	testutil.EventuallyWithin(t, 5*time.Second, "the new token to be accepted", func() (bool, error) {
		s := deliver("new-token")
		return s == http.StatusCreated, fmt.Errorf("status %d", s)
	})
	if s := deliver(old); s != http.StatusCreated {
		t.Fatalf("the previous token during the rotation: %d", s)
	}
	// The rotation ends: the old token stops working within the cache's TTL (10 s).
	setSecret(map[string]string{"token": "new-token"})
	start := time.Now()
	testutil.EventuallyWithin(t, 20*time.Second, "the old token to be refused", func() (bool, error) {
		s := deliver(old)
		return s == http.StatusUnauthorized, fmt.Errorf("status %d", s)
	})
	t.Logf("the revoked token was refused %s after the Secret changed", time.Since(start).Round(100*time.Millisecond))
	if s := deliver("new-token"); s != http.StatusCreated {
		t.Fatalf("the new token after the rotation: %d", s)
	}
}

func TestSigningToken(t *testing.T) {
	e := newEnv(t)
	signing := gitlabsim.NewSigningToken()
	token := e.project("signed", "group/signed", projectOptions{secret: map[string]string{"token": "hook-token", "signingToken": signing}})
	body := pushBody("group/signed", "main", sha(1))
	signed := func(token string, at time.Time, signedBody []byte) http.Header {
		h := hdr("Push Hook", token)
		signDelivery(h, signing, h.Get("Idempotency-Key"), at, signedBody)
		return h
	}
	cases := []struct {
		name   string
		h      http.Header
		status int
	}{
		{"unsigned", hdr("Push Hook", token), http.StatusUnauthorized},
		{"signed over another body", signed(token, time.Now(), pushBody("group/signed", "main", sha(2))), http.StatusUnauthorized},
		{"signed with another key", func() http.Header {
			h := hdr("Push Hook", token)
			signDelivery(h, gitlabsim.NewSigningToken(), "id", time.Now(), body)
			return h
		}(), http.StatusUnauthorized},
		{"replayed an hour later", signed(token, time.Now().Add(-time.Hour), body), http.StatusUnauthorized},
		{"signed, wrong token", signed("other", time.Now(), body), http.StatusUnauthorized},
		{"signed", signed(token, time.Now(), body), http.StatusCreated},
	}
	for _, c := range cases {
		if r := post(t, e.r.url, c.h, body); r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
		}
	}
}

// TestSignedReplay: an attacker who captured a signed delivery replays it within the signature's
// 5 minutes, body and signature untouched, under a new Idempotency-Key (which the signature does not
// cover) or none: no second Build. The Build is named after the signed webhook-id.
func TestSignedReplay(t *testing.T) {
	e := newEnv(t)
	signing := gitlabsim.NewSigningToken()
	token := e.project("signed", "group/signed", projectOptions{secret: map[string]string{"token": "hook-token", "signingToken": signing}})
	body := pushBody("group/signed", "main", sha(1))
	// As GitLab sends it: webhook-id is the Idempotency-Key.
	h := hdr("Push Hook", token)
	signDelivery(h, signing, h.Get("Idempotency-Key"), time.Now(), body)
	r := post(t, e.r.url, h, body)
	if r.status != http.StatusCreated {
		t.Fatalf("the signed delivery: %d %s", r.status, r.body)
	}
	builds := listBuilds(t, e.c, e.ns, "signed")
	if len(builds) != 1 || builds[0].Spec.Trigger.DeliveryID != h.Get("webhook-id") {
		t.Fatalf("Builds after the signed delivery: %+v", builds)
	}

	replayed := h.Clone()
	replayed.Set("Idempotency-Key", newUUID())
	if r := post(t, e.r.url, replayed, body); r.status != http.StatusBadRequest || !strings.Contains(r.answer.Error, "differs from the signed webhook-id") {
		t.Errorf("replayed under a new Idempotency-Key: %d %s", r.status, r.body)
	}
	replayed.Del("Idempotency-Key")
	if r := post(t, e.r.url, replayed, body); r.status != http.StatusOK || r.answer.Result != "duplicate" {
		t.Errorf("replayed without an Idempotency-Key: %d %s", r.status, r.body)
	}
	// A redelivery by GitLab (same key, new webhook UUID, new signature) is a duplicate too.
	again := h.Clone()
	again.Set("X-Gitlab-Webhook-UUID", newUUID())
	signDelivery(again, signing, h.Get("Idempotency-Key"), time.Now(), body)
	if r := post(t, e.r.url, again, body); r.status != http.StatusOK || r.answer.Result != "duplicate" {
		t.Errorf("redelivered: %d %s", r.status, r.body)
	}
	if n := len(listBuilds(t, e.c, e.ns, "signed")); n != 1 {
		t.Fatalf("%d Builds after replays of one signed delivery", n)
	}
}

// countingReader produces n bytes of a JSON-ish body and counts what was read.
type countingReader struct {
	n    int64
	read atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	left := r.n - r.read.Load()
	if left <= 0 {
		return 0, io.EOF
	}
	k := min(int64(len(p)), left)
	for i := range k {
		p[i] = ' '
	}
	r.read.Add(k)
	return int(k), nil
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	token := e.project("big", "group/big", projectOptions{})
	const huge = 1 << 30
	head := `{"object_kind":"push","project":{"path_with_namespace":"group/big"},`

	send := func(head string, declared bool) (int, int64, string) {
		body := &countingReader{n: huge}
		req, err := http.NewRequest(http.MethodPost, e.r.url, io.MultiReader(strings.NewReader(head), body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = hdr("Push Hook", token)
		if declared {
			req.ContentLength = huge + int64(len(head))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("declared=%v: %v", declared, err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, body.read.Load(), string(b)
	}
	// A declared Content-Length over the cap: refused before the body is read.
	status, read, answer := send(head, true)
	if status != http.StatusRequestEntityTooLarge || read > 8<<20 || !strings.Contains(answer, "larger than 1048576 bytes") {
		t.Errorf("Content-Length over the cap: status %d after the client sent %d bytes: %s", status, read, answer)
	}
	// A chunked body with the right token: read up to the cap, then refused.
	status, read, answer = send(head, false)
	if status != http.StatusRequestEntityTooLarge || read > 8<<20 || !strings.Contains(answer, "larger than 1048576 bytes") {
		t.Errorf("chunked body over the cap: status %d after the client sent %d bytes: %s", status, read, answer)
	}
	t.Logf("the client sent %d bytes of a 1 GiB chunked body before the 413", read)
	// A chunked body that does not name its project first: refused once the envelope's limit (256
	// KiB) is passed, before the token is checked.
	status, read, answer = send(`{"object_kind":"push",`, false)
	if status != http.StatusBadRequest || read > 8<<20 || !strings.Contains(answer, "names no project") {
		t.Errorf("chunked body without a project: status %d after the client sent %d bytes: %s", status, read, answer)
	}

	// A body of exactly the cap is accepted.
	body := pushBody("group/big", "main", sha(1))
	body = append(body, bytes.Repeat([]byte(" "), testMaxBody-len(body))...)
	if r := post(t, e.r.url, hdr("Push Hook", token), body); r.status != http.StatusCreated {
		t.Errorf("a body of exactly the cap: %d %s", r.status, r.body)
	}
}

// TestLargeDeliveryBuilds: a delivery of 20 MiB with the right token, within GitLab's 25 MiB (the
// receiver's default cap), is read through the body budget and builds.
func TestLargeDeliveryBuilds(t *testing.T) {
	e := &env{t: t, c: testutil.CurrentHub(t).Client, ns: testutil.Namespace(t, testutil.CurrentHub(t).Client), r: startReceiverWith(t, func(o *manager.Options) { o.ReceiverMaxBodyBytes = 0 })}
	token := e.project("large", "group/large", projectOptions{})
	body := pushBody("group/large", "main", sha(1))
	// Commits fill it up, as a push of a large import does: each lists its changed files.
	var commits bytes.Buffer
	commits.WriteString(`,"commits":[`)
	for i := 0; commits.Len() < 20<<20; i++ {
		if i > 0 {
			commits.WriteByte(',')
		}
		fmt.Fprintf(&commits, `{"id":"%s","message":"import %d","added":["vendor/module/file%d.go"]}`, sha(i), i, i)
	}
	commits.WriteString(`]}`)
	body = append(body[:len(body)-1], commits.Bytes()...)
	r := post(t, e.r.url, hdr("Push Hook", token), body)
	if r.status != http.StatusCreated {
		t.Fatalf("a %d MiB delivery: %d %s", len(body)>>20, r.status, r.body)
	}
	if n := len(listBuilds(t, e.c, e.ns, "large")); n != 1 {
		t.Fatalf("%d Builds", n)
	}
}

func TestMalformedPayloads(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	good := pushBody("group/shop", "main", sha(1))
	cases := []struct {
		name, event string
		body        []byte
		want        string
	}{
		{"truncated", "Push Hook", good[:len(good)-10], "malformed JSON"},
		{"syntax error", "Push Hook", []byte(`{"object_kind": "push" "ref": "x"}`), "malformed JSON at byte 24"},
		{"empty", "Push Hook", nil, "the body is empty"},
		{"array", "Push Hook", []byte(`[]`), "must be a JSON object"},
		{"wrong types", "Push Hook", []byte(`{"object_kind":"push","ref":["refs/heads/main"],"project":{"path_with_namespace":"group/shop"}}`), "failed to parse the Push Hook payload"},
		{"header and body disagree", "Merge Request Hook", good, `does not match the body's object_kind "push"`},
		{"no project", "Push Hook", []byte(`{"object_kind":"push","ref":"refs/heads/main","after":"` + sha(1) + `","checkout_sha":"` + sha(1) + `"}`), "names no project"},
	}
	for _, c := range cases {
		r := post(t, e.r.url, hdr(c.event, token), c.body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400: %s", c.name, r.status, r.body)
			continue
		}
		mustContain(t, c.name, r.answer.Error, c.want)
	}
	if n := len(listBuilds(t, e.c, e.ns, "shop")); n != 0 {
		t.Fatalf("%d Builds from malformed payloads", n)
	}
}

func TestIgnoredEvents(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	issue := []byte(`{"object_kind":"issue","project":{"id":1,"path_with_namespace":"group/shop"}}`)
	cases := []struct {
		name   string
		h      http.Header
		status int
		want   string
	}{
		{"unknown event", hdr("Issue Hook", token), http.StatusOK, `"Issue Hook" events are not built`},
		// Nothing is built, so nothing is authenticated: the answer cannot tell a project exists.
		{"unknown event, wrong token", hdr("Issue Hook", "wrong"), http.StatusOK, `"Issue Hook" events are not built`},
		{"no event header", func() http.Header { h := hdr("", token); h.Del("X-Gitlab-Event"); return h }(), http.StatusOK, "no X-Gitlab-Event header"},
		{"unknown event, no token", hdr("Issue Hook", ""), http.StatusUnauthorized, "unauthorized"},
	}
	for _, c := range cases {
		r := post(t, e.r.url, c.h, issue)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			continue
		}
		mustContain(t, c.name, r.answer.Reason+r.answer.Error, c.want)
	}
	req, _ := http.NewRequest(http.MethodGet, e.r.url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d, Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestParallelDuplicates(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	for _, withKey := range []bool{true, false} {
		t.Run(fmt.Sprintf("idempotency key %v", withKey), func(t *testing.T) {
			h := hdr("Push Hook", token)
			if !withKey {
				h.Del("Idempotency-Key") // GitLab < 17.4
			}
			body := pushBody("group/shop", "main", sha(map[bool]int{true: 1, false: 2}[withKey]))
			before := len(listBuilds(t, e.c, e.ns, "shop"))
			var wg sync.WaitGroup
			statuses := make([]int, 10)
			results := make([]string, 10)
			for i := range 10 {
				wg.Go(func() {
					r := post(t, e.r.url, h, body)
					statuses[i], results[i] = r.status, r.answer.Result
				})
			}
			wg.Wait()
			created, duplicates := 0, 0
			for i := range 10 {
				switch {
				case statuses[i] == http.StatusCreated && results[i] == "created":
					created++
				case statuses[i] == http.StatusOK && results[i] == "duplicate":
					duplicates++
				default:
					t.Errorf("delivery %d: %d %s", i, statuses[i], results[i])
				}
			}
			if created != 1 || duplicates != 9 {
				t.Errorf("created %d, duplicates %d; want 1 and 9", created, duplicates)
			}
			if n := len(listBuilds(t, e.c, e.ns, "shop")) - before; n != 1 {
				t.Errorf("%d Builds for 10 identical deliveries", n)
			}
		})
	}
}

// TestRedeliveryAfterCrash: the receiver creates the Build, but its answer never reaches GitLab
// (the receiver crashed, or the connection broke); the receiver restarts and GitLab redelivers with
// the same Idempotency-Key. No second Build is made.
func TestRedeliveryAfterCrash(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	backend := e.r.url
	var forwarded atomic.Int32
	lossy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		out, _ := http.NewRequestWithContext(req.Context(), req.Method, backend, req.Body)
		out.Header = req.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			forwarded.Add(1)
		}
		// The answer is lost: GitLab sees the connection drop.
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	}))
	defer lossy.Close()

	h := hdr("Push Hook", token)
	body := pushBody("group/shop", "main", sha(7))
	req, _ := http.NewRequest(http.MethodPost, lossy.URL, bytes.NewReader(body))
	req.Header = h.Clone()
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("the lossy proxy answered %d", resp.StatusCode)
	}
	if forwarded.Load() != 1 || len(listBuilds(t, e.c, e.ns, "shop")) != 1 {
		t.Fatalf("the first delivery must have created the Build (forwarded %d)", forwarded.Load())
	}

	// Restart the receiver; GitLab redelivers ("Resend Request" keeps the Idempotency-Key and
	// changes the webhook UUID).
	e.r.stop()
	e.r = startReceiver(t)
	h.Set("X-Gitlab-Webhook-UUID", newUUID())
	r := post(t, e.r.url, h, body)
	if r.status != http.StatusOK || r.answer.Result != "duplicate" || r.answer.Message != "already received" {
		t.Fatalf("redelivery: %d %s", r.status, r.body)
	}
	if n := len(listBuilds(t, e.c, e.ns, "shop")); n != 1 {
		t.Fatalf("%d Builds after a redelivery", n)
	}
}

func TestSeveralProjectsForOneGitLabProject(t *testing.T) {
	e := newEnv(t)
	other := testutil.Namespace(t, e.c)
	tokenA := e.project("shop", "group/shop", projectOptions{})
	e2 := &env{t: t, c: e.c, ns: other, r: e.r}
	tokenB := e2.project("shop", "group/shop", projectOptions{secret: map[string]string{"token": "team-b-token"}})

	// Each namespace's token triggers only its own Project.
	if r := post(t, e.r.url, hdr("Push Hook", tokenA), pushBody("group/shop", "main", sha(1))); r.status != http.StatusCreated || len(r.answer.Builds) != 1 || !strings.HasPrefix(r.answer.Builds[0], e.ns+"/") {
		t.Fatalf("token A: %d %s", r.status, r.body)
	}
	if r := post(t, e.r.url, hdr("Push Hook", tokenB), pushBody("group/shop", "main", sha(2))); r.status != http.StatusCreated || len(r.answer.Builds) != 1 || !strings.HasPrefix(r.answer.Builds[0], other+"/") {
		t.Fatalf("token B: %d %s", r.status, r.body)
	}
	// Projects that share a token both build; a Project that does not track the branch says why.
	s := &corev1.Secret{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: other, Name: "shop-webhook"}, s); err != nil {
		t.Fatal(err)
	}
	s.Data["token"] = []byte(tokenA)
	if err := e.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	// Every try is a push of a new commit: a commit that already has a Build is reused, not built.
	next := 100
	newCommit := func() string { next++; return sha(next) }
	testutil.EventuallyWithin(t, 15*time.Second, "both Projects to build", func() (bool, error) {
		r := post(t, e.r.url, hdr("Push Hook", tokenA), pushBody("group/shop", "main", newCommit()))
		return r.status == http.StatusCreated && len(r.answer.Builds) == 2, fmt.Errorf("%d %s", r.status, r.body)
	})
	p := &ferryv1.Project{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: other, Name: "shop"}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec.Triggers.Branches = []string{"release/*"}
	if err := e.c.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, 15*time.Second, "the second Project to ignore main", func() (bool, error) {
		r := post(t, e.r.url, hdr("Push Hook", tokenA), pushBody("group/shop", "main", newCommit()))
		return r.status == http.StatusCreated && len(r.answer.Builds) == 1 && strings.Contains(r.answer.Reason, other+"/shop: branch main is not tracked"), fmt.Errorf("%d %s", r.status, r.body)
	})
}

func TestProjectIDAndInstance(t *testing.T) {
	e := newEnv(t)
	token := e.project("renamed", "group/old-name", projectOptions{mutate: func(p *ferryv1.Project) {
		p.Spec.GitLab.ProjectID = 42
		p.Spec.GitLab.URL = "https://GitLab.example.com/"
	}})
	body := func(path string, id int, n int) []byte {
		return fmt.Appendf(nil, `{"object_kind":"push","ref":"refs/heads/main","after":"%s","checkout_sha":"%s","project":{"id":%d,"path_with_namespace":%q}}`, sha(n), sha(n), id, path)
	}
	withInstance := func(inst string) http.Header {
		h := hdr("Push Hook", token)
		if inst == "" {
			h.Del("X-Gitlab-Instance")
		} else {
			h.Set("X-Gitlab-Instance", inst)
		}
		return h
	}
	cases := []struct {
		name     string
		h        http.Header
		body     []byte
		status   int
		instance string
	}{
		{"renamed project, same ID", withInstance("https://gitlab.example.com"), body("group/new-name", 42, 1), http.StatusCreated, ""},
		{"old path, another project ID", withInstance("https://gitlab.example.com"), body("group/old-name", 43, 2), http.StatusUnauthorized, ""},
		{"another GitLab instance", withInstance("https://gitlab.com"), body("group/old-name", 42, 3), http.StatusUnauthorized, ""},
		{"no instance header (GitLab < 15.5)", withInstance(""), body("group/old-name", 42, 4), http.StatusCreated, ""},
	}
	for _, c := range cases {
		if r := post(t, e.r.url, c.h, c.body); r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
		}
	}
}
