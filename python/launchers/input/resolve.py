"""The input edge: CLI flags over registry entry over site defaults over built-in defaults,
validated once into a frozen ``ServeConfig``.

Reads only what a login node can read cheaply: registry files, a local model's
``config.json``, whether the API key file exists (never its contents).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_DP_RPC_PORT,
    DEFAULT_MASTER_PORT,
    DEFAULT_PREFLIGHT_PORT,
    DEFAULT_RAY_PORT,
    DEFAULT_REVISION,
    DEFAULT_VLLM_VERSION,
    RAY_WORKER_PORTS,
    USER_PORTS,
)
from launchers.errors import InputError, shown
from launchers.input import probe
from launchers.input.registry import Registry
from launchers.jobdir import compilecache
from launchers.jobdir.jobroot import job_root
from launchers.jobdir.modelstore import staged_copy, store_root
from launchers.jobdir.paths import CompileCacheDir
from launchers.jobdir.safe import read_private_text
from launchers.plan import commands
from launchers.plan.commands import NODE_IP, check_all2all, parse_version
from launchers.plan.layout import (
    LayoutNames,
    LayoutRequest,
    assumed_allocation,
    check_layout,
    check_memory,
    estimate_memory,
    read_model_arch,
    resolve_layout,
)
from launchers.plan.netspec import check_iface_name
from launchers.spec import fields
from launchers.spec.config import (
    CompileCache,
    CompileVersionFrom,
    ContainerSpec,
    ModelArch,
    ModelShape,
    ModelSpec,
    ParallelLayout,
    ServeConfig,
    SiteSpec,
    SlurmOptions,
    StagedModel,
    check_model,
)
from launchers.spec.request import FLAG_NAMES, SubmitRequest, one_line_error

M = TypeVar("M", bound=BaseModel)

# In errors of what the request decides (ServeConfig, SlurmOptions), a field is named by
# the flag users typed (the nodes' Python comes from the environment, not a flag).
_FLAG_NAMES = {**FLAG_NAMES, "python": "VLLM_HPC_PYTHON"}
# Ports a user may fix, with the default to suggest when one is out of range.
_PORT_DEFAULTS = {
    "--port": DEFAULT_API_PORT,
    "--ray-port": DEFAULT_RAY_PORT,
    "--dp-rpc-port": DEFAULT_DP_RPC_PORT,
    "--preflight-port": DEFAULT_PREFLIGHT_PORT,
}

# `vllm serve` flags the plan sets itself. Given again after `--` (or in a registry
# entry's extra_args) they would override the plan, since vLLM takes the last of a
# repeated flag: they may only repeat the plan's value. Each maps to the fix.
_CHECKED = ": it is checked against the GPUs"
_PLAN_FLAGS = {
    "--tensor-parallel-size": "use --tp (registry: tensor_parallel_size)" + _CHECKED,
    "--pipeline-parallel-size": "use --pp (registry: pipeline_parallel_size)" + _CHECKED,
    "--data-parallel-size": "use --dp (registry: data_parallel_size)" + _CHECKED,
    "--data-parallel-size-local": "use --dp and --nodes: the plan splits DP over the nodes",
    "--enable-expert-parallel": "use --ep (registry: enable_expert_parallel)",
    "--all2all-backend": "use --all2all-backend before `--` (registry: all2all_backend)",
    "--api-server-count": "use --api-server-count before `--` (registry: api_server_count)",
    "--data-parallel-rpc-port": "use --dp-rpc-port",
    "--data-parallel-backend": "use --dp-backend",
    "--port": "use --port before `--`",
    "--host": "use --host before `--`",
    "--served-model-name": "set served_model_name in a registry entry",
    "--distributed-executor-backend": "use --runtime",
    "--nnodes": "use --nodes",
    "--node-rank": "drop it: each node gets its own",
    "--master-addr": "drop it: node 0's address is filled in on the nodes",
    "--master-port": "drop it: the plan picks the port",
    "--data-parallel-address": "drop it: node 0's address is filled in on the nodes",
    "--data-parallel-start-rank": "drop it: each node gets its own",
    "--headless": "drop it: nodes after the first run headless",
    "--revision": "use --revision before `--`: it also picks the staged copy",
    "--token-parallel-size": "use --token-parallel-size before `--` (registry: "
    "token_parallel_size): it is checked against the GPUs and the nodes' vLLM",
    "--enable-token-parallel": "use --token-parallel-size before `--`: the plan enables it",
    "--no-enable-token-parallel": "drop --token-parallel-size instead",
}
# vLLM's short aliases of the flags above (vllm serve --help), and its negations (the
# parsers of 0.32 and 0.33 asked by bench/vllm_flags.py).
_FLAG_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-dp": "--data-parallel-size",
    "-dpl": "--data-parallel-size-local",
    "-dpa": "--data-parallel-address",
    "-dpr": "--data-parallel-start-rank",
    "-dpp": "--data-parallel-rpc-port",
    "-dpb": "--data-parallel-backend",
    "-ep": "--enable-expert-parallel",
    "--no-enable-expert-parallel": "--enable-expert-parallel",
    "--disable-expert-parallel": "--enable-expert-parallel",  # vLLM 0.33's negation
    "-asc": "--api-server-count",
    "-n": "--nnodes",
    "-r": "--node-rank",
}
# Flags vLLM never lets a command line set here: the key (visible in `ps`) and the model
# (the plan gives it as the positional argument).
_REFUSED_FLAGS = {
    "--api-key": (
        "would put the API key on a command line",
        "write the key into a file (chmod 600) and pass --api-key-file FILE",
    ),
    "--model": ("would replace the plan's model", "give the model with --model before `--`"),
}
_OWNED = (*_PLAN_FLAGS, *_FLAG_ALIASES, *_REFUSED_FLAGS)
_SWITCHES = (
    "--enable-expert-parallel",
    "--headless",
    "--enable-token-parallel",
    "--no-enable-token-parallel",
)


def validated(model: type[M], data: Mapping[str, Any]) -> M:
    """Build a pydantic model, turning the first validation error into one line."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        flags = _FLAG_NAMES if model in (ServeConfig, SlurmOptions) else {}
        raise one_line_error(exc, flags) from None


