package main

import "testing"

func TestGreeting(t *testing.T) {
	if got := greeting(""); got != "Hello, world!" {
		t.Fatalf("greeting() = %q", got)
	}
	if got := greeting("Ferry"); got != "Hello, Ferry!" {
		t.Fatalf("greeting(Ferry) = %q", got)
	}
}
