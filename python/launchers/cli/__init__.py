"""The ``vllm-hpc`` command line. The only place that turns errors into exit codes.

Exit codes: 0 ok, 1 a failure on the cluster or in the scheduler, 2 bad input
(always one line naming the field and the fix), 130 interrupted.
Imports of the planning modules are lazy so ``--help`` and ``--dry-run`` stay fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from launchers.cli.exits import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED
from launchers.cli.options import client_of, plan_of, request_options
from launchers.spec.request import SubmitRequest

if TYPE_CHECKING:
    from launchers.submit.slurm import JobHandle


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks.", envvar="VLLM_HPC_DEBUG")
@click.version_option(package_name="vllm-hpc", prog_name="vllm-hpc")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Serve vLLM's OpenAI-compatible API on SLURM clusters.

    \b
    Start with:
      vllm-hpc models list
      vllm-hpc submit --model llama-3.1-70b-instruct --nodes 2 --gpus-per-node 4 --dry-run
    """
    ctx.obj = {"debug": debug}


SUBMIT_HELP = """Plan a deployment and submit it to SLURM.

\b
Examples:
  vllm-hpc submit -m llama-3.2-3b-instruct --dry-run
  vllm-hpc submit -m llama-3.1-70b-instruct -N 2 -G 4 -p gpu -t 04:00:00
  vllm-hpc submit -m /shared/models/my-model --tp 4 -- --enable-prefix-caching

Everything after `--` is passed to `vllm serve` unchanged. `--dry-run` prints the
whole plan (the sbatch script, each node's commands and environment) and submits
nothing; add `--json` for machine-readable output.
"""


