package text_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ferryci/ferry/internal/text"
)

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"", 5, ""},
		{"hello", 5, "hello"},
		{"hello!", 5, "hell…"},
		{"héllo wörld", 6, "héllo…"},
		{"日本語のテキスト", 4, "日本語…"},
		{"日本語", 3, "日本語"},
		{"abc", 1, "…"},
		{"abc", 0, ""},
		{"a\xffb\xffc", 4, "a\xffb…"},
	} {
		got := text.Truncate(tc.in, tc.n)
		if got != tc.want {
			t.Errorf("Truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
		if n := utf8.RuneCountInString(got); n > tc.n && tc.n > 0 {
			t.Errorf("Truncate(%q, %d) has %d characters", tc.in, tc.n, n)
		}
	}
}

func TestMessageKeepsTheLimitAndValidUTF8(t *testing.T) {
	long := strings.Repeat("é", text.MaxMessage+10)
	got := text.Message(long)
	if utf8.RuneCountInString(got) != text.MaxMessage || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
		t.Fatalf("Message kept %d characters (valid %v): %q…", utf8.RuneCountInString(got), utf8.ValidString(got), got[:20])
	}
	if short := "failed: exit 1"; text.Message(short) != short {
		t.Fatalf("a short message changed: %q", text.Message(short))
	}
}

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"  first line\nsecond":   "first line",
		"a very long first line": "a very lo…",
		"":                       "",
		"\n\nafter blank lines":  "after bla…",
		"  short  ":              "short",
		"abcdefghijkl":           "abcdefghi…",
		"äöüäöüäöüä":             "äöüäöüäöüä",
	} {
		if got := text.OneLine(in, 10); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
