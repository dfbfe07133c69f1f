# splitter: the entry point for building, testing and demoing.
# `make help` lists the targets.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
BIN ?= $(ROOT)/bin
GO ?= go
# Where Debian's packages put their commands (hack/debian-tool.sh looks
# there after PATH; test/install points it at a scratch directory).
DEBIAN_BIN ?= /usr/bin
export DEBIAN_BIN
# Builds a pinned tool into $(BIN) through the per-user cache.
BUILD_TOOL := BUILD_TOOL_OUT=$(BIN) hack/build-tool.sh

# Pinned tools: each version is pinned once, in hack/tools/<name>/go.mod.
tool_version = $(shell cd $(ROOT)/hack/tools/$(1) && $(GO) list -m -f '{{.Version}}' $(2))
K8S_VERSION := $(call tool_version,kube,k8s.io/kubernetes)
ETCD_VERSION := $(call tool_version,etcd,go.etcd.io/etcd/server/v3)
KWOK_VERSION := $(call tool_version,kwok,sigs.k8s.io/kwok)
CONTROLLER_GEN_VERSION := $(call tool_version,controller-gen,sigs.k8s.io/controller-tools)

KUBE_DIR := $(BIN)/kube-$(K8S_VERSION)
ETCD := $(BIN)/etcd-$(ETCD_VERSION)/etcd
KWOK_DIR := $(BIN)/kwok-$(KWOK_VERSION)
KWOK := $(KWOK_DIR)/kwok
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)/controller-gen
# Prometheus: the test bed runs 3.x built from its pinned module by default;
# PROMETHEUS_FLAVOR=debian runs Debian's 2.42 (PROMETHEUS_LEGACY) instead, and
# PROMETHEUS=/path/to/prometheus any other. `make test` runs the verdict e2e
# tests on PROMETHEUS_LEGACY too (test/e2e/prometheus_legacy_test.go).
PROMETHEUS_VERSION := $(call tool_version,prometheus,github.com/prometheus/prometheus)
# The Go module's v0.316.0 is Prometheus 3.16.0 (minor = major*100 + minor).
prom_minor := $(word 2,$(subst ., ,$(PROMETHEUS_VERSION)))
PROMETHEUS_RELEASE := $(shell echo $$(($(prom_minor)/100)).$$(($(prom_minor)%100)).$(word 3,$(subst ., ,$(PROMETHEUS_VERSION))))
PROMETHEUS_DIR := $(BIN)/prometheus-$(PROMETHEUS_VERSION)
PROMETHEUS_LEGACY ?= $(shell command -v prometheus 2>/dev/null || echo $(DEBIAN_BIN)/prometheus)
PROMETHEUS_FLAVOR ?= source
ifeq ($(PROMETHEUS_FLAVOR),debian)
PROMETHEUS ?= $(PROMETHEUS_LEGACY)
else ifeq ($(PROMETHEUS_FLAVOR),source)
PROMETHEUS ?= $(PROMETHEUS_DIR)/prometheus
else
$(error PROMETHEUS_FLAVOR=$(PROMETHEUS_FLAVOR): want source (3.x, the default) or debian (2.42))
endif
# Only file_sd is used: remove_all_sd leaves out the cloud and Kubernetes
# service discoveries (a third of the packages). No builtinassets: the web
# UI is not needed, the API is.
PROMETHEUS_TAGS := remove_all_sd
PROMETHEUS_LDFLAGS := -s -w \
	-X github.com/prometheus/common/version.Version=$(PROMETHEUS_RELEASE) \
	-X github.com/prometheus/common/version.Revision=$(PROMETHEUS_VERSION) \
	-X github.com/prometheus/common/version.Branch=module \
	-X github.com/prometheus/common/version.BuildUser=splitter

# Unstamped Kubernetes binaries report v0.0.0-master, which clients refuse.
KUBE_MINOR := $(word 2,$(subst ., ,$(K8S_VERSION)))
KUBE_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR) \
	-X k8s.io/client-go/pkg/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=1 \
	-X k8s.io/client-go/pkg/version.gitMinor=$(KUBE_MINOR)

