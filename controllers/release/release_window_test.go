package release

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestDeployWindowUnit: before a rollout starts, the environment's deploy windows, freezes, lock
// and the cluster-wide Freezes that select it decide, at the reconciler's clock (Monday
// 2026-11-23 10:00 UTC): a closed environment waits with the reason, the message naming what
// keeps it closed, windowOpensAt, and a requeue at the opening; a break-glass Approval from a
// person the policy names lets this Release through and is recorded.
func TestDeployWindowUnit(t *testing.T) {
	window := func(name string, kind ferryv1.WindowKind, schedule string, d time.Duration, zone string) ferryv1.DeployWindow {
		return ferryv1.DeployWindow{Name: name, Kind: kind, Schedule: schedule, Duration: metav1.Duration{Duration: d}, TimeZone: zone}
	}
	withWindows := func(ws ...ferryv1.DeployWindow) func(*ferryv1.Environment) {
		return func(e *ferryv1.Environment) { e.Spec.Windows = ws }
	}
	freeze := func(name string, sel map[string]string, ns map[string]string, end *metav1.Time) *ferryv1.Freeze {
		f := &ferryv1.Freeze{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ferryv1.FreezeSpec{
			Start: metav1.NewTime(now.Add(-time.Hour)), End: end, Reason: "database incident",
			EnvironmentSelector: metav1.LabelSelector{MatchLabels: sel}}}
		if ns != nil {
			f.Spec.NamespaceSelector = &metav1.LabelSelector{MatchLabels: ns}
		}
		return f
	}
	namespace := func(team string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: unitNS, Labels: map[string]string{"team": team}}}
	}
	policy := func(e *ferryv1.Environment) {
		e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "quarter-end", Start: metav1.NewTime(now.Add(-time.Hour)), Reason: "books close"}}
		e.Spec.BreakGlass = &ferryv1.BreakGlassPolicy{Groups: []string{"sre"}}
	}
	for _, tc := range []struct {
		name      string
		env       func(*ferryv1.Environment)
		objs      []client.Object
		want      string
		ready     string
		message   []string
		opensAt   string
		breakGlas string
	}{
		{name: "inside an allow window", env: withWindows(window("office", ferryv1.AllowWindow, "0 9 * * 1-5", 8*time.Hour, "Europe/Berlin")),
			want: "proceed", ready: "Unknown/RollingOut"},
		{name: "outside the allow windows", env: withWindows(window("night", ferryv1.AllowWindow, "0 22 * * *", 4*time.Hour, "")),
			want: "wait 12h0m0s", ready: "Unknown/WaitingForWindow", opensAt: "2026-11-23T22:00:00Z",
			message: []string{"environment prod is closed to rollouts: outside the allow windows (night)", "opens at 2026-11-23T22:00:00Z"}},
		{name: "inside a deny window", env: withWindows(window("monday-morning", ferryv1.DenyWindow, "0 9 * * 1", 2*time.Hour, "UTC")),
			want: "wait 1h0m0s", ready: "Unknown/WaitingForWindow", opensAt: "2026-11-23T11:00:00Z",
			message: []string{`deny window "monday-morning" (0 9 * * 1 UTC, 2h0m0s) is open until 2026-11-23T11:00:00Z`}},
		{name: "a deny window does not block outside its range", env: withWindows(window("monday-noon", ferryv1.DenyWindow, "0 12 * * 1", 2*time.Hour, "UTC")),
			want: "proceed", ready: "Unknown/RollingOut"},
		{name: "an environment freeze with an end", env: func(e *ferryv1.Environment) {
			e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "quarter-end", Start: metav1.NewTime(now.Add(-time.Hour)), End: ptrTime(now.Add(30 * time.Minute)), Reason: "books close"}}
		}, want: "wait 30m0s", ready: "Unknown/Frozen", opensAt: "2026-11-23T10:30:00Z", message: []string{"freeze quarter-end (books close) until 2026-11-23T10:30:00Z"}},
		{name: "a Freeze selecting every environment", objs: []client.Object{freeze("incident-7", nil, nil, nil)},
			want: "wait 0s", ready: "Unknown/Frozen", message: []string{"Freeze incident-7 (database incident) has no end"}},
		{name: "a Freeze selecting other environments", objs: []client.Object{freeze("incident-7", map[string]string{"tier": "payments"}, nil, nil)},
			want: "proceed", ready: "Unknown/RollingOut"},
		{name: "a Freeze selecting this environment by label", env: func(e *ferryv1.Environment) { e.Labels = map[string]string{"tier": "payments"} },
			objs: []client.Object{freeze("incident-7", map[string]string{"tier": "payments"}, nil, nil)}, want: "wait 0s", ready: "Unknown/Frozen"},
		{name: "a Freeze of another team's namespaces", objs: []client.Object{namespace("shop"), freeze("incident-7", nil, map[string]string{"team": "payments"}, nil)},
			want: "proceed", ready: "Unknown/RollingOut"},
		{name: "a Freeze of this team's namespaces", objs: []client.Object{namespace("payments"), freeze("incident-7", nil, map[string]string{"team": "payments"}, nil)},
			want: "wait 0s", ready: "Unknown/Frozen"},
		{name: "a Freeze that ended", objs: []client.Object{freeze("incident-7", nil, nil, ptrTime(now.Add(-time.Minute)))},
			want: "proceed", ready: "Unknown/RollingOut"},
		{name: "the lock is a freeze, worded as it was", env: func(e *ferryv1.Environment) {
			e.Spec.Locked, e.Spec.LockReason = true, "freeze"
			e.Spec.Windows = []ferryv1.DeployWindow{window("monday-morning", ferryv1.DenyWindow, "0 9 * * 1", 2*time.Hour, "UTC")}
		}, want: "wait 0s", ready: "Unknown/EnvironmentLocked", message: []string{"environment prod is locked: freeze; deny window \"monday-morning\""}},
		{name: "a window that got past admission keeps the environment closed", env: withWindows(window("bad", ferryv1.AllowWindow, "@daily", time.Hour, "")),
			want: "wait 0s", ready: "Unknown/WaitingForWindow", message: []string{"spec.windows[0] (bad) of environment prod is invalid: schedule:"}},
		{name: "break-glass by a person the policy names", env: policy, objs: []client.Object{breakGlass("sam", "prod", "sre")},
			want: "proceed", ready: "Unknown/RollingOut", breakGlas: "sam"},
		{name: "break-glass by a person the policy does not name", env: policy, objs: []client.Object{breakGlass("mallory", "prod", "developers")},
			want: "wait 0s", ready: "Unknown/Frozen"},
		{name: "break-glass for another environment", env: policy, objs: []client.Object{breakGlass("sam", "staging", "sre")},
			want: "wait 0s", ready: "Unknown/Frozen"},
		{name: "break-glass by an approver when there is no break-glass policy", env: func(e *ferryv1.Environment) {
			e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "quarter-end", Start: metav1.NewTime(now.Add(-time.Hour)), Reason: "books close"}}
			e.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"bob"}, MinApprovals: 1}
		}, objs: []client.Object{breakGlass("bob", "prod"), approvalBy("bob", ferryv1.DecisionApprove)}, want: "proceed", ready: "Unknown/RollingOut", breakGlas: "bob"},
		{name: "break-glass is not a vote on the gate", env: func(e *ferryv1.Environment) {
			e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "quarter-end", Start: metav1.NewTime(now.Add(-time.Hour)), Reason: "books close"}}
			e.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"bob"}, MinApprovals: 1}
		}, objs: []client.Object{breakGlass("bob", "prod")}, want: "wait 0s", ready: "Unknown/WaitingForApproval", breakGlas: "bob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := unitReconciler(t, tc.objs...)
			rel := unitRelease("r1", 0)
			es := &rel.Status.Environments[0]
			p := unitPlan()
			defer p.releaseLocks()
			st, err := r.beforeRollout(context.Background(), rel, p, unitEnv(tc.env), es, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := kindOf(st); got != tc.want {
				t.Errorf("step %s, want %s", got, tc.want)
			}
			ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
			if got := cond(es.Conditions, ferryv1.ReadyCondition); got != tc.ready {
				t.Errorf("Ready %s (%s), want %s", got, ready.Message, tc.ready)
			}
			for _, m := range tc.message {
				if !strings.Contains(ready.Message, m) {
					t.Errorf("Ready message %q does not say %q", ready.Message, m)
				}
			}
			got := ""
			if es.WindowOpensAt != nil {
				got = es.WindowOpensAt.UTC().Format(time.RFC3339)
			}
			if got != tc.opensAt {
				t.Errorf("windowOpensAt %q, want %q", got, tc.opensAt)
			}
			if reason := ready.Reason; reason == ferryv1.WaitingForWindowReason || reason == ferryv1.FrozenReason || reason == ferryv1.EnvironmentLockedReason {
				// The wait is an event once, not at every look.
				select {
				case e := <-r.Recorder.(*events.FakeRecorder).Events:
					if !strings.Contains(e, reason) || !strings.Contains(e, ready.Message) {
						t.Errorf("event %q, want %s: %s", e, reason, ready.Message)
					}
				default:
					t.Errorf("no %s event", reason)
				}
				if _, err := r.beforeRollout(context.Background(), rel, p, unitEnv(tc.env), es, now); err != nil {
					t.Fatal(err)
				}
				select {
				case e := <-r.Recorder.(*events.FakeRecorder).Events:
					t.Errorf("a second look emitted %q", e)
				default:
				}
			}
			switch {
			case tc.breakGlas == "" && es.BreakGlass != nil:
				t.Errorf("break-glass recorded: %+v", es.BreakGlass)
			case tc.breakGlas != "" && (es.BreakGlass == nil || es.BreakGlass.User != tc.breakGlas || es.BreakGlass.Reason != "hotfix for the outage" || !strings.Contains(es.BreakGlass.Overrode, "quarter-end")):
				t.Errorf("break-glass record %+v, want %s's", es.BreakGlass, tc.breakGlas)
			case tc.breakGlas != "":
				if e := nextEvent(r); !strings.Contains(e, "BreakGlass") || !strings.Contains(e, tc.breakGlas+" broke glass (hotfix for the outage)") {
					t.Errorf("event %q", e)
				}
			}
		})
	}
}

