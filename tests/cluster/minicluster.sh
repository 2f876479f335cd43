#!/usr/bin/env bash
# A real multi-node SLURM cluster on this one host, for the cluster tests and the demo.
#
#   minicluster.sh up N      start slurmctld + N compute nodes (2..4); no-op when already up
#   minicluster.sh down      stop everything this script started, remove namespaces and links
#   minicluster.sh status    nodes, daemons and `sinfo`
#   minicluster.sh env       `export ...` lines for a login shell (SLURM_CONF, PATH with sacct)
#
# Layout (see tests/cluster/README.md and shared/FACTS.md):
#   root namespace   the login node: bridge vhpcbr0 10.77.0.1/24, one munged (socket on a file path)
#   netns vhpc-ctld  slurmctld, hostname "ctld", eth0 10.77.0.2
#   netns vhpc-nodeK slurmd of nodeK, hostname "nodeK", ib0 10.77.0.(10+K), own PID/UTS/mount
#                    namespaces, own /etc/hosts, /dev/shm and /tmp
# All state (configs, logs, PID records, munge socket, the shared job root) lives under
# ${VLLM_HPC_MC_STATE:-/var/tmp/vllm-hpc-bed}. It must not be under /tmp: every node mounts its
# own /tmp, so only paths outside /tmp are "shared storage".
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
SCRIPT_PATH="${SCRIPT_DIR}/$(basename -- "${BASH_SOURCE[0]}")"
STATE=${VLLM_HPC_MC_STATE:-/var/tmp/vllm-hpc-bed}
SHIM_BIN="${SCRIPT_DIR}/shim-bin"

PREFIX=vhpc
BRIDGE=vhpcbr0
SUBNET_PREFIX=10.77.0
LOGIN_IP="${SUBNET_PREFIX}.1"
CTLD_IP="${SUBNET_PREFIX}.2"
CTLD_NS="${PREFIX}-ctld"
GPUS_PER_NODE=4
NODE_CPUS=8
NODE_MEMORY_MB=8000
MIN_NODES=2
MAX_NODES=4
READY_TIMEOUT_S=20
STOP_TIMEOUT_S=10

ETC="${STATE}/etc"
LOGS="${STATE}/logs"
RUN="${STATE}/run"
CONF="${ETC}/slurm.conf"

die() {
  printf 'minicluster.sh: error: %s\n' "$*" >&2
  exit 1
}

usage() {
  cat >&2 <<'EOF'
usage: minicluster.sh up N | down | status | env

  up N     start slurmctld and N compute nodes (N = 2..4); no-op when already up with N nodes
  down     stop what `up` started, remove namespaces, veths and bridge
  status   print nodes, daemons and sinfo; exit 0 iff the cluster is up
  env      print export lines for the login shell: eval "$(minicluster.sh env)"
EOF
}

log() {
  printf 'minicluster.sh: %s\n' "$*" >&2
}

node_ns() { printf '%s-%s' "${PREFIX}" "$1"; }
node_ip() { printf '%s.%d' "${SUBNET_PREFIX}" "$((10 + ${1#node}))"; }

now_ms() { date +%s%3N; }

recorded_nodes() {
  if [[ -f "${RUN}/nodes" ]]; then
    cat "${RUN}/nodes"
  fi
}