def _api_host(host: str | None) -> str:
    """--host: every interface (default), the node's chosen address, or one address."""
    if host is None:
        return "0.0.0.0"  # noqa: S104 - reachable from the login node; the API key guards it
    if host == "node":
        return NODE_IP
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise InputError(
            f"--host: {host!r} is not an address",
            fix="give 0.0.0.0 (every interface), node (the interface vllm-hpc picks), "
            "127.0.0.1, or an IP address of the leader",
        ) from None
    return host


def _pick(*values: Any) -> Any:
    for value in values:
        if value is not None:
            return value
    return None


def _looks_local(name: str) -> bool:
    """A path on this machine rather than a Hugging Face id (which never starts so)."""
    return name in (".", "..") or name.startswith(("/", "./", "../", "~"))


def model_spec_for(name: str, registry: Registry) -> ModelSpec:
    if name in registry.models:
        return registry.get(name)
    path = Path(name).expanduser()
    if _looks_local(name) or path.exists():
        if not path.exists():
            raise InputError(
                f"model: {name} does not exist",
                fix="give a model directory on shared storage, a Hugging Face id "
                "(org/name) or a registry id (`vllm-hpc models list`)",
            )
        if not path.is_dir():
            raise InputError(
                f"model: {name} is not a directory",
                fix="point --model at the model directory that holds config.json",
            )
        return ModelSpec(model=name)
    if "/" in name:
        return ModelSpec(model=name)
    return registry.get(name)  # raises with suggestions


def default_job_name(name: str) -> str:
    base = name.rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._") or "model"
    return f"vllm-{base}"[:64]


def check_port_range(flag: str, port: int | None) -> None:
    """A port the user fixed must be an unprivileged TCP port."""
    low, high = USER_PORTS
    if port is not None and not low <= port <= high:
        raise InputError(
            f"{flag}: {port} is not a usable port",
            fix=f"choose a port from {low} to {high}, e.g. "
            f"{_PORT_DEFAULTS.get(flag, DEFAULT_API_PORT)}",
        )


