"""The input edge: CLI flags over registry entry over site defaults over built-in defaults,
validated once into a frozen ``ServeConfig``.

Reads only what a login node can read cheaply: registry files, a local model's
``config.json``, whether the API key file exists (never its contents).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from launchers.commands import check_all2all, parse_version
from launchers.config import (
    DEFAULT_VLLM_VERSION,
    ContainerSpec,
    ModelSpec,
    ServeConfig,
    SlurmOptions,
)
from launchers.errors import InputError, UnsupportedFeatureError
from launchers.layout import (
    LayoutRequest,
    check_layout,
    check_memory,
    estimate_memory,
    probe_model_arch,
    resolve_layout,
)
from launchers.registry import Registry

# Ray's default worker port range: a fixed port inside it collides with Ray's workers.
RAY_WORKER_PORTS = (10002, 19999)
M = TypeVar("M", bound=BaseModel)

# Field names in error messages are the CLI flags users typed.
_FLAG_NAMES = {
    "port": "--port",
    "ray_port": "--ray-port",
    "job_name": "--job-name",
    "time": "--time",
    "job_root": "--job-root",
    "python": "--python",
}


@dataclass(frozen=True)
class Request:
    """What was asked on the command line (None = not said)."""

    model: str | None = None
    nodes: int | None = None
    gpus_per_node: int | None = None
    tp: int | None = None
    pp: int | None = None
    dp: int | None = None
    ep: bool | None = None
    token_parallel_size: int | None = None
    allow_cross_node_tp: bool = False
    runtime: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    job_name: str | None = None
    job_root: str | None = None
    port: int | None = None
    ray_port: int | None = None
    host: str | None = None
    api_key_file: str | None = None
    no_api_key: bool = False
    no_ray_auth: bool = False
    container: str | None = None
    vllm_version: str | None = None
    gpu_memory_gib: float | None = None
    requeue: bool = False
    iface: str | None = None
    all2all_backend: str | None = None
    api_server_count: int | None = None
    dp_rpc_port: int | None = None
    python: str | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """Build a pydantic model, turning the first validation error into one line."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(part) for part in err["loc"])
        name = _FLAG_NAMES.get(loc, loc)
        msg = err["msg"].removeprefix("Value error, ")
        raise InputError(f"{name}: {msg} (got {err.get('input')!r})") from None


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def model_spec_for(name: str, registry: Registry) -> ModelSpec:
    if name in registry.models:
        return registry.get(name)
    if "/" in name or Path(name).expanduser().exists():
        return ModelSpec(model=name)
    return registry.get(name)  # raises with suggestions


def default_job_name(name: str) -> str:
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._") or "model"
    return f"vllm-{base}"[:64]


def check_ports(ports: Mapping[str, int], *, ray: bool = True) -> None:
    """Distinct ports; with Ray, none inside Ray's worker port range."""
    low, high = RAY_WORKER_PORTS
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if ray and low <= port <= high:
            raise InputError(
                f"{name}: port {port} is inside Ray's worker port range {low}-{high}",
                fix="choose a port outside it, e.g. 8000 or 6379",
            )
        if port in seen:
            raise InputError(f"{name}: port {port} is also used for {seen[port]}")
        seen[port] = name


def _runtime(req: Request, spec: ModelSpec, nodes: int, dp: int) -> str:
    choice = _pick(req.runtime, spec.runtime, "auto")
    if choice not in ("auto", "ray", "native"):
        raise InputError(f"--runtime: {choice!r} is not a runtime", fix="use auto, ray or native")
    if nodes == 1:
        return "ray" if choice == "ray" else "single"
    if dp > 1:
        return "dp"
    return "native" if choice == "native" else "ray"


