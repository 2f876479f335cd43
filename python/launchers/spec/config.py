"""The validated, frozen input of a deployment.

Everything a user can say (CLI flags, registry entries, site defaults) ends up in one
``ServeConfig``. All models are frozen and reject unknown keys, so a typo in a registry
file is an error that lists the valid keys instead of a silently ignored setting.
"""

# Annotations are evaluated here, as the module runs (no `from __future__ import
# annotations`): pydantic would otherwise compile each field's annotation from its text
# when the class is made (the dry run's models: about 6 of its 20 ms of class making).
# Names defined further down are quoted.
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_DP_RPC_PORT,
    DEFAULT_MASTER_PORT,
    DEFAULT_NODES_TIMEOUT,
    DEFAULT_PREFLIGHT_PORT,
    DEFAULT_RAY_PORT,
    DEFAULT_READY_TIMEOUT,
    DEFAULT_VLLM_VERSION,
    SLURM_WARNING_SECONDS,
    USER_PORTS,
)
from launchers.spec import fields, slurmtime, versions
from launchers.spec.fields import (
    ApiServers,
    Cpus,
    GpuMemoryGib,
    GpusPerNode,
    Nodes,
    Parallel,
    Seconds,
    Seqs,
    Tokens,
)

DType = Literal["auto", "bfloat16", "float16", "half", "float32", "float"]
Runtime = Literal["auto", "ray", "native"]
GresStyle = Literal["gpus-per-node", "gres", "none"]
NcclProfile = Literal["auto", "infiniband", "roce", "tcp"]

PositiveInt = Annotated[int, Field(ge=1)]
# A count of a model's config.json (heads, layers, experts) a registry entry gives.
Shape = Annotated[int, Field(ge=1, le=fields.MAX_SHAPE)]
Port = Annotated[int, Field(ge=USER_PORTS[0], le=USER_PORTS[1])]


