package dev

import (
	"strings"
	"testing"
)

// The executor follows the flag: by default Tekton where its pods have a real node to run on and
// local elsewhere, Tekton only with a real node, and anything else is refused with what is wanted.
func TestDecideExecutor(t *testing.T) {
	for _, tc := range []struct {
		flag    string
		real    bool
		want    string
		wantErr string
	}{
		{flag: "", real: true, want: ExecutorTekton},
		{flag: "", real: false, want: ExecutorLocal},
		{flag: "auto", real: true, want: ExecutorTekton},
		{flag: "auto", real: false, want: ExecutorLocal},
		{flag: "local", real: true, want: ExecutorLocal},
		{flag: "local", real: false, want: ExecutorLocal},
		{flag: "tekton", real: true, want: ExecutorTekton},
		{flag: "tekton", real: false, wantErr: "--executor=tekton needs real nodes to run Tekton's pods on, and nodes are simulated here (asked for)"},
		{flag: "docker", real: true, wantErr: "--executor=docker: want tekton, local or auto"},
	} {
		got, err := decideExecutor(tc.flag, tc.real, "asked for")
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("--executor=%q real=%v: error %v, want %q", tc.flag, tc.real, err, tc.wantErr)
		case tc.wantErr == "" && (err != nil || got != tc.want):
			t.Errorf("--executor=%q real=%v: %q, %v, want %q", tc.flag, tc.real, got, err, tc.want)
		}
	}
}
