"""``vllm-hpc node ...``: the per-node entry points (hidden: srun, submitit and the bash
wrappers call them, users do not). Errors become exit codes in ``cli.run`` like every
other command's.

- ``node run --plan FILE``: play this node's role in a plan (sbatch, submitit, local).
- ``node wrapper leader|worker|slurm ...``: ``bin/multi-node-serving.sh``'s documented
  flags, as they came; planned by ``launchers.input.wrapper``, run like any plan.
- ``node doctor --plan FILE --dir DIR [--network] [--offline]``: one node's preflight
  checks.
- ``node network [--iface IF] [--node-ip-address IP]``: the fast network as
  ``KEY=VALUE`` lines (for scripts that export them).
"""

from __future__ import annotations

import os
import sys
import time

import click

from launchers.defaults import DOCTOR_TIMEOUT


class _AsTheyCame(click.Command):
    """A command that takes its arguments as they came (``--`` and ``-h`` included):
    the wrapper's interface is not click's, ``launchers.input.wrapper`` parses it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.params["args"] = tuple(args)
        return []


@click.group("node", hidden=True)
def node_group() -> None:
    """Per-node entry points (run on the allocated nodes)."""


@node_group.command("run")
@click.option(
    "--plan",
    "plan_file",
    required=True,
    help="The job's plan (the file submit writes in its job directory).",
)
@click.option("--rank", type=click.IntRange(min=0), help="This node's rank (else from SLURM).")
@click.option("--job-id", help="The job id (else $SLURM_JOB_ID).")
@click.option("--iface", help="The fast interface (else detected).")
@click.option("--leader-ip", help="The leader's address (else read from the job directory).")
def run_cmd(
    plan_file: str, rank: int | None, job_id: str | None, iface: str | None, leader_ip: str | None
) -> int:
    """Play this node's role in a plan."""
    from launchers.runtime.run import load_plan, run_plan

    return run_plan(
        load_plan(plan_file), rank=rank, job_id=job_id, iface=iface, leader_ip=leader_ip
    )


@node_group.command("wrapper", cls=_AsTheyCame)
def wrapper_cmd(args: tuple[str, ...]) -> int:
    """bin/multi-node-serving.sh's modes (its arguments as they came)."""
    from launchers.input import wrapper
    from launchers.jobdir.paths import JobRoot
    from launchers.runtime.run import load_plan, run_plan

    prog = os.environ.get("VLLM_HPC_PROG") or wrapper.PROG
    try:
        parsed = wrapper.parse(args, prog)
    except wrapper.Help:
        click.echo(
            wrapper.USAGE.format(prog=prog, ray_token=JobRoot("JOB_ROOT").ray_token), nl=False
        )
        return 0
    if parsed.plan is not None:
        return run_plan(load_plan(parsed.plan), iface=parsed.iface)
    environ = dict(os.environ)
    if parsed.node_ip:
        environ["VLLM_HOST_IP"] = parsed.node_ip
    job_id = environ.get("SLURM_JOB_ID") or time.strftime("manual-%Y%m%d-%H%M%S")
    if parsed.dry_run:  # plan and print: nothing made, nothing started
        token = wrapper.ray_token_path(parsed, environ)
    else:
        token = wrapper.ray_token_file(parsed, environ)  # fail closed: no token, no Ray
    plan = wrapper.wrapper_plan(
        parsed, job_id=job_id, environ=environ, python=sys.executable, ray_token=token
    )
    leader = parsed.mode == "leader"
    rank = 0 if leader else wrapper.worker_rank(environ)
    if parsed.dry_run:
        from launchers.render.text import render_wrapper_text

        click.echo(render_wrapper_text(plan, rank, prog), nl=False)
        return 0
    return run_plan(
        plan,
        rank=rank,
        job_id=job_id,
        iface=parsed.iface,
        environ=environ,
        leader_ip=None if leader else parsed.leader()[0],
    )


@node_group.command("doctor")
@click.option("--plan", "plan_file", required=True)
@click.option("--dir", "meet_dir", required=True, help="Shared directory where the nodes meet.")
@click.option("--timeout", type=float, default=DOCTOR_TIMEOUT, show_default=True)
@click.option("--network", is_flag=True, help="Measure every pair of nodes too.")
@click.option("--offline", is_flag=True, help="Prove the model needs nothing from outside.")
def doctor_cmd(plan_file: str, meet_dir: str, timeout: float, network: bool, offline: bool) -> int:
    """One node's preflight checks (``vllm-hpc doctor`` runs it on every node)."""
    from launchers.runtime.collective import left_running
    from launchers.runtime.context import node_rank
    from launchers.runtime.doctor import run_node
    from launchers.runtime.run import load_plan

    plan = load_plan(plan_file)
    env = dict(os.environ)
    world = int(
        env.get("SLURM_STEP_NUM_NODES")
        or env.get("SLURM_NNODES")
        or env.get("SLURM_JOB_NUM_NODES")
        or plan.layout.nodes
    )
    code = run_node(plan, node_rank(env), world, meet_dir, env, timeout, network, offline=offline)
    if left_running():  # an all-reduce past its deadline: its group's teardown may hang
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


@node_group.command("network")
@click.option("--iface", envvar="VLLM_HPC_IFACE", help="Use this interface.")
@click.option("--node-ip-address", help="Use the interface that has this address.")
def network_cmd(iface: str | None, node_ip_address: str | None) -> None:
    """This node's fast network as KEY=VALUE lines (VLLM_HOST_IP, NCCL_*, GLOO_*)."""
    from launchers.runtime.network import detect

    exports, reason = detect(iface or None, node_ip_address)
    click.echo(f"vllm-hpc: network: {reason}", err=True)
    for key, value in exports.items():
        click.echo(f"{key}={value}")
