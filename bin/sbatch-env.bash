# shellcheck shell=bash
# Sourced by slurm/*.sbatch (found next to multi-node-serving.sh on PATH, not run):
# checks the inputs a template reads from the environment before anything is planned
# or started. A bad one is one line on stderr naming the variable and the fix, exit 2.

sbatch_die() {
  echo "Error: $*" >&2
  exit 2
}

# sbatch_env NAME...: the job runs under SLURM, VLLM_HPC_PYTHON runs, and each NAME
# that is set is valid for its kind (sizes, ports, EP, DP_BACKEND, REGISTRY).
sbatch_env() {
  [[ -n "${SLURM_JOB_ID:-}" && -n "${SLURM_JOB_NUM_NODES:-}" ]] ||
    sbatch_die "SLURM_JOB_ID is not set: this is a SLURM batch script (submit it: sbatch --export=ALL,MODEL=$MODEL $0)"
  local name value
  for name in "$@"; do
    value=${!name:-}
    [[ -n "$value" ]] || continue
    case "$name" in
      PORT | DP_RPC_PORT)
        if ! [[ "$value" =~ ^[0-9]{4,5}$ ]] || ((10#$value < 1024 || 10#$value > 65535)); then
          sbatch_die "$name must be a port number 1024-65535 (got '$value'; unset it for the default)"
        fi
        ;;
      DP_BACKEND)
        [[ "$value" == mp || "$value" == ray ]] ||
          sbatch_die "DP_BACKEND must be mp (headless ranks) or ray (got '$value'; unset it for mp)"
        ;;
      EP) [[ "$value" == [01] ]] || sbatch_die "EP must be 0 (dense model) or 1 (expert parallel) (got '$value')" ;;
      REGISTRY)
        [[ -f "$value" && -r "$value" ]] ||
          sbatch_die "REGISTRY: $value is not a readable file (give a registry YAML file on shared storage, or unset REGISTRY)"
        ;;
      *)
        if ! [[ "$value" =~ ^[0-9]{1,6}$ ]] || ((10#$value < 1)); then
          sbatch_die "$name must be a positive whole number (got '$value'; unset it for the default)"
        fi
        ;;
    esac
  done
  command -v "${VLLM_HPC_PYTHON:-python3}" >/dev/null 2>&1 ||
    sbatch_die "VLLM_HPC_PYTHON: no Python interpreter '${VLLM_HPC_PYTHON:-python3}' (set VLLM_HPC_PYTHON to the Python that has vllm-hpc)"
}
