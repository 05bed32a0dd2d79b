# wms — the two commands a newcomer needs are `make demo` and `make test`; both bootstrap first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
# The venv can live outside the clone (CI keeps one under /var/cache): WMS_VENV=/path.
VENV := $(or $(WMS_VENV),$(CURDIR)/.venv)
export WMS_VENV := $(VENV)
UV_VERSION := 0.13.8
# The stamp names the lock file's hash, so a changed lock re-syncs and an unchanged one is a no-op.
LOCK_HASH := $(shell sha256sum requirements.lock | cut -c1-16)
BOOTSTRAP_STAMP := $(VENV)/.wms-bootstrap-$(LOCK_HASH)

# tch/torch-sys runs the venv's python to find libtorch (LIBTORCH_USE_PYTORCH=1).
export VIRTUAL_ENV := $(VENV)
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1

TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
RELEASE := $(TARGET_DIR)/release
CARGO_FLAGS ?= --locked

.PHONY: help bootstrap build release demo test fmt lint unit bench-train bench-serve clean

help:
	@echo "make demo   bootstrap, then run the whole loop locally on synthetic data"
	@echo "make test   bootstrap, then fmt check, clippy -D warnings and all tests"

## bootstrap: project venv with the pinned native runtimes (torch, onnxruntime) and test tools.
## Idempotent: a no-op once the stamp is newer than the lock file.
bootstrap: $(BOOTSTRAP_STAMP)

$(BOOTSTRAP_STAMP):
	@echo "bootstrap: creating $(VENV) from requirements.lock (one-time; later runs skip this)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(VENV)/bin/uv pip sync --quiet --python $(VENV)/bin/python requirements.lock
	@rm -f $(VENV)/.wms-bootstrap-*
	@touch $@

## release: the three binaries. wms and wms-serve are built without the `train` feature so they
## never link libtorch; wms-train is built with it.
release: bootstrap
	cargo build $(CARGO_FLAGS) --release --bin wms --bin wms-serve
	cargo build $(CARGO_FLAGS) --release --features train --bin wms-train

build: release

demo: release
	@bash tests/demo.sh "$(RELEASE)" "$(CURDIR)/demo-out"

fmt:
	cargo fmt --all -- --check

lint: bootstrap
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings
	cargo clippy $(CARGO_FLAGS) --all-targets --features train -- -D warnings

test: bootstrap fmt lint
	cargo test $(CARGO_FLAGS) --features train

clean:
	cargo clean
	rm -rf $(VENV) demo-out bench-out

## bench-serve: wms-serve vs a PyTorch-eager FastAPI reference on the same random upstream weights
## and one 640×480 JPEG, same client for both: cold start, p50/p95 latency (1 client), requests/s
## at concurrency 8, and the ratios. Results in bench-out/serve/serve.json.
.PHONY: bench-serve
bench-serve: release
	bash bench/serve/run.sh "$(RELEASE)" "$(CURDIR)/bench-out/serve" "$(VENV)"
