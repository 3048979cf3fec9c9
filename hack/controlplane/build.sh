#!/usr/bin/env bash
# Builds the control-plane binaries that tests and `ferry dev` run — kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok, kubectl, the real node's kubelet and kube-proxy, and Tekton Pipelines' controller,
# webhook and helper binaries — from Go modules only (no downloads outside the Go module proxy), into a
# git-ignored cache. Each binary is rebuilt only when its pinned version changes, so only a new machine pays.
#
# Usage: hack/controlplane/build.sh [OUTPUT_DIR] [SET]   (default: bin/controlplane, controlplane)
# SET is controlplane (what tests and `ferry dev` run) or triggers: Tekton Triggers' EventListener sink
# and core interceptors with Triggers' CRDs (in OUTPUT_DIR/triggers-crds), which only `make bench` runs
# to compare Ferry's GitLab receiver with (about 4 minutes on 2 cores the first time).
# Prints the output directory as its last line; point KUBEBUILDER_ASSETS or FERRY_CONTROLPLANE_ASSETS at it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/bin/controlplane}
set_name=${2:-controlplane}
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Pinned versions. The module versions live in each sub-module's go.mod; these are the stamps that
# decide whether a cached binary is current, and the version the Kubernetes binaries report.
k8s_version=v1.35.4
etcd_version=v3.6.6
kwok_version=v0.8.0
tekton_version=v1.15.1
triggers_version=v0.36.0

# The interceptors are Triggers' cmd/interceptors with a listen address (hack/controlplane/triggers/
# interceptors): rebuilt when that source changes too.
interceptors_version="$triggers_version+$(sha256sum "$here/triggers/interceptors/main.go" | cut -c1-12)"

# name | module dir | package | version | extra ldflags
controlplane_targets=(
  "etcd|etcd|go.etcd.io/etcd/server/v3|$etcd_version|"
  "kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|$kwok_version|"
  "kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|$k8s_version|k8s"
  "kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|$k8s_version|k8s"
  "kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|$k8s_version|k8s"
  "kubectl|kubernetes|k8s.io/kubernetes/cmd/kubectl|$k8s_version|k8s"
  "kubelet|kubernetes|k8s.io/kubernetes/cmd/kubelet|$k8s_version|k8s"
  "kube-proxy|kubernetes|k8s.io/kubernetes/cmd/kube-proxy|$k8s_version|k8s"
  # Tekton Pipelines, packed into images and installed on real nodes (internal/tektoninstall).
  "tekton-controller|tekton|github.com/tektoncd/pipeline/cmd/controller|$tekton_version|"
  "tekton-webhook|tekton|github.com/tektoncd/pipeline/cmd/webhook|$tekton_version|"
  "tekton-events|tekton|github.com/tektoncd/pipeline/cmd/events|$tekton_version|"
  "tekton-entrypoint|tekton|github.com/tektoncd/pipeline/cmd/entrypoint|$tekton_version|"
  "tekton-nop|tekton|github.com/tektoncd/pipeline/cmd/nop|$tekton_version|"
  "tekton-workingdirinit|tekton|github.com/tektoncd/pipeline/cmd/workingdirinit|$tekton_version|"
  "tekton-sidecarlogresults|tekton|github.com/tektoncd/pipeline/cmd/sidecarlogresults|$tekton_version|"
)
triggers_targets=(
  "triggers-eventlistenersink|triggers|github.com/tektoncd/triggers/cmd/eventlistenersink|$triggers_version|"
  "triggers-interceptors|triggers|github.com/ferryci/ferry/hack/controlplane/triggers/interceptors|$interceptors_version|"
)
case "$set_name" in
  controlplane) targets=("${controlplane_targets[@]}") ;;
  triggers) targets=("${triggers_targets[@]}") ;;
  *)
    echo "unknown set $set_name: controlplane or triggers" >&2
    exit 2
    ;;
esac

k8s_ldflags() {
  local v=$1 minor
  minor=$(echo "$v" | cut -d. -f2)
  echo "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
}

total=${#targets[@]}
i=0
for t in "${targets[@]}"; do
  i=$((i + 1))
  IFS='|' read -r name dir pkg version kind <<<"$t"
  stamp="$out/.$name.version"
  if [[ -x "$out/$name" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then
    echo "[$i/$total] $name $version: cached" >&2
    continue
  fi
  ldflags="-s -w"
  [[ "$kind" == k8s ]] && ldflags=$(k8s_ldflags "$version")
  echo "[$i/$total] $name $version: building (first time only; kube-* take ~2 minutes each, tekton-controller ~8, triggers-* ~2, on 2 cores)..." >&2
  start=$(date +%s)
  (cd "$here/$dir" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$out/$name.tmp" "$pkg")
  mv "$out/$name.tmp" "$out/$name"
  echo "$version" >"$stamp"
  echo "[$i/$total] $name $version: built in $(($(date +%s) - start))s" >&2
done

if [[ "$set_name" == triggers ]]; then
  # Triggers' CRDs, from the same module, for the benchmark to install into its API server.
  crds="$out/triggers-crds"
  if [[ ! -d "$crds" || "$(cat "$out/.triggers-crds.version" 2>/dev/null)" != "$triggers_version" ]]; then
    triggers_dir=$(cd "$here/triggers" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/tektoncd/triggers)
    rm -rf "$crds.tmp"
    mkdir -p "$crds.tmp"
    cp "$triggers_dir"/config/300-*.yaml "$crds.tmp/"
    chmod 644 "$crds.tmp"/*.yaml
    rm -rf "$crds"
    mv "$crds.tmp" "$crds"
    echo "$triggers_version" >"$out/.triggers-crds.version"
  fi
  echo "$out"
  exit 0
fi

# ferry-pause: PID 1 of a real node's namespaces and of its pod sandboxes (the pause image). Ferry's
# own source, so it is rebuilt when that source changes.
pause_src="$root/internal/controlplane/pause"
pause_version=$(cat "$pause_src"/*.go | sha256sum | cut -c1-16)
if [[ ! -x "$out/ferry-pause" || "$(cat "$out/.ferry-pause.version" 2>/dev/null)" != "$pause_version" ]]; then
  (cd "$root" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/ferry-pause.tmp" ./internal/controlplane/pause)
  mv "$out/ferry-pause.tmp" "$out/ferry-pause"
  echo "$pause_version" >"$out/.ferry-pause.version"
  echo "ferry-pause $pause_version: built" >&2
fi

# kwok refuses to start without stages; keep the fast node and pod stages from the pinned module beside it.
stages="$out/kwok-stages.yaml"
if [[ ! -f "$stages" || "$(cat "$out/.kwok-stages.version" 2>/dev/null)" != "$kwok_version" ]]; then
  kwok_dir=$(cd "$here/kwok" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  {
    first=1
    for f in "$kwok_dir"/kustomize/stage/node/fast/*.yaml "$kwok_dir"/kustomize/stage/pod/fast/*.yaml; do
      grep -q '^kind: Stage$' "$f" || continue # skip kustomization.yaml
      [[ $first == 1 ]] || echo '---'
      first=0
      cat "$f"
    done
  } >"$stages.tmp"
  mv "$stages.tmp" "$stages"
  echo "$kwok_version" >"$out/.kwok-stages.version"
fi

echo "$out"
