package window

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func mustZone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// span is an interval as "kind start–end" in UTC, for comparing layouts.
func span(in Interval) string {
	return fmt.Sprintf("%s %s–%s", in.Kind, in.Start.UTC().Format(time.RFC3339), in.End.UTC().Format(time.RFC3339))
}

func spans(ins []Interval) []string {
	out := []string{}
	for _, in := range ins {
		out = append(out, span(in))
	}
	return out
}

func checkSpans(t *testing.T, what string, got []Interval, want ...string) {
	t.Helper()
	if want == nil {
		want = []string{}
	}
	if g := spans(got); !slices.Equal(g, want) {
		t.Errorf("%s:\n got  %s\n want %s", what, strings.Join(g, "\n      "), strings.Join(want, "\n      "))
	}
}

// checkAgreesWithEvaluate fails where the layout's result says otherwise than Evaluate: at every
// cut, just before it, and every quarter of an hour of the week.
func checkAgreesWithEvaluate(t *testing.T, wk Week, windows []Window, freezes []Freeze) {
	t.Helper()
	var probes []time.Time
	for p := wk.Start; p.Before(wk.End); p = p.Add(15 * time.Minute) {
		probes = append(probes, p)
	}
	for _, d := range wk.Days {
		for _, in := range d.Result {
			probes = append(probes, in.Start, in.End.Add(-time.Second))
		}
	}
	for _, p := range probes {
		var at *Interval
		for _, d := range wk.Days {
			for i := range d.Result {
				if in := &d.Result[i]; !p.Before(in.Start) && p.Before(in.End) {
					if at != nil {
						t.Fatalf("%s falls in two stretches of the result", p)
					}
					at = in
				}
			}
		}
		if at == nil {
			t.Fatalf("%s falls in no stretch of the result", p)
		}
		st := Evaluate(windows, freezes, p)
		var kinds []BlockerKind
		for _, b := range st.Blockers {
			if !slices.Contains(kinds, b.Kind) {
				kinds = append(kinds, b.Kind)
			}
		}
		if st.Open != (at.Kind == Open) || !slices.Equal(kinds, at.Blockers) {
			t.Fatalf("at %s the week says %s %v, Evaluate says open=%t: %s", p.UTC().Format(time.RFC3339), at.Kind, at.Blockers, st.Open, st.Describe())
		}
	}
}

// TestLayOutNothingConfigured: an Environment without windows or freezes is open all week.
func TestLayOutNothingConfigured(t *testing.T) {
	now := at("2026-06-03T10:20:00Z")
	wk := LayOut(nil, nil, time.UTC, now, now)
	if len(wk.Days) != WeekDays || !wk.Start.Equal(at("2026-06-03T00:00:00Z")) || !wk.End.Equal(at("2026-06-10T00:00:00Z")) {
		t.Fatalf("week %s–%s with %d days", wk.Start, wk.End, len(wk.Days))
	}
	for i, d := range wk.Days {
		checkSpans(t, fmt.Sprintf("day %d", i), d.Result, span(Interval{Kind: Open, Start: d.Start, End: d.Start.Add(24 * time.Hour)}))
		if len(d.Windows)+len(d.Freezes) > 0 {
			t.Errorf("day %d has blocks: %v %v", i, d.Windows, d.Freezes)
		}
	}
	if !wk.State.Open || !wk.Now.Equal(now) {
		t.Errorf("state at now: %+v", wk.State)
	}
}

