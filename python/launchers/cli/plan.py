"""``vllm-hpc plan``: a request planned through the client and written as the plan JSON
the nodes read (the sbatch templates call it inside the job), its secrets sealed in
their 0600 file."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from launchers.cli.options import RequestCommand, plan_of, request_options
from launchers.cli.output import write_file
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.plan.launch import LaunchPlan


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


__all__ = ["plan_cmd", "sealed"]
