package window

import (
	"slices"
	"time"
)

// WeekDays is how many days a week layout shows.
const WeekDays = 7

// IntervalKind says what a block of a week layout is.
type IntervalKind string

const (
	// Allowed is an opening of an Allow window.
	Allowed IntervalKind = "allowed"
	// Denied is an opening of a Deny window.
	Denied IntervalKind = "denied"
	// Frozen is a freeze: one of the Environment's own, or a cluster-wide Freeze that selects it.
	Frozen IntervalKind = "frozen"
	// Locked is the Environment's lock.
	Locked IntervalKind = "locked"
	// Open is a stretch of time in which a rollout may start: the result of all the others.
	Open IntervalKind = "open"
	// Closed is a stretch of time in which nothing may start.
	Closed IntervalKind = "closed"
)

// Interval is one block of a week: a window's opening, a freeze, or a stretch of the result.
type Interval struct {
	Kind IntervalKind
	// Start and End are where the block begins and ends within its day, [Start, End).
	Start, End time.Time
	// From and Until are the whole opening or freeze, which may reach beyond the day and the
	// week; Until is zero for a freeze without an end.
	From, Until time.Time
	// Window is the window of an Allowed or Denied block.
	Window *Window
	// Freeze is the freeze of a Frozen or Locked block.
	Freeze *Freeze
	// Blockers say what keeps a Closed stretch closed: freezes first, then Deny windows, then
	// OutsideAllowWindows.
	Blockers []BlockerKind
}

// Day is one calendar day of a week, from midnight to midnight in the week's zone: 23 or 25
// hours long on the days the clocks change.
type Day struct {
	Start, End time.Time
	// Windows are the openings of the Environment's windows, in order of start.
	Windows []Interval
	// Freezes are its freezes and lock, in order of start.
	Freezes []Interval
	// Result says when a rollout may start: Open and Closed stretches covering the whole day.
	Result []Interval
}

// Week is an Environment's windows and freezes laid out over seven days.
type Week struct {
	// Location is the zone the days are read in.
	Location *time.Location
	// Start is midnight of the first day, End midnight after the last.
	Start, End time.Time
	Days       []Day
	// Now is the time the week was laid out at, and State the Environment's state then.
	Now   time.Time
	State State
}

// LayOut lays out windows and freezes over the seven days from midnight of day's date in loc,
// and evaluates them at now. The blocks are exact: each begins and ends at the instant the
// evaluator (Evaluate) changes its mind, daylight-saving changes included.
func LayOut(windows []Window, freezes []Freeze, loc *time.Location, day, now time.Time) Week {
	d := day.In(loc)
	start := time.Date(d.Year(), d.Month(), d.Day(), 0, 0, 0, 0, loc)
	wk := Week{Location: loc, Start: start, End: midnightAfter(start, WeekDays), Now: now, State: Evaluate(windows, freezes, now)}
	openings := windowOpenings(windows, wk.Start, wk.End)
	frozen := freezeSpans(freezes, wk.Start, wk.End)
	result := resultSpans(openings, frozen, windows, wk.Start, wk.End)
	for i := range WeekDays {
		dayStart, dayEnd := midnightAfter(start, i), midnightAfter(start, i+1)
		wk.Days = append(wk.Days, Day{
			Start: dayStart, End: dayEnd,
			Windows: clip(openings, dayStart, dayEnd),
			Freezes: clip(frozen, dayStart, dayEnd),
			Result:  clip(result, dayStart, dayEnd),
		})
	}
	return wk
}

// midnightAfter is midnight n calendar days after midnight start, in start's zone. time.Date
// normalises a midnight that a clock change skips to the instant after the jump.
func midnightAfter(start time.Time, n int) time.Time {
	return time.Date(start.Year(), start.Month(), start.Day()+n, 0, 0, 0, 0, start.Location())
}