# ---------------------------------------------------------------- processes
pid_alive() {
  [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null
}

# The namespace init (PID 1 inside) is the only child of the recorded `unshare` process.
ns_init_pid() {
  local upid=$1 child
  pid_alive "${upid}" || return 1
  child=$(cat "/proc/${upid}/task/${upid}/children" 2>/dev/null || true)
  child=${child%% *}
  [[ -n "${child}" ]] || return 1
  printf '%s\n' "${child}"
}

# A recorded PID is ours only if its command line still names this script's role.
recorded_pid() {
  local name=$1 pid
  [[ -f "${RUN}/${name}.pid" ]] || return 1
  pid=$(cat "${RUN}/${name}.pid")
  pid_alive "${pid}" || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  printf '%s\n' "${pid}"
}

wait_gone() {
  # wait_gone TIMEOUT_S PID...: block until none of the PIDs is alive (tail --pid waits
  # for a PID to exit); returns 1 when the deadline passes first.
  local deadline=$(($(now_ms) + $1 * 1000)) pid left
  shift
  for pid in "$@"; do
    left=$(((deadline - $(now_ms)) / 1000 + 1))
    pid_alive "${pid}" || continue
    timeout "${left}" tail --pid="${pid}" -s 0.05 -f /dev/null || return 1
  done
}

# One `up`/`down` at a time. Daemons are started with fd 9 closed so they never hold the lock.
take_lock() {
  exec 9>"${STATE}/.lock"
  flock -w 60 9 || die "another minicluster.sh holds ${STATE}/.lock for 60 s"
}

# ---------------------------------------------------------------- install
ensure_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  command -v munged >/dev/null || missing+=(munge)
  command -v ip >/dev/null || missing+=(iproute2)
  command -v unshare >/dev/null || missing+=(util-linux)
  command -v nsenter >/dev/null || missing+=(util-linux)
  command -v nft >/dev/null || missing+=(nftables) # a firewall between nodes (pre-flight tests)
  command -v ethtool >/dev/null || missing+=(ethtool) # segmentation offloads off (the MTU test)
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2
}

# ---------------------------------------------------------------- configuration
# Every `up` starts with an empty controller state (no job survives a restart), but job ids
# keep counting from where the last cluster stopped, so job directories named by id never
# collide across restarts.
next_job_id() {
  local saved=0 logged=0
  [[ -f "${RUN}/next_job_id" ]] && saved=$(cat "${RUN}/next_job_id")
  if [[ -f "${LOGS}/slurmctld.log" ]]; then
    logged=$(grep -o 'JobId=[0-9]*' "${LOGS}/slurmctld.log" | cut -d= -f2 | sort -n | tail -1)
    logged=$((${logged:-0} + 1))
  fi
  local next=$((saved > logged ? saved : logged))
  printf '%d\n' "$((next > 0 ? next : 1))"
}

save_next_job_id() {
  local next
  recorded_pid ctld "_init ctld" >/dev/null || return 0
  next=$(SLURM_CONF="${CONF}" timeout 10 scontrol show config 2>/dev/null |
    sed -n 's/^NEXT_JOB_ID *= *//p' || true)
  [[ "${next}" =~ ^[0-9]+$ ]] && printf '%s\n' "${next}" >"${RUN}/next_job_id"
  return 0
}