def _walk_text(value: Any) -> None:
    """Every string inside ``value`` (tuples, lists, dict keys and values) is one line."""
    if isinstance(value, str):
        fields.one_line(value)
    elif isinstance(value, tuple | list):
        for item in value:
            _walk_text(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk_text(key)
            try:
                _walk_text(item)
            except ValueError as exc:
                raise ValueError(f"the value of {key} {exc}") from None


class Frozen(BaseModel):
    """Frozen, unknown keys refused, and no control character in any text field (a
    newline in a value is how rendered scripts and files get injected).

    The text check is one validator of the whole model, run once its fields validated,
    that names the field as a field validator would (``loc``, ``value_error``): one
    per field (``field_validator("*")``) made pydantic build each model's schema about
    a third slower, which every command pays for the models it plans with. A field's own
    check that would name another fault of a value tests ``fields.one_line`` first, so
    a control character is named as such; when another field fails its own validation,
    that failure is the one reported."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, defer_build=True)

    @model_validator(mode="after")
    def _one_line_text(self) -> Self:
        for name in type(self).__pydantic_fields__:
            value = getattr(self, name)
            try:
                _walk_text(value)
            except ValueError as exc:
                error = InitErrorDetails(
                    type="value_error", loc=(name,), input=value, ctx={"error": exc}
                )
                raise ValidationError.from_exception_data(type(self).__name__, [error]) from None
        return self


def check_slurm_time(value: str | None) -> str | None:
    if value is None:
        return value
    fields.plain_text(value, limit=32)
    minutes = slurmtime.minutes(value)  # raises naming the forms
    if minutes == 0:
        raise ValueError(
            "0 asks SLURM for no time limit; give a limit such as 04:00:00, "
            "or leave the time out for the partition's default"
        )
    if minutes > fields.MAX_TIME_MINUTES:
        raise ValueError(f"{value!r} is more than a year; give a limit such as 2-00:00:00")
    return value


def check_version(value: str | None) -> str | None:
    if value is None:
        return value
    fields.one_line(value)
    try:
        fields.plain_text(value, limit=64)
        if value != value.strip():
            raise ValueError(value)
        versions.release(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a version (use a version such as 0.11.1)") from None
    return value


def check_slurm_names(value: str | None) -> str | None:
    if value is not None:
        what = "a SLURM name (letters, digits, _ . + -; a comma-separated list for several)"
        fields.matching(value, fields.SLURM_NAMES_RE, what)
    return value


def check_mem(value: str | None) -> str | None:
    if value is not None:
        fields.matching(value, fields.MEM_RE, "a SLURM memory size (e.g. 0, 64G or 500000M)")
    return value


def check_served_name(value: str | None) -> str | None:
    if value is not None:
        fields.not_a_flag(fields.plain_text(value, limit=fields.MAX_NAME))
    return value


def check_model(value: str) -> str:
    """A Hugging Face id, a registry id or a path: one line, never read as a flag."""
    return fields.not_a_flag(fields.plain_text(value))


def check_host(value: str | None) -> str | None:
    if value is not None:
        fields.matching(value, fields.HOST_RE, "a host name (letters, digits, '-', '.')", 253)
    return value


def check_store(value: str | None) -> str | None:
    if value is not None:
        fields.matching(
            value, fields.PATH_RE, "a path (letters, digits, . _ / + @ : = , ~ -)", fields.MAX_TEXT
        )
    return value


def check_cache_root(value: str | None) -> str | None:
    """A path, with ``{user}`` where the user's name goes (as in ``job_root``)."""
    if value is not None:
        check_store(value.replace("{user}", "user"))
    return value


def check_image(value: str | None) -> str | None:
    if value is not None:
        fields.no_whitespace(fields.not_a_flag(fields.plain_text(value)), "an image reference")
    return value


def _argument_list(value: object) -> object:
    if isinstance(value, str):
        raise ValueError("give the arguments as a list, e.g. ['--seed', '1'], not as one string")
    return value


def _check_env(env: dict[str, str]) -> dict[str, str]:
    _walk_text(env)  # a control character is named as such, in a name or a value
    fields.check_env(env)
    return env


class ModelSpec(Frozen):
    """One registry entry: what to serve and how. Keys follow ``vllm serve`` flag names
    (dashes or underscores); ``None`` means "let the planner or vLLM decide"."""

    model: str = Field(min_length=1, description="Hugging Face id or a path on shared storage")
    description: str = Field(
        "", max_length=500, description="One line shown by `vllm-hpc models list`"
    )
    served_model_name: str | None = Field(None, description="Name clients use in `model`")
    dtype: DType = "auto"
    tensor_parallel_size: Parallel | None = None
    pipeline_parallel_size: Parallel | None = None
    data_parallel_size: Parallel | None = None
    enable_expert_parallel: bool = False
    token_parallel_size: Parallel | None = Field(
        None, description="Only for engine builds that have token parallelism"
    )
    nodes: Nodes | None = Field(None, description="Nodes this entry needs by default")
    gpus_per_node: GpusPerNode | None = None
    max_model_len: Tokens | None = None
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    max_num_seqs: Seqs | None = None
    max_num_batched_tokens: Tokens | None = None
    trust_remote_code: bool = False
    all2all_backend: str | None = Field(
        None, max_length=64, description="MoE all-to-all backend (with EP)"
    )
    api_server_count: ApiServers | None = None
    runtime: Runtime | None = None
    container: str | None = Field(None, description="Default image, e.g. apptainer:/x.sif")
    extra_args: tuple[str, ...] = Field((), description="Passed to `vllm serve` last")
    env: dict[str, str] = Field(default_factory=dict, description="Exported on every node")
    # The model's shape, as its config.json gives it: the layout is checked against it
    # when the model is a hub id (no local config.json to read).
    num_attention_heads: Shape | None = Field(None, description="config.json's; TP divides it")
    num_key_value_heads: Shape | None = Field(
        None, description="config.json's (default: the attention heads)"
    )
    num_hidden_layers: Shape | None = Field(None, description="config.json's; PP is at most it")
    num_experts: Annotated[int, Field(ge=0, le=fields.MAX_SHAPE)] | None = Field(
        None, description="Routed experts of an MoE model (0: dense); EP needs them"
    )

    _env = field_validator("env")(_check_env)
    _extra_args = field_validator("extra_args", mode="before")(_argument_list)
    _model = field_validator("model")(check_model)
    _served = field_validator("served_model_name")(check_served_name)
    _container = field_validator("container")(check_image)

    @model_validator(mode="after")
    def _whole_shape(self) -> "ModelSpec":
        given = [name for name in _SHAPE_KEYS if getattr(self, name) is not None]
        for needed in ("num_attention_heads", "num_hidden_layers"):
            if given and needed not in given:
                raise ValueError(
                    f"{needed}: give it with {given[0]} (both from the model's config.json)"
                )
        return self

    def shape(self) -> "ModelShape | None":
        """The shape the entry gives, or None."""
        if self.num_attention_heads is None or self.num_hidden_layers is None:
            return None
        return ModelShape(
            model_type=self.model,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads or self.num_attention_heads,
            num_hidden_layers=self.num_hidden_layers,
            num_experts=self.num_experts or 0,
        )


_SHAPE_KEYS = ("num_attention_heads", "num_key_value_heads", "num_hidden_layers", "num_experts")


class SiteSpec(Frozen):
    """Cluster defaults a site or a user sets once (the ``site:`` section of a file)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = Field(None, description="SLURM time limit, e.g. 04:00:00")
    gpus_per_node: GpusPerNode | None = None
    gpu_memory_gib: GpuMemoryGib | None = Field(None, description="Memory of one GPU")
    cpus_per_task: Cpus | None = None
    mem: str | None = Field(None, description="SLURM --mem per node, e.g. 0 for all")
    gres_style: GresStyle = "gpus-per-node"
    container: str | None = None
    nccl_profile: NcclProfile = "auto"
    setup: tuple[str, ...] = Field((), description="Shell lines run before the job step")
    job_root: str | None = Field(None, description="Shared directory for job directories")
    vllm_version: str | None = Field(None, description="vLLM version the nodes run")
    login_host: str | None = Field(
        None, description="The login node a laptop reaches (vllm-hpc tunnel), e.g. hpc.example.org"
    )
    model_store: str | None = Field(
        None, description="Where vllm-hpc stage puts models (shared storage the nodes read)"
    )
    hf_endpoint: str | None = Field(
        None,
        description="The Hugging Face hub or mirror stage downloads from, e.g. https://hf.example.org",
    )
    env: dict[str, str] = Field(default_factory=dict)
    preflight: bool = Field(
        True, description="false: no collective check before vLLM loads (--no-preflight)"
    )
    nodes_offline: bool = Field(
        False,
        description="true: the compute nodes cannot reach the hub, so a hub model must be "
        "staged first (vllm-hpc stage on the login node)",
    )
    transfer_partition: str | None = Field(
        None,
        description="The partition whose nodes reach the hub, for vllm-hpc stage --via sbatch",
    )
    compile_cache: str | None = Field(
        None,
        description="Persistent storage for vLLM's compile caches, kept across jobs and keyed "
        "by vLLM version and model ({user} filled in; /<user> appended without it). Default: "
        "<job root>/compile-cache",
    )

    _env = field_validator("env")(_check_env)

    vllm_features: tuple[Literal["token_parallel"], ...] = Field(
        (), description="Features of a non-upstream engine build the nodes run"
    )

    _time = field_validator("time")(check_slurm_time)
    _vllm_version = field_validator("vllm_version")(check_version)
    _slurm_names = field_validator("partition", "account", "qos", "transfer_partition")(
        check_slurm_names
    )
    _mem = field_validator("mem")(check_mem)
    _container = field_validator("container")(check_image)
    _login_host = field_validator("login_host")(check_host)
    _model_store = field_validator("model_store")(check_store)
    _compile_cache = field_validator("compile_cache")(check_cache_root)
    _hf_endpoint = field_validator("hf_endpoint")(fields.check_endpoint)


class ParallelLayout(Frozen):
    """How the model is split over the allocation."""

    tp: Parallel = 1
    pp: Parallel = 1
    dp: Parallel = 1
    ep: bool = False
    token_parallel_size: Parallel | None = None
    nodes: Nodes = 1
    gpus_per_node: GpusPerNode = 1
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

    _image = field_validator("image")(check_image)

    @classmethod
    def parse(cls, text: str) -> "ContainerSpec":
        runtime, sep, image = text.partition(":")
        if not sep or runtime not in ("apptainer", "singularity", "enroot") or not image:
            raise ValueError(
                f"{text!r} is not a container spec "
                "(use apptainer:IMAGE.sif, singularity:IMAGE.sif or enroot:IMAGE)"
            )
        try:
            check_image(image)
        except ValueError as exc:
            raise ValueError(f"the image {image!r} {exc}") from None
        return cls.model_validate({"runtime": runtime, "image": image})

    def __str__(self) -> str:
        return f"{self.runtime}:{self.image}"


class ModelShape(Frozen):
    """What a layout is checked against (TP by the heads and KV heads, PP by the layers,
    EP by the experts): from a local ``config.json`` (``ModelArch``), else from the
    registry entry (``ModelSpec.shape``)."""

    model_type: str = "unknown"
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt
    num_hidden_layers: PositiveInt
    num_experts: int = 0

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1


class ModelArch(ModelShape):
    """The parts of a model's ``config.json`` the planner checks a layout and estimates
    memory against."""

    hidden_size: PositiveInt
    intermediate_size: PositiveInt | None = None
    vocab_size: PositiveInt | None = None
    tie_word_embeddings: bool = False
    dtype: str | None = None
    head_dim: PositiveInt | None = None


class SlurmOptions(Frozen):
    """What goes into the ``#SBATCH`` header."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    cpus_per_task: Cpus | None = None
    mem: str | None = None
    gres_style: GresStyle = "gpus-per-node"
    signal_seconds: int = Field(
        SLURM_WARNING_SECONDS, ge=0, le=3600, description="USR1 this long before limit"
    )
    requeue: bool = False
    setup: tuple[str, ...] = ()

    _time = field_validator("time")(check_slurm_time)
    _slurm_names = field_validator("partition", "account", "qos")(check_slurm_names)
    _mem = field_validator("mem")(check_mem)


class StagedModel(Frozen):
    """A hub model served from its staged copy (``vllm-hpc stage``): the directory
    ``vllm serve`` is given, and what the copy's manifest says of it."""

    repo_id: str = Field(description="The hub id the user asked for")
    revision: str = Field(description="The revision asked for (its ref in the store)")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$", description="The commit it was staged at")
    path: str = Field(description="The staged directory (absolute)")
    files: int = Field(ge=0, description="Files in the copy")
    bytes: int = Field(ge=0, description="Their total size")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        # It becomes vllm serve's argument and a container bind (which splits on ',' ':').
        fields.one_line(value)
        if not PurePosixPath(value).is_absolute() or not fields.STORE_PATH_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an absolute path of letters, digits and . _ / + @ = ~ -"
            )
        return value


