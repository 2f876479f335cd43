# shellcheck shell=bash
# Shared by launch_vllm_node1.sh and launch_vllm_node2.sh (sourced, not run): checks the
# expert-parallel guide's positional arguments and starts vllm-hpc's node runtime.
#
# dp_node ROLE NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL LAST [-- VLLM ARGS]
#   ROLE primary: LAST is API_SERVERS; ROLE secondary: LAST is START_RANK.

die() {  # one line on stderr, exit 2 (bad input); -h prints the usage
  echo "Error: $*" >&2
  exit 2
}

usage_hint() {  # the launcher script that sourced this file, for "see ... -h"
  echo "see $(basename -- "$0") -h"
}

# Decimal digits only (a leading 0 is not octal here), at most 6 of them (no overflow).
is_count() { [[ "$1" =~ ^[0-9]{1,6}$ ]] && ((10#$1 >= 1)); }

is_ip() {  # IPv4 dotted quad, or IPv6
  local IFS=. octet
  local -a parts
  if [[ "$1" == *:* ]]; then
    [[ "$1" =~ ^[0-9a-fA-F:.]+$ ]]
    return
  fi
  [[ "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  read -ra parts <<<"$1"
  for octet in "${parts[@]}"; do ((10#$octet <= 255)) || return 1; done
}

is_port() { [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1024 && 10#$1 <= 65535)); }

# launchers/defaults.py's, spelled here once (the usage texts read it; a unit test keeps
# them in step): each node plans on its own, and only a port given to the planner is
# fixed, which the nodes need to meet without a shared file.
DEFAULT_PREFLIGHT_PORT=29510

dp_node() {
  local role=$1
  shift
  local last_name=START_RANK
  [[ "$role" != primary ]] || last_name=API_SERVERS
  [[ $# -ge 6 ]] ||
    die "expected 6 arguments, got $# (NODE1_IP RPC_PORT MODEL DP_TOTAL DP_LOCAL $last_name; $(usage_hint))"
  local ip=$1 rpc_port=$2 model=$3 dp_total=$4 dp_local=$5 last=$6
  shift 6
  [[ "${1:-}" != -- ]] || shift
  is_ip "$ip" || die "NODE1_IP must be an IP address (got '$ip'; $(usage_hint))"
  is_port "$rpc_port" || die "RPC_PORT must be a port number 1024-65535 (got '$rpc_port'; $(usage_hint))"
  is_count "$dp_total" || die "DP_TOTAL must be a positive number (got '$dp_total'; $(usage_hint))"
  is_count "$dp_local" || die "DP_LOCAL must be a positive number (got '$dp_local'; $(usage_hint))"
  dp_total=$((10#$dp_total)) dp_local=$((10#$dp_local))
  ((dp_total % dp_local == 0)) ||
    die "DP_TOTAL ($dp_total) must be a multiple of DP_LOCAL ($dp_local): every node runs the same number of ranks"
  local rank=0
  if [[ "$role" == primary ]]; then
    is_count "$last" || die "API_SERVERS must be a positive number (got '$last'; $(usage_hint))"
    last=$((10#$last))
  else
    [[ "$last" =~ ^[0-9]{1,6}$ ]] && last=$((10#$last))
    if ! [[ "$last" =~ ^[0-9]+$ ]] || ((last % dp_local != 0 || last == 0 || last >= dp_total)); then
      die "START_RANK must be a multiple of DP_LOCAL between $dp_local and $((dp_total - dp_local)) (got '$last'; $(usage_hint))"
    fi
    rank=$((last / dp_local))
  fi

  local python=${VLLM_HPC_PYTHON:-python3} tp=${TP:-1}
  is_count "$tp" || die "TP must be a positive number of GPUs per DP rank (got '$tp'; unset it for 1)"
  tp=$((10#$tp))
  [[ "${EP:-1}" == [01] ]] || die "EP must be 0 (dense model) or 1 (expert parallel) (got '$EP')"
  # The pre-flight: each node plans on its own here and may not share the job root, so
  # they meet at a FIXED port on NODE1_IP (never moved: no file tells a moved one), the
  # same on every node: PREFLIGHT_PORT, else vllm-hpc's default. PREFLIGHT=0 skips it.
  local preflight_port=${PREFLIGHT_PORT:-$DEFAULT_PREFLIGHT_PORT}
  [[ "${PREFLIGHT:-1}" == [01] ]] ||
    die "PREFLIGHT must be 1 (check the nodes' collectives before vLLM loads) or 0 (skip it, on every node) (got '$PREFLIGHT')"
  is_port "$preflight_port" ||
    die "PREFLIGHT_PORT must be a port number 1024-65535, the same on every node (got '$preflight_port'; unset it for $DEFAULT_PREFLIGHT_PORT)"
  local preflight=(--preflight-port "$((10#$preflight_port))")
  [[ "${PREFLIGHT:-1}" == 1 ]] || preflight=(--no-preflight)
  command -v "$python" >/dev/null 2>&1 || die "no Python interpreter '$python' (set VLLM_HPC_PYTHON)"
  local job_id=${SLURM_JOB_ID:-dp-${ip//[:.]/-}-$rpc_port}
  local job_root
  job_root=$("$python" -m launchers job-root) || exit 2
  local plan=(--model "$model" --nodes "$((dp_total / dp_local))"
    --gpus-per-node "$((dp_local * tp))" --dp "$dp_total" --tp "$tp"
    --dp-rpc-port "$rpc_port" --job-root "$job_root" "${preflight[@]}")
  [[ "$role" != primary ]] || plan+=(--api-server-count "$last")
  [[ "${EP:-1}" == 0 ]] || plan+=(--ep)
  local backend=${ALL2ALL:-${VLLM_ALL2ALL_BACKEND:-}}
  [[ -z "$backend" ]] || plan+=(--all2all-backend "$backend")

  local file=$job_root/$job_id/plan-node$rank.json
  "$python" -m launchers plan "${plan[@]}" --out "$file" -- "$@"
  local run=(run --plan "$file" --rank "$rank" --job-id "$job_id")
  if [[ "$role" == primary ]]; then
    export VLLM_HOST_IP=$ip
  else
    run+=(--leader-ip "$ip")
  fi
  exec "$python" -m launchers node "${run[@]}"
}