// nextEvent is the next event the reconciler recorded, "" when there is none.
func nextEvent(r *Reconciler) string {
	select {
	case e := <-r.Recorder.(*events.FakeRecorder).Events:
		return e
	default:
		return ""
	}
}

// TestWindowWaitMetricsUnit: an environment that waited for a freeze records how long when the
// freeze ends (by "opened"), and a break-glass is counted and records the wait it cut short.
func TestWindowWaitMetricsUnit(t *testing.T) {
	for _, tc := range []struct {
		name, by   string
		breakGlass bool
	}{{name: "the freeze ends", by: "opened"}, {name: "break-glass", by: "break_glass", breakGlass: true}} {
		t.Run(tc.name, func(t *testing.T) {
			env := "metrics-" + tc.by
			end := metav1.NewTime(now.Add(2 * time.Hour))
			frozen := func(e *ferryv1.Environment) {
				e.Name = env
				e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "incident", Start: metav1.NewTime(now.Add(-time.Hour)), End: &end, Reason: "database incident"}}
				e.Spec.BreakGlass = &ferryv1.BreakGlassPolicy{Users: []string{"bob"}}
			}
			r := unitReconciler(t)
			rel := unitRelease("r1", 0)
			es := &rel.Status.Environments[0]
			waitsBefore := samples(t, windowWait.WithLabelValues(env, tc.by).(prometheus.Metric))
			if _, err := r.deployWindow(context.Background(), rel, unitEnv(frozen), es, now); err != nil {
				t.Fatal(err)
			}
			if got := cond(es.Conditions, ferryv1.ReadyCondition); got != "Unknown/"+ferryv1.FrozenReason {
				t.Fatalf("Ready %s, want it frozen", got)
			}
			later := metav1.NewTime(now.Add(3 * time.Hour))
			if tc.breakGlass {
				later = metav1.NewTime(now.Add(30 * time.Minute))
				if err := r.Create(context.Background(), breakGlass("bob", env)); err != nil {
					t.Fatal(err)
				}
			}
			breakGlassBefore := samples(t, breakGlassTotal.WithLabelValues(env))
			if st, err := r.deployWindow(context.Background(), rel, unitEnv(frozen), es, later); err != nil || kindOf(st) != "proceed" {
				t.Fatalf("after: %s, %v", kindOf(st), err)
			}
			if got := samples(t, windowWait.WithLabelValues(env, tc.by).(prometheus.Metric)); got != waitsBefore+1 {
				t.Errorf("%v waits recorded by %s, want %v", got, tc.by, waitsBefore+1)
			}
			if got, want := samples(t, breakGlassTotal.WithLabelValues(env)), breakGlassBefore+map[bool]float64{true: 1}[tc.breakGlass]; got != want {
				t.Errorf("break-glass counted %v, want %v", got, want)
			}
		})
	}
}

// samples is a counter's value, or a histogram's number of observations.
func samples(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var out dto.Metric
	if err := m.Write(&out); err != nil {
		t.Fatal(err)
	}
	if h := out.GetHistogram(); h != nil {
		return float64(h.GetSampleCount())
	}
	return out.GetCounter().GetValue()
}

// breakGlass is a break-glass Approval by user, in groups, for env.
func breakGlass(user, env string, groups ...string) *ferryv1.Approval {
	a := approvalBy(user, ferryv1.DecisionApprove)
	a.Name += "-break-glass-" + env
	a.Spec.Environment, a.Spec.BreakGlass, a.Spec.Comment = env, true, "hotfix for the outage"
	a.Spec.Approver.Groups = groups
	return a
}
