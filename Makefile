SHELL := /bin/bash
.DEFAULT_GOAL := test

TOOLS := tests/tools

# Versions come from the tool modules' pins, so the cache directory follows a pin change.
go_mod_version = $(shell awk -v mod=$(2) '$$1 == "require" && $$2 == mod { print $$3; exit } $$1 == mod { print $$2; exit }' $(TOOLS)/$(1)/go.mod)
K8S_VERSION := $(call go_mod_version,kubernetes,k8s.io/kubernetes)
ETCD_VERSION := $(call go_mod_version,etcd,go.etcd.io/etcd/server/v3)
HELM_VERSION := $(call go_mod_version,helm,helm.sh/helm/v3)
KNP_VERSION := $(call go_mod_version,netpol,sigs.k8s.io/kube-network-policies)
# network-policy-api: the version kube-network-policies evaluates (AdminNetworkPolicy and
# BaselineAdminNetworkPolicy), and the release pinned for the ClusterNetworkPolicy CRD.
NETPOL_NPA_VERSION := $(call go_mod_version,netpol,sigs.k8s.io/network-policy-api)
NPA_VERSION := $(call go_mod_version,network-policy-api,sigs.k8s.io/network-policy-api)
MOTO_VERSION := $(shell sed -n 's/^moto\[server\]==//p' $(TOOLS)/moto/requirements.txt)

CACHE_DIR ?= $(HOME)/.cache/imaging-tenant-operator
BIN_DIR ?= $(CACHE_DIR)/bin/k8s-$(K8S_VERSION)-etcd-$(ETCD_VERSION)-helm-$(HELM_VERSION)
# moto runs from its own virtualenv in the cache, so the pinned version never fights the
# machine's Python packages.
MOTO_VENV ?= $(CACHE_DIR)/moto-$(MOTO_VERSION)
PYTHON ?= $(MOTO_VENV)/bin/python
# The virtualenv also holds the other Python tools of the tests (parliament). It is keyed by the
# moto version only, so a stamp per requirements file content brings an existing one up to date.
PY_REQUIREMENTS_HASH := $(shell sha256sum $(TOOLS)/moto/requirements.txt | cut -c1-16)

export ITO_TEST_BIN_DIR := $(BIN_DIR)
export ITO_TEST_PYTHON := $(PYTHON)

GO_BUILD := go build -trimpath
K8S_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitTreeState=clean

K8S_BINARIES := $(BIN_DIR)/etcd $(BIN_DIR)/kube-apiserver $(BIN_DIR)/kube-controller-manager $(BIN_DIR)/helm

