# `make run` and `make test` do all the set-up on a fresh Debian 12 machine (as root).
PY ?= /usr/bin/python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: all deps install run test test-v2 unit lint bench bench-deps bench-overhead clean

all: install

deps:
	sh scripts/install-deps.sh

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

install: deps $(VENV)/.installed
	$(BIN)/python -m cove.cli.launcher $(BIN) >/dev/null
	@git rev-parse HEAD > cove/_commit 2>/dev/null || echo unknown > cove/_commit

run: install
	$(BIN)/cove run --rm --network none busybox sh -c 'echo "Hello from a Cove container: $$(uname -sr), pid $$$$, hostname $$(hostname)"'

test: install lint
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The cgroup v2 tests on a real pure-cgroup2 hierarchy: a qemu (TCG) VM of Debian's kernel.
test-v2: install
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/integration/test_cgroups_v2_vm.py

# The CRIU tests (checkpoint/restore): this host's kernel breaks CRIU 3.17, so in the VM too.
test-criu: install
	$(BIN)/python -m pytest -q -s -p no:cacheprovider tests/criu

unit: install
	$(BIN)/python -m pytest -q tests/unit

lint:
	$(BIN)/ruff check cove tests bench/lifecycle bench/engine bench/pull bench/overhead bench/import bench/cri bench/build bench/pyapi bench/api  # extensionless: named
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/lifecycle

# Optional, for bench/overhead only (CI needs none of it): sysbench, fio, iperf3, matplotlib.
bench-deps: install
	sh scripts/install-deps.sh bench
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,bench]'

bench-overhead: bench-deps
	$(BIN)/python bench/overhead

clean:
	rm -rf $(VENV) cove/_commit
