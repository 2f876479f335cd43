"""``build_*_argv``: the command lines of ``ray start`` and ``vllm serve``, as lists.

Values only known when the job runs (the node's address, the leader's address, the job
id, a port that may move because it is taken) are placeholders that
``plan.fill_placeholders`` replaces on the node. Values the plan knows per node (the
node's rank, its first data-parallel rank) are placeholders of a role's argv too; the
plan fills them per node (``LaunchPlan.node_values``), for the dry run and the node alike.
What the target vLLM version supports is decided here, from a table of versions; what
no version table can tell (token parallelism, which only non-upstream engine builds
have) is asked of the installed vLLM by ``launchers.input.probe``, in a child process.
Pure: nothing here starts a process or reads the machine.
"""

# Annotations are evaluated here, as the module runs (no `from __future__ import
# annotations`): pydantic would otherwise compile each field's annotation from its text
# when the class is made (the dry run's models: about 6 of its 20 ms of class making).
# Names defined further down are quoted.
from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import Field

from launchers.defaults import AUTH_MIDDLEWARE, DRAIN_SECONDS
from launchers.errors import InputError, UnsupportedFeatureError
from launchers.spec import versions
from launchers.spec.config import Frozen, ParallelLayout, Port, ServeConfig

NODE_IP = "@NODE_IP@"
LEADER_IP = "@LEADER_IP@"
JOB_ID = "@JOB_ID@"
JOB_DIR = "@JOB_DIR@"
JOB_KEY = "@JOB_KEY@"  # the job directory's name: <cluster>-<job id> (jobdir.jobroot)
NODE_RANK = "@NODE_RANK@"
DP_START_RANK = "@DP_START_RANK@"
# A port the user did not fix: the leader moves it to the next free one when it is taken.
API_PORT = "@API_PORT@"
RAY_PORT = "@RAY_PORT@"
PLACEHOLDERS = (
    NODE_IP, LEADER_IP, JOB_ID, JOB_DIR, JOB_KEY, NODE_RANK, DP_START_RANK, API_PORT, RAY_PORT,
)  # fmt: skip

FEATURE_SINCE = versions.FEATURE_SINCE  # the version table lives in spec.versions
# The values vLLM 0.32 and 0.33 accept for --all2all-backend (vllm/config/parallel.py),
# without the removed ones, which they silently map to allgather_reducescatter.
ALL2ALL_BACKENDS = (
    "allgather_reducescatter",
    "deepep_high_throughput",
    "deepep_low_latency",
    "deepep_v2",
    "mori_high_throughput",
    "mori_low_latency",
    "moonep",
    "nixl_ep",
    "flashinfer_all2allv",
    "flashinfer_nvlink_two_sided",
    "flashinfer_nvlink_one_sided",
    "passthrough",
)
REMOVED_ALL2ALL = {"pplx": "allgather_reducescatter", "naive": "allgather_reducescatter"}


def parse_version(text: str) -> tuple[int, int, int]:
    """'0.11.1', '0.11.1rc2', '0.32.0+cpu' -> (0, 11, 1)."""
    try:
        return versions.release(text)
    except ValueError:
        raise InputError(
            f"vllm_version: {text!r} is not a version", fix="use a version such as 0.11.1"
        ) from None


def supports(feature: str, version: str) -> bool:
    return parse_version(version) >= FEATURE_SINCE[feature]


def first_release(feature: str) -> str:
    return versions.shown(FEATURE_SINCE[feature])


def removed_env_warnings(env: Mapping[str, str], version: str) -> tuple[str, ...]:
    """One line per variable of ``env`` that the target vLLM no longer reads."""
    target = parse_version(version)
    return tuple(
        f"{name}: vLLM {versions.shown(since)} and newer ignore it ({why}): drop it"
        for name, (since, why) in versions.REMOVED_ENV.items()
        if name in env and target >= since
    )


def require(feature: str, version: str, what: str) -> None:
    if not supports(feature, version):
        need = first_release(feature)
        raise UnsupportedFeatureError(
            f"vllm_version: {what} needs vLLM >= {need}, the target is {version}",
            fix=f"upgrade vLLM to {need} or newer, or set vllm_version if the nodes have it",
        )


