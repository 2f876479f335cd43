# shellcheck shell=bash
# The body every slurm/*.sbatch template shares (sourced, not run). It ships inside the
# vllm-hpc package, so a template finds it through its Python alone:
#   source "$("$python" -m launchers sbatch-helper)"
# (SLURM runs a copy of the batch script from its spool directory, so the script cannot
# look next to itself, and PATH need not hold vllm-hpc's bin/.) A template then names the
# inputs it reads and runs what the plan says every node runs:
#   sbatch_plan TP PP PORT REGISTRY [-- FIXED PLAN FLAGS]
#   exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 "${node_argv[@]}"
# Bad input is one line on stderr naming the variable and the fix, exit 2, before any
# node starts.

sbatch_die() {
  echo "Error: $*" >&2
  exit 2
}

# _sbatch_count NAME VALUE: VALUE (of NAME, which SLURM sets) is a positive whole number.
# Checked as text before any arithmetic reads it: bash evaluates a value inside $(( ))
# and (( )) as an expression, array subscripts included, so 'HOME[$(cmd)]' would run cmd.
_sbatch_count() {
  if ! [[ "$2" =~ ^[0-9]{1,6}$ ]] || ((10#$2 < 1)); then
    sbatch_die "$1 must be a positive whole number (got '$2'): SLURM sets it; do not set it yourself"
  fi
}

# sbatch_env NAME...: the job runs under SLURM (its node and GPU counts are numbers), and
# each NAME that is set is valid for its kind (sizes, ports, EP, DP_BACKEND, REGISTRY).
# The template has checked its Python.
sbatch_env() {
  [[ -n "${SLURM_JOB_ID:-}" && -n "${SLURM_JOB_NUM_NODES:-}" ]] ||
    sbatch_die "SLURM_JOB_ID is not set: this is a SLURM batch script (submit it: sbatch --export=ALL,MODEL=$MODEL $0)"
  _sbatch_count SLURM_JOB_NUM_NODES "$SLURM_JOB_NUM_NODES"
  _sbatch_count SLURM_GPUS_ON_NODE "${SLURM_GPUS_ON_NODE:-1}"
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
      ALL2ALL) ;; # a backend name: the planner knows which exist
      *)
        if ! [[ "$value" =~ ^[0-9]{1,6}$ ]] || ((10#$value < 1)); then
          sbatch_die "$name must be a positive whole number (got '$value'; unset it for the default)"
        fi
        ;;
    esac
  done
}

# _sbatch_reads NAME LIST...: NAME is one of the template's inputs.
_sbatch_reads() {
  local name=$1 each
  shift
  for each in "$@"; do [[ "$each" == "$name" ]] && return 0; done
  return 1
}

# sbatch_plan NAME... [-- FLAG...]: check the inputs NAME... (and MODEL), make this
# job's directory (vllm-hpc job-root --new-job-dir), plan inside the job with the
# allocation's node and GPU counts (vllm-hpc plan: bad input fails here, before any node
# starts; EXTRA_VLLM_ARGS is split there as a shell would), and set node_argv to what
# srun runs on every node: the plan's node_argv, as in `vllm-hpc render sbatch`.
# FLAG... are the template's own plan flags (e.g. --runtime native).
sbatch_plan() {
  local -a names=() fixed=() roots=() plan=()
  while (($#)); do
    if [[ "$1" == -- ]]; then
      shift
      fixed=("$@")
      break
    fi
    names+=("$1")
    shift
  done
  [[ -n "${MODEL:-}" ]] || sbatch_die "MODEL is not set (sbatch --export=ALL,MODEL=llama-3.2-3b-instruct $0)"
  sbatch_env "${names[@]}"
  local python=${VLLM_HPC_PYTHON:-python3} job_root job_dir argv_text name
  if [[ -n "${REGISTRY:-}" ]] && _sbatch_reads REGISTRY "${names[@]}"; then
    roots+=(--registry "$REGISTRY")
  fi
  job_root=$("$python" -m launchers job-root "${roots[@]}") || exit 2
  job_dir=$("$python" -m launchers job-root --new-job-dir --job-root "$job_root") || exit 2

  # Numbers only in arithmetic (checked as text above, by sbatch_env), in base 10.
  local nodes=$SLURM_JOB_NUM_NODES gpus=${SLURM_GPUS_ON_NODE:-1} tp=${TP:-1}
  plan=(--model "$MODEL" --job-root "$job_root" --nodes "$nodes" --gpus-per-node "$gpus")
  if _sbatch_reads DP "${names[@]}"; then # DP: one rank per GPU of the job unless set
    _sbatch_reads TP "${names[@]}" || sbatch_env TP
    plan+=(--dp "${DP:-$((10#$nodes * 10#$gpus / 10#$tp))}" --tp "$tp")
  elif _sbatch_reads PP "${names[@]}"; then # TP x PP: both, or the planner's choice
    [[ -z "${TP:-}${PP:-}" ]] || plan+=(--tp "${TP:-1}" --pp "${PP:-1}")
  elif _sbatch_reads TP "${names[@]}"; then
    [[ -z "${TP:-}" ]] || plan+=(--tp "$TP")
  fi
  for name in "${names[@]}"; do
    case "$name" in
      EP) [[ "${EP:-1}" == 0 ]] || plan+=(--ep) ;;
      ALL2ALL) [[ -z "${ALL2ALL:-}" ]] || plan+=(--all2all-backend "$ALL2ALL") ;;
      API_SERVERS) [[ -z "${API_SERVERS:-}" ]] || plan+=(--api-server-count "$API_SERVERS") ;;
      DP_BACKEND) [[ -z "${DP_BACKEND:-}" ]] || plan+=(--dp-backend "$DP_BACKEND") ;;
      DP_RPC_PORT) [[ -z "${DP_RPC_PORT:-}" ]] || plan+=(--dp-rpc-port "$DP_RPC_PORT") ;;
      PORT) [[ -z "${PORT:-}" ]] || plan+=(--port "$PORT") ;;
      REGISTRY) [[ -z "${REGISTRY:-}" ]] || plan+=(--registry "$REGISTRY") ;;
    esac
  done
  [[ -z "${EXTRA_VLLM_ARGS:-}" ]] || plan+=("--extra-vllm-args=$EXTRA_VLLM_ARGS")

  argv_text=$("$python" -m launchers plan "${plan[@]}" "${fixed[@]}" \
    --out "$job_dir/plan.json" --print-node-argv) || exit
  # shellcheck disable=SC2034 # node_argv: the template's srun line runs it
  mapfile -t node_argv <<<"$argv_text"
  echo "vllm-hpc: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST; job directory $job_dir"
}
