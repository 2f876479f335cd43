"""Images that carry vllm-hpc (Kubernetes, compose): the image's paths and the wrapper's
argv and environment inside it. Wrapping a node's processes in Apptainer/Singularity
and the pyxis options of a step are what a node executes: ``plan.argv``."""

from __future__ import annotations

from launchers.defaults import DEFAULT_RAY_PORT, DEFAULT_VLLM_VERSION
from launchers.plan.launch import LaunchPlan
from launchers.render import checks
from launchers.spec.secretenv import split

# The official vLLM OpenAI image the shipped definition files build on: the default target
# (the files in containers/ name it; a unit test keeps them in step).
VLLM_BASE_IMAGE = f"vllm/vllm-openai:v{DEFAULT_VLLM_VERSION}"
# Where containers/apptainer/vllm.def and containers/docker/Dockerfile put the repo.
IMAGE_ROOT = "/opt/vllm-hpc"
IMAGE_WRAPPER = f"{IMAGE_ROOT}/bin/multi-node-serving.sh"

# --- the wrapper inside an image (Kubernetes, compose) -----------------------------

IMAGE_JOB_DIR = "/var/lib/vllm-hpc/job"
IMAGE_RAY_TEMP = "/tmp/ray"
IMAGE_HF_HOME = "/root/.cache/huggingface"
# Where a Kubernetes Secret or a compose secret puts the Ray token (0400/0600).
IMAGE_RAY_TOKEN = "/run/secrets/ray_token"  # noqa: S105 - a path, not a secret


def image_ray_auth_env() -> dict[str, str]:
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


def check_host_render(plan: LaunchPlan, what: str, *, image: str, shm_size: str) -> None:
    """What the renders that run the image on Docker hosts (``compose``, ``swarm``,
    ``ray-cluster``) check before writing: the runtime, the plan's model text, and
    ``--image`` and ``--shm-size`` (a Docker size)."""
    check_wrapper_plan(plan, what)
    checks.check_model_text("model", plan.name)
    checks.check_text("model path", plan.model)
    checks.image("--image", image)
    checks.docker_size("--shm-size", shm_size)


def _job_dir_args(job_dir: str | None) -> list[str]:
    return [] if job_dir is None else [f"--job-dir={job_dir}"]


def wrapper_preflight_port(plan: LaunchPlan) -> int | None:
    """The port where the image's wrappers meet for the pre-flight (fixed: each node
    plans on its own, so the wrapper never moves it), or None: no pre-flight (one node,
    or ``--no-preflight``). A port that is also the API's or Ray's is refused here, as
    the wrapper would refuse it on the node (a default one moves only under SLURM)."""
    if plan.preflight is None:
        return None
    port = plan.preflight.port
    taken = {plan.api_port: "API port (--port)", wrapper_ray_port(plan): "Ray port (--ray-port)"}
    if port in taken:
        from launchers.errors import InputError

        raise InputError(
            f"--preflight-port: the pre-flight's port {port} is also the {taken[port]}; "
            "the image's wrapper never moves it",
            fix="pass --preflight-port with another port, or --no-preflight",
        )
    return port


def wrapper_preflight_args(plan: LaunchPlan) -> list[str]:
    """The plan's pre-flight as the wrapper's options: ``--preflight-port=N`` on every
    node, ``--no-preflight`` on every node of a plan that turned it off, nothing for
    one node (the wrapper checks nothing there)."""
    port = wrapper_preflight_port(plan)
    if port is not None:
        return [f"--preflight-port={port}"]
    return ["--no-preflight"] if plan.layout.nodes > 1 else []


def build_leader_wrapper_argv(
    plan: LaunchPlan,
    *,
    model: str | None = None,
    wrapper: str = IMAGE_WRAPPER,
    job_dir: str | None = IMAGE_JOB_DIR,
    ray_args: tuple[str, ...] = (),
) -> list[str]:
    """``multi-node-serving.sh leader ...`` for ``plan`` inside an image: the Ray head for
    ``layout.nodes`` nodes, then ``vllm serve`` of the model (resolved by the registry
    in the image, as on SLURM). ``model`` replaces the plan's name (e.g. ``${MODEL}``);
    ``wrapper`` is the script's path, ``job_dir`` its ``--job-dir`` (None: a new
    directory under the job root each start), ``ray_args`` more ``ray start`` options."""
    return [
        wrapper,
        "leader",
        f"--ray_cluster_size={plan.layout.nodes}",
        f"--ray_port={wrapper_ray_port(plan)}",
        f"--num-gpus={plan.layout.gpus_per_node}",
        f"--temp-dir={IMAGE_RAY_TEMP}",
        *_job_dir_args(job_dir),
        f"--nodes-timeout={plan.ready.nodes_timeout:g}",
        *wrapper_preflight_args(plan),
        f"--model={model or plan.name}",
        f"--port={plan.api_port}",
        *(["--ray-args", *ray_args] if ray_args else []),
    ]


def build_worker_wrapper_argv(
    plan: LaunchPlan,
    *,
    ray_address: str,
    wrapper: str = IMAGE_WRAPPER,
    job_dir: str | None = IMAGE_JOB_DIR,
) -> list[str]:
    """``multi-node-serving.sh worker ...`` joining the leader at ``ray_address`` (and
    meeting its pre-flight on that host)."""
    return [
        wrapper,
        "worker",
        f"--ray_address={ray_address}",
        f"--ray_port={wrapper_ray_port(plan)}",
        f"--num-gpus={plan.layout.gpus_per_node}",
        f"--temp-dir={IMAGE_RAY_TEMP}",
        *_job_dir_args(job_dir),
        f"--nodes-timeout={plan.ready.nodes_timeout:g}",
        *wrapper_preflight_args(plan),
    ]


# Set by the renders themselves (Ray auth) or by the leader (the key from its file).
RENDER_OWNED_ENV = frozenset(
    {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN", "VLLM_API_KEY"}
)


def image_env(plan: LaunchPlan) -> tuple[dict[str, str], list[str]]:
    """The plan's environment for a rendered image deployment: ``(plain, secret_names)``,
    each sorted. Plain values are written into the file; a secret's value never is, only
    its name (the file reads it from a Kubernetes Secret or a 0600 env file). Every name
    and value is checked; a name the render sets itself is refused. The compile cache's
    variables are left out: they name a path of the SLURM nodes' shared storage."""
    from launchers.errors import InputError

    cache = plan.compile_cache.env if plan.compile_cache is not None else {}
    env = checks.env_entries({k: v for k, v in plan.env.items() if k not in cache})
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
