package window

import (
	"errors"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func mustWindow(t *testing.T, name string, kind ferryv1.WindowKind, schedule string, d time.Duration, zone string) Window {
	t.Helper()
	w, err := Parse(ferryv1.DeployWindow{Name: name, Kind: kind, Schedule: schedule, Duration: metav1.Duration{Duration: d}, TimeZone: zone})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// TestEvaluate: open or closed at a time, why, and when that changes, across daylight-saving
// changes in Europe/Berlin and America/New_York, midnight, and freezes with and without an end.
func TestEvaluate(t *testing.T) {
	const allow, deny = ferryv1.AllowWindow, ferryv1.DenyWindow
	officeHours := func(t *testing.T) []Window {
		return []Window{mustWindow(t, "office", allow, "0 9 * * 1-5", 8*time.Hour, "UTC")}
	}
	weekend := func(t *testing.T) []Window {
		// Friday 22:00 to Monday 10:00.
		return []Window{mustWindow(t, "weekend", deny, "0 22 * * 5", 60*time.Hour, "UTC")}
	}
	for _, tc := range []struct {
		name    string
		windows func(*testing.T) []Window
		freezes []Freeze
		now     string
		open    bool
		// next is OpensAt when closed, ClosesAt when open ("" for zero).
		next string
		// why is a part of the description of a closed state.
		why string
	}{
		{name: "nothing configured is open", now: "2026-06-01T12:00:00Z", open: true},

		{name: "inside an allow window", windows: officeHours, now: "2026-06-01T10:00:00Z", open: true, next: "2026-06-01T17:00:00Z"},
		{name: "an allow window opens at its start", windows: officeHours, now: "2026-06-01T09:00:00Z", open: true, next: "2026-06-01T17:00:00Z"},
		{name: "an allow window is closed at its end", windows: officeHours, now: "2026-06-01T17:00:00Z", next: "2026-06-02T09:00:00Z", why: "outside the allow windows (office) until 2026-06-02T09:00:00Z"},
		{name: "after office hours on Friday opens on Monday", windows: officeHours, now: "2026-06-05T18:00:00Z", next: "2026-06-08T09:00:00Z"},

		// A deny window blocks inside its range and nowhere else (Argo CD's bug blocked outside it).
		{name: "before a deny window", windows: weekend, now: "2026-06-04T23:00:00Z", open: true, next: "2026-06-05T22:00:00Z"},
		{name: "a minute before a deny window", windows: weekend, now: "2026-06-05T21:59:00Z", open: true, next: "2026-06-05T22:00:00Z"},
		{name: "inside a deny window", windows: weekend, now: "2026-06-06T12:00:00Z", next: "2026-06-08T10:00:00Z", why: `deny window "weekend" (0 22 * * 5 UTC, 60h0m0s) is open until 2026-06-08T10:00:00Z`},
		{name: "a deny window is over at its end", windows: weekend, now: "2026-06-08T10:00:00Z", open: true, next: "2026-06-12T22:00:00Z"},
		{name: "after a deny window, mid-week", windows: weekend, now: "2026-06-10T03:00:00Z", open: true, next: "2026-06-12T22:00:00Z"},
		{name: "a short deny window blocks only its hour", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "backup", deny, "0 3 * * *", time.Hour, "Europe/Berlin")}
		}, now: "2026-06-10T03:30:00Z", open: true, next: "2026-06-11T01:00:00Z"},

		// Windows across midnight.
		{name: "a night window before midnight", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "night", allow, "0 22 * * *", 4*time.Hour, "UTC")}
		}, now: "2026-06-01T23:30:00Z", open: true, next: "2026-06-02T02:00:00Z"},
		{name: "a night window after midnight, opened the day before", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "night", allow, "0 22 * * *", 4*time.Hour, "UTC")}
		}, now: "2026-06-02T01:30:00Z", open: true, next: "2026-06-02T02:00:00Z"},
		{name: "a Sunday night window on Monday morning", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "sunday-night", allow, "0 23 * * 0", 3*time.Hour, "UTC")}
		}, now: "2026-06-08T01:00:00Z", open: true, next: "2026-06-08T02:00:00Z"},
		{name: "overlapping allow windows close when the last one does", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "a", allow, "0 9 * * *", 4*time.Hour, "UTC"), mustWindow(t, "b", allow, "0 12 * * *", 3*time.Hour, "UTC")}
		}, now: "2026-06-01T10:00:00Z", open: true, next: "2026-06-01T15:00:00Z"},

		// Europe/Berlin springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
		{name: "Berlin: a 02:30 window on the day before spring-forward", windows: berlin0230, now: "2026-03-28T01:45:00Z", open: true, next: "2026-03-28T02:30:00Z"},
		{name: "Berlin: before the 02:30 window on the spring-forward day", windows: berlin0230, now: "2026-03-29T00:45:00Z", next: "2026-03-29T01:00:00Z"},
		{name: "Berlin: the 02:30 window opens when the clock jumps to 03:00", windows: berlin0230, now: "2026-03-29T01:00:00Z", open: true, next: "2026-03-29T02:00:00Z"},
		{name: "Berlin: the 02:30 window lasts its hour after the jump", windows: berlin0230, now: "2026-03-29T01:59:00Z", open: true, next: "2026-03-29T02:00:00Z"},
		{name: "Berlin: after the 02:30 window on the spring-forward day", windows: berlin0230, now: "2026-03-29T02:00:00Z", next: "2026-03-30T00:30:00Z"},
		// Europe/Berlin falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
		{name: "Berlin: a 2h window from 01:00 crossing fall-back, in the first 02:30", windows: berlin0100, now: "2026-10-25T00:30:00Z", open: true, next: "2026-10-25T01:00:00Z"},
		{name: "Berlin: the 2h window is closed in the second 02:30", windows: berlin0100, now: "2026-10-25T01:30:00Z", next: "2026-10-26T00:00:00Z"},
		{name: "Berlin: a 02:30 window opens once on the fall-back day", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "late", allow, "30 2 * * *", 30*time.Minute, "Europe/Berlin")}
		}, now: "2026-10-25T01:40:00Z", next: "2026-10-26T01:30:00Z"},

		// America/New_York springs forward on 2026-03-08 at 02:00 EST (07:00 UTC) to 03:00 EDT.
		{name: "New York: a 02:30 deny window blocks from the jump on spring-forward day", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "maintenance", deny, "30 2 * * *", time.Hour, "America/New_York")}
		}, now: "2026-03-08T07:30:00Z", next: "2026-03-08T08:00:00Z", why: `deny window "maintenance"`},
		{name: "New York: the 02:30 deny window does not block before the jump", windows: func(t *testing.T) []Window {
			return []Window{mustWindow(t, "maintenance", deny, "30 2 * * *", time.Hour, "America/New_York")}
		}, now: "2026-03-08T06:59:00Z", open: true, next: "2026-03-08T07:00:00Z"},
		// America/New_York falls back on 2026-11-01 at 02:00 EDT (06:00 UTC) to 01:00 EST.
		{name: "New York: a 2h window from midnight, in the first 01:30", windows: newYorkMidnight, now: "2026-11-01T05:30:00Z", open: true, next: "2026-11-01T06:00:00Z"},
		{name: "New York: the 2h window is closed in the second 01:30", windows: newYorkMidnight, now: "2026-11-01T06:30:00Z", next: "2026-11-02T05:00:00Z"},

		// Freezes.
		{name: "a freeze with no end", freezes: []Freeze{{Kind: ClusterFreeze, Name: "incident-42", Start: at("2026-06-01T00:00:00Z"), Reason: "database incident"}},
			now: "2026-06-01T12:00:00Z", why: "Freeze incident-42 (database incident) has no end"},
		{name: "a freeze with an end", freezes: []Freeze{{Kind: EnvironmentFreeze, Name: "quarter-end", Start: at("2026-06-01T00:00:00Z"), End: at("2026-06-03T00:00:00Z"), Reason: "books close"}},
			now: "2026-06-02T12:00:00Z", next: "2026-06-03T00:00:00Z", why: "freeze quarter-end (books close) until 2026-06-03T00:00:00Z"},
		{name: "a freeze is over at its end", freezes: []Freeze{{Kind: EnvironmentFreeze, Name: "quarter-end", Start: at("2026-06-01T00:00:00Z"), End: at("2026-06-03T00:00:00Z")}},
			now: "2026-06-03T00:00:00Z", open: true},
		{name: "a freeze to come closes an open environment", freezes: []Freeze{{Kind: EnvironmentFreeze, Name: "later", Start: at("2026-06-05T00:00:00Z"), End: at("2026-06-06T00:00:00Z")}},
			now: "2026-06-03T00:00:00Z", open: true, next: "2026-06-05T00:00:00Z"},
		{name: "the lock", freezes: []Freeze{{Kind: Lock, Name: "locked", Reason: "audit"}}, now: "2026-06-03T00:00:00Z", why: "the environment is locked (audit)"},
		{name: "a freeze ending outside the allow windows opens with the next one", windows: officeHours,
			freezes: []Freeze{{Kind: EnvironmentFreeze, Name: "f", Start: at("2026-06-01T00:00:00Z"), End: at("2026-06-01T18:00:00Z")}},
			now:     "2026-06-01T12:00:00Z", next: "2026-06-02T09:00:00Z"},
		{name: "a deny window ending into a freeze opens when the freeze ends", windows: weekend,
			freezes: []Freeze{{Kind: ClusterFreeze, Name: "f", Start: at("2026-06-08T09:00:00Z"), End: at("2026-06-08T12:00:00Z")}},
			now:     "2026-06-07T12:00:00Z", next: "2026-06-08T12:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var windows []Window
			if tc.windows != nil {
				windows = tc.windows(t)
			}
			st := Evaluate(windows, tc.freezes, at(tc.now))
			if st.Open != tc.open {
				t.Fatalf("open = %v, want %v: %s", st.Open, tc.open, st.Describe())
			}
			next := st.OpensAt
			if st.Open {
				next = st.ClosesAt
			}
			got := ""
			if !next.IsZero() {
				got = next.UTC().Format(time.RFC3339)
			}
			if got != tc.next {
				t.Errorf("next change = %q, want %q (%s)", got, tc.next, st.Describe())
			}
			if tc.why != "" && !strings.Contains(st.Describe(), tc.why) {
				t.Errorf("description %q does not say %q", st.Describe(), tc.why)
			}
			if !st.Open && len(st.Blockers) == 0 {
				t.Error("closed without a blocker")
			}
		})
	}
}

