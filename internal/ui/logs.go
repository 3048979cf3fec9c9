package ui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	localexecutor "github.com/ferryci/ferry/controllers/build/local"
	"github.com/ferryci/ferry/internal/buildplan"
)

// maxLogBytes is how much of one step's log a page shows: the end, where failures are.
const maxLogBytes = 512 << 10

// stepLog is the log of one step, or of the whole Build when the executor keeps one file.
type stepLog struct {
	Step string
	Text string
	// Truncated says the beginning was left out.
	Truncated bool
	// Note says why there is no log.
	Note string
}

// logReader finds a Build's logs. It never goes where the Build's status points (status.logURL,
// status.pipelineRunRef): anyone who may write a Build's status could point them at another
// Build's log or at any file. The local executor's log is at the path the executor gives the
// Build under its log directory (namespace, name and UID); a Tekton Build's steps are containers
// of the pod of the TaskRun of the PipelineRun named after the Build (name and UID).
type logReader struct {
	reader    client.Reader
	clientset kubernetes.Interface
	logDir    string
}

// read returns one log per step, in the Build's step order, or the log of the whole Build when
// the executor keeps a single file; note says why there are none.
func (l *logReader) read(ctx context.Context, b *ferryv1.Build) (steps []stepLog, whole *stepLog, note string) {
	switch {
	case b.Status.Executor == localexecutor.Name:
		return l.fromFile(b)
	case b.Status.Executor == tektonExecutor || b.Status.Executor == "" && b.Status.PipelineRunRef != nil:
		return l.fromPods(ctx, b), nil, ""
	case b.Status.Executor != "":
		return nil, nil, fmt.Sprintf("The UI does not know where executor %q keeps its logs.", b.Status.Executor)
	}
	return nil, nil, "No logs yet: the Build has not started running."
}

// tektonExecutor is the name Build.status.executor gives the Tekton executor.
const tektonExecutor = "tekton"

// fromFile reads the local executor's log of the Build: a regular file, never a symbolic link,
// in a directory under the log directory.
func (l *logReader) fromFile(b *ferryv1.Build) ([]stepLog, *stepLog, string) {
	if l.logDir == "" {
		return nil, nil, "The UI has no log directory (--log-dir), so it cannot show the local executor's logs."
	}
	path, err := l.underLogDir(localexecutor.LogPath(l.logDir, b))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, notHere
	case err != nil:
		return nil, nil, err.Error()
	}
	info, err := os.Lstat(path)
	switch {
	case err != nil:
		return nil, nil, notHere
	case !info.Mode().IsRegular():
		return nil, nil, "The Build's log is not a regular file and is not shown."
	}
	log := readTail(path, info)
	log.Step = "build"
	return nil, &log, ""
}

// notHere says why a local executor's log is missing.
const notHere = "The log is not on this replica of the manager (the local executor writes logs where it runs)."

// underLogDir returns p with its directory resolved, and refuses a directory that leads out of
// the log directory through a symbolic link. The file itself is not resolved: the caller refuses
// one that is not a regular file.
func (l *logReader) underLogDir(p string) (string, error) {
	refused := errors.New("the Build's log leads outside the manager's log directory and is not shown")
	dir, err := filepath.EvalSymlinks(l.logDir)
	if err != nil {
		return "", refused
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(filepath.Clean(p)))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		return "", refused
	}
	rel, err := filepath.Rel(dir, parent)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", refused
	}
	return filepath.Join(parent, filepath.Base(p)), nil
}

// readTail reads the end of the regular file at path, which must still be the file lstat saw:
// one swapped for a symbolic link in between is not read.
func readTail(path string, lstat fs.FileInfo) stepLog {
	f, err := os.Open(path)
	if err != nil {
		return stepLog{Note: "No log."}
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return stepLog{Note: err.Error()}
	}
	if !os.SameFile(info, lstat) {
		return stepLog{Note: "The Build's log changed while it was opened and is not shown."}
	}
	var log stepLog
	if info.Size() > maxLogBytes {
		if _, err := f.Seek(info.Size()-maxLogBytes, io.SeekStart); err != nil {
			return stepLog{Note: err.Error()}
		}
		log.Truncated = true
	}
	data, err := io.ReadAll(io.LimitReader(f, maxLogBytes))
	if err != nil {
		return stepLog{Note: err.Error()}
	}
	log.Text = string(data)
	return log
}

// fromPods reads each step's container log from the pod of the TaskRun of the Build's PipelineRun.
func (l *logReader) fromPods(ctx context.Context, b *ferryv1.Build) []stepLog {
	run := buildplan.PipelineRunName(b.Name, b.UID)
	var trs pipelinev1.TaskRunList
	err := l.reader.List(ctx, &trs, client.InNamespace(b.Namespace), client.MatchingLabels{ferryv1.TektonPipelineRunLabel: run})
	containers := map[string]string{}
	pod := ""
	if err == nil {
		for _, tr := range trs.Items {
			if owner := metav1.GetControllerOf(&tr); owner == nil || owner.Kind != "PipelineRun" || owner.Name != run {
				continue
			}
			if tr.Status.PodName != "" {
				pod = tr.Status.PodName
			}
			for _, st := range tr.Status.Steps {
				containers[st.Name] = st.Container
			}
		}
	}
	var steps []stepLog
	for _, st := range b.Status.Steps {
		log := stepLog{Step: st.Name}
		switch {
		case err != nil:
			log.Note = "The TaskRun cannot be read: " + err.Error()
		case st.State == "Waiting" || st.State == "":
			log.Note = "Not started."
		case pod == "":
			log.Note = "Tekton has not started the step's pod."
		default:
			container := containers[st.Name]
			if container == "" {
				container = "step-" + st.Name
			}
			log = l.podLog(ctx, b.Namespace, pod, container)
			log.Step = st.Name
		}
		steps = append(steps, log)
	}
	return steps
}

func (l *logReader) podLog(ctx context.Context, ns, pod, container string) stepLog {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req := l.clientset.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, TailLines: ptr.To[int64](5000), LimitBytes: ptr.To[int64](maxLogBytes)})
	rc, err := req.Stream(ctx)
	if err != nil {
		return stepLog{Note: fmt.Sprintf("The log of container %s of pod %s cannot be read (pods are removed when their Build is pruned): %v", container, pod, err)}
	}
	defer func() { _ = rc.Close() }()
	data, err := io.ReadAll(io.LimitReader(rc, maxLogBytes+1))
	if err != nil {
		return stepLog{Note: err.Error()}
	}
	log := stepLog{Text: string(data)}
	if len(data) > maxLogBytes {
		log.Text, log.Truncated = string(data[:maxLogBytes]), true
	}
	return log
}
