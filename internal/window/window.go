// Package window decides whether an Environment lets a rollout start at a given time: its
// recurring deploy windows (Allow and Deny, a cron schedule read in an IANA time zone, a
// duration), its one-off freezes, the cluster-wide Freezes that select it and its lock. It is
// pure and clock-driven: the caller passes the time, and gets back open or closed, why, and
// when that changes next.
package window

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// MaxDuration is the longest a window may stay open each time it opens (the API refuses longer):
// it bounds the work of finding the window a time falls into.
const MaxDuration = 168 * time.Hour

// maxScheduleLength is the API's limit on a schedule.
const maxScheduleLength = 128

// horizon is how far ahead the evaluator looks for a window to open or a schedule to fire; a
// schedule that fires less often (29 February on a Monday) counts as never.
const horizon = 5 * 366 * 24 * time.Hour

// parser reads the five standard fields only: no seconds, no descriptors (@daily, @every), which
// would not be read in the window's time zone.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)

// ParseSchedule parses a five-field cron expression. A time zone inside it (TZ=, CRON_TZ=) is
// refused: a window's timeZone says it.
func ParseSchedule(s string) (sched *cron.SpecSchedule, err error) {
	switch {
	case strings.TrimSpace(s) == "":
		return nil, errors.New("empty schedule")
	case len(s) > maxScheduleLength:
		return nil, fmt.Errorf("schedule is %d characters long, more than %d", len(s), maxScheduleLength)
	case strings.ContainsAny(s, "=@"):
		return nil, fmt.Errorf("schedule %q must be five cron fields (minute hour day-of-month month day-of-week), without descriptors or a time zone: the window's timeZone says the zone", s)
	}
	defer func() {
		// The cron parser has panicked on malformed input before; an admission request must not.
		if p := recover(); p != nil {
			sched, err = nil, fmt.Errorf("schedule %q cannot be parsed", s)
		}
	}()
	parsed, err := parser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("schedule %q is not a five-field cron expression: %w", s, err)
	}
	spec, ok := parsed.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("schedule %q is not a five-field cron expression", s)
	}
	return spec, nil
}

// LoadLocation loads an IANA time zone; "" is UTC. "Local" is refused: a window must mean the
// same wherever the manager runs.
func LoadLocation(name string) (*time.Location, error) {
	if name == "" || name == "UTC" {
		return time.UTC, nil
	}
	if name == "Local" || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("time zone %q is not an IANA time zone name such as Europe/Berlin", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as Europe/Berlin", name)
	}
	return loc, nil
}

// Window is a parsed deploy window.
type Window struct {
	// Name identifies the window in messages.
	Name string
	// Deny is true for a Deny window, false for an Allow window.
	Deny bool
	// Spec is the schedule as written, for messages.
	Spec     string
	schedule *cron.SpecSchedule
	// Duration is how long the window stays open each time.
	Duration time.Duration
	// Location is the time zone the schedule is read in.
	Location *time.Location
}

// FieldError is an invalid field of a window, with its path below the window (schedule,
// timeZone, duration).
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Parse checks and parses an API window.
func Parse(w ferryv1.DeployWindow) (Window, error) {
	sched, err := ParseSchedule(w.Schedule)
	if err != nil {
		return Window{}, &FieldError{Field: "schedule", Err: err}
	}
	loc, err := LoadLocation(w.TimeZone)
	if err != nil {
		return Window{}, &FieldError{Field: "timeZone", Err: err}
	}
	switch d := w.Duration.Duration; {
	case d <= 0:
		return Window{}, &FieldError{Field: "duration", Err: fmt.Errorf("duration %s must be positive", d)}
	case d > MaxDuration:
		return Window{}, &FieldError{Field: "duration", Err: fmt.Errorf("duration %s is longer than %s", d, MaxDuration)}
	}
	return Window{Name: w.Name, Deny: w.Kind == ferryv1.DenyWindow, Spec: w.Schedule, schedule: sched, Duration: w.Duration.Duration, Location: loc}, nil
}

