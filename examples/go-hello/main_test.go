package main

import "testing"

func TestGreeting(t *testing.T) {
	for _, tc := range []struct{ name, revision, want string }{
		{"", "", "Hello, world!"},
		{"Ferry", "", "Hello, Ferry!"},
		{"Ferry", "81e087262c42b2c1f7a7bd5dcd0ed3e8a0c9b6c1", "Hello, Ferry! (commit 81e08726)"},
	} {
		if got := greeting(tc.name, tc.revision); got != tc.want {
			t.Errorf("greeting(%q, %q) = %q, want %q", tc.name, tc.revision, got, tc.want)
		}
	}
}
