package supplychain

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeHarbor speaks Harbor's artifact API with scan overviews: GET
// /api/v2.0/projects/{p}/repositories/{double-encoded r}/artifacts/{digest}?with_scan_overview=true.
type fakeHarbor struct {
	mu       sync.Mutex
	overview map[string]map[string]any // digest → scan_overview; absent: 404
	status   int                       // non-zero: answer with it
	user     string
	pass     string
	paths    []string
}

func (f *fakeHarbor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.paths = append(f.paths, r.URL.EscapedPath())
	if u, p, ok := r.BasicAuth(); !ok || u != f.user || p != f.pass {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if f.status != 0 {
		w.WriteHeader(f.status)
		return
	}
	if r.URL.Query().Get("with_scan_overview") != "true" || !strings.Contains(r.Header.Get("X-Accept-Vulnerabilities"), "application/vnd.security.vulnerability.report; version=1.1") {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	i := strings.LastIndex(r.URL.Path, "/artifacts/")
	digest := r.URL.Path[i+len("/artifacts/"):]
	ov, ok := f.overview[digest]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	art := map[string]any{"digest": digest}
	if ov != nil {
		art["scan_overview"] = ov
	}
	_ = json.NewEncoder(w).Encode(art)
}

func overview(status, severity string) map[string]any {
	return map[string]any{"application/vnd.security.vulnerability.report; version=1.1": map[string]any{
		"report_id": "5f62c830", "scan_status": status, "severity": severity, "summary": map[string]any{"total": 3},
	}}
}

func TestGate(t *testing.T) {
	e := registries(t)["distribution"]
	host := e.proxy.Host
	app := pushImage(t, host+"/team-a/app", tarLayer(t, map[string][]byte{"app/requirements.txt": []byte("flask==3.0.3\n")}))
	bare := pushImage(t, host+"/team-a/app", tarLayer(t, map[string][]byte{"app/x": []byte("x")}))
	key, _, _ := GenerateKey()
	signer, _ := NewSigner(key)
	pubPEM, _ := signer.PublicKeyPEM()
	k, _ := ParsePublicKey(pubPEM)
	keys := []Key{{Name: "secret ferry-system/platform-key", Key: k}}
	prov := testProvenance(app, app)
	prov.Stack, prov.Runtime = "", ""
	d, err := Describe(app, DescribeOptions{Tool: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Publish(app, PublishOptions{SBOM: d.SBOM, Provenance: &prov, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	harbor := &fakeHarbor{user: "robot$team-a+gate", pass: "harbor-pass", overview: map[string]map[string]any{
		app.DigestStr(): overview("Success", "Medium"), bare.DigestStr(): nil,
	}}
	hs := httptest.NewServer(harbor)
	t.Cleanup(hs.Close)
	all := Policy{Keys: keys, RequireSignature: true, RequireProvenance: true, RequireSBOM: true,
		Harbor: &HarborScan{URL: hs.URL, Username: harbor.user, Password: harbor.pass, RefuseAtOrAbove: "High"}}
	want := Expect{Repository: "https://gitlab.example/team-a/app", Revision: prov.Revision}
	ctx := context.Background()

	v, err := Check(ctx, app, all, want)
	if err != nil || v.Refused != "" || len(v.Passed) != 4 || v.Provenance == nil || v.SBOM == nil {
		t.Fatalf("Check = %+v, %v; want every check passed", v, err)
	}
	if got := harbor.paths[len(harbor.paths)-1]; got != "/api/v2.0/projects/team-a/repositories/app/artifacts/"+app.DigestStr() {
		t.Errorf("Harbor path = %s", got)
	}

	unknownKey, _, _ := GenerateKey()
	other, _ := NewSigner(unknownKey)
	otherPEM, _ := other.PublicKeyPEM()
	ok2, _ := ParsePublicKey(otherPEM)
	for _, tc := range []struct {
		name  string
		img   func() string
		pol   func(p Policy) Policy
		want  Expect
		refer string
	}{
		{"another commit", nil, nil, Expect{Repository: want.Repository, Revision: strings.Repeat("e", 40)}, "not the Release's revision"},
		{"another repository", nil, nil, Expect{Repository: "https://gitlab.example/team-b/other.git", Revision: prov.Revision}, "not the Project's repository"},
		{"unknown key", nil, func(p Policy) Policy { p.Keys = []Key{{Name: "other", Key: ok2}}; return p }, want, "signature: no signature verifies with a trusted key"},
		{"severity at the threshold", nil, func(p Policy) Policy {
			h := *p.Harbor
			h.RefuseAtOrAbove = "Medium"
			p.Harbor = &h
			return p
		}, want, "harbor scan: severity Medium, at or above Medium"},
		{"unsigned image", func() string { return bare.String() }, nil, want, "signature: not signed"},
		{"no SBOM", func() string { return bare.String() }, func(p Policy) Policy { p.RequireSignature, p.RequireProvenance = false, false; return p }, want, "SBOM: no SBOM refers to the image"},
		{"not scanned", func() string { return bare.String() }, func(p Policy) Policy { return Policy{Harbor: p.Harbor} }, want, "has not been scanned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := app
			if tc.img != nil {
				img = bare
			}
			pol := all
			if tc.pol != nil {
				pol = tc.pol(all)
			}
			v, err := Check(ctx, img, pol, tc.want)
			if err != nil || v.Refused == "" || !strings.Contains(v.Refused, tc.refer) {
				t.Errorf("Check = %+v, %v; want refused with %q", v, err, tc.refer)
			}
		})
	}

	t.Run("scan still running", func(t *testing.T) {
		harbor.mu.Lock()
		harbor.overview[app.DigestStr()] = overview("Running", "")
		harbor.mu.Unlock()
		v, err := Check(ctx, app, Policy{Harbor: all.Harbor}, want)
		if err != nil || !strings.Contains(v.Refused, "is Running, not Success") {
			t.Errorf("Check = %+v, %v", v, err)
		}
	})
	t.Run("Harbor down is not a verdict", func(t *testing.T) {
		harbor.mu.Lock()
		harbor.status = http.StatusServiceUnavailable
		harbor.mu.Unlock()
		if v, err := Check(ctx, app, Policy{Harbor: all.Harbor}, want); err == nil {
			t.Errorf("Check = %+v, want an error to retry", v)
		}
	})
	t.Run("wrong Harbor credentials are refused", func(t *testing.T) {
		h := *all.Harbor
		h.Password = "wrong"
		v, err := Check(ctx, app, Policy{Harbor: &h}, want)
		if err != nil || !strings.Contains(v.Refused, "401") || strings.Contains(v.Refused, "wrong") {
			t.Errorf("Check = %+v, %v", v, err)
		}
	})
}

func TestSeverityLadder(t *testing.T) {
	if severityRank("Negligible") >= severityRank("Low") || severityRank("High") >= severityRank("Critical") || severityRank("Critical") >= severityRank("Bogus") {
		t.Error("the severity ladder is not Harbor's")
	}
	if !SameRepository("https://GitLab.example/team-a/app.git", "https://gitlab.example/team-a/app/") || SameRepository("", "") || SameRepository("https://a/x", "https://a/y") {
		t.Error("SameRepository")
	}
}