def check_ports(ports: Mapping[str, int], *, ray: bool = True) -> None:
    """Distinct ports; with Ray, none inside Ray's worker port range."""
    low, high = RAY_WORKER_PORTS
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if ray and low <= port <= high:
            raise InputError(
                f"{name}: port {port} is inside Ray's worker port range {low}-{high}",
                fix=f"choose a port outside it, e.g. {DEFAULT_API_PORT} or {DEFAULT_RAY_PORT}",
            )
        if port in seen:
            other = name if name in _PORT_DEFAULTS else seen[port]
            raise InputError(
                f"{name}: port {port} is also used for {seen[port]}",
                fix=f"give {other} another port",
            )
        seen[port] = name


def _as_vllm_reads(name: str) -> tuple[str, str]:
    """``(flag, attached value)``: the flag vLLM's parser (argparse, abbreviations
    allowed) reads ``name`` as, when it is one the plan owns; else ``name`` itself.
    ``--por`` is ``--port``, ``-n2`` is ``-n 2``, ``-t`` is ``-tp``."""
    if name in _OWNED:
        return _FLAG_ALIASES.get(name, name), ""
    if name.startswith("--"):
        owned = sorted({_FLAG_ALIASES.get(o, o) for o in _OWNED if o.startswith(name)})
    else:
        short = name[:2]
        if short in _FLAG_ALIASES:  # -n2: a one-letter option with its value attached
            return _FLAG_ALIASES[short], name[2:]
        owned = sorted({_FLAG_ALIASES[o] for o in _FLAG_ALIASES if o.startswith(name)})
    # A prefix of one owned flag is that flag to vLLM; of several, an error vLLM would
    # stop on (refused here as the first of them, naming it).
    return (owned[0], "") if owned and len(name) > 1 else (name, "")


def _split_flags(args: Sequence[str]) -> list[tuple[str, str, str]]:
    """``(flag, value, as given)`` for each flag of a ``vllm serve`` argument list, with
    vLLM's spellings folded (``--a_b`` is ``--a-b``, ``-tp`` is ``--tensor-parallel-size``,
    an abbreviation is the flag it abbreviates)."""
    out = []
    for i, arg in enumerate(args):
        if not arg.startswith("-") or arg in {"--", "-"}:
            continue
        name, eq, value = arg.partition("=")
        if name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")
        name, attached = _as_vllm_reads(name)
        if attached:
            value, eq = attached, "="
        nxt = args[i + 1] if i + 1 < len(args) else ""
        if not eq and name not in _SWITCHES and not nxt.startswith("-"):
            value = nxt
        out.append((name, value, f"{arg} {value}" if value and not eq else arg))
    return out


def check_extra_args(config: ServeConfig) -> None:
    """Refuse extra ``vllm serve`` arguments that would override what the plan sets
    (vLLM takes the last of a repeated flag), and an API key on a command line."""
    extra = [*config.spec.extra_args, *config.extra_args]
    if not extra:
        return
    from launchers.plan.commands import build_vllm_serve_argv

    bare = config.model_copy(
        update={"extra_args": (), "spec": config.spec.model_copy(update={"extra_args": ()})}
    )
    planned = {flag: value for flag, value, _ in _split_flags(build_vllm_serve_argv(bare))}
    seen: set[str] = set()
    for flag, value, given in _split_flags(extra):
        if flag in _REFUSED_FLAGS:
            why, fix = _REFUSED_FLAGS[flag]
            typed = given.split()[0].split("=")[0]
            shown = flag if typed == flag else f"{typed} (vLLM reads it as {flag})"
            raise InputError(f"vllm serve arguments: {shown} {why}", fix=fix)
        if flag in _PLAN_FLAGS and flag in seen:
            raise InputError(
                f"vllm serve arguments: {flag} is given twice (vLLM would read the last, "
                "vllm-hpc the first)",
                fix=_PLAN_FLAGS[flag],
            )
        seen.add(flag)
        if flag not in _PLAN_FLAGS or planned.get(flag) == value:
            continue
        if flag in planned:
            clash = f"would override the plan's {flag} {planned[flag]}".rstrip()
        else:
            clash = f"conflicts with the plan, which leaves {flag} out here"
        raise InputError(f"vllm serve arguments: {given} {clash}", fix=_PLAN_FLAGS[flag])


