// Package text shortens what Ferry writes for people — condition messages, events, commit status
// descriptions, names copied from webhooks — in one way: by characters, never splitting one, and
// with an ellipsis that says something was cut.
package text

import (
	"strings"
	"unicode/utf8"
)

// MaxMessage is the length, in characters, of every condition and event message Ferry writes.
// The API allows 32768; people read far less, and a message cut here still names what failed
// first.
const MaxMessage = 2048

// ellipsis ends a shortened text.
const ellipsis = "…"

// Truncate shortens s to at most n characters, the last of them an ellipsis when s was longer.
// It never splits a UTF-8 character; invalid bytes count as one character each.
func Truncate(s string, n int) string {
	if n <= 0 {
		return ""
	}
	count := 0
	for i := range s {
		if count == n-1 {
			// Room for one more character: keep it if it is the last, else end with the ellipsis.
			if _, size := utf8.DecodeRuneInString(s[i:]); i+size < len(s) {
				return s[:i] + ellipsis
			}
			return s
		}
		count++
	}
	return s
}

// Message shortens a condition or event message to MaxMessage characters.
func Message(s string) string { return Truncate(s, MaxMessage) }

// OneLine keeps the first line of s, trimmed and shortened to at most n characters.
func OneLine(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return Truncate(strings.TrimSpace(s), n)
}