@cli.command("submit", help=SUBMIT_HELP)
@request_options
@click.option("--dry-run", is_flag=True, help="Print the plan; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
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
    default=3600.0,
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
        click.echo(render_plan_json(launch) if as_json else render_plan_text(launch), nl=False)
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
            click.echo(
                f"  follow: tail -f {handle.job_dir}/node-0.log   stop: scancel {handle.job_id}"
            )
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
    click.echo(f"READY: {status.url} serves {status.model!r} (job {handle.job_id})")
    from launchers.render.text import curl_example

    info = job.info
    key_file = info.api_key_file if info is not None else None
    click.echo(f"  {curl_example(str(status.url), status.model, key_file)}")


@cli.command("plan")
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
    launch = _sealed(plan_of(request))
    argv = _node_argv_here(launch) if print_node_argv else None
    text = launch.model_dump_json(indent=2) + "\n"
    if out:
        _write_file("--out", out, text)
    else:
        click.echo(text, nl=False)
    if argv is not None:
        click.echo("\n".join(argv))


def _node_argv_here(launch: Any) -> tuple[str, ...]:
    """The plan's ``node_argv`` for this SLURM job (its job directory filled in), as the
    rendered sbatch script runs it."""
    from launchers.jobdir import jobroot
    from launchers.plan.commands import JOB_ID, JOB_KEY

    job_id = os.environ.get("SLURM_JOB_ID", "")
    key = jobroot.job_key(job_id, jobroot.cluster_name(os.environ), "SLURM_JOB_ID")
    return tuple(item.replace(JOB_KEY, key).replace(JOB_ID, job_id) for item in launch.node_argv)


def _sealed(launch: Any) -> Any:
    """The plan with its secret variables in their 0600 file (the plan names only them)."""
    from launchers.submit.slurm import seal_secrets

    sealed = seal_secrets(launch)
    if sealed.secret_env_file != launch.secret_env_file:
        names = ", ".join(sealed.secret_env)
        click.echo(f"vllm-hpc: {names} written to {sealed.secret_env_file} (0600)", err=True)
    return sealed


def _write_file(flag: str, path: str, text: str) -> None:
    """Write an output file the user named; a path that cannot be written is bad input."""
    from launchers.errors import InputError
    from launchers.jobdir import ensure_dir
    from launchers.jobdir.safe import write_output

    parent = os.path.dirname(os.path.abspath(path))
    try:
        # A parent that exists as a file is left to open(), which names it
        # ("Not a directory") where mkdir would only say "File exists".
        if not os.path.lexists(parent):
            ensure_dir(parent)
        write_output(path, text, flag)  # never through a planted symlink
    except OSError as exc:
        raise InputError(
            f"{flag}: cannot write {path}: {exc.strerror or exc}", fix="choose a writable path"
        ) from None


@cli.group("render")
def render_group() -> None:
    """Write deployment files from a plan (sbatch script, ...)."""


@render_group.command("sbatch")
@request_options
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to FILE.")
def render_sbatch_cmd(output: str | None, request: SubmitRequest) -> None:
    """Print the sbatch script for a deployment (same options as `submit`)."""
    from launchers.render.text import render_sbatch

    text = render_sbatch(_sealed(plan_of(request)))
    if output:
        _write_file("--output", output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def _register_renderers() -> None:
    from launchers.cli.render import compose_cmd, k8s_cmd

    render_group.add_command(k8s_cmd)
    render_group.add_command(compose_cmd)


_register_renderers()


def _register_commands() -> None:
    from launchers.cli import jobs, models, node, service

    for command in (*jobs.COMMANDS, models.models_group, node.node_group):
        cli.add_command(command)
    cli.add_command(service.service_group(request_options))
    cli.add_command(service.tunnel_cmd)


_register_commands()


@cli.command("job-root", hidden=True)
@click.option("--job-root", help="A root given on the command line wins.")
@click.option("--registry", multiple=True, type=click.Path(dir_okay=False))
@click.option("--new-job-dir", is_flag=True, help="Make and print this job's directory.")
def job_root_cmd(job_root: str | None, registry: tuple[str, ...], new_job_dir: bool) -> None:
    """Print the job root (--job-root, $VLLM_HPC_JOB_ROOT, the site file's job_root, or
    ~/.vllm-hpc/jobs): the sbatch templates ask it, so they follow the same rule.
    ``--new-job-dir``: make this SLURM job's directory (0700, new unless the job was
    requeued) and print it instead."""
    from launchers.input.registry import site_job_root
    from launchers.jobdir import jobroot, safe

    root = jobroot.job_root(job_root, os.environ, lambda: site_job_root(os.environ, registry))
    if new_job_dir:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        key = jobroot.job_key(job_id, jobroot.cluster_name(os.environ), "SLURM_JOB_ID")
        requeued = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
        root = str(safe.new_private_dir(f"{root}/{key}", "job directory", reuse=requeued))
    click.echo(root)


SBATCH_HELPER = "sbatch.bash"  # package data, next to this package's modules


@cli.command("sbatch-helper", hidden=True)
def sbatch_helper_cmd() -> None:
    """Print the path of the shell helper the slurm/*.sbatch templates source. It ships
    inside the package, so a template finds it through the Python alone (SLURM runs a
    copy of the script, far from the checkout, and PATH need not hold bin/)."""
    from importlib import resources

    helper = resources.files("launchers").joinpath(SBATCH_HELPER)
    if not helper.is_file():
        raise click.ClickException(f"{helper} is missing: reinstall vllm-hpc")
    click.echo(str(helper))


DOCTOR_HELP = """Preflight checks on the nodes, before GPU time is spent on a model.

\b
  vllm-hpc doctor -m MODEL -N 2 -G 4 -p gpu   a short allocation shaped like the job
  vllm-hpc doctor JOB                          inside a running job's allocation

One line per check and node: the interface chosen and why, RDMA devices, NCCL/Gloo
environment, the model readable, the node's vLLM (and Ray) against what the plan
runs, free GPU memory, the leader's ports reachable from
every node, and a cross-node all-reduce (NCCL on GPUs, Gloo on CPUs) with its
bandwidth. Exits 1 when any check fails, 0 otherwise (warnings included).
"""


@cli.command("doctor", help=DOCTOR_HELP)
@request_options
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def doctor_cmd(timeout: float, as_json: bool, request: SubmitRequest) -> None:
    import json

    from launchers.observe import doctor_run

    extra = list(request.extra_args)
    if extra and not extra[0].startswith("-"):
        if len(extra) > 1 or request.model:
            raise click.UsageError("give either JOB or the layout options, not both")
        from launchers.cli.jobs import client_for

        job = client_for(request.job_root).job(extra[0])
        job_plan = job.recorded_plan()
        if job_plan is None:
            raise click.ClickException(f"job {job.job_id} has no readable plan.json")
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
    rows, _ = doctor_run.run(prefix, plan_json, python, meet_root, nodes, timeout)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(doctor_run.render(rows))
    verdict = doctor_run.worst(rows)
    if not as_json:
        click.echo(f"doctor: {verdict} ({len(rows)} checks on {nodes} node(s))")
    if verdict == "fail":
        sys.exit(EXIT_FAILURE)


def _fail(message: str, code: int, lines: tuple[str, ...] = ()) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    for line in lines:
        click.echo(f"  | {line}", err=True)
    sys.exit(code)


def run(command: click.Command, args: Sequence[str] | None, prog_name: str) -> NoReturn:
    """Run a click command with vllm-hpc's error handling."""
    from launchers.errors import VllmHpcError

    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv or os.environ.get("VLLM_HPC_DEBUG") == "1"
    try:
        result = command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except VllmHpcError as exc:
        if debug:
            raise
        _fail(exc.one_line(), exc.exit_code, exc.lines)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else prog_name
        _fail(f"{exc.format_message()} (see '{where} --help')", EXIT_BAD_INPUT)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        if debug:
            raise
        # A file the user named (an output path, a key file) that cannot be used.
        what = exc.strerror or type(exc).__name__
        if exc.filename is None:
            _fail(f"{what} (rerun with --debug for the traceback)", EXIT_FAILURE)
        _fail(f"{exc.filename}: {what} (check the path and its permissions)", EXIT_BAD_INPUT)
    except Exception as exc:
        if debug:
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            EXIT_FAILURE,
        )
    sys.exit(result if isinstance(result, int) else 0)


def main(args: Sequence[str] | None = None) -> NoReturn:
    run(cli, args, "vllm-hpc")