def _runtime(req: SubmitRequest, spec: ModelSpec, nodes: int, dp: int) -> str:
    choice = _pick(req.runtime, spec.runtime, "auto")
    if choice not in ("auto", "ray", "native"):
        raise InputError(f"--runtime: {choice!r} is not a runtime", fix="use auto, ray or native")
    if nodes == 1:
        return "ray" if choice == "ray" or (dp > 1 and req.dp_backend == "ray") else "single"
    if dp > 1:
        return "ray" if req.dp_backend == "ray" else "dp"
    if req.dp_backend == "ray":
        raise InputError(
            "--dp-backend: ray places data-parallel ranks, but the layout has none",
            fix="add --dp N (N > 1) across the nodes, or drop --dp-backend",
        )
    return "native" if choice == "native" else "ray"


def _ray_or_native(python: str, vllm_version: str, warnings: list[str]) -> str:
    """Across nodes with no runtime chosen: Ray when the nodes' Python has it (or cannot
    be asked), else vLLM's native multi-node where the target vLLM has it."""
    if probe.has_module(python, "ray") is not False:
        return "ray"
    if not commands.supports("nnodes", vllm_version):
        raise InputError(
            f"runtime: Ray is not installed for {python} (the nodes' Python), and vLLM "
            f"{vllm_version} has no multi-node without Ray (--runtime native needs "
            f"{commands.first_release('nnodes')})",
            fix="install ray in that environment, or use a newer vLLM",
        )
    warnings.append(
        f"runtime: Ray is not installed for {python}: using vLLM's own multi-node "
        "(--runtime native); install Ray, or pass --runtime ray, for the Ray bootstrap"
    )
    return "native"


def _model(
    req: SubmitRequest, registry: Registry, environ: Mapping[str, str]
) -> tuple[str, ModelSpec]:
    """Step 1: the model's name and its entry, with the command line's overrides."""
    name = req.model or environ.get("MODEL_NAME")
    if not name:
        raise InputError(
            "--model: no model given",
            fix="pass --model NAME or set MODEL_NAME; `vllm-hpc models list` shows names",
        )
    try:
        check_model(name)
    except ValueError as exc:
        raise InputError(
            f"{'--model' if req.model else 'MODEL_NAME'}: {exc}",
            fix="give a Hugging Face id (org/name), a registry id or a model directory",
        ) from None
    spec = model_spec_for(name, registry)
    overrides = {
        "all2all_backend": req.all2all_backend,
        "api_server_count": req.api_server_count,
    }
    spec = spec.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if spec.all2all_backend:
        check_all2all(spec.all2all_backend)
    return name, spec


def _is_local(model: str) -> bool:
    """The model is a directory here (a path, or a name that exists as one)."""
    return _looks_local(model) or Path(model).expanduser().is_dir()


def _staged(
    req: SubmitRequest, spec: ModelSpec, site: SiteSpec, environ: Mapping[str, str]
) -> tuple[ModelSpec, StagedModel | None]:
    """Step 1b: a hub model staged in the model store (``vllm-hpc stage``) is served
    from its copy: the entry's model becomes the copy's directory (vLLM reads it, the
    layout checks read its config.json). On a site whose nodes are offline, a hub model
    with no copy is refused here, not found after the queue by a hang on the nodes."""
    if _is_local(spec.model):
        if req.revision is not None:
            raise InputError(
                f"--revision: the model {spec.model} is a local directory; a revision is "
                "of a hub model",
                fix="drop --revision, or give the hub id",
            )
        return spec, None
    revision = req.revision or DEFAULT_REVISION
    store = store_root(req.model_store, environ, site.model_store)
    # Only a well-formed org/name is looked up: the store's paths are built from it.
    hub_id = fields.HUB_ID_RE.fullmatch(spec.model) is not None
    found = staged_copy(store, spec.model, revision) if hub_id else None
    if found is None:
        if site.nodes_offline:
            stage = " ".join(
                [spec.model]
                + ([f"--revision {revision}"] if req.revision else [])
                + ([f"--dest {shlex.quote(req.model_store)}"] if req.model_store else [])
            )
            raise InputError(
                f"model {spec.model}: not staged and the nodes are offline",
                fix=f"run: vllm-hpc stage {stage} on the login node",
            )
        return spec, None
    try:
        staged = StagedModel(
            repo_id=spec.model,
            revision=revision,
            commit=found.manifest.commit,
            path=os.path.abspath(found.path),
            files=len(found.manifest.files),
            bytes=found.manifest.total_bytes,
        )
    except ValidationError as exc:
        raise InputError(
            f"model store: the staged copy of {spec.model} is at {shown(str(found.path))}, "
            f"which cannot be served: {exc.errors()[0]['msg'].removeprefix('Value error, ')}",
            fix="use a model store whose path has only letters, digits and . _ / + @ = ~ - "
            "(--model-store, $VLLM_HPC_MODEL_STORE or the site's model_store)",
        ) from None
    return spec.model_copy(update={"model": staged.path}), staged


