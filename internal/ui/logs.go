package ui

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
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

// logReader finds a Build's step logs: files the local executor wrote under its log directory
// (status.logURL file://…), or the logs of the Tekton TaskRun's pod, one container per step.
type logReader struct {
	reader    client.Reader
	clientset kubernetes.Interface
	logDir    string
}

// read returns one log per step, in the Build's step order, plus a log of the whole Build when the
// executor keeps a single file; note says why there are none.
func (l *logReader) read(ctx context.Context, b *ferryv1.Build) (steps []stepLog, whole *stepLog, note string) {
	switch {
	case strings.HasPrefix(b.Status.LogURL, "file://"):
		return l.fromFiles(b)
	case b.Status.PipelineRunRef != nil:
		return l.fromPods(ctx, b), nil, ""
	case b.Status.LogURL != "":
		return nil, nil, "The logs are kept elsewhere: " + b.Status.LogURL
	}
	return nil, nil, "No logs yet: the Build has not started running."
}

// fromFiles reads logs under the log directory only: a log URL pointing anywhere else is refused,
// so that a Build's status cannot make the UI show an arbitrary file.
func (l *logReader) fromFiles(b *ferryv1.Build) ([]stepLog, *stepLog, string) {
	u, err := url.Parse(b.Status.LogURL)
	if err != nil || u.Host != "" && u.Host != "localhost" {
		return nil, nil, "The log URL is not a local file URL."
	}
	path, err := l.underLogDir(u.Path)
	if err != nil {
		return nil, nil, err.Error()
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, "The log is not on this replica of the manager (the local executor writes logs where it runs)."
	}
	if !info.IsDir() {
		log := readTail(path)
		log.Step = "build"
		return nil, &log, ""
	}
	var steps []stepLog
	for _, st := range b.Status.Steps {
		log := readTail(filepath.Join(path, st.Name+".log"))
		log.Step = st.Name
		if log.Note != "" && (st.State == "Waiting" || st.State == "") {
			log.Note = "Not started."
		}
		steps = append(steps, log)
	}
	return steps, nil, ""
}

func (l *logReader) underLogDir(p string) (string, error) {
	refused := errors.New("the log URL is outside the manager's log directory and is not shown")
	if l.logDir == "" {
		return "", refused
	}
	dir, err := filepath.EvalSymlinks(l.logDir)
	if err != nil {
		return "", refused
	}
	resolved, err := filepath.EvalSymlinks(filepath.Clean(p))
	if err != nil {
		// Not written yet: judge the path as written.
		resolved = filepath.Clean(p)
	}
	rel, err := filepath.Rel(dir, resolved)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || filepath.IsAbs(rel) {
		return "", refused
	}
	return resolved, nil
}

func readTail(path string) stepLog {
	f, err := os.Open(path)
	if err != nil {
		return stepLog{Note: "No log."}
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return stepLog{Note: err.Error()}
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

// fromPods reads each step's container log from the pod of the PipelineRun's TaskRun.
func (l *logReader) fromPods(ctx context.Context, b *ferryv1.Build) []stepLog {
	var trs pipelinev1.TaskRunList
	err := l.reader.List(ctx, &trs, client.InNamespace(b.Namespace), client.MatchingLabels{"tekton.dev/pipelineRun": b.Status.PipelineRunRef.Name})
	containers := map[string]string{}
	pod := ""
	if err == nil {
		for _, tr := range trs.Items {
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
