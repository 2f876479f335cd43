"""The one source of vllm-hpc's built-in defaults (no imports: the CLI's help reads it).

Everything else (the planner, the CLI's help, the wrapper door, the node runtime, the
readers of job directories) takes its defaults from here.
"""

from __future__ import annotations

# The vLLM release line the plan targets when the user does not name one: the newest
# release checked against the planner (spec.versions.CHECKED_RELEASES). A site whose nodes
# run another one says so once (`site: vllm_version: 0.32.0`) or per job (--vllm-version).
# The runtime checks the installed version on every node that runs `vllm serve` (outside
# a container) and refuses flags it lacks; the doctor warns when the two differ.
DEFAULT_VLLM_VERSION = "0.33.0"

# Ports on the leader.
DEFAULT_API_PORT = 8000
DEFAULT_RAY_PORT = 6379
DEFAULT_DP_RPC_PORT = 13345
DEFAULT_MASTER_PORT = 29501
# The ports a user may fix (unprivileged TCP): every vllm-hpc port, the front's included.
USER_PORTS = (1024, 65535)
# Ray's default worker port range: a fixed port inside it collides with Ray's workers.
RAY_WORKER_PORTS = (10002, 19999)

# The pre-flight of a multi-node job (before vLLM loads weights, every node joins a short
# all-reduce over the job's own interfaces; a failure names the pair that cannot talk):
# its rendezvous port on the leader (a TCPStore, open only while the check runs; moved
# when taken), the deadline of the collectives once every node has arrived, the deadline
# of one pair's TCP check when the collectives fail, and the size of the large all-reduce
# (large frames: an MTU mismatch drops them while small ones pass).
DEFAULT_PREFLIGHT_PORT = 29510
PREFLIGHT_SECONDS = 10.0
PREFLIGHT_PAIR_SECONDS = 5.0
PREFLIGHT_LARGE_MIB = 8

# Seconds the leader gives Ray's nodes to join, and vllm serve to answer.
DEFAULT_NODES_TIMEOUT = 300.0
DEFAULT_READY_TIMEOUT = 1800.0

# The one route of a job's vLLM (and of a service's front) that answers without the key.
HEALTH_PATH = "/health"

# What a user's command waits for, by default (the CLI's options and the client's
# arguments alike): submit --wait and service up --wait (queueing included), stop, the
# doctor, service down, and the front's first address after service up --wait.
WAIT_TIMEOUT = 3600.0
STOP_TIMEOUT = 60.0
DOCTOR_TIMEOUT = 120.0
# vllm-hpc doctor's all-reduce across the nodes (the pre-flight's collectives, timed): the
# deadline of all of it, the wait for the other nodes to join included (they come to it
# after their own checks, which may take a while).
DOCTOR_ALLREDUCE_SECONDS = 60.0
# vllm-hpc doctor --network: every pair of nodes measured over TCP (the pre-flight's pair
# check, PREFLIGHT_PAIR_SECONDS the deadline of a connection, of a small message and of a
# stall): the median round trip of DOCTOR_PAIR_PINGS small messages, the rate of one
# DOCTOR_PAIR_MIB transfer (DOCTOR_PAIR_LIMIT seconds at most), and a warning for a pair
# under DOCTOR_SLOW_PAIR x the median rate of all pairs (when there are 3 or more).
DOCTOR_PAIR_PINGS = 10
DOCTOR_PAIR_MIB = 64
DOCTOR_PAIR_LIMIT = 30.0
DOCTOR_SLOW_PAIR = 0.5
SERVICE_DOWN_TIMEOUT = 300.0
FRONT_ADDRESS_TIMEOUT = 60.0
# vllm-hpc metrics: seconds between the two scrapes that give rates.
METRICS_INTERVAL = 2.0
# vllm-hpc bench / Job.bench: the load.
BENCH_REQUESTS = 20
BENCH_CONCURRENCY = 4
BENCH_INPUT_LEN = 64
BENCH_OUTPUT_LEN = 32

# Teardown. SLURM sends SIGTERM to a cancelled or timed-out job, waits KillWait seconds
# (30 by default) and then SIGKILLs every process. A node's stop must end inside that
# window, or vLLM's drain and Ray's exit are cut off by SIGKILL: the grace periods of one
# stop (vLLM's drain, Ray's, the watch's, the short waits after SIGKILL) add up to at
# most TEARDOWN_SECONDS, which leaves the rest of KillWait for the runtime to write its
# final state and exit. A local job (no SLURM) is stopped the same way: SIGTERM to its
# process group, SIGKILL after SLURM_KILL_WAIT.
SLURM_KILL_WAIT = 30.0
TEARDOWN_SECONDS = 24.0
# The time-limit warning: SLURM sends USR1 this long before a job's time limit (a site
# file's slurm: signal_seconds changes it). A service's --handover must fit before it.
SLURM_WARNING_SECONDS = 120
# The time-limit warning (USR1, 120 s before the limit by default) is no SIGTERM: the
# leader gives in-flight requests this long to finish (vLLM's --shutdown-timeout, and the
# grace before SIGKILL), then stops the rest as above, all before SLURM's limit.
DRAIN_SECONDS = 60

