package local

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
)

// killMarked kills this user's processes whose environment carries the run's marker: what a step
// left running outside its process group, or what a crashed manager's steps still run. It returns
// how many it killed.
func killMarked(uid types.UID) int {
	marker := []byte(markerEnv + "=" + string(uid) + "\x00")
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	killed := 0
	self := os.Getpid()
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join(dir, "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), append([]byte{0}, marker...)) {
			continue
		}
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	return killed
}
