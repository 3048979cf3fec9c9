package ui

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
	"github.com/ferryci/ferry/internal/window"
)

// dateLayout is how the week parameter names the first day of a week.
const dateLayout = "2006-01-02"

// maxWeekDistance bounds how far from today a week may be asked for: as far as the evaluator
// looks ahead.
const maxWeekDistance = 5 * 366 * 24 * time.Hour

// Lanes of a day's chart, top to bottom, in the chart's units.
const (
	laneHeight  = 10
	resultLane  = 0
	windowsLane = 11
	freezesLane = 22
	chartHeight = 32
)

// weekData is the week page of an Environment: its windows and freezes day by day.
type weekData struct {
	Env  string
	Zone string
	// Query is the tz parameter to keep in links, "" for UTC.
	Query string
	// Week is the first day shown (the week parameter), Prev and Next those of the weeks around it.
	Week, Prev, Next, Today string
	// Range names the days shown: "Mon 7 Dec – Sun 13 Dec 2026".
	Range string
	Now   state
	// Problem is why the Environment's windows cannot be laid out (a window admission should
	// have refused); the Environment stays closed.
	Problem string
	Days    []dayView
	Height  int
}

// dayView is one day's row: a chart as wide as the day is long, in minutes.
type dayView struct {
	Label string
	// Note says when the day is not 24 hours long.
	Note    string
	Width   float64
	Summary string
	Blocks  []blockView
	Ticks   []float64
	// Now is where now falls in the day, when it does.
	Now *float64
}

// blockView is one positioned block: an opening of a window, a freeze, or a stretch of the result.
type blockView struct {
	Class   string
	X, Y, W float64
	H       int
	Title   string
}

// weekPage shows an Environment's deploy windows and freezes over a week, to people who may see
// Environments.
func (s *Server) weekPage(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	ctx := r.Context()
	name := r.PathValue("name")
	if !s.access.canList(ctx, sess.Identity, "environments", "") {
		s.renderError(w, r, sess, http.StatusForbidden, "You may not see Environments", fmt.Sprintf("You (%s) may not see Environments: RBAC does not let you list them (list environments.ferry.dev).", sess.User))
		return
	}
	q := r.URL.Query()
	loc, err := window.LoadLocation(q.Get("tz"))
	if err != nil {
		s.renderError(w, r, sess, http.StatusBadRequest, "Bad time zone", "The tz parameter is not a time zone: "+err.Error())
		return
	}
	now := time.Now()
	day, err := weekStart(q.Get("week"), loc, now)
	if err != nil {
		s.renderError(w, r, sess, http.StatusBadRequest, "Bad week", "The week parameter "+err.Error())
		return
	}
	env := &ferryv1.Environment{}
	if err := s.reader.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
		if apierrors.IsNotFound(err) {
			s.renderError(w, r, sess, http.StatusNotFound, "No such Environment", "Environment "+name+" does not exist.")
			return
		}
		s.failed(w, r, sess, fmt.Errorf("failed to read Environment %s: %w", name, err))
		return
	}
	var freezes ferryv1.FreezeList
	if err := s.reader.List(ctx, &freezes); err != nil {
		s.failed(w, r, sess, fmt.Errorf("failed to list Freezes: %w", err))
		return
	}
	s.render(w, r, sess, http.StatusOK, "week", "Deploy windows of "+env.Name, weekOf(env, freezes.Items, loc, day, now))
}

// windowsNow is where each Environment stands now, in name order, in UTC.
func windowsNow(envs map[string]*ferryv1.Environment, clusterFreezes []ferryv1.Freeze, now time.Time) []envWindows {
	out := make([]envWindows, 0, len(envs))
	for _, name := range slices.Sorted(maps.Keys(envs)) {
		ew := envWindows{Env: name, Now: state{"Closed", toneBad, "its windows cannot be read"}}
		if windows, freezes, err := window.ForEnvironment(envs[name], clusterFreezes, nil); err == nil {
			ew.Now = nowState(window.Evaluate(windows, freezes, now), time.UTC)
		}
		out = append(out, ew)
	}
	return out
}

