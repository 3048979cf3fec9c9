package main

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestImageBinaryLeavesOutFerryDev checks that the binary of Ferry's image (-tags ferry_nodev)
// links none of what only ferry dev needs: the GitLab simulator, the git server, the registry
// server and the local control plane are production code of ferry dev, not of the manager.
func TestImageBinaryLeavesOutFerryDev(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list the image binary's packages")
	}
	out, err := exec.Command(goBin, "list", "-deps", "-tags", "ferry_nodev", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps -tags ferry_nodev: %v", err)
	}
	deps := strings.Fields(string(out))
	if !slices.Contains(deps, "github.com/ferryci/ferry/internal/manager") {
		t.Fatalf("go list -deps -tags ferry_nodev does not list the manager, so it listed something else:\n%s", out)
	}
	for _, devOnly := range []string{"internal/dev", "internal/gitlabsim", "internal/gitserver", "internal/registry", "internal/controlplane"} {
		if pkg := "github.com/ferryci/ferry/" + devOnly; slices.Contains(deps, pkg) {
			t.Errorf("the image binary (-tags ferry_nodev) links %s, which only ferry dev needs", pkg)
		}
	}
}