def _layout(
    req: SubmitRequest, name: str, spec: ModelSpec, site: SiteSpec, arch: ModelShape | None
) -> tuple[ParallelLayout, str, list[str]]:
    """Step 2: the layout, why it was chosen, and its warnings (or a LayoutError)."""
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
    names = _layout_names(req, name, spec, layout, from_cli)
    warnings = check_layout(layout, arch, names)
    return layout, reason, assumed_allocation(layout_req, layout) + warnings


def _layout_names(
    req: SubmitRequest, name: str, spec: ModelSpec, layout: ParallelLayout, from_cli: bool
) -> LayoutNames:
    """How the layout's errors name each size: the option the user set (``--tp 16``),
    the registry entry's field, else its value (vllm-hpc chose it)."""
    by_value = LayoutNames.of(layout)
    entry = f"(registry entry {name!r})"

    def named(given: int | None, flag: str, key: str, listed: int | None, value: str) -> str:
        if from_cli:
            return value if given is None else f"{flag} {given}"
        return value if listed is None else f"{key} {listed} {entry}"

    if req.ep is not None:
        ep = FLAG_NAMES["ep"]
    elif spec.enable_expert_parallel:
        ep = f"enable_expert_parallel {entry}"
    else:
        ep = by_value.ep
    return LayoutNames(
        tp=named(req.tp, FLAG_NAMES["tp"], "tensor_parallel_size", spec.tensor_parallel_size,
                 by_value.tp),
        pp=named(req.pp, FLAG_NAMES["pp"], "pipeline_parallel_size",
                 spec.pipeline_parallel_size, by_value.pp),
        dp=named(req.dp, FLAG_NAMES["dp"], "data_parallel_size", spec.data_parallel_size,
                 by_value.dp),
        ep=ep,
    )  # fmt: skip


def _memory(
    req: SubmitRequest,
    spec: ModelSpec,
    site: SiteSpec,
    arch: ModelArch | None,
    layout: ParallelLayout,
) -> float | None:
    """Step 3: the GPU memory per GPU, and (when known) that the model fits it."""
    gpu_memory_gib: float | None = _pick(req.gpu_memory_gib, site.gpu_memory_gib)
    if gpu_memory_gib is not None and not math.isfinite(gpu_memory_gib):
        raise InputError(
            f"--gpu-memory-gib: {gpu_memory_gib} is not a size",
            fix="give the GiB of one GPU, e.g. 80",
        )
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
    return gpu_memory_gib


def _container(
    req: SubmitRequest, name: str, spec: ModelSpec, registry: Registry
) -> ContainerSpec | None:
    """Step 4: the image the nodes run in (the flag, the entry, the site), if any."""
    text = _pick(req.container, spec.container, registry.site.container)
    if not text:
        return None
    try:
        return ContainerSpec.parse(text)
    except ValueError as exc:
        if req.container:
            where = "--container"
        elif spec.container:
            source = registry.sources.get(name, {}).get("container", "registry")
            where = f"{source}: models.{name}.container"
        else:
            where = f"{registry.site_sources.get('container', 'site')}: site.container"
        raise InputError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class _Ports:
    api: int
    ray: int
    dp_rpc: int