// TestLayOutDaylightSaving: the days the clocks change are 23 and 25 hours long, and a window
// is where the evaluator says it is: one that starts in the skipped hour opens when the clock
// jumps and stays open for its duration of real time.
func TestLayOutDaylightSaving(t *testing.T) {
	berlin := mustZone(t, "Europe/Berlin")
	// Europe/Berlin springs forward on Sunday 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
	windows := []Window{
		mustWindow(t, "night", ferryv1.AllowWindow, "0 2 * * *", 2*time.Hour, "Europe/Berlin"),
		mustWindow(t, "backup", ferryv1.DenyWindow, "30 2 * * *", time.Hour, "Europe/Berlin"),
	}
	wk := LayOut(windows, nil, berlin, at("2026-03-23T12:00:00Z"), at("2026-03-23T12:00:00Z"))
	sunday := wk.Days[6]
	if !sunday.Start.Equal(at("2026-03-28T23:00:00Z")) || !sunday.End.Equal(at("2026-03-29T22:00:00Z")) || sunday.End.Sub(sunday.Start) != 23*time.Hour {
		t.Fatalf("the spring-forward day is %s–%s", sunday.Start, sunday.End)
	}
	checkSpans(t, "windows on the spring-forward day", sunday.Windows,
		// 02:00 does not happen: the 2h window opens at the jump (03:00 CEST) until 05:00 CEST.
		"allowed 2026-03-29T01:00:00Z–2026-03-29T03:00:00Z",
		// 02:30 does not happen either: the hour-long deny window opens at the jump too.
		"denied 2026-03-29T01:00:00Z–2026-03-29T02:00:00Z")
	checkSpans(t, "result on the spring-forward day", sunday.Result,
		"closed 2026-03-28T23:00:00Z–2026-03-29T01:00:00Z", // outside the allow window
		"closed 2026-03-29T01:00:00Z–2026-03-29T02:00:00Z", // inside the deny window
		"open 2026-03-29T02:00:00Z–2026-03-29T03:00:00Z",
		"closed 2026-03-29T03:00:00Z–2026-03-29T22:00:00Z")
	if got := sunday.Result[2].End.Sub(sunday.Result[2].Start); got != time.Hour {
		t.Errorf("the window is open %s on the spring-forward day after the deny window, want 1h", got)
	}
	checkSpans(t, "windows on the Saturday before", wk.Days[5].Windows,
		"allowed 2026-03-28T01:00:00Z–2026-03-28T03:00:00Z",
		"denied 2026-03-28T01:30:00Z–2026-03-28T02:30:00Z")
	checkAgreesWithEvaluate(t, wk, windows, nil)

	// It falls back on Sunday 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
	fall := LayOut(windows, nil, berlin, at("2026-10-25T10:00:00Z"), at("2026-10-25T10:00:00Z"))
	if d := fall.Days[0]; d.End.Sub(d.Start) != 25*time.Hour {
		t.Errorf("the fall-back day is %s long", d.End.Sub(d.Start))
	}
	// 02:00 and 02:30 happen twice: the windows open the first time.
	checkSpans(t, "windows on the fall-back day", fall.Days[0].Windows,
		"allowed 2026-10-25T00:00:00Z–2026-10-25T02:00:00Z",
		"denied 2026-10-25T00:30:00Z–2026-10-25T01:30:00Z")
	checkAgreesWithEvaluate(t, fall, windows, nil)

	newYork := mustZone(t, "America/New_York")
	ny := []Window{mustWindow(t, "office", ferryv1.AllowWindow, "0 9 * * 1-5", 8*time.Hour, "America/New_York")}
	// Seen from Berlin, across New York's spring-forward (2026-03-08) and not yet Berlin's.
	for _, loc := range []*time.Location{berlin, newYork, time.UTC} {
		wk := LayOut(ny, []Freeze{{Kind: ClusterFreeze, Name: "inc", Start: at("2026-03-09T14:00:00Z"), End: at("2026-03-10T14:30:00Z")}}, loc, at("2026-03-06T12:00:00Z"), at("2026-03-06T12:00:00Z"))
		checkAgreesWithEvaluate(t, wk, ny, []Freeze{{Kind: ClusterFreeze, Name: "inc", Start: at("2026-03-09T14:00:00Z"), End: at("2026-03-10T14:30:00Z")}})
	}
}