write_configs() {
  local n=$1 k nodes="node[1-$1]"
  rm -rf "${STATE}/ctld/state" "${STATE}/nodes"
  mkdir -p "${ETC}" "${LOGS}" "${RUN}" "${STATE}/ctld/state" "${STATE}/dev" "${STATE}/jobs"
  chmod 0755 "${STATE}" "${STATE}/jobs"
  for k in $(seq 0 $((GPUS_PER_NODE - 1))); do
    [[ -c "${STATE}/dev/gpu${k}" ]] || mknod -m 666 "${STATE}/dev/gpu${k}" c 1 3
  done

  {
    printf '# generated by minicluster.sh: do not edit\n'
    printf 'ClusterName=vhpc\n'
    printf 'FirstJobId=%d\n' "$(next_job_id)"
    printf 'SlurmctldHost=ctld(%s)\n' "${CTLD_IP}"
    printf 'AuthType=auth/munge\nCredType=cred/munge\n'
    # cred_expire: a requeued job waits this long (+1 s) before it may start again (120 s
    # by default); the bed's steps launch within seconds.
    printf 'AuthInfo=socket=%s/munge/munge.socket.2,cred_expire=30\n' "${STATE}"
    printf 'SlurmUser=root\nSlurmdUser=root\n'
    printf 'SlurmctldPort=6817\nSlurmdPort=6818\n'
    printf 'StateSaveLocation=%s/ctld/state\n' "${STATE}"
    printf 'SlurmdSpoolDir=%s/nodes/%%n/spool\n' "${STATE}"
    printf 'SlurmctldPidFile=%s/ctld/slurmctld.pid\n' "${STATE}"
    printf 'SlurmdPidFile=%s/nodes/%%n/slurmd.pid\n' "${STATE}"
    printf 'SlurmctldLogFile=%s/slurmctld.log\n' "${LOGS}"
    printf 'SlurmdLogFile=%s/slurmd-%%n.log\n' "${LOGS}"
    printf 'SlurmctldDebug=info\nSlurmdDebug=info\n'
    printf 'ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n'
    printf 'JobAcctGatherType=jobacct_gather/none\n'
    printf 'AccountingStorageType=accounting_storage/none\nJobCompType=jobcomp/none\n'
    printf 'SelectType=select/cons_tres\nSelectTypeParameters=CR_CPU\n'
    printf 'SlurmdParameters=config_overrides\n'
    printf 'GresTypes=gpu\n'
    printf 'MpiDefault=none\nReturnToService=2\n'
    printf 'MinJobAge=3600\nKillWait=5\nInactiveLimit=0\nMessageTimeout=10\n'
    printf 'SlurmdTimeout=300\nSlurmctldTimeout=120\n'
    for k in $(seq 1 "${n}"); do
      printf 'NodeName=node%d NodeAddr=%s NodeHostname=node%d CPUs=%d RealMemory=%d Gres=gpu:%d State=UNKNOWN\n' \
        "${k}" "$(node_ip "node${k}")" "${k}" "${NODE_CPUS}" "${NODE_MEMORY_MB}" "${GPUS_PER_NODE}"
    done
    printf 'PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO\n' \
      "${nodes}"
  } >"${CONF}.new"
  mv "${CONF}.new" "${CONF}"

  printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' >"${ETC}/cgroup.conf"
  printf 'NodeName=%s Name=gpu File=%s/dev/gpu[0-%d]\n' \
    "${nodes}" "${STATE}" "$((GPUS_PER_NODE - 1))" >"${ETC}/gres.conf"

  {
    printf '127.0.0.1\tlocalhost\n'
    printf '%s\tlogin\n' "${LOGIN_IP}"
    printf '%s\tctld\n' "${CTLD_IP}"
    for k in $(seq 1 "${n}"); do
      printf '%s\tnode%d\n' "$(node_ip "node${k}")" "${k}"
    done
  } >"${ETC}/hosts"
}

# ---------------------------------------------------------------- munge
start_munge() {
  local pid
  if pid=$(recorded_pid munged munged); then
    return 0
  fi
  mkdir -p "${STATE}/munge"
  chmod 0700 "${STATE}/munge"
  if [[ ! -s "${STATE}/munge/munge.key" ]]; then
    mungekey --create --keyfile="${STATE}/munge/munge.key" --force >&2
  fi
  chmod 0600 "${STATE}/munge/munge.key"
  rm -f "${STATE}/munge/munge.socket.2" "${STATE}/munge/munge.socket.2.lock"
  # munged forks and its parent returns once the socket accepts requests: no polling.
  munged --force \
    --socket="${STATE}/munge/munge.socket.2" \
    --key-file="${STATE}/munge/munge.key" \
    --pid-file="${STATE}/munge/munged.pid" \
    --log-file="${LOGS}/munged.log" \
    --seed-file="${STATE}/munge/munged.seed" \
    </dev/null >>"${LOGS}/munged.out" 2>&1 9>&- ||
    die "munged did not start; see ${LOGS}/munged.log"
  [[ -S "${STATE}/munge/munge.socket.2" ]] || die "munged started without its socket"
  cp "${STATE}/munge/munged.pid" "${RUN}/munged.pid"
}

