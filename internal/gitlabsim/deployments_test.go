package gitlabsim_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/ferryci/ferry/internal/gitlabsim"
)

// TestDeploymentsAPI drives the deployments endpoints over plain HTTP: GitLab's required
// parameters, its validation errors, the state machine of updates, and listing with filters and
// order.
func TestDeploymentsAPI(t *testing.T) {
	s := gitlabsim.New()
	defer s.Close()
	s.AddUser("bot", token)
	id := s.AddProject(gitlabsim.Project{PathWithNamespace: "group/app"})
	sha, err := s.AddCommit(id, gitlabsim.Commit{Message: "one"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetBranch(id, "main", sha); err != nil {
		t.Fatal(err)
	}
	base := s.APIURL() + "/projects/group%2Fapp/deployments"
	form := func(kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	valid := []string{"environment", "dev", "sha", sha, "ref", "main", "tag", "false", "status", "running"}
	with := func(k, v string) []string {
		out := append([]string(nil), valid...)
		for i := 0; i < len(out); i += 2 {
			if out[i] == k {
				out[i+1] = v
			}
		}
		return out
	}
	refused := []struct {
		name, body, want string
	}{
		{"nothing", "", `environment is missing, sha is missing, ref is missing, tag is missing, status is missing`},
		{"no tag", form("environment", "dev", "sha", sha, "ref", "main", "status", "running"), `"error":"tag is missing"`},
		{"tag not a boolean", form(with("tag", "perhaps")...), `"error":"tag is invalid"`},
		{"created is not for the API", form(with("status", "created")...), `status does not have a valid value`},
		{"environment name", form(with("environment", "dev<script>")...), `"name":["can contain only letters, digits`},
		{"environment ends with /", form(with("environment", "review/")...), `cannot start or end with '/'`},
		{"unknown commit", form(with("sha", strings.Repeat("b", 40))...), `"sha":["The commit does not exist"]`},
		{"unknown branch", form(with("ref", "gone")...), `"ref":["The branch or tag does not exist"]`},
		{"a branch is not a tag", form(with("tag", "true")...), `"ref":["The branch or tag does not exist"]`},
	}
	for _, c := range refused {
		if code, body := do(t, http.MethodPost, base, c.body); code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %s, want 400 %s", c.name, code, body, c.want)
		}
	}
	if n := len(s.Deployments(id)); n != 0 {
		t.Fatalf("refused requests made %d deployments", n)
	}

	code, body := do(t, http.MethodPost, base, form(valid...))
	var d gitlabsim.Deployment
	if err := json.Unmarshal([]byte(body), &d); code != http.StatusCreated || err != nil {
		t.Fatalf("create: %d %s %v", code, body, err)
	}
	if d.Status != "running" || d.IID != 1 || d.Environment.Name != "dev" || d.Environment.Tier != "development" || d.SHA != sha || d.Ref != "main" || d.User.Username != "bot" || d.FinishedAt != nil {
		t.Errorf("created %+v", d)
	}
	if !strings.Contains(body, `"deployable":null`) {
		t.Errorf("an API deployment has no deployable: %s", body)
	}
	one := base + "/" + itoa(d.ID)
	steps := []struct {
		status   string
		wantCode int
		wantBody string
	}{
		{"running", 400, `cannot transition via \"run\"`},
		{"bogus", 400, `status does not have a valid value`},
		{"success", 200, `"status":"success"`},
		{"success", 400, `cannot transition via \"succeed\"`},
		{"failed", 200, `"status":"failed"`},
		{"canceled", 200, `"status":"canceled"`},
	}
	for i, st := range steps {
		code, body := do(t, http.MethodPut, one, form("status", st.status))
		if code != st.wantCode || !strings.Contains(body, st.wantBody) {
			t.Errorf("step %d %s: %d %s, want %d %s", i, st.status, code, body, st.wantCode, st.wantBody)
		}
	}
	if code, body := do(t, http.MethodPut, base+"/999999", form("status", "success")); code != 404 || !strings.Contains(body, "404 Deployment Not Found") {
		t.Errorf("unknown deployment: %d %s", code, body)
	}
	if code, body := do(t, http.MethodGet, one, ""); code != 200 || !strings.Contains(body, `"status":"canceled"`) {
		t.Errorf("get: %d %s", code, body)
	}

	// A second environment and a second deployment in dev, then the filters and the order.
	for _, e := range []string{"dev", "production"} {
		if code, body := do(t, http.MethodPost, base, form(with("environment", e)...)); code != 201 {
			t.Fatalf("create in %s: %d %s", e, code, body)
		}
	}
	list := func(query string) []gitlabsim.Deployment {
		t.Helper()
		code, body := do(t, http.MethodGet, base+"?"+query, "")
		var out []gitlabsim.Deployment
		if err := json.Unmarshal([]byte(body), &out); code != 200 || err != nil {
			t.Fatalf("list %s: %d %s %v", query, code, body, err)
		}
		return out
	}
	if got := list("environment=dev&order_by=id&sort=desc&per_page=1"); len(got) != 1 || got[0].IID != 2 {
		t.Errorf("newest in dev: %+v", got)
	}
	if got := list("environment=dev"); len(got) != 2 || got[0].ID > got[1].ID {
		t.Errorf("dev, default order by id ascending: %+v", got)
	}
	if got := list("status=canceled"); len(got) != 1 || got[0].ID != d.ID {
		t.Errorf("canceled: %+v", got)
	}
	if code, body := do(t, http.MethodGet, base+"?order_by=color", ""); code != 400 || !strings.Contains(body, "order_by does not have a valid value") {
		t.Errorf("bad order_by: %d %s", code, body)
	}

	// The environment's external URL.
	envs := s.Environments(id)
	if len(envs) != 2 || envs[1].Tier != "production" {
		t.Fatalf("environments %+v", envs)
	}
	envURL := s.APIURL() + "/projects/group%2Fapp/environments/" + itoa(envs[0].ID)
	if code, body := do(t, http.MethodPut, envURL, form("external_url", "javascript:alert(1)")); code != 400 || !strings.Contains(body, `"external_url"`) {
		t.Errorf("javascript: URL: %d %s", code, body)
	}
	if code, body := do(t, http.MethodPut, envURL, form("external_url", "https://app.example.com")); code != 200 || !strings.Contains(body, `"external_url":"https://app.example.com"`) {
		t.Errorf("external URL: %d %s", code, body)
	}
	if code, body := do(t, http.MethodGet, s.APIURL()+"/projects/group%2Fapp/environments?name=dev", ""); code != 200 || !strings.Contains(body, "https://app.example.com") || strings.Contains(body, "production") {
		t.Errorf("environments by name: %d %s", code, body)
	}
}

func itoa(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