def _runtime_and_ports(
    req: SubmitRequest, spec: ModelSpec, layout: ParallelLayout, facts: tuple[str, str, bool],
    warnings: list[str],
) -> tuple[str, _Ports]:  # fmt: skip
    """Step 5: the runtime (``facts``: the nodes' Python, the vLLM target, in an image)
    and the leader's ports, checked against each other and Ray's worker range."""
    nodes_python, vllm_version, in_image = facts
    chosen = _pick(req.runtime, spec.runtime, "auto") != "auto"
    runtime = _runtime(req, spec, layout.nodes, layout.dp)
    if runtime == "ray" and not chosen and layout.dp == 1 and not in_image:
        runtime = _ray_or_native(nodes_python, vllm_version, warnings)
    picked = _Ports(
        api=_pick(req.port, DEFAULT_API_PORT),
        ray=_pick(req.ray_port, DEFAULT_RAY_PORT),
        dp_rpc=_pick(req.dp_rpc_port, DEFAULT_DP_RPC_PORT),
    )
    ports = {"--port": picked.api}
    if runtime == "ray":
        ports["--ray-port"] = picked.ray
    if runtime == "dp":
        ports["--dp-rpc-port"] = picked.dp_rpc
    if runtime == "native":
        ports["master port"] = DEFAULT_MASTER_PORT
    if req.preflight_port is not None:  # fixed: it must not clash (the default moves)
        ports["--preflight-port"] = req.preflight_port
    if req.ray_port is not None and runtime != "ray":
        raise InputError(
            f"--ray-port: the {runtime} runtime starts no Ray",
            fix="drop --ray-port, or pass --runtime ray",
        )
    check_ports(ports, ray=runtime == "ray")
    return runtime, picked


def _binds(
    req: SubmitRequest, spec: ModelSpec, container: ContainerSpec | None,
    environ: Mapping[str, str], root: str, compile_cache: CompileCache | None,
) -> tuple[str, ...]:  # fmt: skip
    """Step 6: what an Apptainer image must see: the job root, the model, the key, the
    Hugging Face cache, the compile cache (outermost directories only)."""
    if container is None:
        return ()
    from launchers.plan.argv import hf_cache_dir, outermost

    paths = [root]
    if spec.model.startswith("/"):
        paths.append(spec.model)
    if compile_cache is not None:
        paths.append(compile_cache.path)
    if req.api_key_file:
        paths.append(str(Path(req.api_key_file).expanduser().resolve()))
    paths.append(hf_cache_dir(environ))
    return tuple(outermost(paths))


def _nodes_vllm_version(
    req: SubmitRequest, site: SiteSpec, nodes_python: str, python: str, in_image: bool
) -> tuple[str | None, CompileVersionFrom, str]:
    """The vLLM version the nodes run, where it came from, and how the dry run says it:
    their Python's own, when it is this one (its package metadata, read here); else what
    ``--vllm-version`` or the site's ``vllm_version`` declares; else their Python's, asked
    in a child process (milliseconds: vLLM is not imported). Unknown in an image (its vLLM
    is the image's) or when nothing answers."""
    same = not in_image and os.path.abspath(nodes_python) == os.path.abspath(python)
    why = "the nodes run vLLM inside the image" if in_image else ""
    if same:
        here = probe.installed_here()
        if here.version:
            return here.version, "nodes", f"vLLM {here.version} of {nodes_python}"
        why = f"no vLLM installed for {nodes_python}"
    declared = req.vllm_version or site.vllm_version
    if declared:
        said = "--vllm-version" if req.vllm_version else "the site file's vllm_version"
        return declared, "declared", f"vLLM {declared}, as {said} says"
    if not in_image and not same:
        found = probe.installed_vllm(nodes_python)
        if found.version:
            return found.version, "nodes", f"vLLM {found.version} of {nodes_python}"
        why = found.error or f"no vLLM installed for {nodes_python}"
    unknown = CompileCacheDir.UNKNOWN_VERSION
    note = f"vLLM version unknown here ({why}): keyed {unknown!r}; set the site's vllm_version"
    return None, "unknown", note


