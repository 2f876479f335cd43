"""``vllm-hpc stage --via sbatch``: the stage job's script (``render.stagejob``) given to
``sbatch --parsable`` with the hub token's variables taken out of the environment sbatch
hands the job, watched until SLURM says it ended (the one wait helper; SLURM asked every
``STAGE_JOB_ASK`` seconds), and its two output files read back."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from launchers import waits
from launchers.defaults import STAGE_JOB_ASK
from launchers.jobdir import safe
from launchers.jobdir.paths import SLURM_JOB_ID_FIELD, JobRoot
from launchers.render.stagejob import TOKEN_VARIABLES
from launchers.submit import slurm, slurmctl

OUTPUT_LIMIT = 1024 * 1024  # what stage prints is a few lines; its progress bars more
POLL = 1.0  # seconds between two looks; SLURM itself is asked every STAGE_JOB_ASK


@dataclass(frozen=True)
class StageJobFiles:
    """Where a stage job writes (``%j`` for sbatch in ``output``/``errors`` until known)."""

    root: str

    def output(self, job_id: str = SLURM_JOB_ID_FIELD) -> str:
        return JobRoot(self.root).stage_output(job_id)

    def errors(self, job_id: str = SLURM_JOB_ID_FIELD) -> str:
        return JobRoot(self.root).stage_errors(job_id)

    def make(self) -> None:
        """The directory, before sbatch (SLURM writes into it; 0700, checked)."""
        safe.private_dir(JobRoot(self.root).stage_jobs, "stage jobs")


@dataclass(frozen=True)
class StageJobEnd:
    """How a stage job ended: SLURM's state (ours: ENDED, FAILED, CANCELLED, TIMEOUT;
    None when SLURM forgot it before it was seen ending) and raw word, what ``stage``
    printed, and the last line of its errors that says something."""

    job_id: str
    state: str | None
    raw: str
    output: str
    last_error: str
    output_path: str
    errors_path: str

    @property
    def ok(self) -> bool:
        return self.state == "ENDED"


def submit(script: str, environ: Mapping[str, str]) -> str:
    """``sbatch --parsable`` the script with an environment without the hub token (sbatch
    hands the job the submitting environment): the job id."""
    env = {k: v for k, v in environ.items() if k not in TOKEN_VARIABLES}
    return slurm.sbatch_text(script, env)


State = Callable[[str], tuple[str | None, str]]
Pending = Callable[[str], slurmctl.Pending | None]


def wait_ended(
    job_id: str,
    *,
    timeout: float,
    log: str,
    said: Callable[[str], None],
    state: State | None = None,
    pending: Pending | None = None,
    clock: waits.Clock = waits.REAL,
) -> tuple[str | None, str]:
    """Wait until SLURM says job ``job_id`` ended: (our state, SLURM's word). A change of
    state is ``said`` (a pending job with SLURM's reason). A job SLURM knew and then no
    longer knows ended too (state None). After ``timeout``: ``WaitTimeout``; the job
    keeps running. ``state``/``pending``: SLURM's answers (``slurmctl``'s by default)."""
    ask, why_pending = state or slurmctl.job_state, pending or slurmctl.pending
    seen: dict[str, str | None] = {}  # "state": the last state said
    asked = [float("-inf")]  # when SLURM was last asked

    def ended() -> tuple[str | None, str] | None:
        if clock.now() - asked[0] < STAGE_JOB_ASK:
            return None
        asked[0] = clock.now()
        ours, raw = ask(job_id)
        if ours is None and seen.get("state") is not None:
            return None, ""  # it was seen: it ended and SLURM forgot it
        if "state" not in seen or ours != seen["state"]:
            seen["state"] = ours
            why = why_pending(job_id) if ours == "PENDING" else None
            text = ours or "not known to SLURM yet"
            said(f"stage job {job_id}: {text}" + (f" ({why.describe()})" if why else ""))
        return (ours, raw) if ours in slurmctl.ENDED else None

    return waits.wait_for(
        ended, what=f"stage job {job_id} to end", timeout=timeout, interval=POLL,
        clock=clock, fix=f"it keeps its place: read {log} later, or scancel {job_id}",
    ).value  # fmt: skip


def _read(path: str) -> str:
    try:
        with os.fdopen(safe.open_nofollow(path), "rb") as fh:
            data = fh.read(OUTPUT_LIMIT)
    except OSError:
        return ""
    return data.decode("utf-8", "replace")


def last_error(text: str) -> str:
    """The line of ``stage``'s stderr that says what went wrong: its ``Error:`` line,
    else the last line with words (progress bars redraw with carriage returns)."""
    lines = [part.strip() for line in text.splitlines() for part in line.split("\r")]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith("Error:")]
    return (errors or lines or [""])[-1]


def ending(job_id: str, files: StageJobFiles, state: str | None, raw: str) -> StageJobEnd:
    """What the job left: its state and its two files."""
    out, err = files.output(job_id), files.errors(job_id)
    return StageJobEnd(job_id, state, raw, _read(out), last_error(_read(err)), out, err)


__all__ = ["StageJobEnd", "StageJobFiles", "ending", "last_error", "submit", "wait_ended"]
