"""``vllm-hpc doctor``: preflight checks on the nodes, in a new allocation shaped like
the request or inside a running job."""

from __future__ import annotations

import os
import sys

import click

from launchers.cli.exits import EXIT_FAILURE
from launchers.cli.jobs import json_option
from launchers.cli.options import RequestCommand, plan_of, request_options
from launchers.defaults import DOCTOR_PAIR_MIB, DOCTOR_TIMEOUT
from launchers.spec.request import SubmitRequest

DOCTOR_HELP = f"""Preflight checks on the nodes, before GPU time is spent on a model.

\b
  vllm-hpc doctor -m MODEL -N 2 -G 4 -p gpu   a short allocation shaped like the job
  vllm-hpc doctor JOB                          inside a running job's allocation
  vllm-hpc doctor --offline MODEL -p gpu       does the job need anything from outside?

One line per check and node: the interface chosen and why, RDMA devices, NCCL/Gloo
environment, the model readable, the node's vLLM (and Ray) against what the plan
runs, free GPU memory, the leader's ports reachable from
every node, and a cross-node all-reduce (NCCL on GPUs, Gloo on CPUs) with its
bandwidth. With --network, a table of every pair of nodes too: reachable over TCP
or not, latency (round trip of a small message), bandwidth (one {DOCTOR_PAIR_MIB} MiB
transfer), a pair far below the others marked SLOW. With --offline, on each node: the
staged copy the plan serves readable there (every file of its manifest with its size),
its config and tokenizer loaded in the node's Python with HF_HUB_OFFLINE=1, and what the
node would fetch from outside (a hub model not staged). Exits 1 when any check fails, 0
otherwise (warnings included).
"""


@click.command("doctor", cls=RequestCommand, heading="Doctor", help=DOCTOR_HELP)
@request_options
@click.option("--timeout", type=float, default=DOCTOR_TIMEOUT, show_default=True)
@click.option(
    "--network",
    is_flag=True,
    help="Measure every pair of nodes over TCP (reachable, latency, bandwidth) and print "
    "the table; a failing pair fails the doctor.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Prove on each node that the model needs nothing from outside: its staged copy "
    "readable there with every file's size, its config and tokenizer loaded offline; a "
    "hub model not staged fails.",
)
@json_option
def doctor_cmd(
    timeout: float, network: bool, offline: bool, as_json: bool, request: SubmitRequest
) -> None:
    import json

    from launchers.observe import doctor_run

    extra = list(request.extra_args)
    if extra and not extra[0].startswith("-") and not _job_id(extra[0]) and not request.model:
        # Not a job id: the model, as `submit MODEL` takes it.
        request = request.model_copy(update={"model": extra[0], "extra_args": tuple(extra[1:])})
        extra = extra[1:]
    if extra and not extra[0].startswith("-"):
        if len(extra) > 1 or request.model:
            raise click.UsageError("give either JOB or the layout options, not both")
        from launchers.cli.jobs import client_for

        job = client_for(request.job_root).job(extra[0])
        job_plan = job.recorded_plan()
        if job_plan is None:
            raise click.ClickException(
                f"job {job.job_id} has no readable {os.path.basename(job.files.plan)}"
            )
        plan_json = job_plan.model_dump_json(indent=2)
        nodes = len(job.nodes()) or job_plan.layout.nodes
        from launchers.submit.slurmctl import srun_in_job

        prefix = srun_in_job(job.job_id, nodes=nodes)
        meet_root, python = job.job_dir, job_plan.python
    else:
        launch = plan_of(request)
        nodes = launch.layout.nodes
        plan_json = launch.model_dump_json(indent=2)
        prefix = doctor_run.srun_new(launch.sbatch)
        meet_root, python = launch.paths.root, launch.python
    rows, _ = doctor_run.run(
        prefix, plan_json, python, meet_root, nodes, timeout, network=network, offline=offline
    )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(doctor_run.render(rows))
    verdict = doctor_run.worst(rows)
    if not as_json:
        click.echo(f"doctor: {verdict} ({len(rows)} checks on {nodes} node(s))")
    if verdict == "fail":
        sys.exit(EXIT_FAILURE)


def _job_id(word: str) -> bool:
    """``word`` has the form of a job id (a SLURM job's digits, local-<pid>, ...)."""
    from launchers.jobdir.jobroot import OTHER_JOB_ID, SLURM_JOB_ID

    return bool(SLURM_JOB_ID.fullmatch(word) or OTHER_JOB_ID.fullmatch(word))


__all__ = ["doctor_cmd"]
