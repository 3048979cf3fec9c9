package local

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestRedactor(t *testing.T) {
	const secret = "s3cret-token-value"
	cases := []struct {
		name    string
		secrets []string
		writes  []string
		want    string
	}{
		{name: "no secrets pass through", writes: []string{"a", "b\n", "c"}, want: "ab\nc"},
		{name: "one line", secrets: []string{secret}, writes: []string{"token=" + secret + "\n"}, want: "token=[redacted]\n"},
		{name: "split across writes", secrets: []string{secret}, writes: []string{"token=s3cret-", "token-", "value and more\n"}, want: "token=[redacted] and more\n"},
		{name: "unfinished line flushed", secrets: []string{secret}, writes: []string{"x " + secret}, want: "x [redacted]"},
		{name: "longest first", secrets: []string{"abcd", "abcdefgh"}, writes: []string{"abcdefgh abcd\n"}, want: "[redacted] [redacted]\n"},
		{name: "short values are not secrets", secrets: []string{"ab", " ", ""}, writes: []string{"ab cd\n"}, want: "ab cd\n"},
		{name: "trimmed", secrets: []string{"  padded-secret\n"}, writes: []string{"padded-secret\n"}, want: "[redacted]\n"},
		{name: "many lines", secrets: []string{secret}, writes: []string{"1\n2 " + secret + "\n3", "\n"}, want: "1\n2 [redacted]\n3\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			r := newRedactor(&buf)
			r.AddSecrets(tc.secrets...)
			for _, w := range tc.writes {
				if n, err := r.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if buf.String() != tc.want {
				t.Errorf("wrote %q, want %q", buf.String(), tc.want)
			}
		})
	}
}

// TestRedactorLongLine: a line longer than what the redactor holds back is written in pieces,
// and a secret across the cut is still redacted.
func TestRedactorLongLine(t *testing.T) {
	const secret = "0123456789-secret-0123456789"
	var buf bytes.Buffer
	r := newRedactor(&buf)
	r.AddSecrets(secret)
	filler := strings.Repeat("x", maxHeldBytes-10)
	// The secret starts before the cut and ends in the next write.
	for _, w := range []string{filler + secret[:15], secret[15:] + strings.Repeat("y", maxHeldBytes), "\n"} {
		if _, err := r.Write([]byte(w)); err != nil {
			t.Fatal(err)
		}
		if buf.Len() > 0 && strings.Contains(buf.String(), "secret") {
			t.Fatal("a part of the secret was written")
		}
	}
	_ = r.Flush()
	if got := buf.String(); strings.Contains(got, "secret") || strings.Count(got, redacted) != 1 || len(got) != len(filler)+len(redacted)+maxHeldBytes+1 {
		t.Errorf("wrote %d bytes with %d redactions", len(got), strings.Count(got, redacted))
	}
}

func TestRedact(t *testing.T) {
	r := newRedactor(&bytes.Buffer{})
	r.AddSecrets("hunter2-password")
	if got := r.Redact("failed: user:hunter2-password@host"); got != "failed: user:[redacted]@host" {
		t.Errorf("Redact = %q", got)
	}
}

func TestDockerConfigSecrets(t *testing.T) {
	auth := base64.StdEncoding.EncodeToString([]byte("robot$team+ci:pa55word-from-auth"))
	cfg := `{"auths":{"harbor.example.com":{"username":"robot$team+ci","password":"pa55word","auth":"` + auth + `"},"other:5000":{"identitytoken":"id-token-1","registrytoken":"reg-token-2"}}}`
	got := dockerConfigSecrets([]byte(cfg))
	for _, want := range []string{"pa55word", auth, "pa55word-from-auth", "id-token-1", "reg-token-2"} {
		if !slices.Contains(got, want) {
			t.Errorf("secrets %q lack %q", got, want)
		}
	}
	if slices.Contains(got, "robot$team+ci") {
		t.Error("a user name is not a secret")
	}
	if dockerConfigSecrets([]byte("not json")) != nil || dockerConfigSecrets(nil) != nil {
		t.Error("no secrets from nothing")
	}
}

func TestExitCode(t *testing.T) {
	run := func(script string) error { return exec.Command("/bin/sh", "-c", script).Run() }
	for script, want := range map[string]int32{"exit 0": 0, "exit 3": 3, "kill -KILL $$": 137, "kill -TERM $$": 143} {
		if got := exitCode(run(script)); got != want {
			t.Errorf("exitCode(%s) = %d, want %d", script, got, want)
		}
	}
	if got := exitCode(errors.New("not started")); got != 1 {
		t.Errorf("exitCode(other error) = %d", got)
	}
}
