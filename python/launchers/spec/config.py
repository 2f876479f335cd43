"""The validated, frozen input of a deployment.

Everything a user can say (CLI flags, registry entries, site defaults) ends up in one
``ServeConfig``. All models are frozen and reject unknown keys, so a typo in a registry
file is an error that lists the valid keys instead of a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_DP_RPC_PORT,
    DEFAULT_MASTER_PORT,
    DEFAULT_NODES_TIMEOUT,
    DEFAULT_RAY_PORT,
    DEFAULT_READY_TIMEOUT,
    DEFAULT_VLLM_VERSION,
)
from launchers.spec import slurmtime, versions

DType = Literal["auto", "bfloat16", "float16", "half", "float32", "float"]
Runtime = Literal["auto", "ray", "native"]
GresStyle = Literal["gpus-per-node", "gres", "none"]
NcclProfile = Literal["auto", "infiniband", "roce", "tcp"]

PositiveInt = Annotated[int, Field(ge=1)]
Port = Annotated[int, Field(ge=1024, le=65535)]


_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)


def check_slurm_time(value: str | None) -> str | None:
    if value is not None:
        slurmtime.minutes(value)  # raises ValueError naming the forms
    return value


def check_version(value: str | None) -> str | None:
    if value is None:
        return value
    try:
        versions.release(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a version (use a version such as 0.11.1)") from None
    return value


def _argument_list(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("give the arguments as a list, e.g. ['--seed', '1'], not as one string")
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    for key in env:
        if not _ENV_NAME_RE.match(key):
            raise ValueError(f"{key!r} is not a valid environment variable name")
    return env


class ModelSpec(Frozen):
    """One registry entry: what to serve and how. Keys follow ``vllm serve`` flag names
    (dashes or underscores); ``None`` means "let the planner or vLLM decide"."""

    model: str = Field(min_length=1, description="Hugging Face id or a path on shared storage")
    description: str = Field("", description="One line shown by `vllm-hpc models list`")
    served_model_name: str | None = Field(None, description="Name clients use in `model`")
    dtype: DType = "auto"
    tensor_parallel_size: PositiveInt | None = None
    pipeline_parallel_size: PositiveInt | None = None
    data_parallel_size: PositiveInt | None = None
    enable_expert_parallel: bool = False
    token_parallel_size: PositiveInt | None = Field(
        None, description="Only for engine builds that have token parallelism"
    )
    nodes: PositiveInt | None = Field(None, description="Nodes this entry needs by default")
    gpus_per_node: PositiveInt | None = None
    max_model_len: PositiveInt | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)
    max_num_seqs: PositiveInt | None = None
    max_num_batched_tokens: PositiveInt | None = None
    trust_remote_code: bool = False
    all2all_backend: str | None = Field(None, description="MoE all-to-all backend (with EP)")
    api_server_count: PositiveInt | None = None
    runtime: Runtime | None = None
    container: str | None = Field(None, description="Default image, e.g. apptainer:/x.sif")
    extra_args: tuple[str, ...] = Field((), description="Passed to `vllm serve` last")
    env: dict[str, str] = Field(default_factory=dict, description="Exported on every node")

    _env = field_validator("env")(_check_env)
    _extra_args = field_validator("extra_args", mode="before")(_argument_list)


class SiteSpec(Frozen):
    """Cluster defaults a site or a user sets once (the ``site:`` section of a file)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(None, description="SLURM time limit, e.g. 04:00:00")
    gpus_per_node: PositiveInt | None = None
    gpu_memory_gib: float | None = Field(None, gt=0, description="Memory of one GPU")
    cpus_per_task: PositiveInt | None = None
    mem: str | None = Field(None, description="SLURM --mem per node, e.g. 0 for all")
    gres_style: GresStyle = "gpus-per-node"
    container: str | None = None
    nccl_profile: NcclProfile = "auto"
    setup: tuple[str, ...] = Field((), description="Shell lines run before the job step")
    job_root: str | None = Field(None, description="Shared directory for job directories")
    vllm_version: str | None = Field(None, description="vLLM version the nodes run")
    env: dict[str, str] = Field(default_factory=dict)

    _env = field_validator("env")(_check_env)

    vllm_features: tuple[Literal["token_parallel"], ...] = Field(
        (), description="Features of a non-upstream engine build the nodes run"
    )

    _time = field_validator("time")(check_slurm_time)
    _vllm_version = field_validator("vllm_version")(check_version)