// weekStart is the first day of the week asked for: the date named YYYY-MM-DD in loc, or today.
// Its error completes "The week parameter …".
func weekStart(v string, loc *time.Location, now time.Time) (time.Time, error) {
	if v == "" {
		return now.In(loc), nil
	}
	day, err := time.ParseInLocation(dateLayout, v, loc)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a date such as %s", v, now.In(loc).Format(dateLayout))
	}
	if d := day.Sub(now); d > maxWeekDistance || d < -maxWeekDistance {
		return time.Time{}, fmt.Errorf("%q is more than five years from today", v)
	}
	return day, nil
}

// weekOf lays out env's windows and the Freezes that select it (whatever the namespace: a
// Freeze with a namespace selector says so in its tooltip) over the week from day, in loc.
func weekOf(env *ferryv1.Environment, clusterFreezes []ferryv1.Freeze, loc *time.Location, day, now time.Time) weekData {
	d := weekData{Env: env.Name, Zone: loc.String(), Height: chartHeight}
	if loc != time.UTC {
		d.Query = loc.String()
	}
	windows, freezes, err := window.ForEnvironment(env, clusterFreezes, nil)
	if err != nil {
		d.Problem = err.Error() + ": the Environment lets no rollout start until it is fixed."
		d.Now = state{"Closed", toneBad, ""}
		return d
	}
	wk := window.LayOut(windows, freezes, loc, day, now)
	first := wk.Start
	d.Week = first.Format(dateLayout)
	d.Prev = first.AddDate(0, 0, -window.WeekDays).Format(dateLayout)
	d.Next = first.AddDate(0, 0, window.WeekDays).Format(dateLayout)
	d.Today = now.In(loc).Format(dateLayout)
	d.Range = first.Format("Mon 2 Jan") + " – " + wk.End.Add(-time.Hour).In(loc).Format("Mon 2 Jan 2006")
	d.Now = nowState(wk.State, loc)
	for _, wd := range wk.Days {
		d.Days = append(d.Days, dayOf(wd, now, loc))
	}
	return d
}

// dayOf positions a day's blocks in minutes from its midnight, so that a block is exactly as
// long as the time it stands for, on 23- and 25-hour days too.
func dayOf(day window.Day, now time.Time, loc *time.Location) dayView {
	dv := dayView{Label: day.Start.Format("Mon 2 Jan"), Width: minutes(day.Start, day.End)}
	if h := day.End.Sub(day.Start); h != 24*time.Hour {
		dv.Note = fmt.Sprintf("%d hours: the clocks change", int(h.Hours()))
	}
	for h := day.Start.Add(time.Hour); h.Before(day.End); h = h.Add(time.Hour) {
		dv.Ticks = append(dv.Ticks, minutes(day.Start, h))
	}
	if !now.Before(day.Start) && now.Before(day.End) {
		x := minutes(day.Start, now)
		dv.Now = &x
	}
	var open []string
	add := func(in window.Interval, lane float64, class, title string) {
		dv.Blocks = append(dv.Blocks, blockView{Class: class, X: minutes(day.Start, in.Start), Y: lane, W: minutes(in.Start, in.End), H: laneHeight, Title: title})
	}
	for _, in := range day.Result {
		add(in, resultLane, string(in.Kind), resultTitle(in, loc))
		if in.Kind == window.Open {
			open = append(open, clock(in.Start, loc)+"–"+clock(in.End, loc))
		}
	}
	for _, in := range day.Windows {
		add(in, windowsLane, string(in.Kind), windowTitle(in, loc))
	}
	for _, in := range day.Freezes {
		add(in, freezesLane, string(in.Kind), freezeTitle(in, loc))
	}
	switch {
	case len(open) == 0:
		dv.Summary = "closed all day"
	case len(day.Result) == 1:
		dv.Summary = "open all day"
	default:
		dv.Summary = "open " + strings.Join(open, ", ")
	}
	return dv
}

func minutes(from, to time.Time) float64 {
	return float64(to.Sub(from)) / float64(time.Minute)
}

// clock is a time of day in loc: "24:00" for the midnight that ends a day.
func clock(t time.Time, loc *time.Location) string {
	l := t.In(loc)
	if l.Hour() == 0 && l.Minute() == 0 && l.Second() == 0 && !t.IsZero() {
		return "24:00"
	}
	return l.Format("15:04")
}

