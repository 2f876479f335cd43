"""Hidden commands the sbatch templates call: the job root (and a new job's directory),
and the path of the shell helper they source."""

from __future__ import annotations

import os

import click


@click.command("job-root", hidden=True)
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
    from launchers.jobdir.paths import JobRoot

    root = jobroot.job_root(job_root, os.environ, lambda: site_job_root(os.environ, registry))
    if new_job_dir:
        job_id = os.environ.get("SLURM_JOB_ID", "")
        key = jobroot.job_key(job_id, jobroot.cluster_name(os.environ), "SLURM_JOB_ID")
        requeued = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
        root = str(
            safe.new_private_dir(JobRoot(root).job(key).root, "job directory", reuse=requeued)
        )
    click.echo(root)


SBATCH_HELPER = "sbatch.bash"  # package data, next to this package's modules


@click.command("sbatch-helper", hidden=True)
def sbatch_helper_cmd() -> None:
    """Print the path of the shell helper the slurm/*.sbatch templates source. It ships
    inside the package, so a template finds it through the Python alone (SLURM runs a
    copy of the script, far from the checkout, and PATH need not hold bin/)."""
    from importlib import resources

    helper = resources.files("launchers").joinpath(SBATCH_HELPER)
    if not helper.is_file():
        raise click.ClickException(f"{helper} is missing: reinstall vllm-hpc")
    click.echo(str(helper))


__all__ = ["job_root_cmd", "sbatch_helper_cmd"]