def _compile_cache(
    req: SubmitRequest, spec: ModelSpec, staged: StagedModel | None, site: SiteSpec,
    environ: Mapping[str, str], root: str, facts: tuple[str, str, bool],
) -> CompileCache | None:  # fmt: skip
    """Step 6b: vLLM's compile caches on persistent storage, keyed by the nodes' vLLM
    version and the model (``jobdir.compilecache``), so the next job of the model reuses
    this one's compile. None when the user set ``VLLM_CACHE_ROOT`` (in this environment,
    the site's, the entry's or ``--env``): theirs is kept."""
    given = {**environ, **site.env, **spec.env, **req.env}
    if "VLLM_CACHE_ROOT" in given:
        return None
    nodes_python, python, in_image = facts
    version, source, note = _nodes_vllm_version(req, site, nodes_python, python, in_image)
    key = compilecache.model_key(staged.repo_id if staged is not None else spec.model)
    version_dir = compilecache.version_key(version)
    cache = compilecache.cache_root(site.compile_cache, root, environ)
    path = CompileCacheDir(os.path.abspath(cache)).model(version_dir, key)
    wanted = {"VLLM_CACHE_ROOT": path, "TORCHINDUCTOR_CACHE_DIR": CompileCacheDir.inductor(path)}
    try:
        return CompileCache(
            path=path, vllm_version=version_dir, version_from=source, version_note=note,
            model_key=key, env={k: v for k, v in wanted.items() if k not in given},
        )  # fmt: skip
    except ValidationError as exc:
        raise InputError(
            f"compile cache: {shown(path)} cannot be used: "
            f"{exc.errors()[0]['msg'].removeprefix('Value error, ')}",
            fix="set the site file's compile_cache to a path of letters, digits and "
            ". _ / + @ = ~ - (or set VLLM_CACHE_ROOT with --env)",
        ) from None


def _api_key_file(req: SubmitRequest) -> str | None:
    """Step 7: the user's key file, checked and made absolute (None: generate or none).
    Fail closed: a file that would leave vLLM serving open (empty, unreadable) or that
    others can read is refused here, before anything is planned or started."""
    if req.api_key_file is not None and req.no_api_key:
        raise InputError("--no-api-key: cannot be combined with --api-key-file", fix="drop one")
    if req.api_key_file is None:
        return None
    given = req.api_key_file
    key_path = Path(given).expanduser()
    try:
        is_regular = stat.S_ISREG(key_path.stat().st_mode)  # a FIFO would block a read
    except OSError:
        raise InputError(
            f"--api-key-file: {given} is not a file",
            fix="write the key into a file readable only by you (chmod 600)",
        ) from None
    if not is_regular:
        raise InputError(
            f"--api-key-file: {given} is not a regular file",
            fix="write the key into a regular file readable only by you (chmod 600)",
        )
    real = key_path.resolve()
    try:
        key = read_private_text(real, "--api-key-file")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InputError(
            f"--api-key-file: cannot read {given}: {why}", fix=f"chmod 600 {given}"
        ) from None
    if not key.strip():
        raise InputError(
            f"--api-key-file: {given} is empty",
            fix="write the key into it, or pass --no-api-key to serve without one",
        )
    return str(real)


