# Ferry — everything a developer or CI runs goes through these targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
BIN := $(CURDIR)/bin
CONTROLPLANE := $(BIN)/controlplane
GOLANGCI_LINT := $(BIN)/golangci-lint
# The cosign CLI that the supply-chain tests run (issue 17); its version is hack/cosign/go.mod's.
COSIGN := $(BIN)/cosign-v2.6.5
CONTROLLER_GEN := $(GO) tool controller-gen
# Tests and `ferry dev` find the control-plane binaries here.
export FERRY_CONTROLPLANE_ASSETS ?= $(CONTROLPLANE)
TEST_FLAGS ?=
TEST_TIMEOUT ?= 30m

.PHONY: all
all: build

##@ Build

.PHONY: build
build: ## Build bin/ferry.
	$(GO) build -o $(BIN)/ferry ./cmd/ferry

# Ferry's own image, built by Ferry from hack/image/ferry.yaml (no Dockerfile): IMAGE_REGISTRY pushes it
# (and its base images) there with $$DOCKER_CONFIG's credentials; without it the image is written as an
# OCI layout to dist/image/oci. dist/image/image.json names the digest either way.
.PHONY: image
image: build deps ## Build Ferry's image (the ferry binary without ferry dev, on go-static) reproducibly with ferry build.
	$(GO) run ./hack/image -ferry $(BIN)/ferry

.PHONY: controlplane
controlplane: ## Build (once; cached per version) the control plane, the real node's daemons and Tekton from Go modules.
	hack/controlplane/build.sh $(CONTROLPLANE)

# What tests, benchmarks and `ferry dev` need: the binaries in $(FERRY_CONTROLPLANE_ASSETS). When that
# points elsewhere (binaries built once for several checkouts), they are used as they are; only
# bin/controlplane of this checkout is built here.
.PHONY: controlplane-assets
controlplane-assets:
	@if [ "$(FERRY_CONTROLPLANE_ASSETS)" = "$(CONTROLPLANE)" ]; then \
		hack/controlplane/build.sh $(CONTROLPLANE); \
	else \
		for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do \
			[ -x "$(FERRY_CONTROLPLANE_ASSETS)/$$b" ] || { echo "FERRY_CONTROLPLANE_ASSETS=$(FERRY_CONTROLPLANE_ASSETS) has no $$b: build it with hack/controlplane/build.sh $(FERRY_CONTROLPLANE_ASSETS), or unset the variable" >&2; exit 1; }; \
		done; \
		echo "control-plane binaries: $(FERRY_CONTROLPLANE_ASSETS)" >&2; \
	fi

# Tekton Triggers' EventListener sink and core interceptors, which `make bench` compares Ferry's GitLab
# receiver with: built into $(FERRY_CONTROLPLANE_ASSETS) (once; cached per version), only for the
# benchmarks, since tests and CI do not need them. A directory that is not this checkout's is built
# into as well: the binaries are added beside the control plane, which is left as it is.
.PHONY: triggers
triggers: ## Build (once; cached per version) Tekton Triggers' sink and interceptors for the benchmarks.
	hack/controlplane/build.sh $(FERRY_CONTROLPLANE_ASSETS) triggers

##@ Development

# The packages whose +kubebuilder:rbac markers make the manager's role. The UI's markers
# (internal/ui) make the UI's own role: the UI runs as a ServiceAccount of its own.
MANAGER_RBAC_PATHS := ./controllers/...;./webhooks/...;./internal/manager/...;./internal/webhookcert/...

.PHONY: manifests
manifests: ## Generate CRDs, RBAC, webhook configurations and the pipeline file's JSON Schema from the markers.
	$(CONTROLLER_GEN) crd paths=./apis/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager paths="$(MANAGER_RBAC_PATHS)" output:rbac:artifacts:config=config/rbac
	$(CONTROLLER_GEN) rbac:roleName=ui paths=./internal/ui/... output:rbac:artifacts:config=config/rbac/ui
	$(CONTROLLER_GEN) webhook paths=./webhooks/... output:webhook:artifacts:config=config/webhook
	$(GO) run ./hack/schemagen > config/schema/ferry-pipeline.schema.json

.PHONY: generate
generate: ## Generate deepcopy functions.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./apis/...

.PHONY: fmt
fmt: $(GOLANGCI_LINT) ## Format the code.
	$(GOLANGCI_LINT) fmt ./...

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run go vet and golangci-lint.
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

.PHONY: verify
verify: manifests generate ## Regenerate everything and fail if the tree changed (stale generated files or go.mod).
	$(GO) mod tidy
	for d in hack/tools hack/cosign hack/controlplane/kubernetes hack/controlplane/etcd hack/controlplane/kwok hack/controlplane/tekton hack/controlplane/triggers; do (cd $$d && $(GO) mod tidy); done
	@if [ -n "$$(git status --porcelain)" ]; then \
		echo "Generated files or go.mod are out of date; run 'make manifests generate' and 'go mod tidy', then commit:"; \
		git status --porcelain; git --no-pager diff --stat; exit 1; \
	fi

##@ Test

# Debian packages the tests and ferry dev need (hack/deps.sh installs the missing ones).
.PHONY: deps
deps:
	@hack/deps.sh setpriv git chromium python3 real-nodes debootstrap

.PHONY: test
test: controlplane-assets deps cosign ## Run every test: unit tests and integration tests against real API servers and simulated clusters.
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

E2E_TIMEOUT ?= 35m

.PHONY: e2e
e2e: controlplane-assets deps ## The whole flow headless: ferry dev, a push, a Build, approvals, prod, a restart; a push through real Tekton; Ferry installed with kubectl apply -k on a real node (test/e2e).
	FERRY_E2E=1 $(GO) test -count=1 -timeout $(E2E_TIMEOUT) -v $(TEST_FLAGS) ./test/e2e/...

# Where `make run` keeps everything between starts (git-ignored).
DEV_DATA_DIR ?= .ferry-dev

.PHONY: run
run: build controlplane-assets deps ## Run Ferry's whole flow on this machine: ferry dev --data-dir .ferry-dev (Ctrl-C stops it).
	$(BIN)/ferry dev --data-dir $(DEV_DATA_DIR) --image-cache $(CURDIR)/.cache/baseimage

# Every package with a Go benchmark; each benchmark reports its figures with b.ReportMetric.
BENCH_PKGS = $(shell grep -rl --include='*_test.go' --exclude-dir=.git --exclude-dir=bin --exclude-dir=$(DEV_DATA_DIR) '^func Benchmark' . | xargs -r -n1 dirname | sort -u)
BENCH_FLAGS ?= -benchtime=1x

.PHONY: bench
bench: controlplane-assets triggers ## Run every benchmark and print the figures of every issue in one table.
	@if [ -z "$(strip $(BENCH_PKGS))" ]; then echo "no benchmarks yet"; exit 0; fi; \
	$(GO) test -run '^$$' -bench . $(BENCH_FLAGS) -timeout 60m $(BENCH_PKGS) 2>&1 | $(GO) run ./hack/benchtable

$(GOLANGCI_LINT): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

.PHONY: cosign
cosign: $(COSIGN) ## Build the cosign CLI into bin/ (a few minutes once), which internal/supplychain's tests run.

$(COSIGN): hack/cosign/go.mod
	cd hack/cosign && $(GO) build -o $(COSIGN) github.com/sigstore/cosign/v2/cmd/cosign

##@ Help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
