package ui

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/ui/auth"
)

const testImage = "harbor.example.com/team/shop@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// TestPagesRender renders every page with everything filled in: a template that refers to a
// missing field or calls a function wrongly fails here, not in front of a release manager.
func TestPagesRender(t *testing.T) {
	p, err := loadPages()
	if err != nil {
		t.Fatal(err)
	}
	now := metav1.NewTime(time.Now().Add(-5 * time.Minute))
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-1", CreationTimestamp: now},
		Spec:       ferryv1.ReleaseSpec{Project: "shop", Build: "shop-b1", Image: testImage, Revision: strings.Repeat("a", 40), RequestedBy: "dana"},
	}
	proj := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop"}, Spec: ferryv1.ProjectSpec{GitLab: ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "team/shop"}, Promotion: ferryv1.Promotion{Environments: []string{"prod"}}},
		Status: ferryv1.ProjectStatus{Environments: []ferryv1.ProjectEnvironmentStatus{{Name: "prod", Image: testImage, Revision: strings.Repeat("b", 40), Release: "shop-0", DeployedAt: &now}}}}
	build := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-b1", CreationTimestamp: now},
		Spec:       ferryv1.BuildSpec{Project: "shop", Revision: strings.Repeat("a", 40), Ref: "refs/heads/main", Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "dave"}},
		Status: ferryv1.BuildStatus{Image: testImage, StartTime: &now, Lineage: &ferryv1.ImageLineage{Stack: &ferryv1.LayerSource{Name: "debian-12", Digest: "sha256:" + strings.Repeat("c", 64)}, AppLayer: "sha256:" + strings.Repeat("d", 64)},
			Steps:      []ferryv1.StepStatus{{Name: "test", State: "Failed", ExitCode: ptr.To[int32](1), StartTime: &now, CompletionTime: &now}},
			Conditions: []metav1.Condition{{Type: "Ready", Status: "False", Reason: "PipelineFailed", Message: "step test failed"}}},
	}
	g := gateView{Namespace: "team", Release: "shop-1", Project: "shop", Environment: "prod", Image: testImage, Revision: rel.Spec.Revision, RequestedBy: "dana", TriggeredBy: "dave",
		WaitingSince: &now, ExpiresAt: &now, Required: 2, Approvals: 1, CanApprove: true, CanReject: true, Error: `admission webhook "vapprovals.ferry.dev" denied the request: <no>`, Comment: "why <not>"}
	cluster := ferryv1.ClusterRolloutStatus{Cluster: "eu-west-1", Namespace: "shop-prod", Replicas: 3, UpdatedReplicas: 2, AvailableReplicas: 1, Batch: 1, Batches: 2}
	approval := &ferryv1.Approval{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-1-prod-x", CreationTimestamp: now},
		Spec: ferryv1.ApprovalSpec{Release: "shop-1", Environment: "prod", Decision: ferryv1.DecisionApprove, Comment: "ok", Approver: &ferryv1.Approver{Username: "rita"}, Image: testImage}}
	changes := &changesView{From: imageRef{Image: testImage, Revision: strings.Repeat("b", 40)}, To: imageRef{Image: testImage, Revision: rel.Spec.Revision},
		Commits: []gitlab.Commit{{ID: strings.Repeat("e", 40), Title: "Fix checkout", AuthorName: "Dave", AuthoredDate: now.Time, WebURL: "https://gitlab.example.com/c"}}, CompareURL: "https://gitlab.example.com/compare",
		Layers: []layerChange{{Layer: "Stack", From: "a", To: "b", Changed: true}}, CommitsNote: "note"}
	pages := map[string]any{
		"signin":   signinData{Next: "/", OIDC: true, Tokens: true, CSRF: "x", Error: "e", Message: "m"},
		"error":    errorData{Heading: "h", Message: "m"},
		"waiting":  waitingData{Mine: []gateView{g}, Others: []gateView{g}},
		"releases": []releaseRow{{Release: rel, State: state{"Rolled out", toneOK, ""}}},
		"release": releaseData{Release: rel, State: state{"Waiting", toneWait, "m"}, Project: proj, Build: build, Envs: []envView{{
			Name: "prod", State: state{"Rolling out", toneBusy, "m"}, HasGate: true, Policy: "members of rm", Gate: &ferryv1.GateStatus{RequiredApprovals: 2, WaitingSince: &now, ExpiresAt: &now},
			Open: []gateView{g}, Decisions: []decisionView{{Approval: approval, Counted: true}}, Clusters: []clusterView{{Status: &cluster, State: state{"Rolling out", toneBusy, "m"}}},
			Start: &now, End: &now, Changes: changes, OpensAt: &now, BreakGlass: &ferryv1.BreakGlassRecord{Approval: "a", User: "sam", Reason: "INC-1"},
			SupplyChain: supplyChainOf(&ferryv1.ReleaseEnvironmentStatus{SupplyChain: &ferryv1.SupplyChainResult{
				Digest: testImage, Result: ferryv1.SupplyChainRefused, Message: "provenance: built from commit <b>", SignedBy: "configmap ferry-system/platform-key key cosign.pub", CheckedAt: now,
				SBOM: true, SBOMPackages: 42, Scan: &ferryv1.ScanSummary{Severity: "Medium", RefuseAtOrAbove: "High"},
				Packages: &ferryv1.PackageDiff{From: "harbor.example.com/team/shop@sha256:" + strings.Repeat("9", 64), Added: 2, Removed: 1, Upgraded: 1, Downgraded: 1, Changes: []ferryv1.PackageChange{
					{Kind: "Added", Type: "pypi", Name: "flask<b>", To: "3.0.3"}, {Kind: "Removed", Type: "deb", Name: "gone", From: "1.0"}, {Kind: "Upgraded", Type: "deb", Name: "libc6", From: "2.36-9", To: "2.36-10"},
				}},
				Provenance: &ferryv1.ProvenanceSummary{Repository: "https://gitlab.example.com/team/shop.git", Revision: strings.Repeat("f", 40), Builder: "Ferry v0.9.0 (tekton)", BuildRef: "team/shop-b1", Stack: testImage},
			}}),
			SoakEndsAt: &now, AutoPromotion: &ferryv1.AutoPromotionRecord{PreviousEnvironment: "staging", VerifiedRun: 2, Soak: &metav1.Duration{Duration: time.Hour}, Time: &now},
			Verification: verificationOf(&ferryv1.ReleaseEnvironmentStatus{
				Conditions: []metav1.Condition{{Type: ferryv1.VerifiedCondition, Status: metav1.ConditionFalse, Reason: ferryv1.VerificationFailedReason, Message: "check smoke failed <b>"}},
				Verification: &ferryv1.VerificationStatus{Run: 2, StartTime: &now, CompletionTime: &now, Checks: []ferryv1.VerificationCheckStatus{
					{Name: "smoke", Source: ferryv1.ApplicationCheck, Cluster: "eu-west-1", Result: ferryv1.VerificationFailed, Message: "try 1 of 3: GET /: 404 <b>"},
					{Name: "e2e", Source: ferryv1.EnvironmentCheck, Cluster: "eu-west-1", Result: ferryv1.VerificationPassed, Message: "Job exited 0"},
				}}}),
		}}},
		"environments": matrixData{Envs: []string{"prod"}, Rows: []matrixRow{{Project: proj, Cells: []matrixCell{{Env: "prod", OnPath: true, Running: &proj.Status.Environments[0], By: "dana", Approvers: []string{"rita"}, Health: state{"Healthy", toneOK, ""}, Rolling: rel, Waiting: rel, Batch: &cluster}}}}, Windows: []envWindows{{Env: "prod", Now: state{"Frozen", toneBad, "frozen: <b>"}}}},
		"builds":       buildsData{Rows: []buildRow{{Build: build, State: state{"Pipeline failed", toneBad, ""}}}, More: 1},
		"build":        buildData{Build: build, State: state{"Pipeline failed", toneBad, "m"}, Project: proj, Steps: []stepView{{Step: build.Status.Steps[0], Log: &stepLog{Step: "test", Text: "FAIL <b>", Truncated: true}}}, Whole: &stepLog{Text: "all"}},
		"previews":     previewsData{Rows: []previewRow{{Preview: &ferryv1.Preview{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-mr-3"}, Spec: ferryv1.PreviewSpec{Project: "shop", MergeRequestIID: 3, Build: "b"}, Status: ferryv1.PreviewStatus{Namespace: "shop-mr-3", Cluster: "c", URL: "http://u", LastActivity: &now}}, State: state{"Healthy", toneOK, ""}, DeleteFailed: "no <b>"}}},
		"week":         weekOf(sampleEnvironment(), []ferryv1.Freeze{sampleFreeze()}, time.UTC, now.Time, now.Time),
		"audit":        auditData{Projects: []string{"team/shop"}, Environments: []string{"prod"}, People: []string{"rita"}, Rows: []auditRow{{Approval: approval, Project: "shop"}}, Total: 1},
	}
	for _, name := range pageNames {
		data, ok := pages[name]
		if !ok {
			t.Errorf("no sample data for page %s", name)
			continue
		}
		var buf bytes.Buffer
		err := p.sets[name].ExecuteTemplate(&buf, "layout", layout{Title: name, Nav: name, Session: &auth.Session{Identity: auth.Identity{User: "rita"}}, CSRF: "tok", Live: liveKinds[name], Flash: "done", Page: data})
		if err != nil {
			t.Errorf("page %s: %v", name, err)
			continue
		}
		out := buf.String()
		if strings.Contains(out, "<no>") || strings.Contains(out, "<b>") || strings.Contains(out, "<not>") {
			t.Errorf("page %s does not escape what it shows", name)
		}
		if name == "release" {
			for _, want := range []string{"Waiting for the environment's deploy windows and freezes: opens <time", "by sam's break-glass: INC-1", "<h4>Verification</h4>", "Soaking in the previous environment: ends <time", "the image passed verification in staging (run 2) and soaked there for 1h0m0s.", "Verification failed</span> run 2", "<strong>smoke</strong> <span class=\"hint\">the application's check on eu-west-1</span> <span class=\"badge badge-bad\">Failed</span>", "try 1 of 3: GET /: 404", "the environment's check on eu-west-1</span> <span class=\"badge badge-ok\">Passed</span>",
				"<h4>Supply chain</h4>", "<span class=\"badge badge-bad\">Refused</span>", "provenance: built from commit &lt;b&gt;", "<dt>Signed by</dt><dd>configmap ferry-system/platform-key key cosign.pub</dd>",
				"https://gitlab.example.com/team/shop.git at commit <code>ffffffff", "Ferry v0.9.0 (tekton), Build team/shop-b1", "<dt>Runtime</dt><dd>none</dd>", "yes, 42 packages", "Medium (refused at or above High)",
				"<summary>Packages: &#43;2 −1 ↑1 ↓1 since <code class=\"digest\" title=\"harbor.example.com/team/shop@sha256:9999", "<th scope=\"row\">flask&lt;b&gt;</th><td>pypi</td><td>—</td><td><code>3.0.3</code></td><td>Added</td>",
				"<th scope=\"row\">libc6</th><td>deb</td><td><code>2.36-9</code></td><td><code>2.36-10</code></td><td>Upgraded</td>", "and 2 more", "<details class=\"packages\" id=\"packages-prod\">"} {
				if !strings.Contains(out, want) {
					t.Errorf("the release page does not say %q", want)
				}
			}
		}
	}
}

// TestReleasePackagesRender: a package diff the manager could not make says why, with the image
// it would have compared; one without changes says so; neither shows an empty table.
func TestReleasePackagesRender(t *testing.T) {
	p, err := loadPages()
	if err != nil {
		t.Fatal(err)
	}
	from := "harbor.example.com/team/shop@sha256:" + strings.Repeat("8", 64)
	for _, tc := range []struct {
		name string
		diff *ferryv1.PackageDiff
		want string
	}{
		{"unavailable", &ferryv1.PackageDiff{From: from, Unavailable: "no SBOM for shop@sha256:888888888888"},
			`Packages: not compared with <code class="digest" title="` + from + `">sha256:888888888888</code>: <span class="message">no SBOM for shop@sha256:888888888888</span>`},
		{"no changes", &ferryv1.PackageDiff{From: from}, `Packages: no changes since <code class="digest" title="` + from + `">`},
	} {
		rel := &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop-1"}, Spec: ferryv1.ReleaseSpec{Project: "shop", Image: testImage}}
		env := envView{Name: "prod", State: state{"Rolled out", toneOK, ""}, SupplyChain: supplyChainOf(&ferryv1.ReleaseEnvironmentStatus{SupplyChain: &ferryv1.SupplyChainResult{
			Digest: testImage, Result: ferryv1.SupplyChainPassed, Packages: tc.diff}})}
		var buf bytes.Buffer
		err := p.sets["release"].ExecuteTemplate(&buf, "layout", layout{Title: "release", Nav: "release", Session: &auth.Session{Identity: auth.Identity{User: "rita"}}, CSRF: "tok",
			Page: releaseData{Release: rel, State: state{"Rolled out", toneOK, ""}, Envs: []envView{env}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		out := buf.String()
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: the release page does not say %q", tc.name, tc.want)
		}
		if strings.Contains(out, "<details class=\"packages\"") || strings.Contains(out, "more</p>") {
			t.Errorf("%s: the release page shows a table of package changes", tc.name)
		}
	}
}
