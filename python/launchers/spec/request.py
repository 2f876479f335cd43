"""What a user may ask of a deployment: ``SubmitRequest``, the one definition.

Each field that a command line can set carries its ``Flag`` (the option's names and
help) beside its bounds, so the click options of every command that plans
(``cli/options.py``), the flag names in error messages and the service's stored request
all come from here. ``None`` means "not said": the registry entry, the site file or a
built-in default decides (``input/resolve.py``).

``SubmitRequest.checked`` refuses a request that does not validate with one line that
names the flag (an ``InputError``, exit code 2 at the CLI): the CLI's options and the
Python client (``Client.plan`` and ``.submit`` given the fields) give the same line.
"""

# Annotations are evaluated here, as the module runs (no `from __future__ import
# annotations`): pydantic would otherwise compile each field's annotation from its text
# when the class is made (the dry run's models: about 6 of its 20 ms of class making).
# Names defined further down are quoted.
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_DP_RPC_PORT,
    DEFAULT_MODEL_STORE,
    DEFAULT_PREFLIGHT_PORT,
    DEFAULT_RAY_PORT,
    DEFAULT_REVISION,
)
from launchers.errors import SHOWN_LIMIT, InputError, clipped, shown
from launchers.spec import fields as _fields
from launchers.spec.fields import (
    MAX_API_SERVERS,
    MAX_GPU_MEMORY_GIB,
    MAX_GPUS_PER_NODE,
    MAX_NODES,
    MAX_PARALLEL,
)

# The headings ``--help`` lists the request's options under, in this order.
LAYOUT = "Model and layout"
SLURM = "SLURM"
NETWORK = "Network and security"
OTHER = "Other"
GROUPS = (LAYOUT, SLURM, NETWORK, OTHER)


@dataclass(frozen=True)
class Flag:
    """How a field is spelled on the command line. ``names[0]`` is the name errors use;
    ``file``: the value is a file path; ``argument``: the trailing arguments (the
    field is a tuple of strings); ``group``: the heading ``--help`` lists it under
    (one of ``GROUPS``)."""

    names: tuple[str, ...]
    help: str
    group: str
    file: bool = False
    argument: bool = False

    @property
    def name(self) -> str:
        return self.names[0]


def flag(*names: str, group: str, help: str, file: bool = False, argument: bool = False) -> Flag:
    return Flag(names=names, help=help, group=group, file=file, argument=argument)


def one_line_error(exc: ValidationError, names: Mapping[str, str]) -> InputError:
    """The first error of ``exc`` as one line: the field as ``names`` spells it (the
    flag users typed; a field not in it by its own name), pydantic's reason and the
    value given."""
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"])
    plain = loc.strip() == loc and loc.isprintable() and len(loc) <= SHOWN_LIMIT
    name = names.get(loc, loc if plain else shown(loc))
    msg = clipped(err["msg"].removeprefix("Value error, "))
    return InputError(f"{name}: {msg} (got {shown(err.get('input'))})")


def _count(most: int) -> Any:
    return Field(ge=1, le=most)