// TestLayOutDenyWindow: a deny window blocks inside its range only, and its block keeps the
// whole opening for the tooltip when it runs past the day and the week.
func TestLayOutDenyWindow(t *testing.T) {
	// Friday 22:00 to Monday 10:00.
	windows := []Window{mustWindow(t, "weekend", ferryv1.DenyWindow, "0 22 * * 5", 60*time.Hour, "UTC")}
	wk := LayOut(windows, nil, time.UTC, at("2026-06-01T00:00:00Z"), at("2026-06-05T12:00:00Z"))
	checkSpans(t, "Thursday", wk.Days[3].Windows)
	checkSpans(t, "Thursday's result", wk.Days[3].Result, "open 2026-06-04T00:00:00Z–2026-06-05T00:00:00Z")
	checkSpans(t, "Friday", wk.Days[4].Windows, "denied 2026-06-05T22:00:00Z–2026-06-06T00:00:00Z")
	checkSpans(t, "Friday's result", wk.Days[4].Result, "open 2026-06-05T00:00:00Z–2026-06-05T22:00:00Z", "closed 2026-06-05T22:00:00Z–2026-06-06T00:00:00Z")
	checkSpans(t, "Sunday", wk.Days[6].Windows, "denied 2026-06-07T00:00:00Z–2026-06-08T00:00:00Z")
	if in := wk.Days[6].Windows[0]; !in.From.Equal(at("2026-06-05T22:00:00Z")) || !in.Until.Equal(at("2026-06-08T10:00:00Z")) || in.Window.Name != "weekend" {
		t.Errorf("Sunday's block is not the whole opening: %s–%s", in.From, in.Until)
	}
	if got := wk.Days[4].Result[1].Blockers; !slices.Equal(got, []BlockerKind{DenyWindowBlocker}) {
		t.Errorf("Friday night is closed by %v", got)
	}
	// The Monday after: the opening that began the Friday before the week is laid out.
	next := LayOut(windows, nil, time.UTC, at("2026-06-08T00:00:00Z"), at("2026-06-05T12:00:00Z"))
	checkSpans(t, "Monday", next.Days[0].Result, "closed 2026-06-08T00:00:00Z–2026-06-08T10:00:00Z", "open 2026-06-08T10:00:00Z–2026-06-09T00:00:00Z")
	checkAgreesWithEvaluate(t, wk, windows, nil)
	checkAgreesWithEvaluate(t, next, windows, nil)
}

// TestLayOutFreezes: freezes that reach across the week's edges are cut there and keep their
// whole extent; one without an end lasts to the end of the week; the lock closes everything.
func TestLayOutFreezes(t *testing.T) {
	freezes := []Freeze{
		{Kind: ClusterFreeze, Name: "inc-42", Reason: "incident INC-42", Start: at("2026-05-30T16:00:00Z"), End: at("2026-06-03T12:00:00Z")},
		{Kind: EnvironmentFreeze, Name: "summer", Start: at("2026-06-06T18:00:00Z")},
		{Kind: EnvironmentFreeze, Name: "over", Start: at("2026-05-01T00:00:00Z"), End: at("2026-06-01T00:00:00Z")},
	}
	wk := LayOut(nil, freezes, time.UTC, at("2026-06-01T09:00:00Z"), at("2026-06-02T12:00:00Z"))
	checkSpans(t, "Monday", wk.Days[0].Freezes, "frozen 2026-06-01T00:00:00Z–2026-06-02T00:00:00Z")
	checkSpans(t, "Wednesday", wk.Days[2].Freezes, "frozen 2026-06-03T00:00:00Z–2026-06-03T12:00:00Z")
	checkSpans(t, "Wednesday's result", wk.Days[2].Result, "closed 2026-06-03T00:00:00Z–2026-06-03T12:00:00Z", "open 2026-06-03T12:00:00Z–2026-06-04T00:00:00Z")
	checkSpans(t, "Thursday", wk.Days[3].Freezes)
	checkSpans(t, "Saturday", wk.Days[5].Freezes, "frozen 2026-06-06T18:00:00Z–2026-06-07T00:00:00Z")
	checkSpans(t, "Sunday", wk.Days[6].Freezes, "frozen 2026-06-07T00:00:00Z–2026-06-08T00:00:00Z")
	if in := wk.Days[0].Freezes[0]; in.Freeze.Name != "inc-42" || !in.From.Equal(at("2026-05-30T16:00:00Z")) || !in.Until.Equal(at("2026-06-03T12:00:00Z")) {
		t.Errorf("Monday's freeze is %+v", in)
	}
	if in := wk.Days[6].Freezes[0]; !in.Until.IsZero() || in.Freeze.Name != "summer" {
		t.Errorf("a freeze without an end ends at %s", in.Until)
	}
	if wk.State.Open || wk.State.Blockers[0].Freeze.Name != "inc-42" || !wk.State.OpensAt.Equal(at("2026-06-03T12:00:00Z")) {
		t.Errorf("state at now: %s", wk.State.Describe())
	}
	checkAgreesWithEvaluate(t, wk, nil, freezes)

	lock := []Freeze{{Kind: Lock, Name: "locked", Reason: "migration"}}
	locked := LayOut(nil, lock, time.UTC, at("2026-06-01T09:00:00Z"), at("2026-06-01T09:00:00Z"))
	for i, d := range locked.Days {
		if len(d.Freezes) != 1 || d.Freezes[0].Kind != Locked || !d.Freezes[0].Start.Equal(d.Start) || !d.Freezes[0].End.Equal(d.End) {
			t.Errorf("day %d of a locked Environment: %v", i, spans(d.Freezes))
		}
	}
	checkAgreesWithEvaluate(t, locked, nil, lock)
}

