"""``vllm-hpc submit``: a request planned through the client, then submitted and
followed (``--dry-run``: shown). ``vllm-hpc plan``, which writes the plan JSON the nodes
read, is ``cli.plan``'s."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from launchers.cli.exits import EXIT_INTERRUPTED
from launchers.cli.jobs import json_option
from launchers.cli.options import RequestCommand, client_of, request_options
from launchers.defaults import WAIT_TIMEOUT
from launchers.jobdir.paths import JobDir
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.submit.slurm import JobHandle

SUBMIT_HELP = """Plan a deployment and submit it to SLURM.

\b
Examples:
  vllm-hpc submit llama-3.2-3b-instruct --dry-run
  vllm-hpc submit llama-3.1-70b-instruct -N 2 -G 4 -p gpu -t 04:00:00
  vllm-hpc submit /shared/models/my-model --tp 4 -- --enable-prefix-caching

MODEL (or -m/--model) is a registry id, a Hugging Face id or a model directory.
Everything after `--` is passed to `vllm serve` unchanged. `--dry-run` prints the
whole plan (the sbatch script, each node's commands and environment) and submits
nothing; add `--json` for machine-readable output.
"""


@click.command("submit", cls=RequestCommand, model_argument=True, help=SUBMIT_HELP)
@request_options
@click.option("--dry-run", is_flag=True, help="Print the plan; submit nothing.")
@json_option
@click.option(
    "--executor",
    type=click.Choice(["slurm", "local"]),
    default="slurm",
    show_default=True,
    help="slurm: submit a job; local: run one node here, without SLURM.",
)
@click.option(
    "--via",
    type=click.Choice(["submitit", "sbatch"]),
    default="submitit",
    show_default=True,
    help="How the SLURM job is submitted.",
)
@click.option(
    "--wait/--no-wait",
    default=None,
    help="Follow the job until its endpoint answers (default: on a terminal).",
)
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=WAIT_TIMEOUT,
    show_default=True,
    help="Seconds --wait gives the job (queueing included).",
)
def submit_cmd(
    dry_run: bool,
    as_json: bool,
    executor: str,
    via: str,
    wait: bool | None,
    wait_timeout: float,
    request: SubmitRequest,
) -> None:
    from launchers.render.text import render_plan_json, render_plan_text

    client = client_of(request)
    launch = client.plan(request)
    if dry_run:
        from launchers.cli.colour import warnings

        text = render_plan_json(launch) if as_json else warnings(render_plan_text(launch))
        click.echo(text, nl=False)
        return
    handle = client.submit_plan(launch, executor=executor, via=via)
    if wait is None:
        wait = sys.stdout.isatty() and not as_json
    if not wait:
        if as_json:
            import json

            click.echo(json.dumps(handle.as_dict(), indent=2))
        else:
            click.echo(f"Submitted job {handle.job_id}; job directory {handle.job_dir}")
            follow = JobDir(handle.job_dir).node_log(0)
            click.echo(f"  follow: tail -f {follow}   stop: scancel {handle.job_id}")
        return
    _wait_for(handle, wait_timeout, as_json)


def _wait_for(handle: JobHandle, timeout: float, as_json: bool) -> None:
    import json

    from launchers.cli.waiting import follow
    from launchers.observe.job import Job

    err = as_json  # progress goes to stderr when stdout carries JSON
    click.echo(f"Submitted job {handle.job_id}; job directory {handle.job_dir}", err=err)
    try:
        job = Job(handle.job_id, handle.job_dir)
        status = follow(job, timeout, live=sys.stdout.isatty() and not as_json, err=err)
    except KeyboardInterrupt:
        stop = "scancel" if handle.executor == "slurm" else "kill the process in"
        click.echo(
            f"\nStopped waiting; job {handle.job_id} keeps running. "
            f"Stop it with: {stop} {handle.job_id}",
            err=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **handle.as_dict(),
                    "state": status.state,
                    "url": status.url,
                    "model": status.model,
                },
                indent=2,
            )
        )
        return
    from launchers.cli.colour import state
    from launchers.render.text import curl_example

    click.echo(f"{state('READY')}: {status.url} serves {status.model!r} (job {handle.job_id})")

    info = job.info
    key_file = info.api_key_file if info is not None else None
    click.echo(f"  {curl_example(str(status.url), status.model, key_file)}")


__all__ = ["submit_cmd"]
