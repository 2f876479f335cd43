"""The batch script of ``vllm-hpc stage --via sbatch``: one task on a node that reaches the
hub (a transfer partition) runs the same ``stage`` command. Pure: text from typed fields.

The hub token is never in the script or the job's environment: the ``stage`` it runs
reads the token's 0600 file itself (``--token-file``), and the script unsets the
variables huggingface_hub would otherwise read. Its output goes to two files of the job
root (what ``stage`` printed, and its progress and errors), which the submitting command
reads back when the job ends.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from launchers.errors import InputError
from launchers.jobdir.paths import SLURM_JOB_ID_FIELD
from launchers.render.checks import check_text
from launchers.spec import fields
from launchers.spec.config import check_slurm_names, check_slurm_time

JOB_NAME = "vllm-hpc-stage"
TOKEN_VARIABLES = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")


@dataclass(frozen=True)
class StageJob:
    """What the stage job is: the model and revision (for the reader), the ``stage``
    argv its node runs, its stdout and stderr files (``%j`` for the job id), its time
    limit and the SLURM options."""

    model: str
    revision: str
    argv: tuple[str, ...]
    output: str
    errors: str
    time: str
    partition: str | None = None
    account: str | None = None
    qos: str | None = None


def _path(field: str, value: str) -> str:
    """A path on an ``#SBATCH`` line, which sbatch reads unquoted (``%j``: the job id)."""
    check_text(field, value)
    if not fields.PATH_RE.fullmatch(value.replace(SLURM_JOB_ID_FIELD, "j")):
        raise InputError(
            f"{field}: {value!r} has characters other than letters, digits and "
            ". _ / + @ : = , ~ - (sbatch reads it unquoted)",
            fix="use a job root whose path has only those (--job-root)",
        )
    return value


def _option(flag: str, value: str | None) -> list[str]:
    if not value:
        return []
    try:
        check_slurm_names(check_text(flag, value))
    except ValueError as exc:
        raise InputError(f"{flag}: {exc}") from None
    return [f"#SBATCH {flag}={value}"]


def render_stage_script(job: StageJob) -> str:
    try:
        check_slurm_time(job.time)
    except ValueError as exc:
        raise InputError(f"--time: {exc}") from None
    for item in (job.model, job.revision, *job.argv):
        check_text("stage", item)
    lines = [
        "#!/bin/bash",
        f"# vllm-hpc stage of {job.model} at {job.revision}, on a node that reaches the hub",
        f"#SBATCH --job-name={JOB_NAME}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
        f"#SBATCH --time={job.time}",
        f"#SBATCH --output={_path('stage output', job.output)}",
        f"#SBATCH --error={_path('stage output', job.errors)}",
        *_option("--partition", job.partition),
        *_option("--account", job.account),
        *_option("--qos", job.qos),
        "set -euo pipefail",
        "# stage reads the hub token from its 0600 file (--token-file): never from here",
        f"unset {' '.join(TOKEN_VARIABLES)}",
        "exec " + shlex.join(job.argv),
        "",
    ]
    return "\n".join(lines)


__all__ = ["JOB_NAME", "TOKEN_VARIABLES", "StageJob", "render_stage_script"]
