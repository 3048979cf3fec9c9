package rollout

import (
	"maps"
	"slices"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// AllowPodAnnotations splits the deploy settings' pod annotations into the ones an Environment's
// allowedPodAnnotations patterns allow and the sorted keys of the ones they do not. No pattern
// allows nothing. The repository writes the annotations; the platform decides which may reach
// pods (a service-mesh bypass or a sidecar injector setting is the platform's decision).
func AllowPodAnnotations(annotations map[string]string, patterns []string) (allowed map[string]string, dropped []string) {
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		if !strings.HasPrefix(k, ferryv1.ReservedAnnotationPrefix) && slices.ContainsFunc(patterns, func(p string) bool { return MatchPattern(p, k) }) {
			if allowed == nil {
				allowed = map[string]string{}
			}
			allowed[k] = annotations[k]
			continue
		}
		dropped = append(dropped, k)
	}
	return allowed, dropped
}

// MatchPattern reports whether s matches pattern, in which '*' matches any run of characters ('/'
// included) and every other character itself.
func MatchPattern(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(s, part)
		if i < 0 {
			return false
		}
		s = s[i+len(part):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}
