# The targets here are the commands the README shows. Each one sets up what it needs.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.fedlora-installed
TORCH_VERSION := 2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install redis-server chromium fuse faketime soak edge-load edge-ingest round-scale demo view test test-fast lint format typecheck bench bench-paillier bench-cloud experiments image deploy-test clean

install: $(STAMP)

# torch first, pinned: that version is a CPU build on this machine's disk. Anything installed after it
# only checks that the pinned torch satisfies its range and never pulls a CUDA build.
# A .venv that is a link to another checkout's (a git worktree sharing it) is that checkout's to install:
# an editable install from here would point its packages at this worktree.
$(STAMP): pyproject.toml
	@if [ -L $(VENV) ]; then echo "$(VENV) links to another checkout's environment: not reinstalling from here"; exit 0; fi; \
	set -e; \
	echo "setting up $(VENV): torch $(TORCH_VERSION) (CPU build), then this project and its tools"; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	$(PIP) install --quiet --upgrade pip; \
	$(PIP) install --quiet torch==$(TORCH_VERSION); \
	$(PIP) install --quiet -e '.[dev]'; \
	$(PY) -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('$(TORCH_VERSION)') else f'torch was replaced: {v}')"; \
	touch $(STAMP)

# The tests and the demo start their own redis-server on a free loopback port; this only makes sure the
# program exists.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/sbin/redis-server || test -x /usr/bin/redis-server || { \
	  echo "installing Debian's redis-server (the tests and the demo start and stop their own instance)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# Headless Chromium and its driver for tests/e2e/test_dashboard.py, from Debian (Selenium is pointed at
# /usr/bin/chromedriver and never downloads a browser or a driver).
chromium:
	@{ test -x /usr/bin/chromium && test -x /usr/bin/chromedriver; } || { \
	  echo "installing Debian's chromium and chromium-driver (the dashboard's browser test)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# libfuse3 and fusermount3 for tests/volatile_disk.py, the FUSE disk that drops unsynced writes on a
# simulated power loss (Redis durability tests). fuse3 brings libfuse3-3; the tests skip only where the
# machine has no /dev/fuse.
fuse:
	@test -x /usr/bin/fusermount3 || { \
	  echo "installing Debian's fuse3 (the power-loss disk of the Redis durability tests)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq fuse3 >/dev/null; }

# libfaketime for the soak test (tests/e2e/test_soak.py): the edges' processes run with their wall clocks a
# few seconds off the cloud's.
faketime:
	@test -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 || { \
	  echo "installing Debian's faketime (skewed clocks in the soak test)"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq faketime >/dev/null; }

# The demo's cloud keeps its state in a redis-server under runs/demo/redis; `make view` serves it again
# (dashboard and `fedlora status`) until Ctrl-C.
demo: install redis-server
	$(VENV)/bin/fedlora demo

view: install redis-server
	$(VENV)/bin/fedlora view runs/demo

test: install redis-server chromium fuse faketime
	$(PY) -m pytest -q

test-fast: install redis-server fuse
	$(PY) -m pytest -q -m "not slow"

# The soak test at its full length (`make test` runs it at 30 rounds).
soak: install redis-server faketime
	FEDLORA_SOAK_ROUNDS=300 $(PY) -m pytest -q -s tests/e2e/test_soak.py

# One edge under 1,000 hospitals' uploads with faults, against real processes (docs/operations.md).
edge-load: install redis-server
	$(PY) bench/edge_load.py

# How fast one edge ingests 150 k- and 1 M-value uploads, 1 and 100 at a time, and where the time goes.
edge-ingest: install redis-server
	$(PY) bench/edge_ingest.py

# The image of deploy/Dockerfile and the Redis image of deploy/compose.yaml, with podman from a Debian base
# built here (debootstrap): no registry is pulled from (deploy/image.sh installs podman when missing).
image:
	deploy/image.sh

# deploy/compose.yaml in containers: one round, then a round with an edge and its Redis killed mid-round
# (deploy/deploy_test.py; docs/operations.md, "The compose fault drill").
deploy-test: install image
	$(PY) deploy/deploy_test.py

# One full round with a cloud, 4 edges and simulated hospitals, secure against plaintext over the same
# services (README, figures). `make round-scale ROUND_SCALE_ARGS=--quick` runs a small one in minutes.
ROUND_SCALE_ARGS ?= --sizes 150k,1M --hospitals 10
round-scale: install redis-server
	$(PY) bench/round_scale.py $(ROUND_SCALE_ARGS)

lint: install
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install
	$(VENV)/bin/mypy

# Packed Paillier's hospital and cloud paths, old against new, in one run (docs/benchmarks.md).
bench-paillier: install
	$(PY) bench/paillier_speed.py

# The cloud's decryption over threads against processes, and its memory closing a round (docs/benchmarks.md).
bench-cloud: install redis-server
	$(PY) bench/cloud_decrypt.py

bench: install bench-paillier bench-cloud
	$(PY) bench/he_throughput.py
	$(PY) bench/secagg_cost.py
	$(PY) bench/local_step.py
	$(PY) bench/noise_sampler.py

# Every registered experiment in turn (`fedlora experiment --list`), each into runs/experiments/NAME.
experiments: install
	@for name in $$(OMP_NUM_THREADS=1 $(PY) -c "from fedlora.experiments import EXPERIMENTS; print(' '.join(EXPERIMENTS))"); do \
	  echo "== experiment $$name"; OMP_NUM_THREADS=1 $(VENV)/bin/fedlora experiment $$name || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
