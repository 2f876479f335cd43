#!/usr/bin/env bash
# multi-node-serving.sh: bring up Ray (and optionally vllm serve) on this node.
#
#   multi-node-serving.sh leader [--ray_port=6379] [--ray_cluster_size=N] [--model=NAME] ...
#   multi-node-serving.sh worker --ray_address=LEADER_IP [--ray_port=6379] ...
#   multi-node-serving.sh slurm  --plan=FILE
#   multi-node-serving.sh leader|worker ... --dry-run   (print what each node would run)
#   multi-node-serving.sh -h     (the whole usage)
#
# The interface of the HPC deployment guide. This script only finds the Python that has
# vllm-hpc and hands over the arguments as they came: Python checks them, detects the
# fast network, plans and runs (vllm-hpc node wrapper, launchers/input/wrapper.py).
set -euo pipefail

python=${VLLM_HPC_PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || {
  echo "Error: no Python interpreter '$python' (set VLLM_HPC_PYTHON)" >&2
  exit 2
}
VLLM_HPC_PROG=$(basename -- "$0") exec "$python" -m launchers node wrapper "$@"