# What the test bed needs, handed to Go tests and the testbed command.
export TESTBED_ETCD := $(ETCD)
export TESTBED_KUBE_APISERVER := $(KUBE_DIR)/kube-apiserver
export TESTBED_KUBE_CONTROLLER_MANAGER := $(KUBE_DIR)/kube-controller-manager
export TESTBED_KUBE_SCHEDULER := $(KUBE_DIR)/kube-scheduler
export TESTBED_KWOK := $(KWOK)
export TESTBED_KWOK_STAGES := $(KWOK_DIR)/stages
export TESTBED_PROMETHEUS := $(PROMETHEUS)
export TESTBED_PROMETHEUS_LEGACY := $(PROMETHEUS_LEGACY)
# go list -m names a module's directory only once it is downloaded: download
# it first (a no-op when it is there), or a fresh clone reads "/kubernetes/...".
export TESTBED_ISTIO_CRDS = $(shell $(GO) mod download istio.io/api && $(GO) list -m -f '{{.Dir}}' istio.io/api)/kubernetes/customresourcedefinitions.gen.yaml
export TESTBED_CRDS := $(ROOT)/deploy/crds
export TESTBED_STATE := $(ROOT)/.testbed
# Prometheus' scrape interval on the test bed (a Go duration): 1s for fast
# tests; `TESTBED_SCRAPE_INTERVAL=15s make demo` (or testbed-up, test) scrapes
# as real clusters do.
export TESTBED_SCRAPE_INTERVAL ?= 1s
export CONTROLLER_GEN
# controller-runtime's envtest starts the same etcd and kube-apiserver.
export TEST_ASSET_ETCD := $(ETCD)
export TEST_ASSET_KUBE_APISERVER := $(KUBE_DIR)/kube-apiserver

GO_TEST_FLAGS ?=
TEST_PKGS ?= ./...
TESTBED := $(BIN)/testbed

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: build
build: ## Build the splitter binary into bin/.
	$(GO) build -trimpath -o $(BIN)/splitter ./cmd/splitter