def _slurm(req: SubmitRequest, site: SiteSpec) -> SlurmOptions:
    """Step 8: the SLURM options (the flags over the site file)."""
    return validated(
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


def _nodes_vllm(config: ServeConfig, in_image: bool) -> probe.VllmProbe:
    """What the nodes' vLLM says of its flags (seconds: it imports vLLM)."""
    if in_image:
        return probe.VllmProbe(error=f"the nodes run vLLM inside {config.container or 'an image'}")
    return probe.probe_vllm_flags(config.python)


def _check_vllm_args(config: ServeConfig, more: frozenset[str] = frozenset()) -> None:
    """The extra ``vllm serve`` arguments against the options of the target release
    (its shipped table, with ``more`` names the nodes' vLLM said it has); a release
    vllm-hpc has no table of is not checked."""
    if not (config.spec.extra_args or config.extra_args):
        return  # nothing to check: the table is not even read (nor its module imported)
    from launchers.input import vllm_options

    table = vllm_options.shipped_table(config.vllm_version)
    if table is None:
        return
    table = table.with_names(more)
    entry = f"models.{config.name}.extra_args"
    vllm_options.check_vllm_args(config.spec.extra_args, table, label=entry)
    vllm_options.check_vllm_args(config.extra_args, table, label="vllm serve arguments")


def _check_options_and_token_parallel(config: ServeConfig, site: SiteSpec, in_image: bool) -> None:
    """Last, since asking the nodes' vLLM imports it (seconds): every cheap check first.
    The arguments are checked against the shipped table; the nodes' vLLM is asked only
    where the plan asks it anyway (token parallelism, which only research builds have),
    and its flags then count as options too."""
    answer = None
    try:
        _check_vllm_args(config)
    except InputError:
        if not config.layout.token_parallel_size:
            raise
        answer = _nodes_vllm(config, in_image)
        if answer.error is not None:
            raise
        _check_vllm_args(config, answer.flags)
    if not config.layout.token_parallel_size:
        return
    probe.check_token_parallel(
        answer or _nodes_vllm(config, in_image),
        python=config.python,
        declared="token_parallel" in site.vllm_features,
    )


def resolve(
    req: SubmitRequest, registry: Registry, environ: Mapping[str, str], python: str
) -> ServeConfig:
    """Merge every input layer and validate the result, one step at a time (each step
    checks what it decides). Raises InputError subclasses."""
    site = registry.site
    name, spec = _model(req, registry, environ)
    spec, staged = _staged(req, spec, site, environ)
    arch = read_model_arch(spec.model)
    # The layout is checked against a local (or staged) config.json, else the entry's shape.
    layout, reason, warnings = _layout(req, name, spec, site, arch or spec.shape())
    vllm_version = _pick(req.vllm_version, site.vllm_version, DEFAULT_VLLM_VERSION)
    parse_version(vllm_version)
    gpu_memory_gib = _memory(req, spec, site, arch, layout)
    for flag, fixed in (("--port", req.port), ("--ray-port", req.ray_port),
                        ("--dp-rpc-port", req.dp_rpc_port),
                        ("--preflight-port", req.preflight_port)):  # fmt: skip
        check_port_range(flag, fixed)
    container = _container(req, name, spec, registry)
    # With enroot/pyxis the node runtime itself runs in the image.
    nodes_python = _pick(
        environ.get("VLLM_HPC_PYTHON"),
        "/usr/bin/python3" if container and container.runtime == "enroot" else python,
    )
    in_image = container is not None or req.in_image
    runtime, ports = _runtime_and_ports(
        req, spec, layout, (nodes_python, vllm_version, in_image), warnings
    )
    root = job_root(req.job_root, environ, site.job_root)
    api_key_file = _api_key_file(req)
    if req.iface is not None:
        check_iface_name(req.iface)
    for arg in req.extra_args:
        try:
            fields.plain_text(arg)
        except ValueError as exc:
            raise InputError(f"vllm serve arguments: {exc} (got {shown(arg)})") from None
    served = spec.served_model_name or (
        name if name in registry.models else name.rstrip("/").rsplit("/", 1)[-1]
    )
    values: dict[str, Any] = {
        "name": name,
        "spec": spec,
        "layout": layout,
        "layout_reason": reason,
        "warnings": tuple(warnings),
        "arch": arch,
        "runtime": runtime,
        "served_model_name": served,
        "host": _api_host(req.host),
        "dp_backend": _pick(req.dp_backend, "mp"),
        "port": ports.api,
        "port_fixed": req.port is not None if req.port_fixed is None else req.port_fixed,
        "ray_port": ports.ray,
        "ray_port_fixed": req.ray_port is not None,
        "dp_rpc_port": ports.dp_rpc,
        "api_key": "none" if req.no_api_key else ("file" if api_key_file else "generate"),
        "api_key_file": api_key_file,
        "ray_auth": not req.no_ray_auth,
        "preflight": site.preflight and not req.no_preflight,
        "preflight_port": _pick(req.preflight_port, DEFAULT_PREFLIGHT_PORT),
        "preflight_port_fixed": req.preflight_port is not None,
        "container": container,
        "container_binds": _binds(req, spec, container, environ, root, None),
        "vllm_version": vllm_version,
        "job_name": _pick(req.job_name, default_job_name(name)),
        "job_root": root,
        "python": nodes_python,
        "nccl_profile": site.nccl_profile,
        "gpu_memory_gib": gpu_memory_gib,
        "slurm": _slurm(req, site),
        "env": {**site.env, **req.env, **({"VLLM_HPC_IFACE": req.iface} if req.iface else {})},
        "extra_args": req.extra_args,
        "revision": req.revision,
        "staged": staged,
    }
    config = validated(ServeConfig, values)  # the job root (the cache's default) checked
    compile_cache = _compile_cache(
        req, spec, staged, site, environ, root, (nodes_python, python, in_image)
    )
    if compile_cache is not None:
        binds = _binds(req, spec, container, environ, root, compile_cache)
        values.update(compile_cache=compile_cache, container_binds=binds)
        config = validated(ServeConfig, values)
    check_extra_args(config)
    _check_options_and_token_parallel(config, site, in_image)
    return config
