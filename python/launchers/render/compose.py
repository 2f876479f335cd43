"""Docker Compose files from a ``LaunchPlan``: one for the head host, one for each worker
host, both driven by a ``.env`` beside them (``render_env_example`` writes the example).

Both run the image's ``bin/multi-node-serving.sh`` with host networking (Ray and NCCL
need the hosts' addresses and interfaces), a large ``/dev/shm``, the GPUs reserved
through ``deploy.resources.reservations.devices`` and the Hugging Face cache bound from
the host. No secret value is in any of these files:

- the API key is ``$VLLM_HPC_JOB_DIR/api_key`` on the head host (0600): the leader writes
  a new one at its first start unless the file exists;
- the Ray token: every container starts Ray with ``RAY_AUTH_MODE=token`` and reads the
  token from a compose secret, the 0600 file ``$RAY_TOKEN_FILE`` on each host (compose
  refuses to start without it);
- secret-looking variables of the plan's env (``secretenv.is_secret``: ``HF_TOKEN``...)
  come from ``secret.env``, an env file beside the compose files the user keeps 0600.

Compose interpolates ``$VAR`` in every value, so user text has its ``$`` doubled; its
``.env`` values are written so that compose reads them back exactly (``render.checks``).
"""

from __future__ import annotations

from typing import Any, Literal

from launchers import __version__
from launchers.plan.launch import LaunchPlan
from launchers.render import checks
from launchers.render.containers import (
    IMAGE_HF_HOME,
    IMAGE_JOB_DIR,
    IMAGE_RAY_TOKEN,
    build_leader_wrapper_argv,
    build_worker_wrapper_argv,
    check_host_render,
    image_env,
    image_ray_auth_env,
    wrapper_ray_port,
)
from launchers.render.k8s import DEFAULT_IMAGE, dump_all

Role = Literal["head", "worker"]
COMPOSE_FILES = {"head": "compose.head.yaml", "worker": "compose.worker.yaml"}
ENV_EXAMPLE = ".env.example"
SECRET_ENV_FILE = "secret.env"  # noqa: S105 - a file name, not a secret
# Compose mounts a secret at /run/secrets/<name>: where RAY_AUTH_TOKEN_PATH points.
RAY_TOKEN_SECRET = IMAGE_RAY_TOKEN.removeprefix("/run/secrets/")
# Compose stops with this message when .env does not name the token file.
RAY_TOKEN_SOURCE = "${RAY_TOKEN_FILE:?set RAY_TOKEN_FILE in .env to the 0600 Ray token file}"  # noqa: S105


def _service(plan: LaunchPlan, role: Role, image: str, shm_size: str, rdma: bool) -> dict[str, Any]:
    if role == "head":
        command = build_leader_wrapper_argv(plan, model="${MODEL}")
    else:
        command = build_worker_wrapper_argv(plan, ray_address="${RAY_ADDRESS}")
    volumes: list[dict[str, Any]] = [
        {
            "type": "bind",
            "source": "${HF_CACHE_DIR}",
            "target": IMAGE_HF_HOME,
            "bind": {"create_host_path": True},
        },
        {
            "type": "bind",
            "source": "${VLLM_HPC_JOB_DIR}",
            "target": IMAGE_JOB_DIR,
            "bind": {"create_host_path": True},
        },
    ]
    if plan.model.startswith("/"):
        path = checks.compose_escape(plan.model)
        volumes.append({"type": "bind", "source": path, "target": path, "read_only": True})
    plain, secret_names = image_env(plan)
    environment = {k: checks.compose_escape(v) for k, v in plain.items()}
    service: dict[str, Any] = {
        "image": checks.compose_escape(image),
        "entrypoint": [command[0]],
        "command": command[1:],
        "network_mode": "host",
        "shm_size": shm_size,
        "ulimits": {"memlock": {"soft": -1, "hard": -1}},
        "env_file": [".env", *([SECRET_ENV_FILE] if secret_names else [])],
        "environment": {**environment, "HF_HOME": IMAGE_HF_HOME, **image_ray_auth_env()},
        # mounted at /run/secrets/ray_token (IMAGE_RAY_TOKEN)
        "secrets": [RAY_TOKEN_SECRET],
        "volumes": volumes,
        "deploy": {
            "resources": {
                "reservations": {
                    "devices": [
                        {
                            "driver": "nvidia",
                            "count": plan.layout.gpus_per_node,
                            "capabilities": ["gpu"],
                        }
                    ]
                }
            }
        },
        "restart": "no",
    }
    if rdma:
        service["devices"] = ["/dev/infiniband:/dev/infiniband"]
        service["cap_add"] = ["IPC_LOCK"]
    if role == "head":
        probe = (
            "import urllib.request; urllib.request.urlopen("
            f"'http://127.0.0.1:{plan.api_port}{plan.ready.health_path}', timeout=5)"
        )
        probe = checks.compose_escape(probe)
        service["healthcheck"] = {
            "test": ["CMD", "python3", "-c", probe],
            "interval": "30s",
            "timeout": "10s",
            "retries": 3,
            "start_period": f"{int(plan.ready.ready_timeout)}s",
        }
    return service