// TestLayOutOverlappingWindows: overlapping Allow windows are each a block, the result is open
// while either is; a window that opens every minute is one block a day, not 1440.
func TestLayOutOverlappingWindows(t *testing.T) {
	windows := []Window{
		mustWindow(t, "office", ferryv1.AllowWindow, "0 9 * * 1-5", 8*time.Hour, "UTC"),
		mustWindow(t, "evening", ferryv1.AllowWindow, "0 15 * * *", 4*time.Hour, "UTC"),
		mustWindow(t, "lunch", ferryv1.DenyWindow, "0 12 * * *", time.Hour, "UTC"),
	}
	wk := LayOut(windows, nil, time.UTC, at("2026-06-01T00:00:00Z"), at("2026-06-01T00:00:00Z"))
	checkSpans(t, "Monday", wk.Days[0].Windows,
		"allowed 2026-06-01T09:00:00Z–2026-06-01T17:00:00Z",
		"denied 2026-06-01T12:00:00Z–2026-06-01T13:00:00Z",
		"allowed 2026-06-01T15:00:00Z–2026-06-01T19:00:00Z")
	checkSpans(t, "Monday's result", wk.Days[0].Result,
		"closed 2026-06-01T00:00:00Z–2026-06-01T09:00:00Z",
		"open 2026-06-01T09:00:00Z–2026-06-01T12:00:00Z",
		"closed 2026-06-01T12:00:00Z–2026-06-01T13:00:00Z",
		"open 2026-06-01T13:00:00Z–2026-06-01T19:00:00Z",
		"closed 2026-06-01T19:00:00Z–2026-06-02T00:00:00Z")
	if got := wk.Days[0].Result[2].Blockers; !slices.Equal(got, []BlockerKind{DenyWindowBlocker}) {
		t.Errorf("lunch is closed by %v, want the deny window alone (an allow window is open)", got)
	}
	if got := wk.Days[0].Result[0].Blockers; !slices.Equal(got, []BlockerKind{OutsideAllowWindows}) {
		t.Errorf("the night is closed by %v", got)
	}
	checkAgreesWithEvaluate(t, wk, windows, nil)

	always := []Window{mustWindow(t, "always", ferryv1.AllowWindow, "* * * * *", time.Minute, "UTC")}
	wk = LayOut(always, nil, time.UTC, at("2026-06-01T00:00:00Z"), at("2026-06-01T00:00:00Z"))
	checkSpans(t, "a window that opens every minute", wk.Days[0].Windows, "allowed 2026-06-01T00:00:00Z–2026-06-02T00:00:00Z")
	checkSpans(t, "its result", wk.Days[0].Result, "open 2026-06-01T00:00:00Z–2026-06-02T00:00:00Z")
}