class ParallelLayout(Frozen):
    """How the model is split over the allocation."""

    tp: PositiveInt = 1
    pp: PositiveInt = 1
    dp: PositiveInt = 1
    ep: bool = False
    token_parallel_size: PositiveInt | None = None
    nodes: PositiveInt = 1
    gpus_per_node: PositiveInt = 1
    allow_cross_node_tp: bool = False

    @property
    def world_size(self) -> int:
        return self.tp * self.pp * self.dp * (self.token_parallel_size or 1)

    @property
    def total_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def dp_local(self) -> int:
        """DP ranks per node (DP is laid out node-major)."""
        return max(1, self.dp // self.nodes)

    def describe(self) -> str:
        parts = [f"TP={self.tp}", f"PP={self.pp}", f"DP={self.dp}"]
        if self.token_parallel_size:
            parts.append(f"TKP={self.token_parallel_size}")
        if self.ep:
            parts.append("EP")
        return f"{' x '.join(parts)} on {self.nodes} node(s) x {self.gpus_per_node} GPU(s)"


class ContainerSpec(Frozen):
    """``apptainer:IMAGE``, ``singularity:IMAGE`` or ``enroot:IMAGE`` (pyxis)."""

    runtime: Literal["apptainer", "singularity", "enroot"]
    image: str = Field(min_length=1)

    @classmethod
    def parse(cls, text: str) -> ContainerSpec:
        runtime, sep, image = text.partition(":")
        if not sep or runtime not in ("apptainer", "singularity", "enroot") or not image:
            raise ValueError(
                f"{text!r} is not a container spec "
                "(use apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)"
            )
        return cls.model_validate({"runtime": runtime, "image": image})

    def __str__(self) -> str:
        return f"{self.runtime}:{self.image}"


class ModelArch(Frozen):
    """The parts of a model's ``config.json`` the planner checks a layout against."""

    model_type: str = "unknown"
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    num_hidden_layers: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    num_experts: int = 0
    tie_word_embeddings: bool = False
    dtype: str | None = None
    head_dim: PositiveInt | None = None

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


class SlurmOptions(Frozen):
    """What goes into the ``#SBATCH`` header."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    cpus_per_task: PositiveInt | None = None
    mem: str | None = None
    gres_style: GresStyle = "gpus-per-node"
    signal_seconds: int = Field(120, ge=0, le=3600, description="USR1 this long before limit")
    requeue: bool = False
    setup: tuple[str, ...] = ()

    _time = field_validator("time")(check_slurm_time)


class ServeConfig(Frozen):
    """One deployment, fully resolved and validated: the only input of ``plan()``."""

    name: str = Field(description="Registry id, or the model itself when not from a registry")
    spec: ModelSpec
    layout: ParallelLayout
    layout_reason: str
    warnings: tuple[str, ...] = ()
    arch: ModelArch | None = None
    runtime: Literal["single", "ray", "native", "dp"]
    served_model_name: str
    host: str = "0.0.0.0"  # noqa: S104 - reachable from the login node; API key protects it
    port: Port = DEFAULT_API_PORT
    port_fixed: bool = Field(False, description="The user chose the port: never move it")
    ray_port: Port = DEFAULT_RAY_PORT
    ray_port_fixed: bool = False
    dp_rpc_port: Port = DEFAULT_DP_RPC_PORT
    dp_backend: Literal["mp", "ray"] = Field(
        "mp", description="ray: the leader's vllm serve places the DP ranks over Ray"
    )
    master_port: Port = DEFAULT_MASTER_PORT
    api_key: Literal["generate", "file", "none"] = Field(
        "generate", description="generate: a new key per job, kept in the job directory"
    )
    api_key_file: str | None = None
    ray_auth: bool = Field(True, description="Ray token authentication (Ray >= 2.52)")
    container: ContainerSpec | None = None
    container_binds: tuple[str, ...] = Field((), description="Host paths bound into it")
    vllm_version: str = DEFAULT_VLLM_VERSION
    job_name: str
    job_root: str
    python: str = Field(description="Interpreter the nodes run `-m launchers node run` with")
    nccl_profile: NcclProfile = "auto"
    gpu_memory_gib: float | None = None
    slurm: SlurmOptions = SlurmOptions()
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    nodes_timeout: float = Field(
        DEFAULT_NODES_TIMEOUT, gt=0, description="Seconds to wait for Ray nodes"
    )
    ready_timeout: float = Field(
        DEFAULT_READY_TIMEOUT, gt=0, description="Seconds to wait for the API"
    )

    _env = field_validator("env")(_check_env)

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        if not _NAME_RE.match(value):
            raise ValueError(
                f"{value!r} is not a job name (lowercase letters, digits, '.', '_', '-')"
            )
        return value

    @field_validator("job_root", "python")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"{value!r} must be an absolute path")
        return value


class ClusterSpec(Frozen):
    """The allocation a plan is made for: how many nodes, GPUs each, and the scheduler."""

    nodes: PositiveInt = 1
    gpus_per_node: PositiveInt = 1
    scheduler: Literal["slurm", "local"] = "slurm"
