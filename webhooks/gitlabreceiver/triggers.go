package gitlabreceiver

import (
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// defaultBranches are the branches a Project tracks when spec.triggers.branches is empty.
var defaultBranches = []string{"main"}

// tracked decides whether a Project builds the trigger; the error (an *ignored) says why not.
func tracked(p *ferryv1.Project, t *trigger) error {
	branches := p.Spec.Triggers.Branches
	if len(branches) == 0 {
		branches = defaultBranches
	}
	switch t.kind {
	case ferryv1.TriggerPush:
		if !matchAny(branches, t.name) {
			return ignore("branch %s is not tracked (triggers.branches: %s)", t.name, strings.Join(branches, ", "))
		}
	case ferryv1.TriggerTag:
		if len(p.Spec.Triggers.Tags) == 0 {
			return ignore("tag pushes are not built (triggers.tags is empty)")
		}
		if !matchAny(p.Spec.Triggers.Tags, t.name) {
			return ignore("tag %s is not tracked (triggers.tags: %s)", t.name, strings.Join(p.Spec.Triggers.Tags, ", "))
		}
	case ferryv1.TriggerMergeRequest:
		if !p.Spec.Triggers.MergeRequests {
			return ignore("merge requests are not built (triggers.mergeRequests is false)")
		}
		if !matchAny(branches, t.name) {
			return ignore("merge request !%d targets %s, which is not tracked (triggers.branches: %s)", t.mergeRequestIID, t.name, strings.Join(branches, ", "))
		}
	default:
		return ignore("%s builds are not triggered by GitLab", t.kind)
	}
	return nil
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if matchGlob(p, name) {
			return true
		}
	}
	return false
}

// matchGlob matches a branch or tag name against a pattern the way GitLab matches protected
// branch wildcards: "*" stands for any characters, "/" included (release/* matches release/1.2
// and release/1.2/hotfix); everything else is literal.
func matchGlob(pattern, name string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == name
	}
	if !strings.HasPrefix(name, parts[0]) {
		return false
	}
	name = name[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, part := range parts[1 : len(parts)-1] {
		i := strings.Index(name, part)
		if i < 0 {
			return false
		}
		name = name[i+len(part):]
	}
	return len(name) >= len(last) && strings.HasSuffix(name, last)
}