# Every route of a job's vLLM needs the API key but GET /health: vLLM loads this
# middleware (python/vllm_hpc_auth.py) with --middleware. The leader checks that the
# door is shut (KEYLESS_PROBE_PATH answers 401 without the key) before it says READY.
AUTH_MIDDLEWARE = "vllm_hpc_auth.KeyMiddleware"
KEYLESS_PROBE_PATH = "/metrics"

# The prefix of the lines the doctor's node side prints and ``vllm-hpc doctor`` gathers.
DOCTOR_MARK = "DOCTOR "

# Services (vllm-hpc service): replicas behind one front (vllm-router behind an
# authenticating proxy). The front listens on SERVICE_PORT; the router on loopback.
SERVICE_PORT = 8100
SERVICE_REPLICAS = 2
# A replica's successor is submitted this long before the replica's end time (queue wait
# and model load must fit inside it), then the old replica drains once the new one is READY.
SERVICE_HANDOVER_SECONDS = 1800.0
# Handovers roll: while one successor loads, the next waits, unless its replica has less
# than this share of the handover left (then it starts anyway, to be READY in time).
SERVICE_ROLLING_SHARE = 0.5
# A front whose heartbeat (renewed every controller tick, each second) is older than this
# is taken for dead, as is one whose SLURM job ended (another `service up` may adopt).
FRONT_STALE_SECONDS = 30.0
# After this many replicas in a row failed before READY, the controller backs off
# (doubling from SERVICE_BACKOFF_SECONDS up to SERVICE_BACKOFF_MAX_SECONDS).
SERVICE_FAILURES_BEFORE_BACKOFF = 3
SERVICE_BACKOFF_SECONDS = 30.0
SERVICE_BACKOFF_MAX_SECONDS = 600.0
# The front job's own time limit when not given.
SERVICE_FRONT_TIME = "1-00:00:00"
# Scale to zero (`service up --min-replicas N` below --replicas): after this long without
# a request (`--idle`) the service keeps only its minimum. A request that finds no
# replica routed waits this long (`--cold-start-wait`) for one, then gets 503 with
# Retry-After: SERVICE_RETRY_AFTER_SECONDS.
SERVICE_IDLE_SECONDS = 1800.0
SERVICE_COLD_START_WAIT_SECONDS = 300.0
SERVICE_RETRY_AFTER_SECONDS = 30
# Autoscaling by load (`service up --max-replicas N` above --replicas): every
# SERVICE_LOAD_SAMPLE_SECONDS the controller reads vLLM's waiting requests
# (vllm:num_requests_waiting) from each READY replica's /metrics, at most
# SERVICE_LOAD_READ_TIMEOUT seconds each (all at once; one that does not answer is left
# out). Above --scale-up-waiting per READY replica at every sample for
# --scale-up-after, one replica more; at most half of it for --scale-down-after, one less.
SERVICE_SCALE_UP_WAITING = 4.0
SERVICE_SCALE_UP_SECONDS = 60.0
SERVICE_SCALE_DOWN_SECONDS = 300.0
SERVICE_LOAD_SAMPLE_SECONDS = 5.0
SERVICE_LOAD_READ_TIMEOUT = 2.0
# The most replicas one service may ask for (`service up --replicas` and
# `--max-replicas`, `service scale`):
# each is a whole job, and one controller tick submits every missing one.
SERVICE_MAX_REPLICAS = 16
# The front's heartbeat (front.json) is renewed this often by its own thread, whatever the
# controller's tick is doing, well inside FRONT_STALE_SECONDS.
FRONT_HEARTBEAT_SECONDS = 5.0
# A front job that ended is reported (`service up --wait`, `service status`) with this
# many of the last lines of its log.
FRONT_LOG_LINES = 10
# The front's vllm-router listens from front port + this (its metrics port next to it).
SERVICE_ROUTER_PORT_OFFSET = 1000
# The front's public door (service.proxy, service.frontserver): what one client may hold
# of it. A request body is read whole before it is passed on, so it is bounded (an OpenAI
# request is small; a larger one gets 413 before it is read when its Content-Length says
# so) and must arrive within FRONT_BODY_TIMEOUT seconds (408). A connection's request head
# must be complete within FRONT_HEADER_TIMEOUT seconds of its first byte (of the
# connection, for the first request), an idle keep-alive connection is closed after
# FRONT_KEEPALIVE_TIMEOUT, and a front holds at most FRONT_MAX_CONNECTIONS client
# connections (sized for a 1-CPU front under the usual 1024 open files; the next gets a
# quick 503). Worst case held in bodies: FRONT_MAX_CONNECTIONS x FRONT_MAX_BODY_BYTES.
FRONT_MAX_BODY_BYTES = 8 * 1024 * 1024
FRONT_BODY_TIMEOUT = 60.0
FRONT_HEADER_TIMEOUT = 10.0
FRONT_KEEPALIVE_TIMEOUT = 75.0
FRONT_MAX_CONNECTIONS = 512
# Connections from the front to vllm-router at once (service.front.upstream_limit): what
# the replicas can take, their --max-num-seqs (times DP) for every replica the service may
# route at once, each with a successor beside it during a handover
# (FRONT_UPSTREAM_REPLICAS: a `service scale` never outgrows it). Else no limit of the
# connector's own (FRONT_UPSTREAM_CONNECTIONS, 0): when the replicas' --max-num-seqs is not
# known, or that sum is past FRONT_MAX_CONNECTIONS, the front's own bound (a client
# connection carries one request at a time). Never aiohttp's default of 100, which held
# every stream past the hundredth in the front.
FRONT_UPSTREAM_REPLICAS = 2 * SERVICE_MAX_REPLICAS
FRONT_UPSTREAM_CONNECTIONS = 0
# aiohttp logs every malformed request with a traceback: the front keeps at most this many
# of its server log's lines per client address and in all per window, each on one line.
FRONT_LOG_LINES_PER_PEER = 5
FRONT_LOG_LINES_TOTAL = 30
FRONT_LOG_WINDOW = 60.0

