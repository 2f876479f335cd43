"""What a node executes, as pure functions the dry run and the node runtime share: the
argv of one of the plan's typed starts with its placeholders filled (``process_argv``),
the container wrapping of that argv and its environment, the binds a plan needs, and
the ``srun`` of the batch script's one step (``step_argv``).

Container runtimes on SLURM nodes come in two kinds, and they work at different levels:

- **Apptainer / Singularity** wrap *one command on a node*: ``wrap_argv`` turns
  ``ray start ...`` or ``vllm serve ...`` into
  ``apptainer exec --nv --cleanenv --bind SRC:DST ... IMAGE ray start ...``: a line
  the plan knows whole, so the dry run shows it as the node runs it (``render.nodes``).
  The node runtime (``vllm-hpc node run``) runs on the host and starts each process through
  it, so the container sees exactly the environment the runtime computed:
  ``--cleanenv`` drops the host's environment (a host ``PYTHONPATH`` or module
  ``LD_LIBRARY_PATH`` would break the image), and what the runtime computed is passed
  back in through the child's ``APPTAINERENV_K`` (``SINGULARITYENV_K``) variables
  (``wrap_env``), which Apptainer injects even with ``--cleanenv``. None of it is on the
  command line: the node's own variables (``SLURM_*``, its addresses) are not known
  before the job, secrets never show in ``ps``, and a value with a comma needs no CSV
  quoting (Apptainer parses ``--env K=V`` lists as CSV).
  Host networking is Apptainer's default (no ``--net``); ``--nv`` brings the GPUs and
  the driver libraries in.
- **enroot / pyxis** wraps *the whole job step*: pyxis is a SLURM SPANK plugin, so the
  container options belong to ``srun`` (``srun --container-image=IMAGE
  --container-mounts=SRC:DST,... --container-workdir=DIR python -m launchers node run ...``)
  and the node runtime itself runs inside the image. ``build_srun_container_options``
  returns those options for the sbatch renderer. The task's environment passes into
  the container (pyxis' default), so nothing is wrapped per process.

``required_binds`` says which host paths a plan needs inside the container.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath

from launchers.plan.commands import RayStart, ServeStart
from launchers.plan.launch import LaunchPlan, fill_known
from launchers.spec.config import ContainerSpec

APPTAINER_RUNTIMES = ("apptainer", "singularity")
# Characters a bind spec would misread (Apptainer and pyxis separate binds with them).
_BIND_UNSAFE = re.compile(r"[,:\n\r]")
# Host variables a node process needs inside a --cleanenv container, besides what the
# runtime computed: SLURM's view of the job and the GPUs it was given, and the caches.
PASSTHROUGH_NAMES = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "OMP_NUM_THREADS",
        "TMPDIR",
        "HOME",
        "USER",
        "TZ",
        "LANG",
    }
)
PASSTHROUGH_PREFIXES = (
    "SLURM_",
    "NCCL_",
    "GLOO_",
    "TP_SOCKET_",
    "VLLM_",
    "RAY_",
    "UCX_",
)


def env_prefix(container: ContainerSpec) -> str:
    """The prefix whose variables Apptainer/Singularity inject into the container."""
    if container.runtime not in APPTAINER_RUNTIMES:
        raise ValueError(f"{container.runtime} containers are not wrapped per process")
    return "SINGULARITYENV_" if container.runtime == "singularity" else "APPTAINERENV_"


def container_env(environ: Mapping[str, str], computed: Mapping[str, str]) -> dict[str, str]:
    """What a ``--cleanenv`` container should see: the host variables a node process
    needs (``PASSTHROUGH_*``) with the runtime's computed environment on top."""
    out = {
        key: value
        for key, value in environ.items()
        if key in PASSTHROUGH_NAMES or key.startswith(PASSTHROUGH_PREFIXES)
    }
    out.update(computed)
    return dict(sorted(out.items()))


def bind_spec(bind: str) -> str:
    """``SRC`` or ``SRC:DST`` -> ``SRC:DST`` (same path inside when DST is missing)."""
    src, sep, dst = bind.partition(":")
    dst = dst if sep else src
    for path in (src, dst):
        if not PurePosixPath(path).is_absolute() or _BIND_UNSAFE.search(path):
            raise ValueError(
                f"bind {bind!r}: paths must be absolute and free of ',' and ':' "
                "(Apptainer and pyxis separate binds with them)"
            )
    return f"{src}:{dst}"


