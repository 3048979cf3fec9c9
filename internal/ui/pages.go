package ui

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/standing"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// maxRows bounds the rows of a list page.
const maxRows = 300

// formError is a refused decision, shown at its gate with the comment the person wrote.
type formError struct {
	key, message, comment string
}

func (fe *formError) apply(g *gateView) {
	if fe != nil && fe.key == g.key() {
		g.Error, g.Comment = fe.message, fe.comment
	}
}

func (s *Server) failed(w http.ResponseWriter, r *http.Request, sess *auth.Session, err error) {
	s.log.Error(err, "Cannot read what a page shows", "path", r.URL.Path)
	s.renderError(w, r, sess, http.StatusServiceUnavailable, "Cannot show this page", err.Error())
}

func (s *Server) waitingPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	s.showWaiting(w, r, sess, http.StatusOK, nil)
}

func (s *Server) showWaiting(w http.ResponseWriter, r *http.Request, sess *auth.Session, status int, fe *formError) {
	snap, err := s.load(r.Context(), sess.Identity, loadSet{releases: true, approvals: true, builds: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	data := snap.waiting(sess.Identity, metav1.Now())
	for i := range data.Mine {
		fe.apply(&data.Mine[i])
	}
	if fe != nil && !slices.ContainsFunc(data.Mine, func(g gateView) bool { return g.key() == fe.key }) {
		// The gate is no longer open to this person: say what the API server said anyway.
		s.renderError(w, r, sess, status, "Your decision was not recorded", fe.message)
		return
	}
	s.render(w, r, sess, status, "waiting", "Waiting for me", data)
}

// releaseRow is one Release in a list.
type releaseRow struct {
	Release *ferryv1.Release
	State   state
}

func (s *Server) releasesPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	snap, err := s.load(r.Context(), sess.Identity, loadSet{releases: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	slices.SortFunc(snap.releases, func(a, b ferryv1.Release) int {
		return cmp.Or(b.CreationTimestamp.Compare(a.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	var rows []releaseRow
	for i := range snap.releases[:min(len(snap.releases), maxRows)] {
		rel := &snap.releases[i]
		rows = append(rows, releaseRow{Release: rel, State: readyState(rel.Status.Conditions)})
	}
	s.render(w, r, sess, http.StatusOK, "releases", "Releases", rows)
}

// releaseData is the Release page.
type releaseData struct {
	Release *ferryv1.Release
	State   state
	Project *ferryv1.Project
	Build   *ferryv1.Build
	Envs    []envView
}

// envView is one environment of a Release's path.
type envView struct {
	Name      string
	State     state
	HasGate   bool
	Policy    string
	Gate      *ferryv1.GateStatus
	Open      []gateView
	Decisions []decisionView
	Clusters  []clusterView
	Start     *metav1.Time
	End       *metav1.Time
	Changes   *changesView
	// OpensAt is when the environment's deploy windows and freezes let the waiting Release start.
	OpensAt *metav1.Time
	// BreakGlass is the break-glass decision the rollout started with, if any.
	BreakGlass *ferryv1.BreakGlassRecord
	// Verification is the verification run after the rollout (or the last re-verification).
	Verification *verificationView
	// AutoPromotion says the gate let the Release through without a decision, when it did.
	AutoPromotion *ferryv1.AutoPromotionRecord
	// SoakEndsAt is when the digest's soak in the previous environment ends, while it soaks.
	SoakEndsAt *metav1.Time
	// SupplyChain is what the Environment's supply-chain gate found for the image (issue 17).
	SupplyChain *supplyChainView
}

// supplyChainView is the supply-chain gate's result in an environment: its badge and record.
type supplyChainView struct {
	Result *ferryv1.SupplyChainResult
	State  state
	// Packages is what changed in packages since the image running there; nil when nothing ran.
	Packages *packagesView
}

// packagesView is the manager's package diff: the counts in short, the changes it listed and how
// many it left out of the list.
type packagesView struct {
	Diff   *ferryv1.PackageDiff
	Counts string
	More   int
}

// packagesOf is the view of a recorded package diff; nil when there is none.
func packagesOf(d *ferryv1.PackageDiff) *packagesView {
	if d == nil {
		return nil
	}
	return &packagesView{Diff: d, Counts: d.Counts(), More: max(d.Total()-len(d.Changes), 0)}
}

// supplyChainOf is the view of the gate's recorded result; nil when the gate has not checked.
func supplyChainOf(es *ferryv1.ReleaseEnvironmentStatus) *supplyChainView {
	sc := es.SupplyChain
	if sc == nil {
		return nil
	}
	st := state{"Passed", toneOK, ""}
	if sc.Result != ferryv1.SupplyChainPassed {
		st = state{"Refused", toneBad, sc.Message}
	}
	return &supplyChainView{Result: sc, State: st, Packages: packagesOf(sc.Packages)}
}

// verificationView is an environment's verification: its state and each check on each cluster.
type verificationView struct {
	Status *ferryv1.VerificationStatus
	State  state
	Checks []checkView
}

// checkView is one check on one cluster.
type checkView struct {
	Status *ferryv1.VerificationCheckStatus
	State  state
}

// verificationOf is the view of an environment's verification; nil when there is none.
func verificationOf(es *ferryv1.ReleaseEnvironmentStatus) *verificationView {
	v := es.Verification
	if v == nil {
		return nil
	}
	vv := &verificationView{Status: v, State: state{"Verifying", toneBusy, ""}}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition); c != nil {
		vv.State.Message = c.Message
		switch c.Status {
		case metav1.ConditionTrue:
			vv.State.Label, vv.State.Tone = "Verified", toneOK
		case metav1.ConditionFalse:
			vv.State.Label, vv.State.Tone = "Verification failed", toneBad
		}
	}
	for i := range v.Checks {
		cs := &v.Checks[i]
		st := state{"Running", toneBusy, cs.Message}
		switch cs.Result {
		case ferryv1.VerificationPassed:
			st.Label, st.Tone = "Passed", toneOK
		case ferryv1.VerificationFailed:
			st.Label, st.Tone = "Failed", toneBad
		}
		vv.Checks = append(vv.Checks, checkView{Status: cs, State: st})
	}
	return vv
}

// decisionView is one Approval of a Release.
type decisionView struct {
	Approval *ferryv1.Approval
	Counted  bool
}

// clusterView is the rollout on one cluster.
type clusterView struct {
	Status *ferryv1.ClusterRolloutStatus
	State  state
}

func (s *Server) releasePage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	s.showRelease(w, r, sess, http.StatusOK, nil)
}

func (s *Server) showRelease(w http.ResponseWriter, r *http.Request, sess *auth.Session, status int, fe *formError) {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	snap, err := s.load(r.Context(), sess.Identity, loadSet{releases: true, approvals: true, projects: true, builds: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	rel := snap.release(ns, name)
	if rel == nil && fe != nil {
		s.renderError(w, r, sess, status, "Your decision was not recorded", fe.message)
		return
	}
	if rel == nil {
		s.renderError(w, r, sess, http.StatusNotFound, "No such Release", "Release "+ns+"/"+name+" does not exist, or you may not see Releases in "+ns+".")
		return
	}
	data := s.releaseView(r.Context(), snap, rel, sess.Identity, fe)
	s.render(w, r, sess, status, "release", "Release "+rel.Name, data)
}

func (s *Server) releaseView(ctx context.Context, snap *snapshot, rel *ferryv1.Release, id auth.Identity, fe *formError) releaseData {
	d := releaseData{Release: rel, State: readyState(rel.Status.Conditions), Project: snap.project(rel.Namespace, rel.Spec.Project)}
	for i := range snap.builds {
		if b := &snap.builds[i]; b.Namespace == rel.Namespace && b.Name == rel.Spec.Build {
			d.Build = b
		}
	}
	open := openGates(rel)
	now := metav1.Now()
	for _, name := range releasePath(rel, d.Project) {
		ev := envView{Name: name, State: state{"Pending", toneIdle, ""}}
		if env := snap.envs[name]; env != nil && env.Spec.Approval != nil {
			ev.HasGate = true
			ev.Policy = describePolicy(env.Spec.Approval)
		}
		var es *ferryv1.ReleaseEnvironmentStatus
		for i := range rel.Status.Environments {
			if rel.Status.Environments[i].Name == name {
				es = &rel.Status.Environments[i]
			}
		}
		counted := map[string]bool{}
		if es != nil {
			ev.State, ev.Gate, ev.Start, ev.End = envState(es), es.Gate, es.StartTime, es.CompletionTime
			ev.OpensAt, ev.BreakGlass = standing.Of(es).OpensAt, es.BreakGlass
			ev.Verification = verificationOf(es)
			ev.SupplyChain = supplyChainOf(es)
			ev.AutoPromotion = es.AutoPromotion
			if c := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); c != nil && c.Reason == ferryv1.SoakingReason {
				ev.SoakEndsAt = es.SoakEndsAt
			}
			if es.Gate != nil {
				for _, rec := range es.Gate.Approvals {
					counted[rec.Approval] = true
				}
			}
			for i := range es.Clusters {
				ev.Clusters = append(ev.Clusters, clusterView{Status: &es.Clusters[i], State: clusterState(&es.Clusters[i])})
			}
		}
		for _, g := range open {
			if g.Environment == name {
				snap.decorate(&g, id, now)
				fe.apply(&g)
				ev.Open = append(ev.Open, g)
			}
		}
		for i := range snap.approvals {
			a := &snap.approvals[i]
			if a.Namespace == rel.Namespace && a.Spec.Release == rel.Name && a.Spec.Environment == name {
				ev.Decisions = append(ev.Decisions, decisionView{Approval: a, Counted: counted[a.Name]})
			}
		}
		slices.SortFunc(ev.Decisions, func(a, b decisionView) int {
			return cmp.Or(a.Approval.CreationTimestamp.Compare(b.Approval.CreationTimestamp.Time), cmp.Compare(a.Approval.Name, b.Approval.Name))
		})
		ev.Changes = s.changes.find(ctx, rel, d.Project, es, name)
		d.Envs = append(d.Envs, ev)
	}
	return d
}

// releasePath is the environments a Release goes through: its status entries, in path order, or
// the Project's path (narrowed to spec.environments) before the controller wrote any.
func releasePath(rel *ferryv1.Release, p *ferryv1.Project) []string {
	var path []string
	for _, es := range rel.Status.Environments {
		path = append(path, es.Name)
	}
	if len(path) > 0 || p == nil {
		return path
	}
	for _, e := range p.Spec.Promotion.Environments {
		if len(rel.Spec.Environments) == 0 || slices.Contains(rel.Spec.Environments, e) {
			path = append(path, e)
		}
	}
	return path
}

// matrixData is the Environments page: projects × environments.
type matrixData struct {
	Envs []string
	Rows []matrixRow
	// Windows is where each Environment's deploy windows and freezes stand now, for people who
	// may see Environments.
	Windows []envWindows
}

// envWindows is one Environment's deploy windows and freezes now, linking to its week.
type envWindows struct {
	Env string
	Now state
}

type matrixRow struct {
	Project *ferryv1.Project
	Cells   []matrixCell
}

// matrixCell is what one environment runs for one project, and what is happening to it.
type matrixCell struct {
	Env     string
	OnPath  bool
	Running *ferryv1.ProjectEnvironmentStatus
	// By is who asked for the Release that deployed it; Approvers approved its gate.
	By        string
	Approvers []string
	Health    state
	// Rolling is a Release rolling out there now.
	Rolling *ferryv1.Release
	Waiting *ferryv1.Release
	Batch   *ferryv1.ClusterRolloutStatus
}

func (s *Server) environmentsPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	snap, err := s.load(r.Context(), sess.Identity, loadSet{releases: true, projects: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	d := snap.matrix()
	if s.access.canList(r.Context(), sess.Identity, "environments", "") {
		var freezes ferryv1.FreezeList
		if err := s.reader.List(r.Context(), &freezes); err != nil {
			s.failed(w, r, sess, fmt.Errorf("failed to list Freezes: %w", err))
			return
		}
		d.Windows = windowsNow(snap.envs, freezes.Items, time.Now())
	}
	s.render(w, r, sess, http.StatusOK, "environments", "Environments", d)
}

func (snap *snapshot) matrix() matrixData {
	var d matrixData
	seen := map[string]bool{}
	slices.SortFunc(snap.projects, func(a, b ferryv1.Project) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, p := range snap.projects {
		for _, e := range p.Spec.Promotion.Environments {
			if !seen[e] {
				seen[e] = true
				d.Envs = append(d.Envs, e)
			}
		}
	}
	for i := range snap.projects {
		p := &snap.projects[i]
		row := matrixRow{Project: p}
		for _, env := range d.Envs {
			cell := matrixCell{Env: env, OnPath: slices.Contains(p.Spec.Promotion.Environments, env), Health: state{"Nothing deployed", toneIdle, ""}}
			for j := range p.Status.Environments {
				if pe := &p.Status.Environments[j]; pe.Name == env && pe.Image != "" {
					cell.Running = pe
					cell.Health = state{"Deployed", toneOK, ""}
				}
			}
			snap.fillCell(p, &cell)
			row.Cells = append(row.Cells, cell)
		}
		d.Rows = append(d.Rows, row)
	}
	return d
}

// fillCell adds who deployed what runs, how it is, and any Release on its way there.
func (snap *snapshot) fillCell(p *ferryv1.Project, cell *matrixCell) {
	for i := range snap.releases {
		rel := &snap.releases[i]
		if rel.Namespace != p.Namespace || rel.Spec.Project != p.Name {
			continue
		}
		for j := range rel.Status.Environments {
			es := &rel.Status.Environments[j]
			if es.Name != cell.Env {
				continue
			}
			if cell.Running != nil && rel.Name == cell.Running.Release {
				cell.By = rel.Spec.RequestedBy
				if es.Gate != nil {
					for _, rec := range es.Gate.Approvals {
						if rec.Decision == ferryv1.DecisionApprove {
							cell.Approvers = append(cell.Approvers, rec.User)
						}
					}
				}
				if st := envState(es); st.Tone != toneOK {
					cell.Health = st
				} else {
					cell.Health = state{"Healthy", toneOK, st.Message}
				}
			}
			if rel.Status.CompletionTime != nil || es.CompletionTime != nil {
				continue
			}
			rolled := meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition)
			approved := meta.FindStatusCondition(es.Conditions, ferryv1.ApprovedCondition)
			switch {
			case rolled != nil && rolled.Status == metav1.ConditionUnknown:
				cell.Rolling = rel
				if len(es.Clusters) > 0 {
					cell.Batch = &es.Clusters[0]
				}
			case approved != nil && approved.Status == metav1.ConditionUnknown:
				cell.Waiting = rel
			}
		}
	}
}

// buildRow is one Build in a list.
type buildRow struct {
	Build *ferryv1.Build
	State state
}

type buildsData struct {
	Project string
	Rows    []buildRow
	More    int
}

func (s *Server) buildsPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	snap, err := s.load(r.Context(), sess.Identity, loadSet{builds: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	project := r.URL.Query().Get("project")
	d := buildsData{Project: project}
	builds := slices.DeleteFunc(snap.builds, func(b ferryv1.Build) bool {
		return project != "" && b.Namespace+"/"+b.Spec.Project != project
	})
	slices.SortFunc(builds, func(a, b ferryv1.Build) int {
		return cmp.Or(b.CreationTimestamp.Compare(a.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	if len(builds) > maxRows {
		d.More, builds = len(builds)-maxRows, builds[:maxRows]
	}
	for i := range builds {
		d.Rows = append(d.Rows, buildRow{Build: &builds[i], State: readyState(builds[i].Status.Conditions)})
	}
	s.render(w, r, sess, http.StatusOK, "builds", "Builds", d)
}

type buildData struct {
	Build   *ferryv1.Build
	State   state
	Project *ferryv1.Project
	Steps   []stepView
	Whole   *stepLog
	LogNote string
}

// stepView is a step with its log.
type stepView struct {
	Step ferryv1.StepStatus
	Log  *stepLog
}

func (s *Server) findBuild(w http.ResponseWriter, r *http.Request, sess *auth.Session) *ferryv1.Build {
	ns, name := r.PathValue("namespace"), r.PathValue("name")
	if !s.access.canList(r.Context(), sess.Identity, "builds", ns) {
		s.renderError(w, r, sess, http.StatusNotFound, "No such Build", "Build "+ns+"/"+name+" does not exist, or you may not see Builds in "+ns+".")
		return nil
	}
	b := &ferryv1.Build{}
	if err := s.reader.Get(r.Context(), namespacedName(ns, name), b); err != nil {
		s.renderError(w, r, sess, http.StatusNotFound, "No such Build", "Build "+ns+"/"+name+" does not exist, or you may not see Builds in "+ns+".")
		return nil
	}
	return b
}

func (s *Server) buildPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	b := s.findBuild(w, r, sess)
	if b == nil {
		return
	}
	d := buildData{Build: b, State: readyState(b.Status.Conditions)}
	p := &ferryv1.Project{}
	if err := s.reader.Get(r.Context(), namespacedName(b.Namespace, b.Spec.Project), p); err == nil {
		d.Project = p
	}
	logs, whole, note := s.buildLogs(r.Context(), sess, b)
	d.Whole, d.LogNote = whole, note
	for i, st := range b.Status.Steps {
		sv := stepView{Step: st}
		if i < len(logs) && logs[i].Step == st.Name {
			sv.Log = &logs[i]
		}
		d.Steps = append(d.Steps, sv)
	}
	s.render(w, r, sess, http.StatusOK, "build", "Build "+b.Name, d)
}

// buildLogs are a Build's logs for the signed-in person: theirs to read where RBAC lets them read
// the logs of pods (what `kubectl logs` of the Build's Tekton pod needs), whichever executor ran
// the Build. Who may list Builds may not always read what their steps printed.
func (s *Server) buildLogs(ctx context.Context, sess *auth.Session, b *ferryv1.Build) ([]stepLog, *stepLog, string) {
	if !s.access.canReadLogs(ctx, sess.Identity, b.Namespace) {
		return nil, nil, noLogsFor(sess, b.Namespace)
	}
	return s.logs.read(ctx, b)
}

// noLogsFor says why a person sees no logs.
func noLogsFor(sess *auth.Session, namespace string) string {
	return fmt.Sprintf("You (%s) may not read the logs of Builds in %s: RBAC does not let you read the logs of pods there (get pods/log).", sess.User, namespace)
}

// buildLog is one step's log as plain text, for reading in full or saving.
func (s *Server) buildLog(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	b := s.findBuild(w, r, sess)
	if b == nil {
		return
	}
	step := r.URL.Query().Get("step")
	if !s.access.canReadLogs(r.Context(), sess.Identity, b.Namespace) {
		http.Error(w, noLogsFor(sess, b.Namespace), http.StatusForbidden)
		return
	}
	logs, whole, note := s.logs.read(r.Context(), b)
	var text string
	switch {
	case whole != nil && step == "":
		text = whole.Text
	default:
		i := slices.IndexFunc(logs, func(l stepLog) bool { return l.Step == step })
		if i < 0 {
			http.Error(w, cmp.Or(note, "no such step"), http.StatusNotFound)
			return
		}
		text = cmp.Or(logs[i].Text, logs[i].Note)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte(text))
}

// auditData is the Audit page: every decision, newest first.
type auditData struct {
	Project, Environment, Person   string
	Projects, Environments, People []string
	Rows                           []auditRow
	Total                          int
	More                           int
}

type auditRow struct {
	Approval *ferryv1.Approval
	Project  string
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	snap, err := s.load(r.Context(), sess.Identity, loadSet{approvals: true, releases: true})
	if err != nil {
		s.failed(w, r, sess, err)
		return
	}
	q := r.URL.Query()
	d := auditData{Project: q.Get("project"), Environment: q.Get("environment"), Person: q.Get("person")}
	projects, envs, people := map[string]bool{}, map[string]bool{}, map[string]bool{}
	var rows []auditRow
	for i := range snap.approvals {
		a := &snap.approvals[i]
		project := a.Labels[ferryv1.ProjectLabel]
		if rel := snap.release(a.Namespace, a.Spec.Release); rel != nil {
			project = rel.Spec.Project
		}
		qualified := a.Namespace + "/" + project
		person := ""
		if a.Spec.Approver != nil {
			person = a.Spec.Approver.Username
		}
		projects[qualified], envs[a.Spec.Environment], people[person] = true, true, true
		if (d.Project != "" && d.Project != qualified) || (d.Environment != "" && d.Environment != a.Spec.Environment) || (d.Person != "" && d.Person != person) {
			continue
		}
		rows = append(rows, auditRow{Approval: a, Project: project})
	}
	slices.SortFunc(rows, func(a, b auditRow) int {
		return cmp.Or(b.Approval.CreationTimestamp.Compare(a.Approval.CreationTimestamp.Time), cmp.Compare(a.Approval.Name, b.Approval.Name))
	})
	d.Total = len(rows)
	if len(rows) > maxRows {
		d.More, rows = len(rows)-maxRows, rows[:maxRows]
	}
	d.Rows = rows
	d.Projects, d.Environments, d.People = sortedKeys(projects), sortedKeys(envs), sortedKeys(people)
	s.render(w, r, sess, http.StatusOK, "audit", "Audit", d)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
