//go:build !ferry_nodev

package main

import (
	"strings"
	"testing"
)

func TestDevCommands(t *testing.T) {
	dir := t.TempDir()
	out, err := runFerryOnHub(t, "dev", "push", "go-hello", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "is it running with --data-dir "+dir) {
		t.Errorf("ferry dev push without ferry dev: %v\n%s", err, out)
	}
	if _, err := runFerryOnHub(t, "dev", "push"); err == nil || !strings.Contains(err.Error(), "accepts 1 arg") {
		t.Errorf("ferry dev push without a project: %v", err)
	}
	if _, err := runFerryOnHub(t, "dev", "extra"); err == nil {
		t.Error("ferry dev with an argument was accepted")
	}
}

// TestDevMRCommandArguments: the merge request commands say what is wrong with their arguments
// before they look for a running ferry dev.
func TestDevMRCommandArguments(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dev", "mr", "open"}, "accepts 1 arg"},
		{[]string{"dev", "mr", "comment", "go-hello", "1"}, "accepts 3 arg"},
		{[]string{"dev", "mr", "merge", "go-hello"}, "accepts 2 arg"},
		{[]string{"dev", "mr", "comment", "go-hello", "one", "/retest"}, `"one" is not a merge request number`},
		{[]string{"dev", "mr", "merge", "go-hello", "0"}, `"0" is not a merge request number`},
		{[]string{"dev", "mr", "merge", "go-hello", "-3"}, "unknown shorthand flag"},
		{[]string{"dev", "mr", "comment", "go-hello", "!2", " ", "--data-dir", dir}, "the comment on !2 is empty"},
		{[]string{"dev", "mr", "merge", "go-hello", "!2", "--data-dir", dir}, "is it running with --data-dir " + dir},
		{[]string{"dev", "mr", "open", "go-hello", "--data-dir", dir}, "is it running with --data-dir " + dir},
	} {
		_, _, err := run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ferry %s: %v, want an error with %q", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}