def render_compose(
    plan: LaunchPlan,
    role: Role,
    *,
    image: str = DEFAULT_IMAGE,
    shm_size: str = "16gb",
    rdma: bool = True,
) -> str:
    """The compose file for the head host or a worker host. ``rdma`` passes the
    InfiniBand/RoCE devices in (hosts without ``/dev/infiniband``: ``rdma=False``)."""
    check_host_render(plan, "render compose", image=image, shm_size=shm_size)
    checks.dotenv_value("model", plan.name)
    checks.url_path("health path", plan.ready.health_path)
    name = "vllm-head" if role == "head" else "vllm-worker"
    header = (
        f"vllm-hpc {__version__}: {role} host for {plan.name} ({plan.layout.describe()})\n"
        f"Settings in .env beside this file (from {ENV_EXAMPLE}); then:\n"
        f"  docker compose -f {COMPOSE_FILES[role]} up -d\n"
        "Ray token auth (RAY_AUTH_MODE=token): the token is the file RAY_TOKEN_FILE names\n"
        "in .env, the same 0600 file on every host (see .env.example).\n"
    )
    secret_names = secret_env_names(plan)
    if secret_names:
        header += (
            f"Secret environment ({', '.join(secret_names)}; the values are not here):\n"
            f"  NAME='VALUE' lines in {SECRET_ENV_FILE} beside this file "
            f"(chmod 600 {SECRET_ENV_FILE})\n"
        )
    if role == "worker":
        workers = plan.layout.nodes - 1
        header += (
            f"Start it on each of the {workers} worker host(s).\n"
            if workers
            else "Not needed: the plan has one node.\n"
        )
    doc = {
        "name": checks.compose_name("project", f"vllm-hpc-{role}"),
        "services": {
            checks.compose_name("service", name): _service(plan, role, image, shm_size, rdma)
        },
        "secrets": {RAY_TOKEN_SECRET: {"file": RAY_TOKEN_SOURCE}},
    }
    return dump_all([doc], header)


def secret_env_names(plan: LaunchPlan) -> list[str]:
    """The plan's secret variables, which the files read from ``secret.env``."""
    return image_env(plan)[1]


def render_env_example(plan: LaunchPlan) -> str:
    """``.env.example``: the per-host settings the compose files read. No secrets."""
    checks.check_model_text("model", plan.name)
    ray_port = wrapper_ray_port(plan)
    lines = [
        f"# vllm-hpc {__version__}: settings for {plan.name} with docker compose.",
        "# Copy to .env beside the compose files on every host and edit. No secrets here:",
        "# the API key lives in the file ${VLLM_HPC_JOB_DIR}/api_key (0600) on the head,",
        "# the Ray token in the file RAY_TOKEN_FILE names.",
        "",
        "# This host's address on the fast network (InfiniBand/RoCE); differs per host.",
        "VLLM_HOST_IP=172.17.1.1",
        "# The head's Ray address, the same on every host.",
        f"RAY_ADDRESS=172.17.1.1:{ray_port}",
        "# The fast interface and, with RDMA, its HCA (`ip -br addr`, `ibdev2netdev`).",
        "NCCL_SOCKET_IFNAME=ib0",
        "GLOO_SOCKET_IFNAME=ib0",
        "TP_SOCKET_IFNAME=ib0",
        "NCCL_IB_HCA=mlx5_0",
        "# What the head serves: a registry id, a Hugging Face id or a path bound in.",
        f"MODEL={checks.dotenv_value('model', plan.name)}",
        "# Hugging Face cache on this host, shared by the containers.",
        "HF_CACHE_DIR=/var/cache/huggingface",
        "# Logs, rendezvous and the API key file (api_key, 0600; written by the head at",
        "# its first start unless present). Clients: Authorization: Bearer $(cat FILE).",
        "VLLM_HPC_JOB_DIR=./job",
        "# The Ray token (Ray runs with RAY_AUTH_MODE=token), the same on every host. Make",
        "# it once on the head: (umask 077 && openssl rand -hex 32 > ray_token)",
        "# and copy it to each worker host (scp -p ray_token HOST:DIR/); keep it 0600.",
        "RAY_TOKEN_FILE=./ray_token",
        "",
    ]
    return "\n".join(lines)


def render_compose_files(
    plan: LaunchPlan, *, image: str = DEFAULT_IMAGE, shm_size: str = "16gb", rdma: bool = True
) -> dict[str, str]:
    """File name -> text: both compose files and ``.env.example``."""
    out = {
        COMPOSE_FILES[role]: render_compose(plan, role, image=image, shm_size=shm_size, rdma=rdma)
        for role in ("head", "worker")
    }
    out[ENV_EXAMPLE] = render_env_example(plan)
    return out


__all__ = [
    "COMPOSE_FILES",
    "ENV_EXAMPLE",
    "SECRET_ENV_FILE",
    "render_compose",
    "render_compose_files",
    "render_env_example",
    "secret_env_names",
]