# ---------------------------------------------------------------- network
setup_bridge() {
  if ! ip link show "${BRIDGE}" >/dev/null 2>&1; then
    ip link add "${BRIDGE}" type bridge
    ip addr add "${LOGIN_IP}/24" dev "${BRIDGE}"
  fi
  ip link set "${BRIDGE}" up
}

# setup_ns NS OUTER_LINK INNER_NAME IP
setup_ns() {
  local ns=$1 outer=$2 inner=$3 addr=$4
  ip netns list | grep -qw -- "${ns}" || ip netns add "${ns}"
  if ! ip link show "${outer}" >/dev/null 2>&1; then
    ip link add "${outer}" type veth peer name "${outer}i"
    ip link set "${outer}i" netns "${ns}"
    ip -n "${ns}" link set "${outer}i" name "${inner}"
  fi
  ip link set "${outer}" master "${BRIDGE}" up
  ip -n "${ns}" addr replace "${addr}/24" dev "${inner}"
  ip -n "${ns}" link set "${inner}" up
  ip -n "${ns}" link set lo up
}

# ---------------------------------------------------------------- daemons
# start_in_ns NAME NS ROLE: run `minicluster.sh _init ROLE NAME` as PID 1 of new UTS/mount/PID
# namespaces inside network namespace NS; record the host PID of `unshare`.
start_in_ns() {
  local name=$1 ns=$2 role=$3
  mkdir -p "${STATE}/nodes/${name}/spool" "${STATE}/nodes/${name}/tmp"
  chmod 1777 "${STATE}/nodes/${name}/tmp"
  VLLM_HPC_MC_STATE="${STATE}" SLURM_CONF="${CONF}" \
    setsid ip netns exec "${ns}" \
    unshare --uts --mount --pid --fork --mount-proc --propagation private \
    "${SCRIPT_PATH}" _init "${role}" "${name}" \
    </dev/null >>"${LOGS}/${name}.out" 2>&1 9>&- &
  printf '%s\n' "$!" >"${RUN}/${name}.pid"
}