CompileVersionFrom = Literal["nodes", "declared", "unknown"]
# The variables that point vLLM (and torch Inductor, for what it compiles outside vLLM's
# own compile) at the compile cache. vLLM derives Triton's cache from its own (0.32).
COMPILE_CACHE_VARIABLES = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR")
VERSION_KEY_RE = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"


class CompileCache(Frozen):
    """Where the nodes' vLLM keeps what it compiles for this model, across jobs:
    ``<root>/<vllm version>/<model key>`` (``jobdir.compilecache``). ``env``: the
    variables vllm-hpc exports on every node for it (one the user set is left out);
    ``version_note``: how the version was learnt, for the dry run."""

    path: str = Field(description="The directory (absolute): VLLM_CACHE_ROOT")
    vllm_version: str = Field(
        pattern=VERSION_KEY_RE, description="The version key (unknown: not known here)"
    )
    version_from: CompileVersionFrom
    version_note: str = Field(max_length=fields.MAX_TEXT)
    model_key: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,160}$")
    env: dict[str, str] = Field(default_factory=dict, description="Exported on every node")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        # An environment value and a container bind (which splits on ',' ':').
        if not PurePosixPath(value).is_absolute() or not fields.STORE_PATH_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not an absolute path of letters, digits and . _ / + @ = ~ -"
            )
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COMPILE_CACHE_VARIABLES))
        if unknown:
            raise ValueError(f"{unknown[0]} is not a compile-cache variable")
        return _check_env(value)


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
    gpu_memory_gib: GpuMemoryGib | None = None
    slurm: SlurmOptions = SlurmOptions()
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    nodes_timeout: Seconds = Field(
        DEFAULT_NODES_TIMEOUT, description="Seconds to wait for Ray nodes"
    )
    ready_timeout: Seconds = Field(DEFAULT_READY_TIMEOUT, description="Seconds to wait for the API")
    preflight: bool = Field(
        True, description="A multi-node job checks its nodes' collectives before vLLM loads"
    )
    preflight_port: Port = DEFAULT_PREFLIGHT_PORT
    preflight_port_fixed: bool = Field(False, description="The user chose it: never move it")
    revision: str | None = Field(None, description="The hub model's revision (vllm serve's)")
    staged: StagedModel | None = Field(
        None, description="Served from this staged copy, offline (spec.model is its path)"
    )
    compile_cache: CompileCache | None = Field(
        None, description="vLLM's compile caches across jobs (None: the user set VLLM_CACHE_ROOT)"
    )

    _env = field_validator("env")(_check_env)
    _served = field_validator("served_model_name")(check_served_name)
    _vllm_version = field_validator("vllm_version")(check_version)

    @field_validator("job_name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        fields.plain_text(value, limit=128)
        if not fields.JOB_NAME_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a job name (lowercase letters, digits, '.', '_', '-')"
            )
        return value

    @field_validator("job_root", "python")
    @classmethod
    def _absolute(cls, value: str) -> str:
        fields.plain_text(value)
        if not PurePosixPath(value).is_absolute():
            raise ValueError(f"{value!r} must be an absolute path")
        # Both land in #SBATCH lines and srun's command, which sbatch neither quotes
        # nor escapes: only characters no shell or SLURM reads specially.
        if not fields.PATH_RE.fullmatch(value):
            raise ValueError(
                f"{value!r} has characters other than letters, digits and . _ / + @ : = , ~ - "
                "(no spaces, quotes or %)"
            )
        return value


class ClusterSpec(Frozen):
    """The allocation a plan is made for: how many nodes, GPUs each, and the scheduler."""

    nodes: Nodes = 1
    gpus_per_node: GpusPerNode = 1
    scheduler: Literal["slurm", "local"] = "slurm"
