"""A Docker Swarm stack file (``docker stack deploy``) from a ``LaunchPlan``: one
service per node role, the head (one task) and the workers (``nodes - 1`` tasks, one
per node), placed by node label, on an overlay network of their own.

Both run the image's ``bin/multi-node-serving.sh`` (the node runtime every other door
runs), reserve the node's GPUs as Swarm generic resources (``NVIDIA-GPU``, which each
node's Docker engine must advertise) and get ``/dev/shm`` as a tmpfs. No secret value
is in the file or in its environment: the Ray token (Ray runs with
``RAY_AUTH_MODE=token``) and the API key are Swarm secrets, mounted 0400 where the
wrapper reads them (``/run/secrets/ray_token``; the key as ``api_key`` of the job
directory, which the leader reads instead of writing one). The plan's secret variables
(``HF_TOKEN``...) come from ``secret.env`` beside the file, as with compose.

``docker stack deploy`` interpolates ``$VAR`` like compose: user text has its ``$``
doubled (``checks.compose_escape``), names are checked as compose's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from launchers import __version__
from launchers.defaults import RENDER_SHM_SIZE
from launchers.errors import InputError
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
from launchers.render.k8s import DEFAULT_IMAGE, dump_all, k8s_name

STACK_FILE = "stack.yaml"
SECRET_ENV_FILE = "secret.env"  # noqa: S105 - a file name, not a secret
ROLE_LABEL = "vllm-hpc.role"  # the node label that places each service
HEAD, WORKER = "head", "worker"
NETWORK = "vllm"
GPU_KIND = "NVIDIA-GPU"  # the generic resource each node's dockerd advertises
# Swarm's names (services, secrets, networks): letters, digits, '_', '-', '.'
_SWARM_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")


@dataclass(frozen=True)
class SwarmNames:
    """The stack's name and the Swarm secrets it reads (created before the deploy)."""

    stack: str
    ray_token_secret: str
    api_key_secret: str | None


def _swarm_name(flag: str, value: str) -> str:
    checks.check_text(flag, value)
    if not _SWARM_NAME.fullmatch(value):
        raise InputError(
            f"{flag}: {checks.show(value)} is not a valid Swarm name",
            fix="use at most 63 letters, digits, '_', '-' and '.', starting with a letter or digit",
        )
    return value


def names_for(
    plan: LaunchPlan,
    *,
    stack: str | None = None,
    ray_token_secret: str | None = None,
    api_key_secret: str | None = None,
) -> SwarmNames:
    """``--stack`` (default: from the job name) and the secrets (``STACK-ray-token``,
    ``STACK-api-key``; none for a plan served without a key), every one checked."""
    base = k8s_name(plan.job_name) if stack is None else checks.compose_name("--stack", stack)
    out = SwarmNames(
        stack=base,
        ray_token_secret=ray_token_secret or f"{base}-ray-token",
        api_key_secret=(api_key_secret or f"{base}-api-key") if plan.api_key_file else None,
    )
    _swarm_name("--ray-token-secret", out.ray_token_secret)
    if out.api_key_secret is not None:
        _swarm_name("--api-key-secret", out.api_key_secret)
    return out


def _secret(source: str, target: str) -> dict[str, Any]:
    return {"source": source, "target": target, "uid": "0", "gid": "0", "mode": 0o400}


def _service(plan: LaunchPlan, role: str, image: str, shm_size: str) -> dict[str, Any]:
    esc = checks.compose_escape
    if role == HEAD:
        command = build_leader_wrapper_argv(plan, model=esc(plan.name))
        replicas = 1
    else:
        # The head's tasks by name on the overlay network (endpoint_mode dnsrr: no VIP).
        address = f"{HEAD}:{wrapper_ray_port(plan)}"
        command = build_worker_wrapper_argv(plan, ray_address=address)
        replicas = plan.layout.nodes - 1
    plain, secret_names = image_env(plan)
    environment = {k: esc(v) for k, v in plain.items()}
    secrets = [_secret("ray_token", IMAGE_RAY_TOKEN.removeprefix("/run/secrets/"))]
    if role == HEAD and plan.api_key_file:
        secrets.append(_secret("api_key", f"{IMAGE_JOB_DIR}/api_key"))
    volumes: list[dict[str, Any]] = [
        {"type": "tmpfs", "target": "/dev/shm", "tmpfs": {"size": shm_size}},
        {"type": "volume", "source": "hf-cache", "target": IMAGE_HF_HOME},
    ]
    if plan.model.startswith("/"):
        path = esc(plan.model)
        volumes.append({"type": "bind", "source": path, "target": path, "read_only": True})
    service: dict[str, Any] = {
        "image": esc(image),
        "entrypoint": [command[0]],
        "command": command[1:],
        "environment": {**environment, "HF_HOME": IMAGE_HF_HOME, **image_ray_auth_env()},
    }
    if secret_names:
        service["env_file"] = [SECRET_ENV_FILE]
    service["secrets"] = secrets
    service["volumes"] = volumes
    service["ulimits"] = {"memlock": {"soft": -1, "hard": -1}}
    service["networks"] = [NETWORK]
    if role == HEAD:
        # Published on the head's node only (mode host), not through the routing mesh.
        service["ports"] = [
            {"target": plan.api_port, "published": plan.api_port, "protocol": "tcp", "mode": "host"}
        ]
        probe = (
            "import urllib.request; urllib.request.urlopen("
            f"'http://127.0.0.1:{plan.api_port}{plan.ready.health_path}', timeout=5)"
        )
        service["healthcheck"] = {
            "test": ["CMD", "python3", "-c", esc(probe)],
            "interval": "30s",
            "timeout": "10s",
            "retries": 3,
            "start_period": f"{int(plan.ready.ready_timeout)}s",
        }
    service["deploy"] = {
        "mode": "replicated",
        "replicas": replicas,
        "endpoint_mode": "dnsrr",
        "placement": {
            "constraints": [f"node.labels.{ROLE_LABEL} == {role}"],
            "max_replicas_per_node": 1,
        },
        "resources": {
            "reservations": {
                "generic_resources": [
                    {
                        "discrete_resource_spec": {
                            "kind": GPU_KIND,
                            "value": plan.layout.gpus_per_node,
                        }
                    }
                ]
            }
        },
        # A lost node ends the group (as on SLURM): the runtime does not rejoin.
        "restart_policy": {"condition": "none"},
    }
    return service


