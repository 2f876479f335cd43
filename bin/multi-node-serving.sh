#!/usr/bin/env bash
# multi-node-serving.sh: bring up Ray (and optionally vllm serve) on this node.
#
# Compatible with the interface of the HPC deployment guide; detection of the fast
# network lives in Python (python -m launchers.network), this script only exports it
# and hands over to the per-node runtime (python -m launchers.node).
set -euo pipefail

prog=$(basename "$0")

usage() {
  cat <<USAGE
Usage:
  $prog leader [--ray_port=6379] [--ray_cluster_size=N] [--node-ip-address=IP]
               [--num-gpus=G] [--temp-dir=DIR] [--include-dashboard=False]
               [--model=NAME [--port=8000] [--registry=FILE]] [-- VLLM SERVE ARGS]
  $prog worker --ray_address=LEADER_IP [--ray_port=6379] [--node-ip-address=IP]
               [--num-gpus=G] [--temp-dir=DIR]
  (both also take --job-dir=DIR for their logs and state, --nodes-timeout=SECONDS)
  $prog slurm  --plan=FILE       (one srun task per node; node 0 leads)

The leader starts the Ray head, waits (with a deadline) until --ray_cluster_size nodes
are alive, and with --model also starts vllm serve and waits until it answers.
A worker joins the leader's Ray cluster and exits when the leader goes away.
Without --node-ip-address (or VLLM_HOST_IP) the fast interface is detected:
InfiniBand, then RoCE, then the fastest Ethernet (override with --iface=NAME or
VLLM_HPC_IFACE). Other --options are passed to 'ray start' (use the --opt=value form).

Environment: VLLM_HPC_PYTHON (interpreter, default python3), VLLM_HPC_JOB_ROOT.
USAGE
}

die() {  # one line on stderr, exit 2 (bad input); -h prints the usage
  echo "Error: $*" >&2
  exit 2
}

need_value() {  # option value
  [[ -n "$2" ]] || die "$1 needs a value (write $1=VALUE; see $prog -h)"
}

is_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1 && 10#$1 <= 65535))
}

check_port() {  # option value example: every port here is used next to Ray
  ((10#$2 >= 1024)) || die "$1 $2 is a privileged port (choose 1024-65535, e.g. $3)"
  ((10#$2 < 10002 || 10#$2 > 19999)) ||
    die "$1 $2 is inside Ray's worker port range 10002-19999 (choose a port outside it, e.g. $3)"
}

is_count() {
  [[ "$1" =~ ^[0-9]+$ ]] && ((10#$1 >= 1))
}

[[ $# -ge 1 ]] || die "missing mode (start with leader, worker or slurm; see $prog -h)"
mode=$1
shift
case "$mode" in
  leader | worker | slurm) ;;
  -h | --help)
    usage
    exit 0
    ;;
  *) die "unknown mode '$mode' (use leader, worker or slurm)" ;;
esac

ray_port=6379
cluster_size=1
ray_address=""
node_ip="${VLLM_HOST_IP:-}"
num_gpus=""
temp_dir=""
dashboard="False"
iface="${VLLM_HPC_IFACE:-}"
model=""
port=""
plan=""
job_dir=""
nodes_timeout=""
registries=()
ray_args=()
vllm_args=()

while (($#)); do
  arg=$1
  value=""
  if [[ "$arg" == --*=* ]]; then
    value=${arg#*=}
    arg=${arg%%=*}
  elif [[ "$arg" == --* && $# -ge 2 && "$2" != --* ]]; then
    case "$arg" in
      --ray_port | --ray-port | --ray_cluster_size | --ray-cluster-size | --ray_address | \
        --ray-address | --node-ip-address | --num-gpus | --temp-dir | --include-dashboard | \
        --iface | --model | --port | --registry | --plan | --job-dir | --nodes-timeout)
        value=$2
        shift
        ;;
    esac
  fi
  case "$arg" in
    -h | --help)
      usage
      exit 0
      ;;
    --ray_port | --ray-port)
      is_port "$value" || die "--ray_port must be a port number 1024-65535, e.g. 6379 (got '$value')"
      check_port --ray_port "$value" 6379
      ray_port=$value
      ;;
    --ray_cluster_size | --ray-cluster-size)
      is_count "$value" ||
        die "--ray_cluster_size must be a positive number of nodes, e.g. --ray_cluster_size=2 (got '$value')"
      cluster_size=$value
      ;;
    --ray_address | --ray-address)
      need_value "$arg" "$value"
      ray_address=$value
      ;;
    --node-ip-address)
      need_value "$arg" "$value"
      node_ip=$value
      ;;
    --num-gpus)
      [[ "$value" =~ ^[0-9]+$ ]] ||
        die "--num-gpus must be a number (got '$value'; give this node's GPU count, e.g. --num-gpus=4)"
      num_gpus=$value
      ;;
    --temp-dir)
      need_value "$arg" "$value"
      temp_dir=$value
      ;;
    --include-dashboard)
      need_value "$arg" "$value"
      dashboard=$value
      ;;
    --iface)
      need_value "$arg" "$value"
      iface=$value
      ;;
    --model)
      need_value "$arg" "$value"
      model=$value
      ;;
    --port)
      is_port "$value" || die "--port must be a port number 1024-65535, e.g. 8000 (got '$value')"
      check_port --port "$value" 8000
      port=$value
      ;;
    --registry)
      need_value "$arg" "$value"
      registries+=("$value")
      ;;
    --plan)
      need_value "$arg" "$value"
      plan=$value
      ;;
    --job-dir)
      need_value "$arg" "$value"
      job_dir=$value
      ;;
    --nodes-timeout)
      [[ "$value" =~ ^[0-9]+([.][0-9]+)?$ ]] ||
        die "--nodes-timeout must be seconds, e.g. --nodes-timeout=300 (got '$value')"
      nodes_timeout=$value
      ;;
    --)
      shift
      vllm_args=("$@")
      break
      ;;
    --*)
      # Not ours: forwarded to 'ray start' unchanged.
      ray_args+=("$1")
      ;;
    *) die "unexpected argument '$1' (write options as --name=value and vLLM arguments after --; see $prog -h)" ;;
  esac
  shift
