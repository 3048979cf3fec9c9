package sandbox

import (
	"os/exec"
	"testing"
)

// BenchmarkStep is what isolating a step costs: an empty step (/bin/true) in a sandbox with a
// workspace mount, against the same step as a plain child process.
func BenchmarkStep(b *testing.B) {
	if err := Check(testUID, testGID); err != nil {
		b.Skipf("this machine cannot run step sandboxes: %v", err)
	}
	ws := b.TempDir()
	b.Run("sandbox", func(b *testing.B) {
		for b.Loop() {
			cmd := Command(Spec{UID: testUID, GID: testGID, Args: []string{"/bin/true"}, Dir: "/", Mounts: []Mount{{Path: ws, Writable: true}}})
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
	})
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if err := exec.Command("/bin/true").Run(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/step")
	})
}