# The flags a plan may pass that older vLLM releases lack, with the feature that brings each.
FLAG_FEATURE = {
    "--nnodes": ("nnodes", "multi-node without Ray (--runtime native)"),
    "--all2all-backend": ("all2all_flag", "--all2all-backend"),
    "--data-parallel-start-rank": ("headless_dp", "headless data-parallel ranks"),
    "--api-server-count": ("api_server_count", "--api-server-count"),
    "--data-parallel-backend": ("dp_ray_backend", "--dp-backend ray"),
    "--shutdown-timeout": ("shutdown_timeout", "draining requests on a stop"),
    "--safetensors-load-strategy": ("safetensors_load_strategy", "--safetensors-load-strategy"),
}


def check_installed(serve_argv: Sequence[str], installed: str) -> None:
    """Refuse a plan made for a newer vLLM than the node has: the first flag of
    ``serve_argv`` the installed version does not know, as one line with the fix."""
    for flag, (feature, what) in FLAG_FEATURE.items():
        if flag in serve_argv and not supports(feature, installed):
            need = first_release(feature)
            raise UnsupportedFeatureError(
                f"vllm_version: {what} needs vLLM >= {need}, this node has {installed}",
                fix=f"load vLLM {need} or newer on the nodes (the plan assumed a newer one)",
            )


def check_all2all(backend: str) -> str:
    if backend in REMOVED_ALL2ALL:
        raise InputError(
            f"all2all_backend: {backend!r} was removed from vLLM",
            fix=f"use {REMOVED_ALL2ALL[backend]!r}",
        )
    if backend not in ALL2ALL_BACKENDS:
        raise InputError(
            f"all2all_backend: unknown backend {backend!r}",
            fix=f"choose one of {', '.join(ALL2ALL_BACKENDS)}",
        )
    return backend


def ray_temp_dir() -> str:
    """Per-job, per-node Ray directory (node-local /tmp is not a given on test beds);
    short, because Ray's Unix socket paths are limited to 107 bytes."""
    return f"/tmp/ray-{JOB_ID}-{NODE_RANK}"


def _ports_written(argv: Sequence[str], values: dict[str, str]) -> list[str]:
    out = list(argv)
    for key, value in values.items():
        out = [item.replace(key, value) for item in out]
    return out


def build_ray_head_argv(
    *, port: int, num_gpus: int | None, dashboard: bool = False, block: bool = True
) -> list[str]:
    """``ray start --head`` with its port written out (a node's argv comes from the
    typed ``RayStart``, through ``plan.argv.process_argv``)."""
    ray = RayStart(head=True, port=port, num_gpus=num_gpus, dashboard=dashboard)
    return _ports_written(ray.argv(block=block), ray.port_values())


def build_ray_worker_argv(*, port: int, num_gpus: int | None, block: bool = True) -> list[str]:
    ray = RayStart(head=False, port=port, num_gpus=num_gpus)
    return _ports_written(ray.argv(block=block), ray.port_values())