def wrap_argv(
    container: ContainerSpec,
    argv: Sequence[str],
    *,
    binds: Sequence[str],
    workdir: str | None = None,
) -> list[str]:
    """Apptainer/Singularity: the argv that runs ``argv`` in ``container`` with the host
    paths ``binds`` (``SRC[:DST]``) inside. Its environment is ``wrap_env``'s."""
    env_prefix(container)  # enroot is refused: it wraps the step, not each process
    out = [container.runtime, "exec", "--nv", "--cleanenv"]
    for bind in _unique(bind_spec(b) for b in binds):
        out += ["--bind", bind]
    if workdir is not None:
        out += ["--pwd", workdir]
    return [*out, container.image, *argv]


def wrap_env(container: ContainerSpec, env: Mapping[str, str]) -> dict[str, str]:
    """The variables to add to the environment of the ``apptainer`` process so that the
    command inside sees ``env`` (see ``container_env``): each as ``APPTAINERENV_K``."""
    prefix = env_prefix(container)
    return {prefix + key: value for key, value in sorted(env.items())}


def in_image(
    container: ContainerSpec | None, binds: Sequence[str], argv: Sequence[str]
) -> list[str]:
    """``argv`` as a node starts it: in the Apptainer/Singularity image, or as it is
    (no image, or enroot/pyxis, whose ``srun`` runs the node runtime in the image)."""
    if container is None or container.runtime not in APPTAINER_RUNTIMES:
        return list(argv)
    return wrap_argv(container, argv, binds=binds)


def build_srun_container_options(
    container: ContainerSpec, *, binds: Sequence[str], workdir: str | None = None
) -> list[str]:
    """enroot/pyxis: the ``srun`` options that run the job step in ``container``.
    The image is an enroot/pyxis image reference (``vllm/vllm-openai:TAG``,
    ``nvcr.io#nvidia/...``) or a squashfs file from ``enroot import``."""
    if container.runtime != "enroot":
        raise ValueError(f"{container.runtime} containers wrap each process: use wrap_argv")
    out = [f"--container-image={container.image}"]
    mounts = _unique(bind_spec(b) for b in binds)
    if mounts:
        out.append(f"--container-mounts={','.join(mounts)}")
    if workdir is not None:
        out.append(f"--container-workdir={workdir}")
    return out


def hf_cache_dir(environ: Mapping[str, str]) -> str:
    """The Hugging Face cache of the user: ``$HF_HOME`` or ``~/.cache/huggingface``."""
    if environ.get("HF_HOME"):
        return environ["HF_HOME"]
    home = environ.get("HOME") or "/root"
    return f"{home}/.cache/huggingface"


def required_binds(plan: LaunchPlan, environ: Mapping[str, str]) -> list[str]:
    """Host paths the plan reads or writes, each bound at the same path inside: the
    model directory (when the model is a local path), the job root (plan, rendezvous,
    logs, API key), a key file outside it, and the Hugging Face cache."""
    paths = [plan.paths.root]
    if plan.model.startswith("/"):
        paths.append(plan.model)
    if plan.api_key_file and not plan.generate_api_key:
        paths.append(plan.api_key_file)
    paths.append(hf_cache_dir(environ))
    return outermost(paths)


def outermost(paths: Iterable[str]) -> list[str]:
    """Drop duplicates and paths inside another one; keep the first order."""
    clean = [str(PurePosixPath(p)) for p in paths]
    out: list[str] = []
    for path in clean:
        inside = any(
            PurePosixPath(path) != PurePosixPath(other)
            and PurePosixPath(path).is_relative_to(other)
            for other in clean
        )
        if not inside and path not in out:
            out.append(path)
    return out


def _unique(items: Iterable[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


# The srun options of the one step that starts the node runtime on every node.
SRUN_STEP_OPTIONS = ("--ntasks-per-node=1", "--kill-on-bad-exit=1")


def process_argv(
    start: RayStart | ServeStart,
    values: Mapping[str, str],
    container: ContainerSpec | None,
    binds: Sequence[str],
) -> list[str]:
    """The argv a node runs for ``start``: its placeholders that ``values`` has filled in
    (the others stay), in the Apptainer/Singularity image when there is one."""
    return in_image(container, binds, fill_known(start.argv(), values))


def pyxis_options(plan: LaunchPlan) -> list[str]:
    """enroot/pyxis: the srun options that run the whole step (the node runtime) in the
    image; none for other plans."""
    if plan.container is None or plan.container.runtime != "enroot":
        return []
    return build_srun_container_options(
        plan.container, binds=plan.container_binds, workdir=plan.paths.root
    )


def step_argv(plan: LaunchPlan) -> list[str]:
    """The ``srun`` the batch script runs: the node runtime once on every node."""
    return [
        "srun",
        f"--nodes={plan.layout.nodes}",
        *SRUN_STEP_OPTIONS,
        *pyxis_options(plan),
        *plan.node_argv,
    ]
