package ui

import (
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/window"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// sampleEnvironment has office hours in Berlin, a deny window on Friday afternoons and a freeze
// of its own whose reason needs escaping.
func sampleEnvironment() *ferryv1.Environment {
	start := metav1.NewTime(time.Date(2026, 12, 9, 12, 0, 0, 0, time.UTC))
	end := metav1.NewTime(time.Date(2026, 12, 9, 15, 0, 0, 0, time.UTC))
	return &ferryv1.Environment{
		ObjectMeta: metav1.ObjectMeta{Name: "prod", Labels: map[string]string{"tier": "prod"}},
		Spec: ferryv1.EnvironmentSpec{
			Windows: []ferryv1.DeployWindow{
				{Name: "office", Kind: ferryv1.AllowWindow, Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, TimeZone: "Europe/Berlin"},
				{Name: "friday", Kind: ferryv1.DenyWindow, Schedule: "0 14 * * 5", Duration: metav1.Duration{Duration: 3 * time.Hour}, TimeZone: "Europe/Berlin"},
			},
			Freezes: []ferryv1.EnvironmentFreeze{{Name: "audit", Start: start, End: &end, Reason: "audit <b>"}},
		},
	}
}

// sampleFreeze is a cluster-wide Freeze of every prod Environment, for Releases in some
// namespaces, from Thursday 10 December 2026 06:00 UTC to the Tuesday after.
func sampleFreeze() ferryv1.Freeze {
	end := metav1.NewTime(time.Date(2026, 12, 15, 8, 0, 0, 0, time.UTC))
	return ferryv1.Freeze{
		ObjectMeta: metav1.ObjectMeta{Name: "inc-42"},
		Spec: ferryv1.FreezeSpec{
			EnvironmentSelector: metav1.LabelSelector{MatchLabels: map[string]string{"tier": "prod"}},
			NamespaceSelector:   &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}},
			Start:               metav1.NewTime(time.Date(2026, 12, 10, 6, 0, 0, 0, time.UTC)),
			End:                 &end,
			Reason:              "incident INC-42",
		},
	}
}

// blocksOf are the titles of a week's blocks of a class.
func blocksOf(d weekData, class string) []string {
	var out []string
	for _, day := range d.Days {
		for _, b := range day.Blocks {
			if b.Class == class {
				out = append(out, day.Label+": "+b.Title)
			}
		}
	}
	return out
}

// TestWeekView: the week page's blocks, their tooltips and the state now, in the zone asked for.
func TestWeekView(t *testing.T) {
	berlin, err := window.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	other := sampleFreeze()
	other.Name, other.Spec.EnvironmentSelector = "staging-only", metav1.LabelSelector{MatchLabels: map[string]string{"tier": "staging"}}
	now := mustTime(t, "2026-12-10T09:30:00Z") // Thursday 10:30 in Berlin, inside inc-42 (from 07:00).
	d := weekOf(sampleEnvironment(), []ferryv1.Freeze{sampleFreeze(), other}, berlin, mustTime(t, "2026-12-07T12:00:00Z"), now)

	if d.Week != "2026-12-07" || d.Prev != "2026-11-30" || d.Next != "2026-12-14" || d.Today != "2026-12-10" || d.Query != "Europe/Berlin" {
		t.Errorf("navigation: week %s, previous %s, next %s, today %s, tz %q", d.Week, d.Prev, d.Next, d.Today, d.Query)
	}
	if d.Range != "Mon 7 Dec – Sun 13 Dec 2026" || len(d.Days) != 7 {
		t.Errorf("range %q with %d days", d.Range, len(d.Days))
	}
	frozen := blocksOf(d, "frozen")
	want := []string{
		"Wed 9 Dec: frozen: the Environment's freeze audit, audit <b>, Wed 9 Dec 13:00–16:00 Europe/Berlin",
		"Thu 10 Dec: frozen: cluster-wide Freeze inc-42 (only Releases in namespaces team=shop), incident INC-42, Thu 10 Dec 07:00 – Tue 15 Dec 09:00 Europe/Berlin",
		"Fri 11 Dec: frozen: cluster-wide Freeze inc-42 (only Releases in namespaces team=shop), incident INC-42, Thu 10 Dec 07:00 – Tue 15 Dec 09:00 Europe/Berlin",
		"Sat 12 Dec: frozen: cluster-wide Freeze inc-42 (only Releases in namespaces team=shop), incident INC-42, Thu 10 Dec 07:00 – Tue 15 Dec 09:00 Europe/Berlin",
		"Sun 13 Dec: frozen: cluster-wide Freeze inc-42 (only Releases in namespaces team=shop), incident INC-42, Thu 10 Dec 07:00 – Tue 15 Dec 09:00 Europe/Berlin",
	}
	if !slices.Equal(frozen, want) {
		t.Errorf("frozen blocks:\n%s\nwant\n%s", strings.Join(frozen, "\n"), strings.Join(want, "\n"))
	}
	if denied := blocksOf(d, "denied"); !slices.Equal(denied, []string{"Fri 11 Dec: deny: window friday Fri 11 Dec 14:00–17:00 Europe/Berlin (0 14 * * 5 in Europe/Berlin, for 3h0m0s)"}) {
		t.Errorf("denied blocks: %q", denied)
	}
	if allowed := blocksOf(d, "allowed"); len(allowed) != 5 || allowed[0] != "Mon 7 Dec: allow: window office Mon 7 Dec 09:00–17:00 Europe/Berlin (0 9 * * 1-5 in Europe/Berlin, for 8h0m0s)" {
		t.Errorf("allowed blocks: %q", allowed)
	}
	// Monday: closed, open 09:00–17:00, closed; each block exactly as long as it lasts.
	mon := d.Days[0]
	if mon.Width != 1440 || mon.Summary != "open 09:00–17:00" || mon.Now != nil || len(mon.Ticks) != 23 {
		t.Errorf("Monday: width %v, summary %q, now %v, %d ticks", mon.Width, mon.Summary, mon.Now, len(mon.Ticks))
	}
	if b := mon.Blocks[1]; b.Class != "open" || b.X != 9*60 || b.W != 8*60 || b.Y != resultLane {
		t.Errorf("Monday's open block: %+v", b)
	}
	if thu := d.Days[3]; thu.Now == nil || *thu.Now != 10*60+30 || thu.Summary != "closed all day" {
		t.Errorf("Thursday: now at %v, summary %q", thu.Now, thu.Summary)
	}
	if d.Days[4].Summary != "closed all day" {
		t.Errorf("Friday, frozen: %q", d.Days[4].Summary)
	}
	if d.Now.Label != "Frozen" || d.Now.Message != "frozen: incident INC-42 until Tue 15 Dec 09:00 Europe/Berlin, opens Tue 15 Dec 09:00 Europe/Berlin" {
		t.Errorf("now: %+v", d.Now)
	}

	// A week across Berlin's fall-back: Sunday 25 October 2026 is 25 hours long.
	fall := weekOf(&ferryv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "dev"}}, nil, berlin, mustTime(t, "2026-10-19T12:00:00Z"), now)
	if sun := fall.Days[6]; sun.Width != 25*60 || sun.Note != "25 hours: the clocks change" || sun.Summary != "open all day" || len(sun.Ticks) != 24 {
		t.Errorf("the fall-back Sunday: width %v, note %q, summary %q, %d ticks", sun.Width, sun.Note, sun.Summary, len(sun.Ticks))
	}
	if fall.Now.Message != "open now; nothing closes it within five years" {
		t.Errorf("an Environment with nothing: %q", fall.Now.Message)
	}
}