// windowOpenings are the openings of windows that overlap [from, to), each window's overlapping
// or touching openings merged into one block (a window that opens every minute for a minute is
// one block, not a thousand).
func windowOpenings(windows []Window, from, to time.Time) []Interval {
	var out []Interval
	for i := range windows {
		w := &windows[i]
		kind := Allowed
		if w.Deny {
			kind = Denied
		}
		var last *Interval
		w.starts(from.Add(-w.Duration), to, func(s time.Time) bool {
			if !s.Before(to) {
				return false
			}
			end := s.Add(w.Duration)
			if last != nil && !s.After(last.Until) {
				last.Until = maxTime(last.Until, end)
				return true
			}
			out = append(out, Interval{Kind: kind, From: s, Until: end, Window: w})
			last = &out[len(out)-1]
			return true
		})
	}
	slices.SortStableFunc(out, func(a, b Interval) int { return a.From.Compare(b.From) })
	return out
}

// freezeSpans are the freezes in force at some time in [from, to).
func freezeSpans(freezes []Freeze, from, to time.Time) []Interval {
	var out []Interval
	for i := range freezes {
		f := &freezes[i]
		if !f.Start.Before(to) || (!f.End.IsZero() && !f.End.After(from)) {
			continue
		}
		kind := Frozen
		if f.Kind == Lock {
			kind = Locked
		}
		out = append(out, Interval{Kind: kind, From: f.Start, Until: f.End, Freeze: f})
	}
	slices.SortStableFunc(out, func(a, b Interval) int { return a.From.Compare(b.From) })
	return out
}

// resultSpans cuts [from, to) where any opening or freeze begins or ends, and says of each piece
// whether a rollout may start in it, by Evaluate's rule: freezes and open Deny windows close the
// Environment; with Allow windows, so does their absence. It sweeps the cuts in order, counting
// what is in force, so that a window that opens every other minute costs no more than sorting.
func resultSpans(openings, frozen []Interval, windows []Window, from, to time.Time) []Interval {
	type edge struct {
		at   time.Time
		kind IntervalKind
		step int
	}
	edges := []edge{{at: from}, {at: to}}
	for _, in := range append(slices.Clone(openings), frozen...) {
		kind := in.Kind
		if kind == Locked {
			kind = Frozen
		}
		edges = append(edges, edge{at: maxTime(in.From, from), kind: kind, step: 1})
		if !in.Until.IsZero() && in.Until.Before(to) {
			edges = append(edges, edge{at: in.Until, kind: kind, step: -1})
		}
	}
	slices.SortStableFunc(edges, func(a, b edge) int { return a.at.Compare(b.at) })
	hasAllow := slices.ContainsFunc(windows, func(w Window) bool { return !w.Deny })
	inForce := map[IntervalKind]int{}
	var out []Interval
	for i := 0; i < len(edges); {
		t := edges[i].at
		for ; i < len(edges) && edges[i].at.Equal(t); i++ {
			inForce[edges[i].kind] += edges[i].step
		}
		if !t.Before(to) || i == len(edges) {
			break
		}
		blockers := blockersOf(inForce, hasAllow)
		kind := Open
		if len(blockers) > 0 {
			kind = Closed
		}
		next := edges[i].at
		if n := len(out); n > 0 && out[n-1].Kind == kind && slices.Equal(out[n-1].Blockers, blockers) {
			out[n-1].Until = next
			continue
		}
		out = append(out, Interval{Kind: kind, From: t, Until: next, Blockers: blockers})
	}
	return out
}

// blockersOf says what closes the Environment while inForce counts the freezes, Deny and Allow
// windows in force, in Evaluate's order.
func blockersOf(inForce map[IntervalKind]int, hasAllow bool) []BlockerKind {
	var out []BlockerKind
	if inForce[Frozen] > 0 {
		out = append(out, FreezeBlocker)
	}
	if inForce[Denied] > 0 {
		out = append(out, DenyWindowBlocker)
	}
	if hasAllow && inForce[Allowed] == 0 {
		out = append(out, OutsideAllowWindows)
	}
	return out
}

// clip keeps the parts of intervals that fall in [from, to), with Start and End set to them.
func clip(intervals []Interval, from, to time.Time) []Interval {
	var out []Interval
	for _, in := range intervals {
		if !in.From.Before(to) || (!in.Until.IsZero() && !in.Until.After(from)) {
			continue
		}
		in.Start, in.End = maxTime(in.From, from), to
		if !in.Until.IsZero() && in.Until.Before(to) {
			in.End = in.Until
		}
		out = append(out, in)
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
