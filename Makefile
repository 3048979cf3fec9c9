# Ferry — everything a developer or CI runs goes through these targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

GO ?= go
BIN := $(CURDIR)/bin
CONTROLPLANE := $(BIN)/controlplane
GOLANGCI_LINT := $(BIN)/golangci-lint
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

.PHONY: controlplane
controlplane: ## Build (once; cached per version) kube-apiserver, etcd, kube-controller-manager, kube-scheduler, kwok and kubectl from Go modules.
	hack/controlplane/build.sh $(CONTROLPLANE)

##@ Development

.PHONY: manifests
manifests: ## Generate CRDs, RBAC, webhook configurations and the pipeline file's JSON Schema from the markers.
	$(CONTROLLER_GEN) crd paths=./apis/... output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=manager paths=./... output:rbac:artifacts:config=config/rbac
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
	for d in hack/tools hack/controlplane/kubernetes hack/controlplane/etcd hack/controlplane/kwok; do (cd $$d && $(GO) mod tidy); done
	@if [ -n "$$(git status --porcelain)" ]; then \
		echo "Generated files or go.mod are out of date; run 'make manifests generate' and 'go mod tidy', then commit:"; \
		git status --porcelain; git --no-pager diff --stat; exit 1; \
	fi

##@ Test

.PHONY: test
test: controlplane ## Run every test: unit tests and integration tests against real API servers and simulated clusters.
	$(GO) test -timeout $(TEST_TIMEOUT) $(TEST_FLAGS) ./...

.PHONY: run
run: ## Run Ferry's whole flow on this machine (`ferry dev`).
	@echo "make run arrives with issue 8 (ferry dev): the hub, two simulated clusters, a registry and a git server on loopback." >&2
	@exit 2

# Every package with a Go benchmark; each benchmark reports its figures with b.ReportMetric.
BENCH_PKGS = $(shell grep -rl --include='*_test.go' '^func Benchmark' . | xargs -r -n1 dirname | sort -u)
BENCH_FLAGS ?= -benchtime=1x

.PHONY: bench
bench: controlplane ## Run every benchmark and print the figures of every issue in one table.
	@if [ -z "$(strip $(BENCH_PKGS))" ]; then echo "no benchmarks yet"; exit 0; fi; \
	$(GO) test -run '^$$' -bench . $(BENCH_FLAGS) -timeout 60m $(BENCH_PKGS) 2>&1 | $(GO) run ./hack/benchtable

$(GOLANGCI_LINT): hack/tools/go.mod
	cd hack/tools && $(GO) build -o $(GOLANGCI_LINT) github.com/golangci/golangci-lint/v2/cmd/golangci-lint

##@ Help

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-14s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