# netpol-verdict (tests/tools/netpol) goes into BIN_DIR as well, but BIN_DIR keeps the name of
# the control plane's versions (tests/support computes it too). A stamp named after the
# kube-network-policies version and a hash of the tool's sources and go.mod/go.sum rebuilds
# it when either changes; nothing else does.
NETPOL_HASH := $(shell cat $(sort $(filter-out %_test.go,$(wildcard $(TOOLS)/netpol/*.go))) $(TOOLS)/netpol/go.mod $(TOOLS)/netpol/go.sum | sha256sum | cut -c1-16)
NETPOL_VERDICT := $(BIN_DIR)/netpol-verdict
NETPOL_CRDS := $(addprefix $(BIN_DIR)/crds/policy.networking.k8s.io_,adminnetworkpolicies.yaml baselineadminnetworkpolicies.yaml clusternetworkpolicies.yaml)

# lua-health (tests/tools/lua-health) runs the Argo CD health check in gopher-lua; rebuilt, like
# netpol-verdict, when the gopher-lua pin or a hash of its sources and go.mod/go.sum changes.
GOPHER_LUA_VERSION := $(call go_mod_version,lua-health,github.com/yuin/gopher-lua)
LUA_HEALTH_HASH := $(shell cat $(sort $(wildcard $(TOOLS)/lua-health/*.go)) $(TOOLS)/lua-health/go.mod $(TOOLS)/lua-health/go.sum | sha256sum | cut -c1-16)
LUA_HEALTH := $(BIN_DIR)/lua-health

# helm4 (tests/tools/helm4): Helm 4, for the chart tests beside Helm 3. Rebuilt when the helm
# v4 pin or the module's go.mod/go.sum changes.
HELM4_VERSION := $(call go_mod_version,helm4,helm.sh/helm/v4)
HELM4_HASH := $(shell cat $(TOOLS)/helm4/go.mod $(TOOLS)/helm4/go.sum | sha256sum | cut -c1-16)
HELM4 := $(BIN_DIR)/helm4

# kstatus-check (tests/tools/helm4/kstatus) judges objects with kstatus; it shares the helm4
# module (Helm 4 uses the same Kubernetes packages). Rebuilt when the cli-utils pin or a hash
# of its sources and the module's go.mod/go.sum changes.
CLI_UTILS_VERSION := $(call go_mod_version,helm4,sigs.k8s.io/cli-utils)
KSTATUS_HASH := $(shell cat $(sort $(wildcard $(TOOLS)/helm4/kstatus/*.go)) $(TOOLS)/helm4/go.mod $(TOOLS)/helm4/go.sum | sha256sum | cut -c1-16)
KSTATUS_CHECK := $(BIN_DIR)/kstatus-check

# promtool (tests/tools/promtool) checks and unit-tests the chart's alert rules; rebuilt when the
# prometheus pin or the module's go.mod/go.sum changes.
PROMETHEUS_VERSION := $(call go_mod_version,promtool,github.com/prometheus/prometheus)
PROMTOOL_HASH := $(shell cat $(TOOLS)/promtool/go.mod $(TOOLS)/promtool/go.sum | sha256sum | cut -c1-16)
PROMTOOL := $(BIN_DIR)/promtool

.PHONY: test k8s-bin moto fmt-check lint crds iam-policies netpol-crds tools-test

test: k8s-bin moto image-build-deps
	cargo test --locked --all-targets

k8s-bin: $(K8S_BINARIES) $(NETPOL_VERDICT) $(LUA_HEALTH) $(HELM4) $(KSTATUS_CHECK) $(PROMTOOL) netpol-crds

# Each binary is written under a temporary name and renamed, so an interrupted
# build never leaves a truncated binary that later runs would take as cached.
$(BIN_DIR)/etcd:
	@mkdir -p $(BIN_DIR)
	cd $(TOOLS)/etcd && $(GO_BUILD) -ldflags='-s -w' -o $@.partial go.etcd.io/etcd/server/v3
	mv $@.partial $@

$(BIN_DIR)/kube-apiserver:
	@mkdir -p $(BIN_DIR)
	cd $(TOOLS)/kubernetes && $(GO_BUILD) -ldflags='$(K8S_LDFLAGS)' -o $@.partial k8s.io/kubernetes/cmd/kube-apiserver
	mv $@.partial $@

$(BIN_DIR)/kube-controller-manager:
	@mkdir -p $(BIN_DIR)
	cd $(TOOLS)/kubernetes && $(GO_BUILD) -ldflags='$(K8S_LDFLAGS)' -o $@.partial k8s.io/kubernetes/cmd/kube-controller-manager
	mv $@.partial $@

$(BIN_DIR)/helm:
	@mkdir -p $(BIN_DIR)
	cd $(TOOLS)/helm && $(GO_BUILD) -ldflags='-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)' -o $@.partial helm.sh/helm/v3/cmd/helm
	mv $@.partial $@

$(NETPOL_VERDICT): $(BIN_DIR)/.netpol-verdict-$(KNP_VERSION)-$(NETPOL_HASH)
	cd $(TOOLS)/netpol && $(GO_BUILD) -ldflags='-s -w' -o $@.partial .
	mv $@.partial $@

$(BIN_DIR)/.netpol-verdict-$(KNP_VERSION)-$(NETPOL_HASH):
	@mkdir -p $(BIN_DIR)
	rm -f $(BIN_DIR)/.netpol-verdict-*
	touch $@

$(LUA_HEALTH): $(BIN_DIR)/.lua-health-$(GOPHER_LUA_VERSION)-$(LUA_HEALTH_HASH)
	cd $(TOOLS)/lua-health && $(GO_BUILD) -ldflags='-s -w' -o $@.partial .
	mv $@.partial $@

$(BIN_DIR)/.lua-health-$(GOPHER_LUA_VERSION)-$(LUA_HEALTH_HASH):
	@mkdir -p $(BIN_DIR)
	rm -f $(BIN_DIR)/.lua-health-*
	touch $@

$(HELM4): $(BIN_DIR)/.helm4-$(HELM4_VERSION)-$(HELM4_HASH)
	cd $(TOOLS)/helm4 && $(GO_BUILD) -ldflags='-s -w -X helm.sh/helm/v4/internal/version.version=$(HELM4_VERSION)' -o $@.partial helm.sh/helm/v4/cmd/helm
	mv $@.partial $@

$(BIN_DIR)/.helm4-$(HELM4_VERSION)-$(HELM4_HASH):
	@mkdir -p $(BIN_DIR)
	rm -f $(BIN_DIR)/.helm4-*
	touch $@

$(KSTATUS_CHECK): $(BIN_DIR)/.kstatus-check-$(CLI_UTILS_VERSION)-$(KSTATUS_HASH)
	cd $(TOOLS)/helm4 && $(GO_BUILD) -ldflags='-s -w' -o $@.partial ./kstatus
	mv $@.partial $@

$(BIN_DIR)/.kstatus-check-$(CLI_UTILS_VERSION)-$(KSTATUS_HASH):
	@mkdir -p $(BIN_DIR)
	rm -f $(BIN_DIR)/.kstatus-check-*
	touch $@

# promtool reports the prometheus module's version as its own (v0.316.0 is Prometheus 3.x's
# module version for the same tree).
$(PROMTOOL): $(BIN_DIR)/.promtool-$(PROMETHEUS_VERSION)-$(PROMTOOL_HASH)
	cd $(TOOLS)/promtool && $(GO_BUILD) -ldflags='-s -w -X github.com/prometheus/common/version.Version=$(PROMETHEUS_VERSION)' -o $@.partial github.com/prometheus/prometheus/cmd/promtool
	mv $@.partial $@

$(BIN_DIR)/.promtool-$(PROMETHEUS_VERSION)-$(PROMTOOL_HASH):
	@mkdir -p $(BIN_DIR)
	rm -f $(BIN_DIR)/.promtool-*
	touch $@

# The policy.networking.k8s.io CRDs, copied from the module cache: AdminNetworkPolicy and
# BaselineAdminNetworkPolicy from the network-policy-api version netpol-verdict evaluates, from
# its experimental channel (egress `networks` peers, which the operator's Admin-tier policies
# use and kube-network-policies evaluates); ClusterNetworkPolicy (standard channel) from
# tests/tools/network-policy-api's pin (no kube-network-policies we build evaluates it).
# Copied again when a pin or the channel changes.
netpol-crds: $(NETPOL_CRDS)

NPA_MODULE_DIR = go mod download -json sigs.k8s.io/network-policy-api | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$$/\1/p'

$(BIN_DIR)/crds/policy.networking.k8s.io_adminnetworkpolicies.yaml $(BIN_DIR)/crds/policy.networking.k8s.io_baselineadminnetworkpolicies.yaml: $(BIN_DIR)/crds/.anp-experimental-$(NETPOL_NPA_VERSION)
	dir=$$(cd $(TOOLS)/netpol && $(NPA_MODULE_DIR)) && install -m 644 "$$dir/config/crd/experimental/$(@F)" $@.partial
	mv $@.partial $@

$(BIN_DIR)/crds/policy.networking.k8s.io_clusternetworkpolicies.yaml: $(BIN_DIR)/crds/.cnp-$(NPA_VERSION)
	dir=$$(cd $(TOOLS)/network-policy-api && $(NPA_MODULE_DIR)) && install -m 644 "$$dir/config/crd/standard/$(@F)" $@.partial
	mv $@.partial $@

$(BIN_DIR)/crds/.anp-experimental-$(NETPOL_NPA_VERSION):
	@mkdir -p $(@D)
	rm -f $(@D)/.anp-*
	touch $@

$(BIN_DIR)/crds/.cnp-$(NPA_VERSION):
	@mkdir -p $(@D)
	rm -f $(@D)/.cnp-*
	touch $@

# go test of netpol-verdict (not part of `make test`). -trimpath, as GO_BUILD, so the test build
# reuses the packages compiled for the binary.
tools-test:
	cd $(TOOLS)/netpol && go test -trimpath -count=1 ./...

moto: $(MOTO_VENV)/.installed $(MOTO_VENV)/.requirements-$(PY_REQUIREMENTS_HASH)

$(MOTO_VENV)/.installed:
	rm -rf $(MOTO_VENV)
	python3 -m venv $(MOTO_VENV)
	$(MOTO_VENV)/bin/python -m pip install --quiet -r $(TOOLS)/moto/requirements.txt
	$(MOTO_VENV)/bin/python -c 'import moto, moto.server; print("moto", moto.__version__)'
	touch $@

# Installs what a changed requirements file adds to an existing virtualenv (a no-op on a new one).
$(MOTO_VENV)/.requirements-$(PY_REQUIREMENTS_HASH): $(MOTO_VENV)/.installed
	$(MOTO_VENV)/bin/python -m pip install --quiet -r $(TOOLS)/moto/requirements.txt
	$(MOTO_VENV)/bin/python -c 'import moto, parliament; print("moto", moto.__version__, "parliament", parliament.__version__)'
	rm -f $(MOTO_VENV)/.requirements-*
	touch $@

fmt-check:
	cargo fmt --all -- --check

lint:
	cargo clippy --locked --workspace --all-targets -- -D warnings

crds:
	cargo run --locked --quiet -- crd > crds/imagingtenants.imaging.tenancy.dev.yaml.partial
	mv crds/imagingtenants.imaging.tenancy.dev.yaml.partial crds/imagingtenants.imaging.tenancy.dev.yaml
	$(MAKE) --no-print-directory chart-crds deploy-manifests

# deploy/iam/: the output of `aws-policies` for placeholder values. tests/iam_parliament.rs reads
# this line and fails when the checked-in files differ from what the command prints.
IAM_POLICY_ARGS := --account-id 111122223333 --region us-east-1 --cluster-name prod-1 --bucket-prefix imaging --break-glass-role-arn arn:aws:iam::111122223333:role/imaging-break-glass --audit-log-bucket imaging-audit-logs --replication-region us-west-2
IAM_POLICY_DOCUMENTS := operator-policy permissions-boundary guardrail-scp evidence-reader restore-drill-policy

iam-policies:
	cargo build --locked --quiet --bin imaging-tenant-operator
	@for doc in $(IAM_POLICY_DOCUMENTS); do \
	  cargo run --locked --quiet -- aws-policies $(IAM_POLICY_ARGS) --only $$doc > deploy/iam/$$doc.json.partial || exit 1; \
	  mv deploy/iam/$$doc.json.partial deploy/iam/$$doc.json; \
	done

# deploy/aws/: the EventBridge rule pattern, SQS queue policy and operator consumer policy of
# event-driven drift detection, for the same placeholder values (tests/offline/drift_events.rs
# checks them).
DRIFT_EVENT_DOCUMENTS := rule-pattern queue-policy consumer-policy
.PHONY: aws-drift-events
aws-drift-events:
	cargo build --locked --quiet --bin imaging-tenant-operator
	@mkdir -p deploy/aws
	@for doc in $(DRIFT_EVENT_DOCUMENTS); do \
	  cargo run --locked --quiet -- drift-events $(IAM_POLICY_ARGS) --document $$doc > deploy/aws/drift-events-$$doc.json.partial || exit 1; \
	  mv deploy/aws/drift-events-$$doc.json.partial deploy/aws/drift-events-$$doc.json; \
	done

.PHONY: demo
# The main job on a local default: control plane + AWS emulator + operator + example tenants.
demo: k8s-bin moto
	cargo build --locked --bin imaging-tenant-operator
	cargo run --locked --example demo

# --- Shipping: chart CRD copy, plain manifests, image build dependencies ----------------------

CRD_FILE := imagingtenants.imaging.tenancy.dev.yaml
HELM := $(BIN_DIR)/helm
# tests/offline/chart_render.rs reads this line and renders with the same arguments.
DEPLOY_TEMPLATE_ARGS := template --kube-version $(K8S_VERSION) imaging-tenant-operator charts/imaging-tenant-operator --namespace imaging-tenant-operator --values deploy/values.yaml
MUSL_TARGET := $(shell uname -m)-unknown-linux-musl
# tests/image_build.rs builds here: the release build of the dependencies survives fresh clones.
export ITO_IMAGE_BUILD_DIR ?= $(CACHE_DIR)/image-build

.PHONY: chart-crds chart-version deploy-manifests image-build-deps

# The chart ships the CRD in its crds/ folder (templated too with crds.enabled); it must equal crds/.
chart-crds:
	cp crds/$(CRD_FILE) charts/imaging-tenant-operator/crds/$(CRD_FILE)

# The crate's version (Cargo.toml) is the only one to change for a release: the chart's version
# and appVersion (hence the default image tag) and the Git refs of the GitOps examples follow it.
# tests/offline/chart_render.rs fails when they differ.
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n1)

chart-version:
	sed -i -e 's/^version: .*/version: $(VERSION)/' -e 's/^appVersion: .*/appVersion: "$(VERSION)"/' charts/imaging-tenant-operator/Chart.yaml
	sed -i -E 's/^( *(tag|targetRevision): )v[0-9][^ ]*$$/\1v$(VERSION)/' deploy/gitops/*.yaml

# deploy/manifests/: the chart rendered with deploy/values.yaml, and the CRD, for kubectl apply -k.
deploy-manifests: chart-crds chart-version $(HELM)
	{ echo '# Generated by `make deploy-manifests` from charts/imaging-tenant-operator and deploy/values.yaml.'; \
	  echo '# Do not edit: configure the operator in deploy/config.env.'; \
	  $(HELM) $(DEPLOY_TEMPLATE_ARGS); } > deploy/manifests/operator.yaml.partial
	mv deploy/manifests/operator.yaml.partial deploy/manifests/operator.yaml
	cp crds/$(CRD_FILE) deploy/manifests/$(CRD_FILE)

# What tests/image_build.rs (the build stage of deploy/Dockerfile for this machine's platform)
# needs: the musl target, and musl-gcc for the C code of ring and aws-lc.
image-build-deps:
	rustup target list --installed | grep -qx '$(MUSL_TARGET)' || rustup target add $(MUSL_TARGET)
	command -v musl-gcc >/dev/null || { apt-get update && apt-get install -y --no-install-recommends musl-tools; }

# --- The container image --------------------------------------------------------------------

.PHONY: image
# Builds deploy/Dockerfile with the first usable of docker (with buildx and a daemon), podman,
# buildah and nerdctl, or CONTAINER_TOOL. PLATFORMS=linux/amd64,linux/arm64 builds both (the
# other platform emulated); PUSH=true pushes the image (a manifest list with podman and
# buildah) to IMAGE.
IMAGE ?= ghcr.io/imaging-tenancy/imaging-tenant-operator:$(VERSION)
HOST_ARCH := $(subst aarch64,arm64,$(subst x86_64,amd64,$(shell uname -m)))
PLATFORMS ?= linux/$(HOST_ARCH)
CONTAINER_TOOL ?=

image:
	@tool='$(CONTAINER_TOOL)'; \
	if [ -z "$$tool" ]; then \
	  if docker buildx version >/dev/null 2>&1 && docker info >/dev/null 2>&1; then tool=docker; \
	  elif podman info >/dev/null 2>&1; then tool=podman; \
	  elif buildah version >/dev/null 2>&1; then tool=buildah; \
	  elif nerdctl info >/dev/null 2>&1; then tool=nerdctl; fi; \
	fi; \
	case "$$tool" in \
	  docker) set -x; docker buildx build --platform $(PLATFORMS) -f deploy/Dockerfile -t $(IMAGE) $(if $(PUSH),--push,--load) . ;; \
	  podman|buildah) set -x; $$tool build --platform $(PLATFORMS) --manifest $(IMAGE) -f deploy/Dockerfile . \
	    $(if $(PUSH),&& $$tool manifest push --all $(IMAGE) docker://$(IMAGE)) ;; \
	  nerdctl) set -x; nerdctl build --platform $(PLATFORMS) -f deploy/Dockerfile -t $(IMAGE) . \
	    $(if $(PUSH),&& nerdctl push --all-platforms $(IMAGE)) ;; \
	  *) echo "make image: no usable docker (with buildx and a running daemon), podman, buildah or nerdctl here."; \
	     echo "Install one (or set CONTAINER_TOOL), or build on a machine that has one, from the repository root:"; \
	     echo "  docker buildx build --platform linux/amd64,linux/arm64 -f deploy/Dockerfile -t $(IMAGE) --push ."; \
	     echo "  podman build --platform linux/amd64,linux/arm64 --manifest $(IMAGE) -f deploy/Dockerfile . && podman manifest push --all $(IMAGE) docker://$(IMAGE)"; \
	     exit 1 ;; \
	esac

.PHONY: bench
# Figures, not a test: time to Ready for TENANTS tenants, API calls per reconcile, memory.
TENANTS ?= 20
bench: k8s-bin moto
	cargo build --locked --release --bin imaging-tenant-operator
	TENANTS=$(TENANTS) cargo run --locked --example bench
