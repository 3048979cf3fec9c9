package controlplane

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"
)

// UnreadyAnnotation keeps a pod in a simulated cluster running but never ready: kwok's stand-in for an application that starts and fails its health check. Tests and demos put it on a
// workload (through the pipeline file's deploy.podAnnotations) to show a failing rollout.
const UnreadyAnnotation = "sim.ferry.dev/unready"

// unreadyStage moves a pod that carries UnreadyAnnotation to Running with Ready=False, the way a
// kubelet reports a container whose readiness probe keeps failing.
const unreadyStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-unready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.metadata.annotations["` + UnreadyAnnotation + `"]'
      operator: 'Exists'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "False"
        reason: ContainersNotReady
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`

// writeStages writes kwok's configuration for a simulated cluster into dir: the fast node and pod
// stages from the kwok module (collected by hack/controlplane/build.sh), with pod-ready skipping pods
// that carry UnreadyAnnotation, plus the pod-unready stage for those.
func writeStages(assets, dir string) (string, error) {
	src := filepath.Join(assets, "kwok-stages.yaml")
	data, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("kwok stages not found (run `make controlplane`): %w", err)
	}
	var out bytes.Buffer
	found := false
	for _, doc := range bytes.Split(data, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		var stage map[string]any
		if err := yaml.Unmarshal(doc, &stage); err != nil {
			return "", fmt.Errorf("failed to parse a stage in %s: %w", src, err)
		}
		if name, _, _ := nestedString(stage, "metadata", "name"); name == "pod-ready" {
			if err := excludeUnready(stage); err != nil {
				return "", err
			}
			found = true
		}
		b, err := yaml.Marshal(stage)
		if err != nil {
			return "", err
		}
		out.Write(b)
		out.WriteString("---\n")
	}
	if !found {
		return "", fmt.Errorf("%s has no pod-ready stage", src)
	}
	out.WriteString(unreadyStage)
	path := filepath.Join(dir, "kwok-stages.yaml")
	return path, os.WriteFile(path, out.Bytes(), 0o600)
}

func excludeUnready(stage map[string]any) error {
	spec, _ := stage["spec"].(map[string]any)
	selector, _ := spec["selector"].(map[string]any)
	exprs, ok := selector["matchExpressions"].([]any)
	if !ok {
		return fmt.Errorf("the pod-ready stage has no selector.matchExpressions")
	}
	selector["matchExpressions"] = append(exprs, map[string]any{
		"key":      `.metadata.annotations["` + UnreadyAnnotation + `"]`,
		"operator": "DoesNotExist",
	})
	return nil
}

func nestedString(obj map[string]any, fields ...string) (string, bool, error) {
	var cur any = obj
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, nil
		}
		cur = m[f]
	}
	s, ok := cur.(string)
	return s, ok, nil
}