def resolve(
    req: Request, registry: Registry, environ: Mapping[str, str], python: str
) -> ServeConfig:
    """Merge every input layer and validate the result. Raises InputError subclasses."""
    name = req.model or environ.get("MODEL_NAME")
    if not name:
        raise InputError(
            "--model: no model given",
            fix="pass --model NAME or set MODEL_NAME; `vllm-hpc models list` shows names",
        )
    spec = model_spec_for(name, registry)
    overrides = {
        "all2all_backend": req.all2all_backend,
        "api_server_count": req.api_server_count,
    }
    spec = spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if spec.all2all_backend:
        check_all2all(spec.all2all_backend)
    site = registry.site
    arch = probe_model_arch(spec.model)

    # A layout flag on the command line replaces the registry's layout as a whole.
    from_cli = any(v is not None for v in (req.tp, req.pp, req.dp))
    layout_req = LayoutRequest(
        tp=req.tp if from_cli else spec.tensor_parallel_size,
        pp=req.pp if from_cli else spec.pipeline_parallel_size,
        dp=req.dp if from_cli else spec.data_parallel_size,
        ep=bool(_pick(req.ep, spec.enable_expert_parallel)),
        token_parallel_size=_pick(req.token_parallel_size, spec.token_parallel_size),
        nodes=_pick(req.nodes, None if from_cli else spec.nodes),
        gpus_per_node=_pick(req.gpus_per_node, None if from_cli else spec.gpus_per_node),
        site_gpus_per_node=site.gpus_per_node,
        allow_cross_node_tp=req.allow_cross_node_tp,
    )
    origin = "from --tp/--pp/--dp" if from_cli else f"from the registry entry {name!r}"
    layout, reason = resolve_layout(layout_req, arch, origin)
    warnings = check_layout(layout, arch)

    if layout.token_parallel_size and "token_parallel" not in site.vllm_features:
        raise UnsupportedFeatureError(
            "token_parallel_size: upstream vLLM has no token parallelism",
            fix="it exists only in research engine builds; if the nodes run one, declare "
            "`vllm_features: [token_parallel]` in the site file, else drop it",
        )

    vllm_version = _pick(req.vllm_version, site.vllm_version, DEFAULT_VLLM_VERSION)
    parse_version(vllm_version)
    gpu_memory_gib = _pick(req.gpu_memory_gib, site.gpu_memory_gib)
    if arch is not None and gpu_memory_gib is not None and spec.dtype is not None:
        estimate = estimate_memory(
            arch,
            layout,
            dtype=spec.dtype,
            max_model_len=spec.max_model_len or 2048,
            gpu_memory_gib=gpu_memory_gib,
            utilization=spec.gpu_memory_utilization or 0.9,
        )
        check_memory(estimate, layout)

    port = _pick(req.port, 8000)
    ray_port = _pick(req.ray_port, 6379)
    runtime = _runtime(req, spec, layout.nodes, layout.dp)
    ports = {"--port": port}
    if runtime == "ray":
        ports["--ray-port"] = ray_port
    dp_rpc_port = _pick(req.dp_rpc_port, 13345)
    if runtime == "dp":
        ports["--dp-rpc-port"] = dp_rpc_port
    if runtime == "native":
        ports["master port"] = 29501
    check_ports(ports, ray=runtime == "ray")

    container_text = _pick(req.container, spec.container, site.container)
    container = None
    if container_text:
        try:
            container = ContainerSpec.parse(container_text)
        except ValueError as exc:
            raise InputError(f"--container: {exc}") from None

    binds: tuple[str, ...] = ()
    if container is not None:
        from launchers.containers import hf_cache_dir, outermost

        home = environ.get("HOME", str(Path.home()))
        root = os.path.expanduser(
            _pick(
                req.job_root,
                environ.get("VLLM_HPC_JOB_ROOT"),
                site.job_root,
                f"{home}/.vllm-hpc/jobs",
            )
        )
        paths = [root]
        if spec.model.startswith("/"):
            paths.append(spec.model)
        if req.api_key_file:
            paths.append(str(Path(req.api_key_file).expanduser().resolve()))
        paths.append(hf_cache_dir(environ))
        binds = tuple(outermost(paths))

    api_key_file = req.api_key_file
    if api_key_file is not None and req.no_api_key:
        raise InputError("--no-api-key: cannot be combined with --api-key-file", fix="drop one")
    if api_key_file is not None:
        key_path = Path(api_key_file).expanduser()
        if not key_path.is_file():
            raise InputError(
                f"--api-key-file: {api_key_file} is not a file",
                fix="write the key into a file readable only by you (chmod 600)",
            )
        api_key_file = str(key_path.resolve())

    home = environ.get("HOME", str(Path.home()))
    job_root = _pick(
        req.job_root,
        environ.get("VLLM_HPC_JOB_ROOT"),
        site.job_root,
        f"{home}/.vllm-hpc/jobs",
    )
    slurm = validated(
        SlurmOptions,
        {
            "partition": _pick(req.partition, site.partition),
            "account": _pick(req.account, site.account),
            "qos": _pick(req.qos, site.qos),
            "time": _pick(req.time, site.time),
            "cpus_per_task": site.cpus_per_task,
            "mem": site.mem,
            "gres_style": site.gres_style,
            "requeue": req.requeue,
            "setup": site.setup,
        },
    )
    served = spec.served_model_name or (
        name if name in registry.models else name.rstrip("/").rsplit("/", 1)[-1]
    )
    return validated(
        ServeConfig,
        {
            "name": name,
            "spec": spec,
            "layout": layout,
            "layout_reason": reason,
            "warnings": tuple(warnings),
            "arch": arch,
            "runtime": runtime,
            "served_model_name": served,
            "host": _pick(req.host, "0.0.0.0"),  # noqa: S104
            "port": port,
            "port_fixed": req.port is not None,
            "ray_port": ray_port,
            "ray_port_fixed": req.ray_port is not None,
            "dp_rpc_port": dp_rpc_port,
            "api_key": "none" if req.no_api_key else ("file" if api_key_file else "generate"),
            "api_key_file": api_key_file,
            "ray_auth": not req.no_ray_auth,
            "container": container,
            "container_binds": binds,
            "vllm_version": vllm_version,
            "job_name": _pick(req.job_name, default_job_name(name)),
            "job_root": os.path.expanduser(job_root),
            # With enroot/pyxis the node runtime itself runs in the image.
            "python": _pick(
                req.python,
                environ.get("VLLM_HPC_PYTHON"),
                "/usr/bin/python3" if container and container.runtime == "enroot" else python,
            ),
            "nccl_profile": site.nccl_profile,
            "gpu_memory_gib": gpu_memory_gib,
            "slurm": slurm,
            "env": {**site.env, **req.env, **({"VLLM_HPC_IFACE": req.iface} if req.iface else {})},
            "extra_args": req.extra_args,
        },
    )
