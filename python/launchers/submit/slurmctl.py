"""Asking SLURM about jobs and signalling them: job state, end time, the cluster's name,
scancel, srun inside a job. No submission (``slurm``'s), so the reading floor may use it.

SLURM specifics live in tables; ``parse_*`` are pure. Job state never depends on
``sacct`` alone: ``squeue`` answers for live jobs, ``scontrol show job`` for recently
ended ones, ``sacct`` last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping

from launchers import _proc
from launchers.errors import SubmitError
from launchers.jobdir import jobroot

# SLURM job state -> what vllm-hpc reports about the allocation.
SLURM_STATES: dict[str, str] = {
    "PENDING": "PENDING",
    "CONFIGURING": "PENDING",
    "REQUEUED": "PENDING",
    "REQUEUE_FED": "PENDING",
    "REQUEUE_HOLD": "PENDING",
    "RESV_DEL_HOLD": "PENDING",
    "SUSPENDED": "PENDING",
    "RUNNING": "RUNNING",
    "COMPLETING": "RUNNING",
    "STAGE_OUT": "RUNNING",
    "SIGNALING": "RUNNING",
    "COMPLETED": "ENDED",
    "CANCELLED": "CANCELLED",
    "FAILED": "FAILED",
    "TIMEOUT": "TIMEOUT",
    "NODE_FAIL": "FAILED",
    "BOOT_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "DEADLINE": "TIMEOUT",
    "PREEMPTED": "PREEMPTED",
    "REVOKED": "CANCELLED",
    "SPECIAL_EXIT": "FAILED",
}
ENDED = {"ENDED", "CANCELLED", "FAILED", "TIMEOUT"}


def parse_cluster_name(config_text: str) -> str | None:
    """``ClusterName = x`` from ``scontrol show config``; None when it names none."""
    for line in config_text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName" and jobroot.CLUSTER_NAME.fullmatch(value.strip()):
            return value.strip()
    return None


def cluster_name(environ: Mapping[str, str] | None = None) -> str:
    """The cluster jobs from here run on (it keys their directories): the environment's
    ``SLURM_CLUSTER_NAME``, else ``scontrol show config``'s ClusterName (one call),
    else ``slurm``, as on a node whose environment names none."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_CLUSTER_NAME"):
        return jobroot.cluster_name(env)
    if shutil.which("scontrol", path=env.get("PATH", os.defpath)):
        done = _proc.run(["scontrol", "show", "config"], timeout=30)
        name = parse_cluster_name(done.stdout) if done.returncode == 0 else None
        if name:
            return name
    return jobroot.DEFAULT_CLUSTER


def parse_scontrol_record(text: str) -> dict[str, str]:
    """One ``scontrol show job -o`` line -> its ``Key=Value`` fields."""
    fields: dict[str, str] = {}
    for token in text.strip().split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields


def parse_state(raw: str) -> str | None:
    """``CANCELLED by 0`` / ``RUNNING`` -> our state (None when unknown or empty)."""
    word = raw.strip().split(" ")[0].rstrip("+") if raw.strip() else ""
    return SLURM_STATES.get(word)


def _ask(argv: list[str], timeout: float) -> str:
    """What a SLURM query printed ('' when it failed or the tool is not installed:
    ``sacct`` is missing where a site keeps no accounting)."""
    if shutil.which(argv[0]) is None:
        return ""
    done = _proc.run(argv, timeout=timeout)
    return done.stdout.strip() if done.returncode == 0 else ""


def need_tool(tool: str, message: str, fix: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse, with ``message``, on a machine whose PATH has no SLURM ``tool``."""
    path = (os.environ if environ is None else environ).get("PATH", os.defpath)
    if shutil.which(tool, path=path) is None:
        raise SubmitError(message, fix=fix)


def _require(tool: str, job_id: str) -> None:
    need_tool(
        tool,
        f"{tool}: not found here, so SLURM cannot be asked about job {job_id} "
        "(this is not a SLURM login node)",
        fix="run vllm-hpc on the login node of the cluster that ran the job",
    )


def job_state(job_id: str) -> tuple[str | None, str]:
    """(our state, SLURM's raw state); (None, '') when SLURM does not know the job."""
    _require("squeue", job_id)
    queries: list[tuple[list[str], Callable[[str], str]]] = [
        (["squeue", "-h", "-j", job_id, "-o", "%T"], _first_line),
        (["scontrol", "show", "job", "-o", job_id],
         lambda out: parse_scontrol_record(out).get("JobState", "")),
        (["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], _first_line),
    ]  # fmt: skip
    for argv, read in queries:  # live jobs, recently ended ones, then accounting
        out = _ask(argv, timeout=20)
        if out:
            raw = read(out)
            return parse_state(raw), raw
    return None, ""


def _first_line(out: str) -> str:
    return out.splitlines()[0]


def scancel(job_id: str) -> None:
    _require("scancel", job_id)
    done = _proc.run(["scancel", job_id], timeout=30)
    if done.returncode != 0:
        raise SubmitError(f"scancel {job_id} failed: {done.stderr.strip()[:200]}")


def signal_batch(job_id: str, sig: str = "USR1") -> None:
    """Send ``sig`` to a job's batch shell only (``scancel --batch``): what SLURM's
    ``--signal=B:USR1@...`` time-limit warning does, so the job drains itself."""
    _require("scancel", job_id)
    done = _proc.run(["scancel", "--batch", f"--signal={sig}", job_id], timeout=30)
    if done.returncode != 0:
        raise SubmitError(f"scancel --batch --signal={sig} {job_id} failed: {done.stderr[:200]}")


def parse_end_time(text: str) -> float | None:
    """``squeue -o %e`` (``2026-12-02T15:30:00``, local time; ``N/A``/``Unknown`` while
    pending) -> epoch seconds, or None."""
    from datetime import datetime

    word = text.strip()
    try:
        return datetime.fromisoformat(word).timestamp()
    except ValueError:
        return None


def end_time(job_id: str) -> float | None:
    """When SLURM will end a running job (its time limit), or None if not known yet."""
    _require("squeue", job_id)
    out = _ask(["squeue", "-h", "-j", job_id, "-o", "%e"], timeout=20)
    return parse_end_time(out.splitlines()[0]) if out else None


def srun_in_job(job_id: str, *, nodes: int = 1, nodelist: str | None = None) -> list[str]:
    """``srun`` argv prefix for one task per node inside a running job's allocation
    (``--overlap``: beside the job's own step, on its nodes, without new GPU time)."""
    argv = ["srun", f"--jobid={job_id}", "--overlap", f"--nodes={nodes}", "--ntasks-per-node=1"]
    if nodelist:
        argv.append(f"--nodelist={nodelist}")
    return [*argv, "--quiet"]