// Describe says what the window is, for messages: `deny window "x" (0 22 * * 5 Europe/Berlin, 60h0m0s)`.
func (w Window) Describe() string {
	kind := "allow"
	if w.Deny {
		kind = "deny"
	}
	return fmt.Sprintf("%s window %q (%s %s, %s)", kind, w.Name, w.Spec, w.Location, w.Duration)
}

// starts calls fn with every time the window opens in (from, to], in order, until fn returns
// false. Schedules are read on the local calendar of the window's zone: a start in the hour
// skipped when clocks go forward opens the window when the clock jumps; a start that happens
// twice when clocks go back opens it the first time.
func (w Window) starts(from, to time.Time, fn func(time.Time) bool) {
	s := w.schedule
	first := from.In(w.Location)
	last := to.In(w.Location)
	// Noon of each local day: stepping a day from noon never lands on another date across a
	// daylight-saving change.
	day := time.Date(first.Year(), first.Month(), first.Day()-1, 12, 0, 0, 0, w.Location)
	end := time.Date(last.Year(), last.Month(), last.Day()+1, 12, 0, 0, 0, w.Location)
	var prev time.Time
	for ; !day.After(end); day = time.Date(day.Year(), day.Month(), day.Day()+1, 12, 0, 0, 0, w.Location) {
		if 1<<uint(day.Month())&s.Month == 0 || !dayMatches(s, day) {
			continue
		}
		for h := range 24 {
			if 1<<uint(h)&s.Hour == 0 {
				continue
			}
			for m := range 60 {
				if 1<<uint(m)&s.Minute == 0 {
					continue
				}
				t := resolve(day.Year(), day.Month(), day.Day(), h, m, w.Location)
				if !t.After(from) || !t.After(prev) {
					continue
				}
				if t.After(to) {
					return
				}
				prev = t
				if !fn(t) {
					return
				}
			}
		}
	}
}

// starBit marks a cron field written as * (robfig/cron's convention).
const starBit = 1 << 63

// dayMatches is cron's day rule: day-of-month and day-of-week must both match when either is *,
// else either may.
func dayMatches(s *cron.SpecSchedule, t time.Time) bool {
	dom := 1<<uint(t.Day())&s.Dom > 0
	dow := 1<<uint(t.Weekday())&s.Dow > 0
	if s.Dom&starBit > 0 || s.Dow&starBit > 0 {
		return dom && dow
	}
	return dom || dow
}

// resolve is the instant a local wall time names: the earlier one when it happens twice (clocks
// go back), the moment the clock jumps when it does not happen (clocks go forward).
func resolve(year int, month time.Month, day, hour, minute int, loc *time.Location) time.Time {
	wall := time.Date(year, month, day, hour, minute, 0, 0, time.UTC)
	var best time.Time
	// The offsets in force a day and a half either side cover any transition on this day.
	for _, probe := range []time.Time{wall.Add(-36 * time.Hour), wall.Add(36 * time.Hour)} {
		_, offset := probe.In(loc).Zone()
		c := wall.Add(-time.Duration(offset) * time.Second)
		l := c.In(loc)
		if l.Day() == day && l.Hour() == hour && l.Minute() == minute && (best.IsZero() || c.Before(best)) {
			best = c
		}
	}
	if !best.IsZero() {
		return best
	}
	// In a gap: time.Date lands on one side of it; the jump is the zone boundary there.
	t := time.Date(year, month, day, hour, minute, 0, 0, loc)
	start, end := t.ZoneBounds()
	if t.Hour()*60+t.Minute() > hour*60+minute || t.Day() != day {
		return start
	}
	return end
}

// activeStart is the latest start of an opening of the window that t falls into, if any.
func (w Window) activeStart(t time.Time) (time.Time, bool) {
	var last time.Time
	w.starts(t.Add(-w.Duration), t, func(s time.Time) bool {
		last = s
		return true
	})
	return last, !last.IsZero()
}

// nextStart is the first start after t within the horizon, if any.
func (w Window) nextStart(t time.Time) (time.Time, bool) {
	var next time.Time
	w.starts(t, t.Add(horizon), func(s time.Time) bool {
		next = s
		return false
	})
	return next, !next.IsZero()
}
