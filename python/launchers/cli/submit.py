"""``vllm-hpc submit`` and ``vllm-hpc plan``: a request planned through the client, then
submitted and followed, or written as the plan JSON the nodes read."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from launchers.cli.exits import EXIT_INTERRUPTED
from launchers.cli.jobs import json_option
from launchers.cli.options import RequestCommand, client_of, plan_of, request_options
from launchers.cli.output import write_file
from launchers.defaults import WAIT_TIMEOUT
from launchers.jobdir.paths import JobDir
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.plan.launch import LaunchPlan
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


@click.command("plan", cls=RequestCommand, heading="Output", model_argument=True)
@request_options
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="Write the plan JSON to FILE.")
@click.option(
    "--extra-vllm-args",
    "extra_text",
    metavar="TEXT",
    help="More `vllm serve` arguments as one string, split as a shell would (quotes keep "
    "a JSON value whole); before those after `--`. The sbatch templates pass "
    "$EXTRA_VLLM_ARGS here.",
)
@click.option(
    "--print-node-argv",
    is_flag=True,
    help="With --out, inside a SLURM job: print what srun runs on every node (the plan's "
    "node_argv for this job), one item per line.",
)
def plan_cmd(
    out: str | None, extra_text: str | None, print_node_argv: bool, request: SubmitRequest
) -> None:
    """Write the launch plan as JSON (what `vllm-hpc node run --plan` reads).

    The sbatch templates in slurm/ call this inside the job, with the allocation's
    node and GPU counts, so a bad input fails the job before any node starts.
    """
    if print_node_argv and not out:
        raise click.UsageError("--print-node-argv needs --out FILE (the plan the nodes read)")
    if extra_text:
        from launchers.input.extra_args import split_extra_args

        given = split_extra_args(extra_text, "EXTRA_VLLM_ARGS (--extra-vllm-args)")
        request = request.model_copy(update={"extra_args": (*given, *request.extra_args)})
    launch = sealed(plan_of(request))
    argv = _node_argv_here(launch) if print_node_argv else None
    text = launch.model_dump_json(indent=2) + "\n"
    if out:
        write_file("--out", out, text, make_parent=True)
    else:
        click.echo(text, nl=False)
    if argv is not None:
        click.echo("\n".join(argv))


def _node_argv_here(launch: LaunchPlan) -> tuple[str, ...]:
    """The plan's ``node_argv`` for this SLURM job (its job directory filled in), as the
    rendered sbatch script runs it."""
    from launchers.jobdir import jobroot
    from launchers.plan.commands import JOB_ID, JOB_KEY

    job_id = os.environ.get("SLURM_JOB_ID", "")
    key = jobroot.job_key(job_id, jobroot.cluster_name(os.environ), "SLURM_JOB_ID")
    return tuple(item.replace(JOB_KEY, key).replace(JOB_ID, job_id) for item in launch.node_argv)


def sealed(launch: LaunchPlan) -> LaunchPlan:
    """The plan with its secret variables in their 0600 file (the plan names only them)."""
    from launchers.submit.slurm import seal_secrets

    sealed = seal_secrets(launch)
    if sealed.secret_env_file != launch.secret_env_file:
        names = ", ".join(sealed.secret_env)
        click.echo(f"vllm-hpc: {names} written to {sealed.secret_env_file} (0600)", err=True)
    return sealed


__all__ = ["plan_cmd", "sealed", "submit_cmd"]