# Runs as PID 1 of a node's (or the controller's) namespaces.
ns_init() {
  local role=$1 name=$2 daemon
  hostname "${name}"
  mount --bind "${ETC}/hosts" /etc/hosts
  mount -t tmpfs -o mode=1777,size=8g "shm-${name}" /dev/shm
  # A checkout under /tmp is "shared storage" too (CI may clone there): keep it visible
  # at the same path inside the node's private /tmp.
  local repo
  repo=$(cd -- "${SCRIPT_DIR}/../.." && pwd)
  if [[ "${repo}" == /tmp/* ]]; then
    mkdir -p "${STATE}/nodes/${name}/tmp${repo#/tmp}"
    mount --bind "${repo}" "${STATE}/nodes/${name}/tmp${repo#/tmp}"
  fi
  mount --rbind "${STATE}/nodes/${name}/tmp" /tmp
  export SLURM_CONF="${CONF}"
  case "${role}" in
    ctld) slurmctld -D -f "${CONF}" & ;;
    node) slurmd -D -N "${name}" -f "${CONF}" & ;;
    *) die "unknown role ${role}" ;;
  esac
  daemon=$!
  # PID 1 forwards TERM/INT to the daemon and reaps orphans (bash reaps every child) until
  # the daemon exits; when PID 1 exits the kernel kills whatever is left in the namespace.
  trap 'kill -TERM "${daemon}" 2>/dev/null || true' TERM INT
  while pid_alive "${daemon}"; do
    wait "${daemon}" || true
  done
}

# ---------------------------------------------------------------- state checks
cluster_nodes_up() {
  # Prints the number of nodes when every recorded daemon and namespace is alive.
  local nodes name count=0
  nodes=$(recorded_nodes)
  [[ -n "${nodes}" ]] || return 1
  recorded_pid munged munged >/dev/null || return 1
  recorded_pid ctld "_init ctld" >/dev/null || return 1
  for name in ${nodes}; do
    recorded_pid "${name}" "_init node ${name}" >/dev/null || return 1
    count=$((count + 1))
  done
  printf '%d\n' "${count}"
}

wait_ready() {
  local n=$1 deadline idle
  deadline=$(($(now_ms) + READY_TIMEOUT_S * 1000))
  while :; do
    idle=$(SLURM_CONF="${CONF}" sinfo -h -N -p debug -o '%N %T' 2>/dev/null |
      grep -c -E ' (idle|mixed|allocated)$' || true)
    ((idle >= n)) && return 0
    if (($(now_ms) >= deadline)); then
      log "nodes not ready after ${READY_TIMEOUT_S} s:"
      SLURM_CONF="${CONF}" sinfo -N -o '%N %T %E' >&2 || true
      die "cluster did not become ready; logs in ${LOGS}"
    fi
    sleep 0.1 # poll
  done
}

# ---------------------------------------------------------------- commands
cmd_up() {
  local n=${1:-}
  [[ "${n}" =~ ^[0-9]+$ ]] || {
    usage
    die "up needs a node count"
  }
  ((n >= MIN_NODES && n <= MAX_NODES)) || die "node count must be ${MIN_NODES}..${MAX_NODES}, got ${n}"
  [[ "$(id -u)" == 0 ]] || die "must run as root (network namespaces, mounts)"
  case "${STATE}/" in
    /tmp/*) die "state dir ${STATE} is under /tmp, which every node mounts privately" ;;
  esac
  mkdir -p "${STATE}" "${RUN}"
  take_lock

  local running
  if running=$(cluster_nodes_up); then
    if ((running == n)); then
      log "already up with ${n} nodes"
      return 0
    fi
    die "cluster is up with ${running} nodes; run 'minicluster.sh down' first"
  fi
  if [[ -n "$(recorded_nodes)" ]] || ip netns list | grep -q "^${PREFIX}-"; then
    log "cleaning up a partial cluster first"
    do_down
  fi

  local start k name
  start=$(now_ms)
  # A bring-up that fails half way leaves nothing behind.
  trap 'log "bring-up failed, cleaning up"; do_down' EXIT
  ensure_packages
  write_configs "${n}"
  : >"${RUN}/nodes"
  start_munge
  setup_bridge
  setup_ns "${CTLD_NS}" vh-ctld eth0 "${CTLD_IP}"
  start_in_ns ctld "${CTLD_NS}" ctld
  for k in $(seq 1 "${n}"); do
    name="node${k}"
    setup_ns "$(node_ns "${name}")" "vh-${name}" ib0 "$(node_ip "${name}")"
    printf '%s\n' "${name}" >>"${RUN}/nodes"
  done
  for name in $(recorded_nodes); do
    start_in_ns "${name}" "$(node_ns "${name}")" node
  done
  wait_ready "${n}"
  trap - EXIT
  log "up: ${n} nodes in $(($(now_ms) - start)) ms (state ${STATE})"
}

# Stop the daemons: TERM to every namespace init at once (each forwards it to its daemon, and
# when an init exits the kernel kills the rest of its PID namespace), KILL after a deadline;
# then KILL whatever is still in each network namespace and delete the namespaces.
do_down() {
  local name ns upid init names=() upids=() inits=() pids
  save_next_job_id
  for name in $(recorded_nodes) ctld; do
    names+=("${name}")
    if upid=$(recorded_pid "${name}" "_init"); then
      upids+=("${upid}")
      if init=$(ns_init_pid "${upid}"); then
        inits+=("${init}")
        kill -TERM "${init}" 2>/dev/null || true
      fi
    fi
  done
  if ((${#upids[@]} > 0)) && ! wait_gone "${STOP_TIMEOUT_S}" "${upids[@]}"; then
    log "daemons did not stop in ${STOP_TIMEOUT_S} s, killing their namespaces"
    kill -KILL "${inits[@]}" "${upids[@]}" 2>/dev/null || true
    wait_gone "${STOP_TIMEOUT_S}" "${upids[@]}" || log "still alive: ${upids[*]}"
  fi
  for name in "${names[@]}" node1 node2 node3 node4; do
    rm -f "${RUN}/${name}.pid"
    if [[ "${name}" == ctld ]]; then ns=${CTLD_NS}; else ns=$(node_ns "${name}"); fi
    if ip netns list | grep -qw -- "${ns}"; then
      # shellcheck disable=SC2207 # PIDs are integers
      pids=($(ip netns pids "${ns}" 2>/dev/null || true))
      if ((${#pids[@]} > 0)); then
        log "${ns}: killing leftover processes ${pids[*]}"
        kill -KILL "${pids[@]}" 2>/dev/null || true
        wait_gone "${STOP_TIMEOUT_S}" "${pids[@]}" || log "${ns}: processes left: ${pids[*]}"
      fi
      ip netns del "${ns}"
    fi
    ip link del "vh-${name}" 2>/dev/null || true
  done
  if ip link show "${BRIDGE}" >/dev/null 2>&1; then ip link del "${BRIDGE}"; fi
  local mpid
  if mpid=$(recorded_pid munged munged); then
    kill -TERM "${mpid}" 2>/dev/null || true
    wait_gone "${STOP_TIMEOUT_S}" "${mpid}" || kill -KILL "${mpid}" 2>/dev/null || true
  fi
  rm -f "${RUN}/munged.pid" "${RUN}/nodes"
}

cmd_down() {
  [[ "$(id -u)" == 0 ]] || die "must run as root"
  [[ -d "${STATE}" ]] || {
    log "nothing to stop (no ${STATE})"
    return 0
  }
  take_lock
  local start
  start=$(now_ms)
  do_down
  log "down in $(($(now_ms) - start)) ms"
}

describe() {
  # describe LABEL PID: "running (LABEL PID)" or "stopped"
  if [[ -n "$2" ]]; then printf 'running (%s %s)' "$1" "$2"; else printf 'stopped'; fi
}

cmd_status() {
  local name upid init
  printf '%-8s %-12s %-12s %s\n' NAME NETNS ADDRESS DAEMON
  upid=$(recorded_pid ctld "_init ctld" || true)
  printf '%-8s %-12s %-12s %s\n' ctld "${CTLD_NS}" "${CTLD_IP}" "$(describe 'unshare pid' "${upid}")"
  for name in $(recorded_nodes); do
    upid=$(recorded_pid "${name}" "_init node ${name}" || true)
    init=""
    [[ -n "${upid}" ]] && init=$(ns_init_pid "${upid}" || true)
    printf '%-8s %-12s %-12s %s\n' "${name}" "$(node_ns "${name}")" "$(node_ip "${name}")" \
      "$(describe 'init pid' "${init}")"
  done
  upid=$(recorded_pid munged munged || true)
  printf '%-8s %-12s %-12s %s\n' munged - "${LOGIN_IP}" "$(describe pid "${upid}")"
  if cluster_nodes_up >/dev/null; then
    printf '\n'
    SLURM_CONF="${CONF}" sinfo
    return
  fi
  printf '\ncluster is not up\n'
  return 1
}

cmd_env() {
  printf 'export SLURM_CONF=%q\n' "${CONF}"
  # shellcheck disable=SC2016 # ${PATH} is expanded by the shell that evaluates this line
  printf 'export PATH=%q:"${PATH}"\n' "${SHIM_BIN}"
}

main() {
  (($# > 0)) || {
    usage
    exit 2
  }
  local cmd=$1
  shift
  case "${cmd}" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    env) cmd_env ;;
    _init) ns_init "$@" ;;
    -h | --help) usage ;;
    *)
      usage
      die "unknown command: ${cmd}"
      ;;
  esac
}

main "$@"
