package supplychain

import "testing"

// TestCompareVersions: versions order as their ecosystems order them, not as strings — Debian's
// epochs, revisions and '~', Go's semantic versions and pseudo-versions, Python's pre-releases.
func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		typ, older, newer string
	}{
		{TypeDeb, "2.36-9", "2.36-10"},
		{TypeDeb, "2.36-9+deb12u3", "2.36-9+deb12u10"},
		{TypeDeb, "1.0~rc1-1", "1.0-1"},
		{TypeDeb, "9.9-1", "1:1.0-1"},
		{TypeDeb, "3.0.11-1~deb12u2", "3.0.11-1"},
		{TypeDeb, "1.2", "1.2a"},
		{TypeGolang, "v0.9.0", "v0.10.0"},
		{TypeGolang, "v1.2.0-rc.1", "v1.2.0"},
		{TypeGolang, "v0.0.0-20240101000000-abcdefabcdef", "v0.1.0"},
		{TypePyPI, "3.0.3", "3.0.10"},
		{TypePyPI, "2.0rc1", "2.0"},
		{TypePyPI, "2.0.dev1", "2.0a1"},
		{TypePyPI, "2.0", "2.0.post1"},
	} {
		if n := CompareVersions(tc.typ, tc.older, tc.newer); n >= 0 {
			t.Errorf("%s: CompareVersions(%q, %q) = %d, want < 0", tc.typ, tc.older, tc.newer, n)
		}
		if n := CompareVersions(tc.typ, tc.newer, tc.older); n <= 0 {
			t.Errorf("%s: CompareVersions(%q, %q) = %d, want > 0", tc.typ, tc.newer, tc.older, n)
		}
	}
	if n := CompareVersions(TypeDeb, "0:1.0-1", "1.0-1"); n != 0 {
		t.Errorf("an epoch of 0 is the same as none: %d", n)
	}
}

// TestChangeKind: a version change is an upgrade or a downgrade by its ecosystem's order; one
// that cannot be ordered (a version missing, several versions in one image) is a change.
func TestChangeKind(t *testing.T) {
	for _, tc := range []struct {
		c    Change
		want string
	}{
		{Change{Type: TypeDeb, Name: "libc6", From: "2.36-9", To: "2.36-10"}, ChangeUpgraded},
		{Change{Type: TypeGolang, Name: "golang.org/x/net", From: "v0.10.0", To: "v0.9.0"}, ChangeDowngraded},
		{Change{Type: TypePyPI, Name: "flask", From: "3.0.3", To: ""}, ChangeChanged},
		{Change{Type: TypePyPI, Name: "flask", From: "3.0.3,3.0.4", To: "3.0.4"}, ChangeChanged},
		{Change{Type: TypeDeb, Name: "zlib", From: "1.0", To: "1.00"}, ChangeChanged},
	} {
		if got := tc.c.Kind(); got != tc.want {
			t.Errorf("%+v.Kind() = %s, want %s", tc.c, got, tc.want)
		}
	}
}
