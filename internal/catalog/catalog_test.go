package catalog

import (
	"strings"
	"testing"
)

const digest = "sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"

func TestParseAndResolve(t *testing.T) {
	c, err := Parse("test", []byte("stacks:\n  debian-12: reg.example.com/stacks/debian@"+digest+"\nruntimes:\n  python-3.12: reg.example.com/rt/python@"+digest+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		kind    Kind
		in      string
		want    string
		wantErr string
	}{
		{Stack, "debian-12", "reg.example.com/stacks/debian@" + digest, ""},
		{Runtime, "python-3.12", "reg.example.com/rt/python@" + digest, ""},
		{Stack, "python-3.12", "", `stack "python-3.12" is not in the catalog (known stacks: debian-12)`},
		{Runtime, "node-22", "", `runtime "node-22" is not in the catalog (known runtimes: python-3.12)`},
		{Stack, "docker.io/library/debian:12", "docker.io/library/debian:12", ""},
		{Runtime, "python:3.12", "python:3.12", ""},
	}
	for _, tc := range cases {
		got, err := c.Resolve(tc.kind, tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s %s: err = %v, want %q", tc.kind, tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s %s = %q, %v; want %q", tc.kind, tc.in, got, err, tc.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]string{
		"stacks:\n  debian-12: reg.example.com/stacks/debian:12\n": "must be pinned by digest",
		"stacks:\n  Debian_12: reg.example.com/d@" + digest + "\n": "a name is lower-case",
		"stack:\n  debian-12: x\n":                                 "unknown field",
	}
	for in, want := range cases {
		if _, err := Parse("cm", []byte(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", in, err, want)
		}
	}
	var empty *Catalog
	if _, err := empty.Resolve(Stack, "debian-12"); err == nil || !strings.Contains(err.Error(), "has no stacks") {
		t.Errorf("nil catalog: %v", err)
	}
}
