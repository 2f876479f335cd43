#!/usr/bin/env bash
# launch_vllm_node2.sh: the secondary node of a multi-node data (+ expert) parallel
# deployment, with the expert-parallel guide's interface, over vllm-hpc's node runtime.
set -euo pipefail

prog=$(basename "$0")

usage() {
  cat <<USAGE
Usage: $prog NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL START_RANK [-- VLLM SERVE ARGS]

Runs DP ranks START_RANK..START_RANK+DP_LOCAL-1 headless on this node. NODE1_IP is the
primary node's address (not this node's). It waits, with a deadline, until the primary's
RPC port answers: no need to wait 30-60 seconds by hand.

Environment: EP=0 for dense models (default: expert parallel on), ALL2ALL (or the old
VLLM_ALL2ALL_BACKEND) for the all-to-all backend, TP per DP rank (default 1),
VLLM_HPC_PYTHON (default python3), VLLM_HPC_JOB_ROOT (logs and state),
PREFLIGHT_PORT (default $DEFAULT_PREFLIGHT_PORT: where the nodes check their collectives on NODE1_IP before
vLLM loads; the same on every node) or PREFLIGHT=0 (no check; on every node).
USAGE
}

# shellcheck source=SCRIPTDIR/dp-node.bash
source "$(dirname -- "${BASH_SOURCE[0]}")/dp-node.bash"

if [[ "${1:-}" == -h || "${1:-}" == --help ]]; then
  usage
  exit 0
fi
dp_node secondary "$@"
