"""``vllm-hpc render k8s`` and ``vllm-hpc render compose``.

They take exactly the options of ``submit`` (``cli/options.py``) and plan the same way;
``cli/__init__.py`` registers them under its ``render`` group and maps their errors to
exit codes. Renderers are imported when a command runs (``--help`` stays fast).
"""

from __future__ import annotations

from pathlib import Path

import click

from launchers.cli.options import RequestCommand, plan_of, request_options
from launchers.cli.output import write_file
from launchers.cli.submit import sealed
from launchers.spec.request import SubmitRequest

DEFAULT_IMAGE_HELP = "Image with vllm-hpc (containers/docker/Dockerfile); default vllm-hpc:VERSION."


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

    plan = plan_of(request.model_copy(update={"in_image": True}))
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
    if output:
        _write(Path(output), text, "--output")
    else:
        click.echo(text, nl=False)


@click.command("compose", cls=RequestCommand, heading="Compose", model_argument=True)
@request_options
@click.option("--image", help=DEFAULT_IMAGE_HELP)
@click.option("--shm-size", default="16gb", show_default=True, help="/dev/shm size.")
@click.option(
    "--rdma/--no-rdma",
    default=True,
    show_default=True,
    help="Pass /dev/infiniband and IPC_LOCK in (InfiniBand/RoCE hosts).",
)
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False),
    help="Write compose.head.yaml, compose.worker.yaml and .env.example here.",
)
def compose_cmd(
    image: str | None, shm_size: str, rdma: bool, output_dir: str | None, request: SubmitRequest
) -> None:
    """Docker compose files for a head and a worker host (same options as `submit`)."""
    from launchers.render.compose import (
        SECRET_ENV_FILE,
        render_compose_files,
        secret_env_names,
    )
    from launchers.render.k8s import DEFAULT_IMAGE

    plan = plan_of(request.model_copy(update={"in_image": True}))
    files = render_compose_files(
        plan,
        image=image or DEFAULT_IMAGE,
        shm_size=shm_size,
        rdma=rdma,
    )
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


@click.command("sbatch", cls=RequestCommand, heading="Output", model_argument=True)
@request_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def render_sbatch_cmd(output: str | None, request: SubmitRequest) -> None:
    """Print the sbatch script for a deployment (same options as `submit`)."""
    from launchers.render.text import render_sbatch

    text = render_sbatch(sealed(plan_of(request)))
    if output:
        _write(Path(output), text, "--output")
    else:
        click.echo(text, nl=False)


@click.group("render")
def render_group() -> None:
    """Write deployment files from a plan (sbatch script, ...)."""


for _command in (render_sbatch_cmd, k8s_cmd, compose_cmd):
    render_group.add_command(_command)

__all__ = ["compose_cmd", "k8s_cmd", "render_group", "render_sbatch_cmd"]