done

# Every argument is checked before anything runs (the network probe included).
case "$mode" in
  slurm) [[ -n "$plan" ]] || die "slurm mode needs --plan=FILE (write one with: vllm-hpc plan --out FILE; see $prog -h)" ;;
  worker)
    [[ -n "$ray_address" ]] || die "worker needs --ray_address=LEADER_IP (the leader node's IP address; see $prog -h)"
    [[ -z "$model" ]] || die "--model belongs on the leader (drop it here; give it to $prog leader)"
    ;;
  leader) [[ -z "$ray_address" ]] || die "--ray_address belongs on workers (drop it: the leader starts the Ray head)" ;;
esac
if ((${#vllm_args[@]})); then
  [[ "$mode" == leader ]] || die "vLLM arguments after -- belong on the leader (with --model=NAME)"
  [[ -n "$model" ]] || die "vLLM arguments after -- need --model=NAME on the leader"
fi

python=${VLLM_HPC_PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || die "no Python interpreter '$python' (set VLLM_HPC_PYTHON)"

# Python owns detection; bash exports what it prints (KEY=VALUE lines).
net_args=()
[[ -n "$iface" ]] && net_args+=(--iface "$iface")
[[ -z "$iface" && -n "$node_ip" ]] && net_args+=(--node-ip-address "$node_ip")
exports=$("$python" -m launchers.network "${net_args[@]}") || exit 2
while IFS='=' read -r key val; do
  [[ -n "$key" ]] && export "$key=$val"
done <<<"$exports"

case "$mode" in
  slurm) exec "$python" -m launchers.node run --plan "$plan" ;;
  worker) args=(worker --ray-address "$ray_address" --ray-port "$ray_port") ;;
  leader)
    args=(leader --ray-port "$ray_port" --cluster-size "$cluster_size"
      --include-dashboard "$dashboard")
    [[ -n "$model" ]] && args+=(--model "$model")
    [[ -n "$port" ]] && args+=(--port "$port")
    for reg in "${registries[@]}"; do args+=(--registry "$reg"); done
    ;;
esac
args+=(--node-ip-address "$VLLM_HOST_IP")
[[ -n "$num_gpus" ]] && args+=(--num-gpus "$num_gpus")
[[ -n "$temp_dir" ]] && args+=(--temp-dir "$temp_dir")
[[ -n "$job_dir" ]] && args+=(--job-dir "$job_dir")
[[ -n "$nodes_timeout" ]] && args+=(--nodes-timeout "$nodes_timeout")
for extra in "${ray_args[@]}"; do args+=("--ray-arg=$extra"); done
((${#vllm_args[@]} == 0)) || args+=(-- "${vllm_args[@]}")
exec "$python" -m launchers.node "${args[@]}"
