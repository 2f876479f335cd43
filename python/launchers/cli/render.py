"""``vllm-hpc render k8s``, ``compose``, ``ray-cluster`` and ``swarm``.

They take exactly the options of ``submit`` (``cli/options.py``) and plan the same way;
``cli/__init__.py`` registers them under its ``render`` group and maps their errors to
exit codes. Renderers are imported when a command runs (``--help`` stays fast).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from launchers.cli.options import RequestCommand, plan_of, request_options
from launchers.cli.output import write_file
from launchers.cli.plan import sealed
from launchers.defaults import (
    RAY_CLUSTER_PROVIDER,
    RAY_CLUSTER_SSH_USER,
    RENDER_HF_CACHE_DIR,
    RENDER_JOB_ROOT,
    RENDER_SHM_SIZE,
)
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.plan.launch import LaunchPlan

DEFAULT_IMAGE_HELP = "Image with vllm-hpc (containers/docker/Dockerfile); default vllm-hpc:VERSION."
RDMA_HELP = "Pass /dev/infiniband and IPC_LOCK in (InfiniBand/RoCE hosts)."


def _write(path: Path, text: str, flag: str) -> None:
    write_file(flag, str(path), text)
    click.echo(f"wrote {path}", err=True)


def _mkdir(path: Path, flag: str) -> None:
    from launchers.errors import InputError

    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{flag}: cannot create {path}: {exc.strerror}",
            fix="choose a writable path",
        ) from None


@dataclass(frozen=True)
class HostImage:
    """The options of the renders that run the image on hosts (``compose``,
    ``ray-cluster``, ``swarm``): the image (the default filled in), ``/dev/shm`` and
    whether the RDMA devices go in (``swarm`` has no ``--rdma``: True, unused)."""

    image: str
    shm_size: str
    rdma: bool = True


def host_image_options(*, rdma: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--image``, ``--shm-size`` and (``rdma``) ``--rdma/--no-rdma`` to a render
    command, in that order where the decorator stands; the command receives them as one
    ``host: HostImage``. The renderer checks the values (``checks.image``,
    ``checks.docker_size``), as it does for a caller of the library."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def command(*, image: str | None, shm_size: str, **kwargs: Any) -> Any:
            from launchers.render.k8s import DEFAULT_IMAGE

            host = HostImage(
                image=image or DEFAULT_IMAGE,
                shm_size=shm_size,
                rdma=kwargs.pop("rdma") if rdma else True,
            )
            return func(host=host, **kwargs)

        options = [
            click.option("--image", help=DEFAULT_IMAGE_HELP),
            click.option(
                "--shm-size", default=RENDER_SHM_SIZE, show_default=True, help="/dev/shm size."
            ),
        ]
        if rdma:
            options.append(
                click.option("--rdma/--no-rdma", default=True, show_default=True, help=RDMA_HELP)
            )
        for option in reversed(options):
            command = option(command)
        return command

    return decorate


def image_plan(request: SubmitRequest) -> LaunchPlan:
    """The plan of ``request`` for nodes that run the vllm-hpc image (as ``submit``
    plans, in the image)."""
    return plan_of(request.model_copy(update={"in_image": True}))


def _emit(text: str, output: str | None) -> None:
    if output:
        _write(Path(output), text, "--output")
    else:
        click.echo(text, nl=False)


@click.command("k8s", cls=RequestCommand, heading="Kubernetes", model_argument=True)
@request_options
@click.option(
    "--kind",
    type=click.Choice(["lws", "statefulset"]),
    default="lws",
    show_default=True,
    help="A LeaderWorkerSet (needs the LWS controller) or a StatefulSet + headless Service.",
)
@click.option("--image", help=DEFAULT_IMAGE_HELP)
@click.option("--namespace", default="default", show_default=True)
@click.option("--name", "k8s_name", help="Object names (default: the job name).")
@click.option("--shm-size", default="16Gi", show_default=True, help="/dev/shm (memory).")
@click.option("--cache-pvc", help="Existing PVC for the Hugging Face cache.")
@click.option("--cache-size", default="200Gi", show_default=True, help="Size of a new cache PVC.")
@click.option("--api-key-secret", help="Secret with the key 'api_key' (default: NAME-api-key).")
@click.option(
    "--ray-token-secret", help="Secret with the key 'ray_token' (default: NAME-ray-token)."
)
@click.option(
    "--env-secret",
    help="Secret with the plan's secret variables (HF_TOKEN...; default: NAME-env).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def k8s_cmd(
    kind: str,
    image: str | None,
    namespace: str,
    k8s_name: str | None,
    shm_size: str,
    cache_pvc: str | None,
    cache_size: str,
    api_key_secret: str | None,
    ray_token_secret: str | None,
    env_secret: str | None,
    output: str | None,
    request: SubmitRequest,
) -> None:
    """Kubernetes manifests for a deployment (same options as `submit`)."""
    from launchers.render.k8s import DEFAULT_IMAGE, names_for, render_k8s

    plan = image_plan(request)
    text = render_k8s(
        plan,
        kind="statefulset" if kind == "statefulset" else "lws",
        image=image or DEFAULT_IMAGE,
        namespace=namespace,
        name=k8s_name,
        shm_size=shm_size,
        cache_pvc=cache_pvc,
        cache_size=cache_size,
        api_key_secret=api_key_secret,
        ray_token_secret=ray_token_secret,
        env_secret=env_secret,
    )
    names = names_for(plan, namespace=namespace, name=k8s_name, env_secret=env_secret)
    if names.env_secret:
        click.echo(
            f"secret env {', '.join(names.env_secret_names)}: read from Secret "
            f"{names.env_secret} (secretKeyRef), values not written; the header says "
            "how to create it",
            err=True,
        )
    _emit(text, output)


@click.command("compose", cls=RequestCommand, heading="Compose", model_argument=True)
@request_options
@host_image_options(rdma=True)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False),
    help="Write compose.head.yaml, compose.worker.yaml and .env.example here.",
)
def compose_cmd(output_dir: str | None, host: HostImage, request: SubmitRequest) -> None:
    """Docker compose files for a head and a worker host (same options as `submit`)."""
    from launchers.render.compose import (
        SECRET_ENV_FILE,
        render_compose_files,
        secret_env_names,
    )

    plan = image_plan(request)
    files = render_compose_files(plan, image=host.image, shm_size=host.shm_size, rdma=host.rdma)
    secret_names = secret_env_names(plan)
    if secret_names:
        click.echo(
            f"secret env {', '.join(secret_names)}: read from {SECRET_ENV_FILE} beside "
            f"the compose files (keep it 0600), values not written",
            err=True,
        )
    if output_dir:
        root = Path(output_dir)
        _mkdir(root, "--output-dir")
        for name, text in files.items():
            _write(root / name, text, "--output-dir")
        return
    for name, text in files.items():
        click.echo(f"# ==> {name} <==")
        click.echo(text, nl=False)


@click.command("ray-cluster", cls=RequestCommand, heading="Ray cluster", model_argument=True)
@request_options
@click.option(
    "--provider",
    type=click.Choice(["local", "aws", "gcp"]),
    default=RAY_CLUSTER_PROVIDER,
    show_default=True,
    help="Where the nodes are: your hosts over SSH (local), or made on AWS or GCP.",
)
@click.option("--head-ip", help="local: the head node's address.")
@click.option("--worker-ips", help="local: the workers' addresses, comma-separated.")
@click.option("--ssh-user", default=RAY_CLUSTER_SSH_USER, show_default=True)
@click.option("--ssh-private-key", help="The SSH key ray up logs in with.")
@click.option("--region", help="aws/gcp: the region (default us-west-2 / us-central1).")
@click.option("--zone", help="gcp: the zone (default us-central1-a).")
@click.option("--project-id", help="gcp: the project.")
@click.option("--instance-type", help="aws/gcp: every node's type (default: by GPUs per node).")
@host_image_options(rdma=True)
@click.option("--hf-cache-dir", default=RENDER_HF_CACHE_DIR, show_default=True)
@click.option("--job-root-dir", default=RENDER_JOB_ROOT, show_default=True)
@click.option("--name", "cluster_name", help="The Ray cluster's name (default: the job name).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def ray_cluster_cmd(
    provider: str,
    head_ip: str | None,
    worker_ips: str | None,
    ssh_user: str,
    ssh_private_key: str | None,
    region: str | None,
    zone: str | None,
    project_id: str | None,
    instance_type: str | None,
    hf_cache_dir: str,
    job_root_dir: str,
    cluster_name: str | None,
    output: str | None,
    host: HostImage,
    request: SubmitRequest,
) -> None:
    """A Ray cluster launcher file for `ray up` (same options as `submit`)."""
    from launchers.render.ray_cluster import RayClusterOptions, render_ray_cluster

    plan = image_plan(request)
    ips = tuple(ip.strip() for ip in worker_ips.split(",")) if worker_ips else ()
    options = RayClusterOptions(
        provider="aws" if provider == "aws" else "gcp" if provider == "gcp" else "local",
        head_ip=head_ip,
        worker_ips=ips,
        ssh_user=ssh_user,
        ssh_private_key=ssh_private_key,
        region=region,
        zone=zone,
        project_id=project_id,
        instance_type=instance_type,
        image=host.image,
        shm_size=host.shm_size,
        rdma=host.rdma,
        hf_cache_dir=hf_cache_dir,
        job_root=job_root_dir,
    )
    _emit(render_ray_cluster(plan, options, name=cluster_name), output)


@click.command("swarm", cls=RequestCommand, heading="Swarm", model_argument=True)
@request_options
@host_image_options(rdma=False)
@click.option("--stack", help="The stack's name (default: the job name).")
@click.option(
    "--ray-token-secret", help="Swarm secret with the Ray token (default: STACK-ray-token)."
)
@click.option("--api-key-secret", help="Swarm secret with the API key (default: STACK-api-key).")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def swarm_cmd(
    stack: str | None,
    ray_token_secret: str | None,
    api_key_secret: str | None,
    output: str | None,
    host: HostImage,
    request: SubmitRequest,
) -> None:
    """A Docker Swarm stack file for `docker stack deploy` (same options as `submit`)."""
    from launchers.render.swarm import render_swarm

    plan = image_plan(request)
    text = render_swarm(
        plan,
        image=host.image,
        shm_size=host.shm_size,
        stack=stack,
        ray_token_secret=ray_token_secret,
        api_key_secret=api_key_secret,
    )
    _emit(text, output)


@click.command("sbatch", cls=RequestCommand, heading="Output", model_argument=True)
@request_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def render_sbatch_cmd(output: str | None, request: SubmitRequest) -> None:
    """Print the sbatch script for a deployment (same options as `submit`)."""
    from launchers.render.text import render_sbatch

    _emit(render_sbatch(sealed(plan_of(request))), output)


@click.group("render")
def render_group() -> None:
    """Write deployment files from a plan: sbatch, k8s, compose, ray-cluster, swarm."""


for _command in (render_sbatch_cmd, k8s_cmd, compose_cmd, ray_cluster_cmd, swarm_cmd):
    render_group.add_command(_command)

__all__ = [
    "compose_cmd",
    "k8s_cmd",
    "ray_cluster_cmd",
    "render_group",
    "render_sbatch_cmd",
    "swarm_cmd",
]