// span is from–until in loc, the end's date only when it is another day: "Fri 5 Jun 22:00 – Mon
// 8 Jun 10:00 UTC", "Mon 1 Jun 09:00–17:00 UTC".
func span(from, until time.Time, loc *time.Location) string {
	f, u := from.In(loc), until.In(loc)
	zone := " " + loc.String()
	switch {
	case from.IsZero() && until.IsZero():
		return "no start, no end"
	case until.IsZero():
		return "from " + f.Format("Mon 2 Jan 15:04") + zone + ", no end"
	case f.YearDay() == u.YearDay() && f.Year() == u.Year():
		return f.Format("Mon 2 Jan 15:04") + "–" + u.Format("15:04") + zone
	}
	return f.Format("Mon 2 Jan 15:04") + " – " + u.Format("Mon 2 Jan 15:04") + zone
}

func windowTitle(in window.Interval, loc *time.Location) string {
	kind := "allow"
	if in.Kind == window.Denied {
		kind = "deny"
	}
	w := in.Window
	return fmt.Sprintf("%s: window %s %s (%s in %s, for %s)", kind, w.Name, span(in.From, in.Until, loc), w.Spec, w.Location, w.Duration)
}

func freezeTitle(in window.Interval, loc *time.Location) string {
	f := in.Freeze
	var s string
	switch f.Kind {
	case window.Lock:
		s = "locked"
	case window.ClusterFreeze:
		s = "frozen: cluster-wide Freeze " + f.Name
		if f.Namespaces != "" {
			s += " (only Releases in namespaces " + f.Namespaces + ")"
		}
	default:
		s = "frozen: the Environment's freeze " + f.Name
	}
	if f.Reason != "" {
		s += ", " + f.Reason
	}
	if f.Kind == window.Lock {
		return s
	}
	return s + ", " + span(in.From, in.Until, loc)
}

func resultTitle(in window.Interval, loc *time.Location) string {
	if in.Kind == window.Open {
		return "rollouts may start " + span(in.Start, in.End, loc)
	}
	why := make([]string, 0, len(in.Blockers))
	for _, b := range in.Blockers {
		switch b {
		case window.FreezeBlocker:
			why = append(why, "frozen")
		case window.DenyWindowBlocker:
			why = append(why, "a deny window")
		case window.OutsideAllowWindows:
			why = append(why, "no allow window")
		}
	}
	return "closed (" + strings.Join(why, ", ") + ") " + span(in.Start, in.End, loc)
}

// nowState says where the Environment stands now: "open now, closes …", "frozen: … until …",
// "waiting for a window, opens …".
func nowState(st window.State, loc *time.Location) state {
	at := func(t time.Time) string { return t.In(loc).Format("Mon 2 Jan 15:04 ") + loc.String() }
	if st.Open {
		if st.ClosesAt.IsZero() {
			return state{"Open now", toneOK, "open now; nothing closes it within five years"}
		}
		return state{"Open now", toneOK, "open now, closes " + at(st.ClosesAt)}
	}
	opens := "; no opening within five years"
	if !st.OpensAt.IsZero() {
		opens = ", opens " + at(st.OpensAt)
	}
	b := st.Blockers[0]
	switch b.Kind {
	case window.FreezeBlocker:
		f := b.Freeze
		switch {
		case f.Kind == window.Lock:
			return state{"Locked", toneBad, "locked: " + cmp.Or(f.Reason, "no reason given") + ", until it is unlocked"}
		case f.End.IsZero():
			return state{"Frozen", toneBad, "frozen: " + cmp.Or(f.Reason, f.Name) + ", no end"}
		}
		return state{"Frozen", toneBad, "frozen: " + cmp.Or(f.Reason, f.Name) + " until " + at(f.End) + opens}
	case window.DenyWindowBlocker:
		return state{"Closed", toneWait, "closed by deny window " + b.Window.Name + " until " + at(b.Until) + opens}
	}
	return state{"Waiting for a window", toneWait, "waiting for a window" + opens}
}