// TestWeekNowStates: what the page says about now when the Environment waits for a window, is
// open, is locked, and when a window cannot be read.
func TestWeekNowStates(t *testing.T) {
	env := sampleEnvironment()
	env.Spec.Freezes = nil
	for _, tc := range []struct{ now, label, message string }{
		{"2026-12-07T07:00:00Z", "Waiting for a window", "waiting for a window, opens Mon 7 Dec 08:00 UTC"},
		{"2026-12-07T10:00:00Z", "Open now", "open now, closes Mon 7 Dec 16:00 UTC"},
		{"2026-12-11T13:30:00Z", "Closed", "closed by deny window friday until Fri 11 Dec 16:00 UTC, opens Mon 14 Dec 08:00 UTC"},
	} {
		if got := weekOf(env, nil, time.UTC, mustTime(t, tc.now), mustTime(t, tc.now)).Now; got.Label != tc.label || got.Message != tc.message {
			t.Errorf("at %s: %s %q, want %s %q", tc.now, got.Label, got.Message, tc.label, tc.message)
		}
	}
	env.Spec.Locked, env.Spec.LockReason = true, "migration"
	if got := weekOf(env, nil, time.UTC, time.Now(), time.Now()); got.Now.Message != "locked: migration, until it is unlocked" || len(blocksOf(got, "locked")) != 7 {
		t.Errorf("locked: %q, %d locked blocks", got.Now.Message, len(blocksOf(got, "locked")))
	}
	env.Spec.Windows[0].TimeZone = "Mars/Olympus"
	if got := weekOf(env, nil, time.UTC, time.Now(), time.Now()); !strings.Contains(got.Problem, `spec.windows[0] (office) of environment prod is invalid: timeZone: unknown time zone "Mars/Olympus"`) || got.Days != nil {
		t.Errorf("a window that cannot be read: %q", got.Problem)
	}
}

// TestWeekStart: the week parameter is a date in the zone asked for, not far from today.
func TestWeekStart(t *testing.T) {
	berlin, err := window.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := mustTime(t, "2026-12-06T23:30:00Z") // Monday 00:30 in Berlin.
	if got, err := weekStart("", berlin, now); err != nil || got.Format(dateLayout) != "2026-12-07" {
		t.Errorf("no week: %s, %v", got, err)
	}
	if got, err := weekStart("2026-03-29", berlin, now); err != nil || !got.Equal(mustTime(t, "2026-03-28T23:00:00Z")) {
		t.Errorf("a date: %s, %v", got, err)
	}
	for _, bad := range []string{"2026-13-01", "next", "2026-12-07T00:00:00Z", "../../etc", "9999-01-01", "1900-01-01"} {
		if _, err := weekStart(bad, berlin, now); err == nil || !strings.Contains(err.Error(), "\""+bad+"\"") {
			t.Errorf("week %q: %v", bad, err)
		}
	}
}