def deploy_lines(plan: LaunchPlan, names: SwarmNames, secret_names: list[str]) -> list[str]:
    """How to label the nodes, create the secrets, deploy, check and remove the stack."""
    stack = names.stack
    lines = [
        "Nodes: each advertises its GPUs (dockerd node-generic-resources NVIDIA-GPU=...)",
        "and is labelled with its role (one head, the workers):",
        f"  docker node update --label-add {ROLE_LABEL}={HEAD} HEAD_NODE",
        f"  docker node update --label-add {ROLE_LABEL}={WORKER} WORKER_NODE   # each worker",
        "Ray token (every container starts Ray with RAY_AUTH_MODE=token):",
        "  (umask 077 && openssl rand -hex 32 > ray_token) &&",
        f"  docker secret create {names.ray_token_secret} ray_token",
    ]
    if names.api_key_secret:
        lines += [
            "API key (clients send it as Authorization: Bearer KEY):",
            "  (umask 077 && openssl rand -hex 32 > api_key) &&",
            f"  docker secret create {names.api_key_secret} api_key",
        ]
    if secret_names:
        lines += [
            f"Secret environment ({', '.join(secret_names)}; the values are not here):",
            f"  NAME=VALUE lines in {SECRET_ENV_FILE} beside this file (chmod 600 "
            f"{SECRET_ENV_FILE})",
        ]
    lines += [
        "Then:",
        f"  docker stack deploy -c {STACK_FILE} {stack}",
        f"  docker stack ps {stack}",
        f"  docker service logs {stack}_{HEAD}",
        f'  curl -H "Authorization: Bearer $(cat api_key)" http://HEAD_NODE:{plan.api_port}'
        "/v1/models",
        f"  docker stack rm {stack}",
    ]
    return lines


def render_swarm(
    plan: LaunchPlan,
    *,
    image: str = DEFAULT_IMAGE,
    shm_size: str = RENDER_SHM_SIZE,
    stack: str | None = None,
    ray_token_secret: str | None = None,
    api_key_secret: str | None = None,
) -> str:
    """The stack file for ``plan``, how to deploy it in the header. Bad input:
    ``InputError`` (one line)."""
    check_host_render(plan, "render swarm", image=image, shm_size=shm_size)
    checks.url_path("health path", plan.ready.health_path)
    names = names_for(
        plan, stack=stack, ray_token_secret=ray_token_secret, api_key_secret=api_key_secret
    )
    secret_names = image_env(plan)[1]
    services = {HEAD: _service(plan, HEAD, image, shm_size)}
    if plan.layout.nodes > 1:
        services[WORKER] = _service(plan, WORKER, image, shm_size)
    secrets: dict[str, Any] = {"ray_token": {"external": True, "name": names.ray_token_secret}}
    if names.api_key_secret:
        secrets["api_key"] = {"external": True, "name": names.api_key_secret}
    doc = {
        "services": services,
        "networks": {NETWORK: {"driver": "overlay", "attachable": False}},
        "volumes": {"hf-cache": {}},
        "secrets": secrets,
    }
    header = [
        f"vllm-hpc {__version__}: Docker Swarm stack for {plan.name} ({plan.layout.describe()})",
        f"image: build containers/docker/Dockerfile (or push it) as {image}",
        *deploy_lines(plan, names, secret_names),
    ]
    return dump_all([doc], "\n".join(header) + "\n")


__all__ = ["ROLE_LABEL", "STACK_FILE", "SwarmNames", "deploy_lines", "names_for", "render_swarm"]
