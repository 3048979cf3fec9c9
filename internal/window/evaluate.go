package window

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// FreezeKind says where a freeze comes from.
type FreezeKind string

const (
	// EnvironmentFreeze is one of an Environment's spec.freezes.
	EnvironmentFreeze FreezeKind = "freeze"
	// ClusterFreeze is a cluster-scoped Freeze that selects the Environment.
	ClusterFreeze FreezeKind = "Freeze"
	// Lock is the Environment's locked flag: a freeze with no end.
	Lock FreezeKind = "lock"
)

// Freeze is a one-off period without rollouts: [Start, End), or from Start on when End is zero.
type Freeze struct {
	Kind   FreezeKind
	Name   string
	Start  time.Time
	End    time.Time
	Reason string
	// Namespaces is a cluster-wide Freeze's namespace selector as kubectl prints it, when the
	// Freeze stops the Releases of some namespaces only; "" when it stops all of them.
	Namespaces string
}

func (f Freeze) activeAt(t time.Time) bool {
	return !t.Before(f.Start) && (f.End.IsZero() || t.Before(f.End))
}

// BlockerKind says what keeps an Environment closed.
type BlockerKind string

const (
	// DenyWindowBlocker is an open Deny window.
	DenyWindowBlocker BlockerKind = "DenyWindow"
	// OutsideAllowWindows means the Environment has Allow windows and none is open.
	OutsideAllowWindows BlockerKind = "OutsideAllowWindows"
	// FreezeBlocker is a freeze, a cluster-wide Freeze or the lock in force.
	FreezeBlocker BlockerKind = "Freeze"
)

// Blocker is one thing that keeps an Environment closed at a time.
type Blocker struct {
	Kind BlockerKind
	// Window is the open Deny window (DenyWindowBlocker).
	Window *Window
	// Allow names the Allow windows (OutsideAllowWindows).
	Allow []string
	// Freeze is the freeze in force (FreezeBlocker).
	Freeze *Freeze
	// Until is when this blocker lets go: the end of the Deny window's opening or of the freeze,
	// the next start of an Allow window. Zero: not within the horizon (a freeze with no end).
	Until time.Time
}

