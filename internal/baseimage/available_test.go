package baseimage

import (
	"errors"
	"strings"
	"testing"
)

func TestAvailable(t *testing.T) {
	all := map[string]bool{"debootstrap": true, "chroot": true, "mount": true, "go": true, debianKeyring: true}
	machine := func(mutate func(h *host, have map[string]bool)) host {
		have := map[string]bool{}
		for k, v := range all {
			have[k] = v
		}
		h := host{
			goos:     "linux",
			euid:     0,
			lookPath: func(name string) string { return map[bool]string{true: "/usr/sbin/" + name}[have[name]] },
			exists:   func(p string) bool { return have[p] },
			mountNS:  func() error { return nil },
		}
		if mutate != nil {
			mutate(&h, have)
		}
		return h
	}
	tests := []struct {
		name   string
		host   host
		want   []string // substrings of the error; none means no error
		absent []string
	}{
		{name: "everything there", host: machine(nil)},
		{
			name: "debootstrap missing",
			host: machine(func(_ *host, have map[string]bool) { delete(have, "debootstrap") }),
			want: []string{"missing: debootstrap", "apt-get install debootstrap", "hack/deps.sh debootstrap"},
		},
		{
			name:   "no keyring: packages could not be authenticated",
			host:   machine(func(_ *host, have map[string]bool) { delete(have, debianKeyring) }),
			want:   []string{"archive keyring", "apt-get install debian-archive-keyring"},
			absent: []string{"debootstrap;"},
		},
		{
			name: "not root, no go, no debootstrap: all named at once",
			host: machine(func(h *host, have map[string]bool) {
				h.euid = 1000
				delete(have, "go")
				delete(have, "debootstrap")
			}),
			want: []string{"root:", "debootstrap", "a go command on PATH", "apt-get install debootstrap"},
		},
		{
			name: "no mount namespaces",
			host: machine(func(h *host, _ map[string]bool) {
				h.mountNS = func() error { return errors.New("operation not permitted") }
			}),
			want: []string{"mount namespaces (operation not permitted)", "CAP_SYS_ADMIN"},
		},
		{
			name: "not Linux",
			host: machine(func(h *host, _ map[string]bool) { h.goos = "darwin" }),
			want: []string{"need Linux (this is darwin)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.host.check()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("check() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("check() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(err.Error(), a) {
					t.Errorf("error %q contains %q", err, a)
				}
			}
		})
	}
}
