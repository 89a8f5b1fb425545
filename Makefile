SHELL := /bin/bash
.DEFAULT_GOAL := test

TOOLS := tests/tools

# Versions come from the tool modules' pins, so the cache directory follows a pin change.
go_mod_version = $(shell awk -v mod=$(2) '$$1 == "require" && $$2 == mod { print $$3; exit } $$1 == mod { print $$2; exit }' $(TOOLS)/$(1)/go.mod)
K8S_VERSION := $(call go_mod_version,kubernetes,k8s.io/kubernetes)
ETCD_VERSION := $(call go_mod_version,etcd,go.etcd.io/etcd/server/v3)
HELM_VERSION := $(call go_mod_version,helm,helm.sh/helm/v3)
MOTO_VERSION := 5.2.1

CACHE_DIR ?= $(HOME)/.cache/imaging-tenant-operator
BIN_DIR ?= $(CACHE_DIR)/bin/k8s-$(K8S_VERSION)-etcd-$(ETCD_VERSION)-helm-$(HELM_VERSION)
PYTHON ?= python3

export ITO_TEST_BIN_DIR := $(BIN_DIR)
export ITO_TEST_PYTHON := $(PYTHON)

GO_BUILD := go build -trimpath
K8S_LDFLAGS := -s -w \
	-X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(word 1,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION:v%=%))) \
	-X k8s.io/component-base/version.gitTreeState=clean

K8S_BINARIES := $(BIN_DIR)/etcd $(BIN_DIR)/kube-apiserver $(BIN_DIR)/kube-controller-manager $(BIN_DIR)/helm

.PHONY: test k8s-bin moto fmt-check lint crds

test: k8s-bin moto
	cargo test --locked --all-targets

k8s-bin: $(K8S_BINARIES)

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

moto:
	@$(PYTHON) -c 'import moto.server' 2>/dev/null \
		|| $(PYTHON) -m pip install 'moto[server]==$(MOTO_VERSION)'
	@$(PYTHON) -c 'import moto, moto.server; print("moto", moto.__version__)'

fmt-check:
	cargo fmt --all -- --check

lint:
	cargo clippy --locked -- -D warnings

crds:
	cargo run --locked --quiet -- crd > crds/imagingtenants.imaging.tenancy.dev.yaml.partial
	mv crds/imagingtenants.imaging.tenancy.dev.yaml.partial crds/imagingtenants.imaging.tenancy.dev.yaml