// Describe says what the blocker is, for messages.
func (b Blocker) Describe() string {
	switch b.Kind {
	case DenyWindowBlocker:
		return b.Window.Describe() + " is open until " + formatTime(b.Until)
	case OutsideAllowWindows:
		names := strings.Join(b.Allow, ", ")
		if b.Until.IsZero() {
			return "no allow window (" + names + ") opens within five years"
		}
		return "outside the allow windows (" + names + ") until " + formatTime(b.Until)
	}
	f := b.Freeze
	var s string
	switch f.Kind {
	case Lock:
		s = "the environment is locked"
	case ClusterFreeze:
		s = fmt.Sprintf("Freeze %s", f.Name)
	default:
		s = fmt.Sprintf("freeze %s", f.Name)
	}
	if f.Reason != "" {
		s += " (" + f.Reason + ")"
	}
	if f.End.IsZero() {
		if f.Kind != Lock {
			s += " has no end"
		}
		return s
	}
	return s + " until " + formatTime(f.End)
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// State is whether an Environment lets a rollout start at a time.
type State struct {
	// Open: a rollout may start.
	Open bool
	// Blockers say why not, when closed: freezes first, then Deny windows, then the Allow windows.
	Blockers []Blocker
	// OpensAt is when a closed Environment opens next; zero when that is not within the horizon
	// (a freeze with no end, an Allow window that never opens).
	OpensAt time.Time
	// ClosesAt is when an open Environment closes next, as far as is known now; zero when nothing
	// closes it within the horizon.
	ClosesAt time.Time
}

// Describe says why a closed Environment is closed and when it opens, for messages.
func (s State) Describe() string {
	if s.Open {
		return "open"
	}
	parts := make([]string, 0, len(s.Blockers))
	for _, b := range s.Blockers {
		parts = append(parts, b.Describe())
	}
	msg := strings.Join(parts, "; ")
	if !s.OpensAt.IsZero() {
		msg += "; opens at " + formatTime(s.OpensAt)
	}
	return msg
}

// maxSteps bounds the search for the next opening: each step moves past every blocker in force.
const maxSteps = 1000

// Evaluate decides whether windows and freezes let a rollout start at now. With no Allow window
// the Environment is open unless a Deny window or a freeze is in force; with Allow windows it is
// open only while one of them is, and neither a Deny window nor a freeze is.
func Evaluate(windows []Window, freezes []Freeze, now time.Time) State {
	st := State{Blockers: blockers(windows, freezes, now)}
	if len(st.Blockers) == 0 {
		st.Open = true
		st.ClosesAt = closesAt(windows, freezes, now)
		return st
	}
	st.OpensAt = opensAt(windows, freezes, st.Blockers, now)
	return st
}

// blockers lists what keeps the Environment closed at t.
func blockers(windows []Window, freezes []Freeze, t time.Time) []Blocker {
	var out []Blocker
	for i := range freezes {
		if f := &freezes[i]; f.activeAt(t) {
			out = append(out, Blocker{Kind: FreezeBlocker, Freeze: f, Until: f.End})
		}
	}
	var allow []string
	allowOpen := false
	var nextAllow time.Time
	for i := range windows {
		w := &windows[i]
		start, active := w.activeStart(t)
		if w.Deny {
			if active {
				out = append(out, Blocker{Kind: DenyWindowBlocker, Window: w, Until: start.Add(w.Duration)})
			}
			continue
		}
		allow = append(allow, w.Name)
		if active {
			allowOpen = true
			continue
		}
		if next, ok := w.nextStart(t); ok && (nextAllow.IsZero() || next.Before(nextAllow)) {
			nextAllow = next
		}
	}
	if len(allow) > 0 && !allowOpen {
		out = append(out, Blocker{Kind: OutsideAllowWindows, Allow: allow, Until: nextAllow})
	}
	return out
}

// opensAt is the first time from now on at which nothing blocks, zero when there is none within
// the horizon. No opening can come before every blocker in force has let go, so each step jumps
// to the latest of their Until and looks again.
func opensAt(windows []Window, freezes []Freeze, bs []Blocker, now time.Time) time.Time {
	t := now
	for range maxSteps {
		next := t
		for _, b := range bs {
			if b.Until.IsZero() {
				return time.Time{}
			}
			if b.Until.After(next) {
				next = b.Until
			}
		}
		if !next.After(t) || next.Sub(now) > horizon {
			return time.Time{}
		}
		t = next
		if bs = blockers(windows, freezes, t); len(bs) == 0 {
			return t
		}
	}
	return time.Time{}
}

// closesAt is the first time after now at which something will block, as far as the windows and
// freezes known now say: a Deny window or a freeze starting, or the Allow windows all closing.
func closesAt(windows []Window, freezes []Freeze, now time.Time) time.Time {
	var candidates []time.Time
	for _, f := range freezes {
		if f.Start.After(now) {
			candidates = append(candidates, f.Start)
		}
	}
	hasAllow := false
	for _, w := range windows {
		if w.Deny {
			if s, ok := w.nextStart(now); ok {
				candidates = append(candidates, s)
			}
			continue
		}
		hasAllow = true
	}
	if hasAllow {
		if end := allowCoverageEnd(windows, now); !end.IsZero() {
			candidates = append(candidates, end)
		}
	}
	if len(candidates) == 0 {
		return time.Time{}
	}
	return slices.MinFunc(candidates, func(a, b time.Time) int { return a.Compare(b) })
}

// allowCoverageEnd is when the Allow windows open at now stop covering time without a gap.
func allowCoverageEnd(windows []Window, now time.Time) time.Time {
	t := now
	for range maxSteps {
		end := t
		for _, w := range windows {
			if w.Deny {
				continue
			}
			if s, ok := w.activeStart(t); ok && s.Add(w.Duration).After(end) {
				end = s.Add(w.Duration)
			}
		}
		if !end.After(t) {
			return t
		}
		if end.Sub(now) > horizon {
			return time.Time{}
		}
		t = end
	}
	return time.Time{}
}
