#!/usr/bin/env bash
# launch_vllm_node1.sh: the primary node of a multi-node data (+ expert) parallel
# deployment, with the expert-parallel guide's interface, over vllm-hpc's node runtime.
set -euo pipefail

prog=$(basename "$0")

usage() {
  cat <<USAGE
Usage: $prog NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL API_SERVERS [-- VLLM SERVE ARGS]

Runs the API server(s) and DP ranks 0..DP_LOCAL-1 on this node (NODE1_IP must be one of
its addresses). Start the other nodes with launch_vllm_node2.sh, in any order: they wait
(with a deadline) until this node's RPC port answers.

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
dp_node primary "$@"
