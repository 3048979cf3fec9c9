package supplychain

import (
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/mod/semver"
)

// Kinds of package changes between two images.
const (
	ChangeAdded      = "Added"
	ChangeRemoved    = "Removed"
	ChangeUpgraded   = "Upgraded"
	ChangeDowngraded = "Downgraded"
	// ChangeChanged is a version change that cannot be ordered: a version missing on one side,
	// or a package found at several versions in one image.
	ChangeChanged = "Changed"
)

// Kind says whether the change is an upgrade or a downgrade by the ordering of the package's
// ecosystem, or a change that cannot be ordered.
func (c Change) Kind() string {
	if c.From == "" || c.To == "" || strings.Contains(c.From, ",") || strings.Contains(c.To, ",") {
		return ChangeChanged
	}
	switch n := CompareVersions(c.Type, c.From, c.To); {
	case n < 0:
		return ChangeUpgraded
	case n > 0:
		return ChangeDowngraded
	default:
		return ChangeChanged
	}
}

// CompareVersions orders two versions of a package of type typ: negative when a is older than b,
// positive when newer, 0 when they are equal or cannot be told apart. Debian versions compare as
// dpkg does (epoch, upstream version, revision); Go modules as semantic versions; Python
// distributions with their pre-releases and development releases before the release.
func CompareVersions(typ, a, b string) int {
	switch typ {
	case TypeDeb:
		return compareDebian(a, b)
	case TypeGolang:
		if semver.IsValid(a) && semver.IsValid(b) {
			return semver.Compare(a, b)
		}
	case TypePyPI:
		return verrevcmp(pypiOrderable(a), pypiOrderable(b))
	}
	return verrevcmp(a, b)
}

// compareDebian compares Debian versions [epoch:]upstream[-revision] (deb-version(7)).
func compareDebian(a, b string) int {
	ea, ua, ra := splitDebian(a)
	eb, ub, rb := splitDebian(b)
	if ea != eb {
		if ea < eb {
			return -1
		}
		return 1
	}
	if n := verrevcmp(ua, ub); n != 0 {
		return n
	}
	return verrevcmp(ra, rb)
}

func splitDebian(v string) (epoch int, upstream, revision string) {
	if e, rest, ok := strings.Cut(v, ":"); ok {
		if n, err := strconv.Atoi(e); err == nil {
			epoch, v = n, rest
		}
	}
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		return epoch, v[:i], v[i+1:]
	}
	return epoch, v, ""
}

// verrevcmp is dpkg's comparison of version parts (lib/dpkg/version.c): runs of non-digits compare
// character by character, letters before other characters and '~' before everything, even the
// end; runs of digits compare as numbers.
func verrevcmp(a, b string) int {
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		for (i < len(a) && !isDigit(a[i])) || (j < len(b) && !isDigit(b[j])) {
			ac, bc := charOrder(a, i), charOrder(b, j)
			if ac != bc {
				return sign(ac - bc)
			}
			i, j = i+1, j+1
		}
		for i < len(a) && a[i] == '0' {
			i++
		}
		for j < len(b) && b[j] == '0' {
			j++
		}
		firstDiff := 0
		for i < len(a) && j < len(b) && isDigit(a[i]) && isDigit(b[j]) {
			if firstDiff == 0 {
				firstDiff = int(a[i]) - int(b[j])
			}
			i, j = i+1, j+1
		}
		if i < len(a) && isDigit(a[i]) {
			return 1
		}
		if j < len(b) && isDigit(b[j]) {
			return -1
		}
		if firstDiff != 0 {
			return sign(firstDiff)
		}
	}
	return 0
}

// charOrder is dpkg's order of the character at i of s: the end and digits 0, '~' below, letters
// by their code, anything else after the letters.
func charOrder(s string, i int) int {
	if i >= len(s) {
		return 0
	}
	switch c := s[i]; {
	case isDigit(c):
		return 0
	case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		return int(c)
	case c == '~':
		return -1
	default:
		return int(c) + 256
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

var (
	pypiPreRelease = regexp.MustCompile(`(\d)[._-]?(a|alpha|b|beta|c|rc|pre|preview)(\d*)`)
	pypiDev        = regexp.MustCompile(`[._-]?dev`)
)

// pypiOrderable rewrites a Python version (PEP 440) so that verrevcmp orders it: a pre-release
// (1.0rc1) gets dpkg's '~' and sorts before its release, a development release (1.0.dev1) two of
// them and sorts before its pre-releases; a post-release (1.0.post1) sorts after as it is.
func pypiOrderable(v string) string {
	v = strings.ToLower(v)
	v = pypiDev.ReplaceAllString(v, "~~dev")
	return pypiPreRelease.ReplaceAllString(v, "$1~$2$3")
}