func berlin0230(t *testing.T) []Window {
	return []Window{mustWindow(t, "night", ferryv1.AllowWindow, "30 2 * * *", time.Hour, "Europe/Berlin")}
}

func berlin0100(t *testing.T) []Window {
	return []Window{mustWindow(t, "night", ferryv1.AllowWindow, "0 1 * * *", 2*time.Hour, "Europe/Berlin")}
}

func newYorkMidnight(t *testing.T) []Window {
	return []Window{mustWindow(t, "midnight", ferryv1.AllowWindow, "0 0 * * *", 2*time.Hour, "America/New_York")}
}

// TestParse: what admission refuses, with the field named.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		schedule string
		zone     string
		duration time.Duration
		field    string
	}{
		{name: "valid", schedule: "0 9 * * MON-FRI", zone: "Europe/Berlin", duration: time.Hour},
		{name: "valid, default zone", schedule: "*/15 0-6 1,15 * *", duration: time.Minute},
		{name: "four fields", schedule: "0 9 * *", duration: time.Hour, field: "schedule"},
		{name: "six fields", schedule: "0 0 9 * * *", duration: time.Hour, field: "schedule"},
		{name: "a descriptor", schedule: "@daily", duration: time.Hour, field: "schedule"},
		{name: "every", schedule: "@every 1h", duration: time.Hour, field: "schedule"},
		{name: "a time zone in the schedule", schedule: "CRON_TZ=Asia/Tokyo 0 9 * * *", duration: time.Hour, field: "schedule"},
		{name: "TZ= without a space (panics robfig/cron)", schedule: "TZ=UTC", duration: time.Hour, field: "schedule"},
		{name: "minute out of range", schedule: "60 9 * * *", duration: time.Hour, field: "schedule"},
		{name: "a zero step", schedule: "*/0 9 * * *", duration: time.Hour, field: "schedule"},
		{name: "a reversed range", schedule: "0 17-9 * * *", duration: time.Hour, field: "schedule"},
		{name: "a huge schedule", schedule: strings.Repeat("1,", 100000) + "1 * * * *", duration: time.Hour, field: "schedule"},
		{name: "an unknown zone", schedule: "0 9 * * *", zone: "Mars/Olympus_Mons", duration: time.Hour, field: "timeZone"},
		{name: "the manager's local zone", schedule: "0 9 * * *", zone: "Local", duration: time.Hour, field: "timeZone"},
		{name: "a zone file path", schedule: "0 9 * * *", zone: "../../etc/passwd", duration: time.Hour, field: "timeZone"},
		{name: "zero duration", schedule: "0 9 * * *", field: "duration"},
		{name: "negative duration", schedule: "0 9 * * *", duration: -time.Hour, field: "duration"},
		{name: "too long", schedule: "0 9 * * *", duration: MaxDuration + time.Second, field: "duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(ferryv1.DeployWindow{Name: "w", Kind: ferryv1.AllowWindow, Schedule: tc.schedule, TimeZone: tc.zone, Duration: metav1.Duration{Duration: tc.duration}})
			var fe *FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.field != "" && !errors.As(err, &fe):
				t.Fatalf("want an error on %s, got %v", tc.field, err)
			case tc.field != "" && fe.Field != tc.field:
				t.Errorf("error on %s, want %s: %v", fe.Field, tc.field, err)
			}
		})
	}
}