class RayStart(Frozen):
    """``ray start`` for one role, as typed fields: the head on the leader (``port`` is
    the port it opens), a worker elsewhere (``port`` is the head's port it joins at
    ``@LEADER_IP@``). The argv is always built from these fields; moving a taken port is
    ``moved(port)`` and a new ``argv()``. A port that may move is ``@RAY_PORT@`` in the
    argv, filled from ``port`` by the node (``port_values``), so the dry run shows it as
    the placeholder it is; a fixed one is written out."""

    head: bool
    port: Port
    port_fixed: bool = Field(False, description="The user chose it: never move it")
    num_gpus: int | None = Field(None, ge=0, description="None: Ray detects them")
    dashboard: bool = False
    temp_dir: str = Field(default_factory=ray_temp_dir)
    extra: tuple[str, ...] = Field((), description="More `ray start` options, as given")

    def argv(self, *, block: bool = True) -> list[str]:
        argv = ["ray", "start"]
        if self.head:
            argv += ["--head", f"--node-ip-address={NODE_IP}", f"--port={self.port_text}"]
        else:
            argv += [f"--address={self.address}", f"--node-ip-address={NODE_IP}"]
        if self.num_gpus is not None:
            argv.append(f"--num-gpus={self.num_gpus}")
        argv += [f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        if self.head and self.dashboard:
            argv += ["--include-dashboard=true", "--dashboard-host=127.0.0.1"]
        elif self.head:
            argv.append("--include-dashboard=false")
        argv += self.extra
        if block:
            argv.append("--block")
        return argv

    @property
    def port_text(self) -> str:
        """The head's port as the argv has it: written out when fixed, else ``@RAY_PORT@``."""
        return str(self.port) if self.port_fixed else RAY_PORT

    @property
    def address(self) -> str:
        """The head's ``host:port`` (``RAY_ADDRESS``), as the argv has it."""
        return f"{LEADER_IP}:{self.port_text}"

    def port_values(self) -> dict[str, str]:
        """The value of ``@RAY_PORT@``: this start's port (moved or not)."""
        return {RAY_PORT: str(self.port)}

    def moved(self, port: int) -> "RayStart":
        return self.model_copy(update={"port": port})


class Rendezvous(Frozen):
    """The leader's port that the other nodes' ``vllm serve`` meet at."""

    name: Literal["master", "dp-rpc"]
    port: Port


LOAD_STRATEGY_FLAG = "--safetensors-load-strategy"
LoadStrategy = Literal["prefetch"]  # the only strategy the runtime chooses by itself


class ServeStart(Frozen):
    """``vllm serve`` for one role, as typed fields. ``host``/``port`` are the API's
    (None on a headless rank); ``rendezvous`` is the leader's port the ranks meet at
    (native: ``--master-port``, DP: ``--data-parallel-rpc-port``); ``args`` is the rest
    of the command line, built once by the planner. An API port that may move is
    ``@API_PORT@`` in the argv (filled from ``port`` by the leader, ``port_values``)."""

    model: str
    host: str | None = None
    port: Port | None = None
    port_fixed: bool = Field(False, description="The user chose it: never move it")
    rendezvous: Rendezvous | None = None
    args: tuple[str, ...] = ()
    load_strategy: LoadStrategy | None = Field(
        None, description="Set on the node from the model's file system (plan.loading)"
    )

    @property
    def headless(self) -> bool:
        return self.port is None

    def argv(self) -> list[str]:
        port = str(self.port) if self.port_fixed else API_PORT
        api = [] if self.port is None else ["--host", str(self.host), "--port", port]
        load = [] if self.load_strategy is None else [LOAD_STRATEGY_FLAG, self.load_strategy]
        return ["vllm", "serve", self.model, *api, *self.args, *load]

    def port_values(self) -> dict[str, str]:
        """The value of ``@API_PORT@``: this start's port (moved or not; none if headless)."""
        return {} if self.port is None else {API_PORT: str(self.port)}

    def moved(self, port: int) -> "ServeStart":
        return self.model_copy(update={"port": port})

    def loading(self, strategy: LoadStrategy) -> "ServeStart":
        """This start with vLLM's safetensors load strategy set (a node-known fact)."""
        return self.model_copy(update={"load_strategy": strategy})

    def self_address(self) -> str:
        """Where the leader asks its own API: the bound address, loopback for a wildcard."""
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else str(self.host)


WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # noqa: S104 - vLLM's spellings of every interface


def _model_args(config: ServeConfig) -> list[str]:
    spec = config.spec
    argv = ["--served-model-name", config.served_model_name]
    if config.revision is not None and config.staged is None:
        argv += ["--revision", config.revision]  # a staged directory is its revision
    if spec.dtype != "auto":
        argv += ["--dtype", spec.dtype]
    optional: list[tuple[str, object]] = [
        ("--max-model-len", spec.max_model_len),
        ("--gpu-memory-utilization", spec.gpu_memory_utilization),
        ("--max-num-seqs", spec.max_num_seqs),
        ("--max-num-batched-tokens", spec.max_num_batched_tokens),
    ]
    for flag, value in optional:
        if value is not None:
            argv += [flag, str(value)]
    if spec.trust_remote_code:
        argv.append("--trust-remote-code")
    if supports("shutdown_timeout", config.vllm_version):
        argv += ["--shutdown-timeout", str(DRAIN_SECONDS)]  # a stop lets requests finish
    return argv


def _parallel_args(layout: ParallelLayout) -> list[str]:
    argv = ["--tensor-parallel-size", str(layout.tp)]
    if layout.pp > 1:
        argv += ["--pipeline-parallel-size", str(layout.pp)]
    if layout.token_parallel_size:  # only in a plan whose vLLM has it (check_token_parallel)
        argv.append("--enable-token-parallel")
        argv += ["--token-parallel-size", str(layout.token_parallel_size)]
    return argv


def all2all_env(config: ServeConfig) -> dict[str, str]:
    """The pre-0.11.1 spelling of the all-to-all backend, as an environment variable."""
    backend = config.spec.all2all_backend
    if backend and config.layout.ep and not supports("all2all_flag", config.vllm_version):
        return {"VLLM_ALL2ALL_BACKEND": check_all2all(backend)}
    return {}


def _ep_args(config: ServeConfig) -> list[str]:
    if not config.layout.ep:
        return []
    argv = ["--enable-expert-parallel"]
    backend = config.spec.all2all_backend
    if backend and supports("all2all_flag", config.vllm_version):
        argv += ["--all2all-backend", check_all2all(backend)]
    return argv


def _dp_args(layout: ParallelLayout) -> list[str]:
    """DP across nodes: the total, this node's share, and the leader's address."""
    return [
        "--data-parallel-size",
        str(layout.dp),
        "--data-parallel-size-local",
        str(layout.dp_local),
        "--data-parallel-address",
        LEADER_IP,
    ]


def build_vllm_serve_argv(config: ServeConfig, *, headless: bool = False) -> list[str]:
    """``vllm serve`` as planned, its port written out (for checks of extra arguments)."""
    serve = serve_start(config, headless=headless)
    return _ports_written(serve.argv(), serve.port_values())


def serve_start(config: ServeConfig, *, headless: bool = False) -> ServeStart:
    """``vllm serve`` for one role of the plan's runtime.

    runtime ``single``: one node, vLLM's own multiprocessing for TP/PP.
    runtime ``ray``: the leader runs the API; ``--distributed-executor-backend ray``.
    runtime ``native``: every node runs vllm serve with ``--nnodes``; ranks > 0 headless.
    runtime ``dp``: data parallel; the leader serves, other nodes are headless DP ranks.
    """
    layout = config.layout
    argv = _model_args(config)
    argv += _parallel_args(layout)
    rendezvous = None
    if config.runtime == "ray" and layout.dp > 1:
        # One vllm serve on the leader; vLLM places every DP rank (and its Ray executor)
        # on the Ray cluster the plan brings up.
        require("dp_ray_backend", config.vllm_version, "--dp-backend ray")
        argv += [*_dp_args(layout), "--data-parallel-backend", "ray"]
        if config.spec.api_server_count:
            argv += ["--api-server-count", str(config.spec.api_server_count)]
    elif config.runtime == "ray":
        argv += ["--distributed-executor-backend", "ray"]
    elif config.runtime == "native":
        require("nnodes", config.vllm_version, "multi-node without Ray (--runtime native)")
        rendezvous = Rendezvous(name="master", port=config.master_port)
        argv += [
            "--nnodes",
            str(layout.nodes),
            "--node-rank",
            NODE_RANK,
            "--master-addr",
            LEADER_IP,
            "--master-port",
            str(rendezvous.port),
        ]
    elif config.runtime == "dp":
        require("headless_dp", config.vllm_version, "multi-node data parallel")
        rendezvous = Rendezvous(name="dp-rpc", port=config.dp_rpc_port)
        argv += [*_dp_args(layout), "--data-parallel-rpc-port", str(rendezvous.port)]
        if headless:
            argv += ["--data-parallel-start-rank", DP_START_RANK]
        elif config.spec.api_server_count:
            argv += ["--api-server-count", str(config.spec.api_server_count)]
    elif layout.dp > 1:
        argv += ["--data-parallel-size", str(layout.dp)]
    argv += _ep_args(config)
    if headless:
        argv.append("--headless")
    elif config.api_key != "none":
        # vLLM's key guards /v1 and a few prefixes only: this one guards every route.
        argv += ["--middleware", AUTH_MIDDLEWARE]
    argv += list(config.spec.extra_args) + list(config.extra_args)
    return ServeStart(
        model=config.spec.model,
        host=None if headless else config.host,
        port=None if headless else config.port,
        port_fixed=config.port_fixed and not headless,
        rendezvous=rendezvous,
        args=tuple(argv),
    )
