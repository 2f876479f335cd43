"""``vllm-hpc render k8s`` and ``vllm-hpc render compose``.

The commands are built by ``render_commands`` from the CLI's own layout options and
plan function, so they take exactly the options of ``submit`` and plan the same way;
``cli.py`` registers them under its ``render`` group and maps their errors to exit
codes. Renderers are imported when a command runs (``--help`` stays fast).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from launchers.plan.launch import LaunchPlan

LayoutOptions = Callable[[Callable[..., Any]], Callable[..., Any]]
PlanFromOptions = Callable[[dict[str, Any]], "LaunchPlan"]
DEFAULT_IMAGE_HELP = "Image with vllm-hpc (containers/docker/Dockerfile); default vllm-hpc:VERSION."


def _write(path: Path, text: str) -> None:
    from launchers.jobdir.safe import write_output

    write_output(path, text, "--output")  # never through a planted symlink
    click.echo(f"wrote {path}", err=True)


def k8s_command(layout_options: LayoutOptions, plan_from_options: PlanFromOptions) -> click.Command:
    @click.command("k8s")
    @layout_options
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
    @click.option(
        "--cache-size", default="200Gi", show_default=True, help="Size of a new cache PVC."
    )
    @click.option("--api-key-secret", help="Secret with the key 'api_key' (default: NAME-api-key).")
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
        output: str | None,
        **kwargs: Any,
    ) -> None:
        """Kubernetes manifests for a deployment (same options as `submit`)."""
        from launchers.render.k8s import DEFAULT_IMAGE, render_k8s

        text = render_k8s(
            plan_from_options({**kwargs, "in_image": True}),
            kind="statefulset" if kind == "statefulset" else "lws",
            image=image or DEFAULT_IMAGE,
            namespace=namespace,
            name=k8s_name,
            shm_size=shm_size,
            cache_pvc=cache_pvc,
            cache_size=cache_size,
            api_key_secret=api_key_secret,
        )
        if output:
            _write(Path(output), text)
        else:
            click.echo(text, nl=False)

    return k8s_cmd


def compose_command(
    layout_options: LayoutOptions, plan_from_options: PlanFromOptions
) -> click.Command:
    @click.command("compose")
    @layout_options
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
        image: str | None, shm_size: str, rdma: bool, output_dir: str | None, **kwargs: Any
    ) -> None:
        """Docker compose files for a head and a worker host (same options as `submit`)."""
        from launchers.render.compose import render_compose_files
        from launchers.render.k8s import DEFAULT_IMAGE

        files = render_compose_files(
            plan_from_options({**kwargs, "in_image": True}),
            image=image or DEFAULT_IMAGE,
            shm_size=shm_size,
            rdma=rdma,
        )
        if output_dir:
            root = Path(output_dir)
            root.mkdir(parents=True, exist_ok=True)
            for name, text in files.items():
                _write(root / name, text)
            return
        for name, text in files.items():
            click.echo(f"# ==> {name} <==")
            click.echo(text, nl=False)

    return compose_cmd


def render_commands(
    layout_options: LayoutOptions, plan_from_options: PlanFromOptions
) -> list[click.Command]:
    """The commands for ``cli.py``'s ``render`` group."""
    return [
        k8s_command(layout_options, plan_from_options),
        compose_command(layout_options, plan_from_options),
    ]
