"""Container runtimes on SLURM nodes: the exact argv and environment, as pure functions.

Two kinds, and they work at different levels:

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

from launchers.defaults import DEFAULT_RAY_PORT, DEFAULT_VLLM_VERSION
from launchers.plan.launch import LaunchPlan
from launchers.spec.config import ContainerSpec
from launchers.spec.secretenv import split

# The official vLLM OpenAI image the shipped definition files build on: the default target
# (the files in containers/ name it; a unit test keeps them in step).
VLLM_BASE_IMAGE = f"vllm/vllm-openai:v{DEFAULT_VLLM_VERSION}"
# Where containers/apptainer/vllm.def and containers/docker/Dockerfile put the repo.
IMAGE_ROOT = "/opt/vllm-hpc"
IMAGE_WRAPPER = f"{IMAGE_ROOT}/bin/multi-node-serving.sh"

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


# --- the wrapper inside an image (Kubernetes, compose) -----------------------------

IMAGE_JOB_DIR = "/var/lib/vllm-hpc/job"
IMAGE_RAY_TEMP = "/tmp/ray"
IMAGE_HF_HOME = "/root/.cache/huggingface"
# Where a Kubernetes Secret or a compose secret puts the Ray token (0400/0600).
IMAGE_RAY_TOKEN = "/run/secrets/ray_token"  # noqa: S105 - a path, not a secret


def ray_auth_env() -> dict[str, str]:
    """Ray token authentication in an image (the names the SLURM path uses): every
    ``ray start``, every Ray client and ``vllm serve`` read the token from the file."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": IMAGE_RAY_TOKEN}


def wrapper_ray_port(plan: LaunchPlan) -> int:
    """The image's wrapper starts a Ray head even for one node: the plan's port, or the
    default when the plan has no Ray."""
    return DEFAULT_RAY_PORT if plan.ray_port is None else plan.ray_port


def check_wrapper_plan(plan: LaunchPlan, what: str) -> None:
    """Images run ``bin/multi-node-serving.sh``, which joins nodes with Ray."""
    if plan.runtime not in ("ray", "single"):
        from launchers.errors import InputError

        raise InputError(
            f"{what}: the {plan.runtime} runtime is not supported (the image's wrapper "
            "joins nodes over Ray)",
            fix="use --runtime ray, or submit it to SLURM",
        )


def build_leader_wrapper_argv(plan: LaunchPlan, *, model: str | None = None) -> list[str]:
    """``multi-node-serving.sh leader ...`` for ``plan`` inside an image: the Ray head for
    ``layout.nodes`` nodes, then ``vllm serve`` of the model (resolved by the registry
    in the image, as on SLURM). ``model`` replaces the plan's name (e.g. ``${MODEL}``)."""
    return [
        IMAGE_WRAPPER,
        "leader",
        f"--ray_cluster_size={plan.layout.nodes}",
        f"--ray_port={wrapper_ray_port(plan)}",
        f"--num-gpus={plan.layout.gpus_per_node}",
        f"--temp-dir={IMAGE_RAY_TEMP}",
        f"--job-dir={IMAGE_JOB_DIR}",
        f"--nodes-timeout={plan.ready.nodes_timeout:g}",
        f"--model={model or plan.name}",
        f"--port={plan.api_port}",
    ]


def build_worker_wrapper_argv(plan: LaunchPlan, *, ray_address: str) -> list[str]:
    """``multi-node-serving.sh worker ...`` joining the leader at ``ray_address``."""
    return [
        IMAGE_WRAPPER,
        "worker",
        f"--ray_address={ray_address}",
        f"--ray_port={wrapper_ray_port(plan)}",
        f"--num-gpus={plan.layout.gpus_per_node}",
        f"--temp-dir={IMAGE_RAY_TEMP}",
        f"--job-dir={IMAGE_JOB_DIR}",
        f"--nodes-timeout={plan.ready.nodes_timeout:g}",
    ]


# Set by the renders themselves (Ray auth) or by the leader (the key from its file).
RENDER_OWNED_ENV = frozenset(
    {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "VLLM_API_KEY"}
)


def image_env(plan: LaunchPlan) -> tuple[dict[str, str], list[str]]:
    """The plan's environment for a rendered image deployment: ``(plain, secret_names)``,
    each sorted. Plain values are written into the file; a secret's value never is, only
    its name (the file reads it from a Kubernetes Secret or a 0600 env file). Every name
    and value is checked; a name the render sets itself is refused."""
    from launchers.errors import InputError
    from launchers.render.safe import env_entries

    env = env_entries(dict(plan.env))
    owned = sorted(RENDER_OWNED_ENV & env.keys())
    if owned:
        raise InputError(
            f"env {owned[0]}: is set by vllm-hpc in containers (Ray token auth and the "
            "API key come from Secrets or 0600 files)",
            fix=f"drop {owned[0]} from the registry or site env",
        )
    plain, secret = split(env)
    # The plan keeps secret values out of its env (names in secret_env): both are secret.
    return plain, sorted({*secret, *plan.secret_env})
