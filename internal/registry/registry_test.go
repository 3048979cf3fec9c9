package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	robot  = "robot$team-a+ci"
	secret = "S3cret-robot-Passw0rd"
)

func startDistribution(t *testing.T, access Access) *Server {
	t.Helper()
	s, err := StartDistribution(DistributionOptions{Users: map[string]string{robot: secret}, Access: access})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func robotAuth() remote.Option {
	return remote.WithAuth(&authn.Basic{Username: robot, Password: secret})
}

func TestDistributionChallengesLikeHarbor(t *testing.T) {
	s := startDistribution(t, nil)
	resp, err := http.Get(s.URL + "/v2/team-a/app/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	got := resp.Header.Get("WWW-Authenticate")
	want := `Bearer realm="` + s.URL + `/service/token",service="harbor-registry",scope="repository:team-a/app:pull"`
	if resp.StatusCode != http.StatusUnauthorized || got != want {
		t.Fatalf("anonymous request: got %d %q, want 401 %q", resp.StatusCode, got, want)
	}

	// Wrong Basic credentials sent straight to /v2/ get Harbor's Basic challenge.
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/v2/team-a/app/manifests/v1", nil)
	req.SetBasicAuth(robot, "wrong")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != `Basic realm="harbor"` {
		t.Fatalf("wrong Basic credentials: got %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}

func TestTokenServiceAnswersLikeHarbor(t *testing.T) {
	s := startDistribution(t, ProjectAccess(map[string][]string{robot: {"team-a"}}))
	get := func(method, query, user, pass string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, s.TokenURL+"?"+query, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		body := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	scope := "service=harbor-registry&scope=repository:team-a/app:pull,push&scope=repository:team-b/app:pull"
	if status, _ := get(http.MethodPost, scope, robot, secret); status != http.StatusMethodNotAllowed {
		t.Errorf("POST: got %d, want 405", status)
	}
	if status, _ := get(http.MethodGet, "service=other&scope=repository:team-a/app:pull", robot, secret); status != http.StatusBadRequest {
		t.Errorf("other service: got %d, want 400", status)
	}
	if status, _ := get(http.MethodGet, scope, robot, "wrong"); status != http.StatusUnauthorized {
		t.Errorf("wrong password: got %d, want 401", status)
	}
	status, body := get(http.MethodGet, scope, robot, secret)
	if status != http.StatusOK || body["expires_in"] != float64(1800) || body["issued_at"] == "" {
		t.Fatalf("token: got %d %v", status, body)
	}
	parts := strings.Split(body["token"].(string), ".")
	if len(parts) != 3 {
		t.Fatalf("token is not a JWT: %q", body["token"])
	}
	var header, claims map[string]any
	decode := func(s string, into any) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, into); err != nil {
			t.Fatal(err)
		}
	}
	decode(parts[0], &header)
	decode(parts[1], &claims)
	if header["alg"] != "RS256" || header["kid"] == "" {
		t.Errorf("header = %v, want RS256 with a kid", header)
	}
	if claims["iss"] != HarborIssuer || claims["aud"] != HarborService || claims["sub"] != robot {
		t.Errorf("claims = %v", claims)
	}
	// team-b is not the robot's project: silently dropped, as Harbor does.
	access, _ := json.Marshal(claims["access"])
	if want := `[{"actions":["pull","push"],"name":"team-a/app","type":"repository"}]`; string(access) != want {
		t.Errorf("access = %s, want %s", access, want)
	}
}

func TestDistributionPushWithRobotAndDeniedProject(t *testing.T) {
	s := startDistribution(t, ProjectAccess(map[string][]string{robot: {"team-a"}}))
	ctx := context.Background()
	seeded, err := SeedBaseImages(ctx, s.Host, SeedOptions{Stack: "team-a/stack", Runtime: "team-a/runtime", Username: robot, Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(seeded.Runtime)
	if _, err := remote.Image(ref, robotAuth()); err != nil {
		t.Fatalf("pull with the robot: %v", err)
	}
	if _, err := remote.Image(ref); err == nil {
		t.Fatal("anonymous pull succeeded, want 401")
	}
	// The robot may not push to another project: the token service drops the action, the
	// registry refuses the request.
	_, err = SeedBaseImages(ctx, s.Host, SeedOptions{Stack: "team-b/stack", Username: robot, Password: secret})
	var terr *transport.Error
	if !errors.As(err, &terr) || (terr.StatusCode != http.StatusUnauthorized && terr.StatusCode != http.StatusForbidden) {
		t.Fatalf("push to team-b: got %v, want 401/403", err)
	}
	if strings.Contains(err.Error(), secret) {
		t.Fatalf("error reveals the password: %v", err)
	}
}

func TestSeedBaseImagesAreReproducibleAndLayered(t *testing.T) {
	s, err := StartMemory(MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	opts := SeedOptions{Stack: "stacks/os", Runtime: "runtimes/lang", Platforms: []string{"linux/amd64", "linux/arm64"}}
	a, err := SeedBaseImages(ctx, s.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	b, err := SeedBaseImages(ctx, s.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	if *a != *b {
		t.Fatalf("same options, different images: %+v and %+v", a, b)
	}
	opts.Salt = "patched"
	c, err := SeedBaseImages(ctx, s.Host, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c.Stack == a.Stack || c.Runtime == a.Runtime {
		t.Fatalf("a different salt gave the same images: %+v", c)
	}
	idx, err := remote.Index(mustRef(t, a.Runtime))
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if im.MediaType != types.OCIImageIndex || len(im.Manifests) != 2 {
		t.Fatalf("runtime index = %+v, want an OCI index of two platforms", im)
	}
	stackIdx, err := remote.Index(mustRef(t, a.Stack))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range im.Manifests {
		rt, _ := idx.Image(d.Digest)
		st, err := platformImage(stackIdx, *d.Platform)
		if err != nil {
			t.Fatal(err)
		}
		rl, _ := rt.Layers()
		sl, _ := st.Layers()
		if len(rl) != len(sl)+1 {
			t.Fatalf("%s: runtime has %d layers, stack %d", d.Platform, len(rl), len(sl))
		}
		for i := range sl {
			x, _ := sl[i].Digest()
			y, _ := rl[i].Digest()
			if x != y {
				t.Fatalf("%s: runtime layer %d is %s, stack's is %s", d.Platform, i, y, x)
			}
		}
	}
}

func platformImage(idx v1.ImageIndex, p v1.Platform) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Platform != nil && d.Platform.Equals(p) {
			return idx.Image(d.Digest)
		}
	}
	return nil, errors.New("no such platform")
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestMemoryBasicAuth(t *testing.T) {
	s, err := StartMemory(MemoryOptions{Users: map[string]string{robot: secret}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	if _, err := SeedBaseImages(ctx, s.Host, SeedOptions{Stack: "os"}); err == nil {
		t.Fatal("anonymous push succeeded")
	}
	if _, err := SeedBaseImages(ctx, s.Host, SeedOptions{Stack: "os", Username: robot, Password: secret}); err != nil {
		t.Fatal(err)
	}
}

func TestProxyRecordsUploadsMountsAndManifests(t *testing.T) {
	s := startDistribution(t, nil)
	p, err := StartProxy(s.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	ctx := context.Background()
	seeded, err := SeedBaseImages(ctx, p.Host, SeedOptions{Stack: "team-a/stack", Username: robot, Password: secret})
	if err != nil {
		t.Fatal(err)
	}
	st := p.Stats()
	// Two layers and the config, then the manifest under its tag.
	if len(st.Uploads) != 3 || len(st.Mounts) != 0 || len(st.StoredManifests()) != 1 || st.BlobChecks != 3 {
		t.Fatalf("first push: %+v, want 3 uploads after 3 checks and 1 manifest", st)
	}
	if st.BlobBytes() <= 0 || st.BytesIn != st.BlobBytes()+st.ManifestBytes() {
		t.Errorf("bytes: blobs %d, manifests %d, in %d", st.BlobBytes(), st.ManifestBytes(), st.BytesIn)
	}
	img, err := remote.Image(mustRef(t, seeded.Stack), robotAuth())
	if err != nil {
		t.Fatal(err)
	}

	// The same image again under another tag uploads nothing.
	p.Reset()
	if err := remote.Write(mustRef(t, p.Ref("team-a/stack:again")), img, robotAuth()); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); len(st.Uploads) != 0 || len(st.Mounts) != 0 || len(st.StoredManifests()) != 1 {
		t.Fatalf("second push: %+v, want only the tag's manifest", st)
	}

	// Into a sibling repository, the layers pulled from the registry are mounted.
	p.Reset()
	if err := remote.Write(mustRef(t, p.Ref("team-a/copy:v1")), img, robotAuth()); err != nil {
		t.Fatal(err)
	}
	st = p.Stats()
	if len(st.Mounts) < 2 {
		t.Fatalf("copy: %+v, want the layers mounted", st)
	}
	for _, m := range st.Mounts {
		if m.Repository != "team-a/copy" || m.From != "team-a/stack" {
			t.Errorf("mount %+v, want team-a/stack → team-a/copy", m)
		}
	}
}

func TestProxyFaults(t *testing.T) {
	s, err := StartMemory(MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	p, err := StartProxy(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })

	p.Inject(Fault{Match: MatchV2, Status: http.StatusServiceUnavailable, Times: 2})
	// Without keep-alive, so that Go's client does not quietly retry on a fresh connection.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func() (int, error) {
		resp, err := client.Get(p.URL + "/v2/")
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	for i, want := range []int{503, 503, 200} {
		if got, err := get(); err != nil || got != want {
			t.Fatalf("request %d: got %d %v, want %d", i, got, err, want)
		}
	}
	p.Inject(Fault{Times: 1})
	if _, err := get(); err == nil {
		t.Fatal("dropped connection: got an answer")
	}
	if got, err := get(); err != nil || got != 200 {
		t.Fatalf("after the drop: got %d %v", got, err)
	}
	p.Inject(Fault{Status: http.StatusTooManyRequests, Times: -1})
	for range 3 {
		if got, _ := get(); got != http.StatusTooManyRequests {
			t.Fatalf("permanent fault: got %d", got)
		}
	}
	p.ClearFaults()
	if got, _ := get(); got != 200 {
		t.Fatalf("after ClearFaults: got %d", got)
	}
	if st := p.Stats(); st.Faults != 6 || st.Requests != 9 {
		t.Fatalf("stats %+v, want 6 faults in 9 requests", st)
	}
}