.PHONY: install-plugin
install-plugin: build ## Link bin/kubectl-splitter (and kubectl's completion helper) to the splitter binary; prints how to put it on PATH.
	ln -sf splitter $(BIN)/kubectl-splitter
	ln -sf splitter $(BIN)/kubectl_complete-splitter
	@echo "kubectl splitter is $(BIN)/kubectl-splitter. Put it on PATH, e.g.:"
	@echo "  export PATH=\"$(BIN):\$$PATH\"            # this shell"
	@echo "  sudo install $(BIN)/splitter /usr/local/bin/kubectl-splitter   # or a copy under the plugin name"
	@echo "Then: kubectl plugin list; kubectl splitter --help"

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs (deploy/crds) and deepcopy code with controller-gen.
	$(CONTROLLER_GEN) object paths=./api/...
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=deploy/crds
	$(CONTROLLER_GEN) rbac:roleName=splitter-controller paths=./internal/controller/... output:rbac:artifacts:config=deploy/rbac
	cp deploy/crds/*.yaml deploy/helm/splitter/crds/
	cp deploy/rbac/role.yaml deploy/helm/splitter/files/role.yaml
	cp deploy/prometheus/alerts.yaml deploy/helm/splitter/files/alerts.yaml

.PHONY: lint
lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: test
# Debian's packages first: a machine that cannot install them fails in
# seconds, not after the tool builds.
test: prometheus-legacy chromium lint tools prometheus build ## Run every test: unit, generated-file freshness, the test bed end-to-end, the dashboard in a browser.
	SPLITTER_BIN=$(BIN)/splitter SPLITTER_REQUIRE_TOOLS=1 \
	  CHROMIUM=$$(hack/debian-tool.sh chromium CHROMIUM chromium) PROMTOOL=$$(hack/debian-tool.sh promtool PROMTOOL prometheus) \
	  $(GO) test -count=1 -timeout 30m $(GO_TEST_FLAGS) $(TEST_PKGS)
	$(call fuzz_each,$(FUZZ_BRIEF))

# Fuzz targets, package:Target (go test -fuzz takes one target per run).
# Their seed corpora (testdata/fuzz) run with the other tests; make test
# then fuzzes each for FUZZ_BRIEF when it runs every package (FUZZ_BRIEF=
# skips), make fuzz for FUZZTIME. A failing input is written to the
# package's testdata/fuzz (commit it with the fix); the rest of the corpus
# stays in GOCACHE. See hack/fuzz.sh.
FUZZ_TARGETS := ./internal/policy:FuzzDecodePolicy ./internal/analysis:FuzzRender ./internal/analysis:FuzzWindow \
	./internal/analysis:FuzzLatencyQuery ./internal/analysis:FuzzAvailabilityQueries
FUZZTIME ?= 60s
FUZZ_BRIEF ?= $(if $(filter ./...,$(TEST_PKGS)),10s,)
fuzz_each = $(if $(1),GO=$(GO) hack/fuzz.sh $(1) $(FUZZ_TARGETS))

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 60s) and print its execs.
	$(call fuzz_each,$(FUZZTIME))

.PHONY: bench
bench: tools prometheus build ## Report (not assert) figures: tool build times, test bed start and memory (BENCH_COLD=1: rebuild cold).
	hack/bench-build.sh
	$(GO) test -run '^$$' -bench 'MonteCarlo|DetectionByWeight|Simulate' -benchtime 1x -count 1 -timeout 60m ./internal/simulate
	$(GO) test -run '^$$' -bench NextWithWatchdog -count 1 ./internal/simulate
	$(GO) test -run '^$$' -bench Backtest -benchtime 1x -count 1 ./internal/backtest
	$(GO) test -run '^$$' -bench . -benchtime 5x -count 1 -timeout 30m ./test/testbed
	$(MAKE) -s bench-e2e

BENCH_E2E ?= .
.PHONY: bench-e2e
bench-e2e: tools prometheus build ## Only the end-to-end benchmarks (BENCH_E2E=regexp selects some).
	SPLITTER_BIN=$(BIN)/splitter $(GO) test -run '^$$' -bench '$(BENCH_E2E)' -benchtime 1x -count 1 -timeout 60m ./test/e2e

# make chaos: releases run while the controller, the API server, etcd and
# Prometheus fail (test/chaos). make test runs a short version of it.
CHAOS_RELEASES ?= 100
CHAOS_LANES ?= 10
CHAOS_SEED ?= 1
CHAOS_TESTS ?= .
.PHONY: chaos
chaos: tools prometheus build ## Long chaos run: CHAOS_RELEASES releases in CHAOS_LANES namespaces under seeded faults (CHAOS_SEED); prints the figures.
	SPLITTER_BIN=$(BIN)/splitter CHAOS_RELEASES=$(CHAOS_RELEASES) CHAOS_LANES=$(CHAOS_LANES) CHAOS_SEED=$(CHAOS_SEED) \
	  $(GO) test -count=1 -timeout 90m -v -run '$(CHAOS_TESTS)' ./test/chaos

##@ Test bed

.PHONY: testbed-up
testbed-up: tools prometheus $(TESTBED) ## Start the local cluster in the background (.testbed/kubeconfig; TESTBED_SCRAPE_INTERVAL=15s: slower scrapes).
	$(TESTBED) up --detach

.PHONY: testbed-down
testbed-down: $(TESTBED) ## Stop the local cluster started by testbed-up.
	$(TESTBED) down

.PHONY: demo
demo: tools prometheus build $(TESTBED) ## Test bed + splitter + sample app: a healthy and a faulty release (DEMO_ONCE=1: exit when done; TESTBED_SCRAPE_INTERVAL=15s).
	SPLITTER_BIN=$(BIN)/splitter $(TESTBED) demo

.PHONY: $(TESTBED)
$(TESTBED):
	$(GO) build -o $@ ./test/testbed/cmd/testbed

##@ Tools

.PHONY: tools
tools: $(ETCD) $(KUBE_DIR)/kube-apiserver $(KWOK) $(CONTROLLER_GEN) $(PROMETHEUS_DIR)/prometheus ## Build the pinned tools into bin/ (cached per user).

$(ETCD):
	$(BUILD_TOOL) etcd go.etcd.io/etcd/server/v3 etcd=go.etcd.io/etcd/server/v3 -- -ldflags "-s -w"

$(KUBE_DIR)/kube-apiserver:
	$(BUILD_TOOL) kube k8s.io/kubernetes \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kube-controller-manager \
		k8s.io/kubernetes/cmd/kube-scheduler -- -ldflags "$(KUBE_LDFLAGS)"

$(KWOK):
	$(BUILD_TOOL) kwok sigs.k8s.io/kwok sigs.k8s.io/kwok/cmd/kwok -- -ldflags "-s -w"
	mkdir -p $(KWOK_DIR)/stages
	src=$$(cd hack/tools/kwok && $(GO) mod download sigs.k8s.io/kwok && $(GO) list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage; \
	  install -m 0644 $$src/node/fast/node-initialize.yaml $$src/node/heartbeat/node-heartbeat.yaml \
	    $$src/pod/fast/pod-ready.yaml $$src/pod/fast/pod-complete.yaml $$src/pod/fast/pod-delete.yaml $(KWOK_DIR)/stages/

$(CONTROLLER_GEN):
	$(BUILD_TOOL) controller-gen sigs.k8s.io/controller-tools sigs.k8s.io/controller-tools/cmd/controller-gen -- -ldflags "-s -w"

$(PROMETHEUS_DIR)/prometheus:
	$(BUILD_TOOL) prometheus github.com/prometheus/prometheus github.com/prometheus/prometheus/cmd/prometheus -- \
		-tags "$(PROMETHEUS_TAGS)" -ldflags "$(PROMETHEUS_LDFLAGS)"

# Debian's packages that the tests use, found or installed by
# hack/debian-tool.sh (PATH, then $(DEBIAN_BIN); as root, apt-get update and
# install). A variable set by the user (PROMETHEUS_LEGACY, PROMTOOL,
# CHROMIUM) is used as given and must name an executable. test/install runs
# these targets with the tools absent and apt-get stubbed.
.PHONY: prometheus-legacy
prometheus-legacy: ## Install Debian's Prometheus 2.42 (PROMETHEUS_LEGACY) and its promtool (PROMTOOL, for test/monitoring) when missing.
	@hack/debian-tool.sh prometheus PROMETHEUS_LEGACY prometheus >/dev/null
	@hack/debian-tool.sh promtool PROMTOOL prometheus >/dev/null

.PHONY: prometheus
prometheus: prometheus-legacy $(PROMETHEUS_DIR)/prometheus ## Build Prometheus 3 (the default) and install Debian's 2.42 when missing.
	@if [ ! -x "$(PROMETHEUS)" ]; then echo "PROMETHEUS=$(PROMETHEUS) is not an executable" >&2; exit 1; fi

.PHONY: chromium
chromium: ## Install Debian's Chromium when missing (the dashboard's browser tests drive it headless; CHROMIUM=/path: another).
	@hack/debian-tool.sh chromium CHROMIUM chromium >/dev/null

.PHONY: dashboard-screenshot
dashboard-screenshot: chromium build ## Rewrite docs/dashboard.png from the browser test.
	DASHBOARD_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(MAKE) test TEST_PKGS=./test/e2e GO_TEST_FLAGS="-run 'TestDashboard$$$$' -v"

.PHONY: clean
clean: ## Remove bin/ and the test bed's state (the per-user tool cache stays).
	rm -rf $(BIN) $(TESTBED_STATE)
