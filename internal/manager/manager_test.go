package manager

import (
	"slices"
	"testing"
)

func TestEnabledControllers(t *testing.T) {
	cases := []struct {
		in      []string
		want    []string
		wantErr bool
	}{
		{in: nil, want: knownControllers},
		{in: []string{"*"}, want: knownControllers},
		{in: []string{"cluster"}, want: []string{"cluster"}},
		{in: []string{"*", "-cluster"}, want: without(knownControllers, "cluster")},
		{in: []string{"buildreport"}, want: []string{"buildreport"}},
		{in: []string{"release"}, want: []string{"release"}},
		{in: []string{"nope"}, wantErr: true},
		{in: []string{"-nope"}, wantErr: true},
	}
	for _, tc := range cases {
		got, err := enabledControllers(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("%v: err = %v", tc.in, err)
			continue
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %v, want %v", tc.in, got, tc.want)
		}
	}
}

func without(list []string, name string) []string {
	var out []string
	for _, s := range list {
		if s != name {
			out = append(out, s)
		}
	}
	return out
}