class SubmitRequest(BaseModel):
    """What was asked (on a command line, by the service for a replica, from Python)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def checked(cls, fields: Mapping[str, Any]) -> "SubmitRequest":
        """The request ``fields`` ask for; one that does not validate is refused with
        one line naming the flag (``InputError``) rather than pydantic's
        ``ValidationError``: the CLI's options and ``Client.plan`` build it so."""
        try:
            return cls.model_validate(dict(fields))
        except ValidationError as exc:
            raise one_line_error(exc, FLAG_NAMES) from None

    model: Annotated[
        str | None,
        flag(
            "--model",
            "-m",
            group=LAYOUT,
            help="Registry id (see `vllm-hpc models list`), Hugging Face id or model "
            "directory. Default: $MODEL_NAME.",
        ),
    ] = None
    revision: Annotated[
        str | None,
        flag(
            "--revision",
            group=LAYOUT,
            help="The hub model's branch, tag or commit (default "
            f"{DEFAULT_REVISION}): its staged copy (vllm-hpc stage --revision) is served "
            "when the model store has one, else vLLM fetches that revision.",
        ),
    ] = None
    nodes: Annotated[
        int | None,
        _count(MAX_NODES),
        flag("--nodes", "-N", group=LAYOUT, help="Nodes to allocate."),
    ] = None
    gpus_per_node: Annotated[
        int | None,
        _count(MAX_GPUS_PER_NODE),
        flag("--gpus-per-node", "-G", group=LAYOUT, help="GPUs on each node."),
    ] = None
    tp: Annotated[
        int | None, _count(MAX_PARALLEL), flag("--tp", group=LAYOUT, help="Tensor parallel size.")
    ] = None
    pp: Annotated[
        int | None, _count(MAX_PARALLEL), flag("--pp", group=LAYOUT, help="Pipeline parallel size.")
    ] = None
    dp: Annotated[
        int | None,
        _count(MAX_PARALLEL),
        flag("--dp", group=LAYOUT, help="Data parallel size (in all)."),
    ] = None
    ep: Annotated[
        bool | None,
        flag("--ep", "--no-ep", group=LAYOUT, help="Expert parallel (MoE models, with DP or TP)."),
    ] = None
    token_parallel_size: Annotated[
        int | None,
        _count(MAX_PARALLEL),
        flag(
            "--token-parallel-size",
            group=LAYOUT,
            help="Token parallelism: only engine builds that have it, not upstream vLLM "
            "(the nodes' vLLM is asked before anything is submitted).",
        ),
    ] = None
    allow_cross_node_tp: Annotated[
        bool,
        flag(
            "--allow-cross-node-tp",
            group=LAYOUT,
            help="Allow TP larger than one node (needs InfiniBand/RoCE).",
        ),
    ] = False
    runtime: Annotated[
        Literal["auto", "ray", "native"] | None,
        flag(
            "--runtime",
            group=LAYOUT,
            help="How nodes are joined: Ray (default across nodes) or vLLM's own --nnodes.",
        ),
    ] = None
    partition: Annotated[
        str | None, flag("--partition", "-p", group=SLURM, help="SLURM partition.")
    ] = None
    account: Annotated[str | None, flag("--account", "-A", group=SLURM, help="SLURM account.")] = (
        None
    )
    qos: Annotated[str | None, flag("--qos", group=SLURM, help="SLURM QOS.")] = None
    time: Annotated[
        str | None, flag("--time", "-t", group=SLURM, help="Time limit, e.g. 04:00:00.")
    ] = None
    job_name: Annotated[
        str | None, flag("--job-name", "-J", group=SLURM, help="Job name (default vllm-<model>).")
    ] = None
    registry: Annotated[
        tuple[str, ...],
        flag(
            "--registry",
            group=OTHER,
            help="Extra registry file layered last (repeatable).",
            file=True,
        ),
    ] = ()
    port: Annotated[
        int | None,
        flag("--port", group=NETWORK, help=f"API port on the leader (default {DEFAULT_API_PORT})."),
    ] = None
    host: Annotated[
        str | None,
        flag(
            "--host",
            group=NETWORK,
            help="Where the API listens on the leader: 0.0.0.0 (default, every interface), "
            "'node' (only the address vllm-hpc chose, e.g. ib0's), 127.0.0.1, or an "
            "address.",
        ),
    ] = None
    ray_port: Annotated[
        int | None,
        flag("--ray-port", group=NETWORK, help=f"Ray head port (default {DEFAULT_RAY_PORT})."),
    ] = None
    api_key_file: Annotated[
        str | None,
        flag(
            "--api-key-file",
            group=NETWORK,
            help="File holding the API key (0600). Never pass a key on the command line.",
            file=True,
        ),
    ] = None
    no_api_key: Annotated[
        bool,
        flag(
            "--no-api-key",
            group=NETWORK,
            help="Serve without an API key (anyone who reaches the port can use it).",
        ),
    ] = False
    no_ray_auth: Annotated[
        bool,
        flag(
            "--no-ray-auth",
            group=NETWORK,
            help="Start Ray without token authentication (not recommended).",
        ),
    ] = False
    no_preflight: Annotated[
        bool,
        flag(
            "--no-preflight",
            group=NETWORK,
            help="Skip the check of the nodes' collectives before vLLM loads (multi-node "
            "jobs run it by default: a broken link is named in seconds, not found as a hang).",
        ),
    ] = False
    preflight_port: Annotated[
        int | None,
        flag(
            "--preflight-port",
            group=NETWORK,
            help=f"The pre-flight's rendezvous port on the leader (default "
            f"{DEFAULT_PREFLIGHT_PORT}, moved when taken; given, it is fixed: a taken one "
            "fails the job).",
        ),
    ] = None
    container: Annotated[
        str | None,
        flag(
            "--container",
            group=OTHER,
            help="Run inside a container: apptainer:IMAGE.sif, singularity:IMAGE.sif "
            "or enroot:IMAGE.",
        ),
    ] = None
    vllm_version: Annotated[
        str | None,
        flag("--vllm-version", group=OTHER, help="vLLM version the nodes run (default: current)."),
    ] = None
    gpu_memory_gib: Annotated[
        float | None,
        Field(gt=0, le=MAX_GPU_MEMORY_GIB),
        flag("--gpu-memory-gib", group=LAYOUT, help="Memory of one GPU, to check the model fits."),
    ] = None
    iface: Annotated[
        str | None,
        flag(
            "--iface",
            group=NETWORK,
            help="Network interface for vLLM/NCCL/Gloo on every node (default: detected; "
            "InfiniBand, then RoCE, then the fastest Ethernet).",
        ),
    ] = None
    all2all_backend: Annotated[
        str | None,
        flag(
            "--all2all-backend",
            group=LAYOUT,
            help="MoE all-to-all backend with --ep (e.g. allgather_reducescatter, "
            "deepep_high_throughput, deepep_low_latency).",
        ),
    ] = None
    api_server_count: Annotated[
        int | None,
        _count(MAX_API_SERVERS),
        flag("--api-server-count", group=LAYOUT, help="API server processes (DP)."),
    ] = None
    dp_rpc_port: Annotated[
        int | None,
        flag(
            "--dp-rpc-port",
            group=NETWORK,
            help=f"Data-parallel RPC port on the leader (default {DEFAULT_DP_RPC_PORT}).",
        ),
    ] = None
    dp_backend: Annotated[
        Literal["mp", "ray"] | None,
        flag(
            "--dp-backend",
            group=LAYOUT,
            help="How data-parallel ranks span nodes: mp (default; a headless vllm serve "
            "per node) or ray (one vllm serve on the leader places them over the Ray "
            "cluster).",
        ),
    ] = None
    requeue: Annotated[bool, flag("--requeue", group=SLURM, help="Let SLURM requeue the job.")] = (
        False
    )
    job_root: Annotated[
        str | None,
        flag("--job-root", group=OTHER, help="Directory for job directories (shared storage)."),
    ] = None
    model_store: Annotated[
        str | None,
        flag(
            "--model-store",
            group=OTHER,
            help="Where vllm-hpc stage put models: a hub model staged there is served "
            "from its copy, offline. Default: $VLLM_HPC_MODEL_STORE, else the site "
            f"file's model_store, else {DEFAULT_MODEL_STORE}.",
        ),
    ] = None
    extra_args: Annotated[
        tuple[str, ...],
        flag(
            "EXTRA_VLLM_ARGS",
            group=OTHER,
            help="Arguments after `--`, passed to `vllm serve` unchanged.",
            argument=True,
        ),
    ] = ()

    # Set by vllm-hpc itself, never on a command line.
    # None: a port given is fixed (a taken one fails the job); False: the port is where
    # the search for a free one starts (a service gives each replica its own start).
    port_fixed: bool | None = None
    # k8s and compose: the nodes run an image, whose Python this machine cannot ask.
    in_image: bool = False
    env: dict[str, str] = Field(default_factory=dict)

    _revision = field_validator("revision")(
        lambda v: None if v is None else _fields.check_revision(v)
    )
    _model_store = field_validator("model_store")(
        lambda v: None if v is None else _fields.not_a_flag(_fields.plain_text(v))
    )


def request_flags() -> dict[str, Flag]:
    """Each command-line field's ``Flag``, in the order ``--help`` lists them."""
    out = {}
    for name, info in SubmitRequest.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, Flag):
                out[name] = meta
    return out


FLAG_NAMES = {name: f.name for name, f in request_flags().items() if not f.argument}

__all__ = ["FLAG_NAMES", "GROUPS", "Flag", "SubmitRequest", "one_line_error", "request_flags"]