# `vllm-hpc render ray-cluster` and `render swarm`: the images' host-side directories
# (the Hugging Face cache and the job root a node's containers share with the host) and
# /dev/shm, as the compose render's .env.example and --shm-size have them.
RENDER_HF_CACHE_DIR = "/var/cache/huggingface"
RENDER_JOB_ROOT = "/var/lib/vllm-hpc/jobs"
RENDER_SHM_SIZE = "16gb"
# `render ray-cluster`: the provider, the SSH user `ray up` logs in as, and per cloud its
# region (and zone) and the instance type of each node by GPUs per node (a GPU count with
# no entry needs --instance-type).
RAY_CLUSTER_PROVIDER = "local"
RAY_CLUSTER_SSH_USER = "ubuntu"
RAY_CLUSTER_REGIONS = {"aws": "us-west-2", "gcp": "us-central1"}
RAY_CLUSTER_GCP_ZONE = "us-central1-a"
RAY_CLUSTER_INSTANCE_TYPES = {
    # NVIDIA A10G (g5) and A100 (p4d) instances.
    "aws": {1: "g5.xlarge", 4: "g5.12xlarge", 8: "p4d.24xlarge"},
    # A100 40GB machines (the GPUs come with the machine type).
    "gcp": {1: "a2-highgpu-1g", 2: "a2-highgpu-2g", 4: "a2-highgpu-4g", 8: "a2-highgpu-8g"},
}
# The boot disk of a GCP node: a Deep Learning VM image family with the NVIDIA driver.
RAY_CLUSTER_GCP_IMAGE = (
    "projects/deeplearning-platform-release/global/images/family/"
    "common-cu128-ubuntu-2204-nvidia-570"
)
RAY_CLUSTER_DISK_GB = 500

# vllm-hpc stage: where staged models go when neither --dest, $VLLM_HPC_MODEL_STORE nor
# the site file's model_store names a store (on shared storage: the nodes read it), the
# revision staged when none is named, and the hub asked when neither --endpoint, the site
# file's hf_endpoint nor $HF_ENDPOINT names a mirror.
DEFAULT_MODEL_STORE = "~/.vllm-hpc/models"
DEFAULT_REVISION = "main"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
# Files downloaded at once (huggingface_hub's threads, one file each).
STAGE_WORKERS = 8
# vllm-hpc stage --via sbatch: the stage job's time limit unless --time says otherwise,
# how often SLURM is asked whether it ended (seconds: a job of minutes to hours need not
# load the controller more), and how long it may queue before the
# command stops waiting (the job keeps its place and runs all the same).
STAGE_JOB_TIME = "04:00:00"
STAGE_JOB_ASK = 10.0
STAGE_JOB_QUEUE_WAIT = 3600.0
# `vllm download-kernels` (the nodes' vLLM's, run by stage): it installs FlashInfer's
# kernel wheels (hundreds of MB) into that Python's environment.
KERNELS_TIMEOUT = 1800.0

# A service's per-user keys (service.keys): the label of the key a service had before
# keys were per user (its internal key, hashed into keys.json), and how stale the front's
# copy of keys.json may grow. The front looks at the file's inode, size and mtime before
# every request and re-reads it when one changed; it re-reads it this often anyway (an
# NFS client may serve a cached mtime for a while; opening the file revalidates it).
SERVICE_DEFAULT_KEY_LABEL = "default"
FRONT_KEYS_REFRESH_SECONDS = 5.0
# The longest bearer token the front hashes (a key is 43 characters): a longer one is
# refused before any work.
FRONT_MAX_TOKEN_CHARS = 512
# The front reads usage from a stream's server-sent events; an event longer than this
# (no blank line yet) is passed on unread.
FRONT_MAX_EVENT_BYTES = 1024 * 1024
