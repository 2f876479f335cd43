"""Asking SLURM about jobs and signalling them: job state, a pending job's reason and
expected start (explained in plain words by ``PENDING_REASONS``), end time, the cluster's name,
scancel, srun inside a job. No submission (``slurm``'s), so the reading floor may use it.

SLURM specifics live in tables; ``parse_*`` are pure. Job state never depends on
``sacct`` alone: ``squeue`` answers for live jobs, ``scontrol show job`` for recently
ended ones, ``sacct`` last.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

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

# Why SLURM has not started a pending job (squeue's %r) -> what it means, in plain words.
# "it will never start" marks the reasons waiting does not cure: the job must be changed
# or cancelled. SLURM's list: https://slurm.schedmd.com/job_reason_codes.html
NEVER = "it will never start as asked"
PENDING_REASONS: dict[str, str] = {
    "None": "just submitted, SLURM has not looked at it yet",
    "Priority": "other jobs are ahead of it in the queue",
    "Resources": "it is next, waiting for nodes to free up",
    "Dependency": "waiting for the job it depends on",
    "DependencyNeverSatisfied": f"the job it depends on failed: {NEVER}",
    "BeginTime": "it was asked to start later (--begin)",
    "ReqNodeNotAvail": "a node it needs is down, drained or reserved",
    "NodeDown": "a node it needs is down",
    "Reservation": "waiting for its reservation to start",
    "Licenses": "waiting for a license",
    "JobHeldUser": "held by you: `scontrol release JOB` lets it go",
    "JobHeldAdmin": "held by an administrator",
    "PartitionTimeLimit": f"the time asked exceeds the partition's limit: {NEVER}",
    "PartitionNodeLimit": "more nodes asked than the partition allows, or its nodes are down",
    "PartitionDown": "the partition is down",
    "PartitionInactive": "the partition is inactive",
    "BadConstraints": f"no node meets its constraints: {NEVER}",
    "InvalidAccount": f"the account is not valid: {NEVER}",
    "InvalidQOS": f"the QOS is not valid: {NEVER}",
    "AccountNotAllowed": f"the account may not use this partition: {NEVER}",
    "QOSNotAllowed": f"the QOS may not be used in this partition: {NEVER}",
    "QOSMaxGRESPerUser": "your QOS's GPU limit is reached (your other jobs hold it)",
    "QOSMaxGRESPerJob": f"it asks more GPUs than your QOS allows a job: {NEVER}",
    "QOSMaxNodePerUserLimit": "your QOS's node limit is reached (your other jobs hold it)",
    "QOSMaxNodePerJobLimit": f"it asks more nodes than your QOS allows a job: {NEVER}",
    "QOSMaxJobsPerUserLimit": "your QOS's limit on running jobs is reached",
    "QOSMaxWallDurationPerJobLimit": f"the time asked exceeds your QOS's limit: {NEVER}",
    "QOSGrpGRES": "the QOS's GPU limit for all its users is reached",
    "QOSGrpNodeLimit": "the QOS's node limit for all its users is reached",
    "AssocGrpGRES": "your account's GPU limit is reached (its running jobs hold it)",
    "AssocGrpGRESMinutes": "your account's GPU-hours budget is used up",
    "AssocGrpCPUMinutesLimit": "your account's CPU-hours budget is used up",
    "AssocGrpNodeLimit": "your account's node limit is reached (its running jobs hold it)",
    "AssocGrpJobsLimit": "your account's limit on running jobs is reached",
    "AssocMaxJobsLimit": "your limit on running jobs is reached",
    "AssocMaxWallDurationPerJobLimit": f"the time asked exceeds your account's limit: {NEVER}",
    "AssocMaxGRESPerJob": f"it asks more GPUs than your account allows a job: {NEVER}",
}
# Families of reasons not named above (SLURM adds limits): prefix -> meaning.
PENDING_FAMILIES: tuple[tuple[str, str], ...] = (
    ("AssocGrp", "a limit your account shares is reached"),
    ("AssocMax", "a limit of your account is reached"),
    ("QOSGrp", "a limit the QOS shares among its users is reached"),
    ("QOSMax", "a limit of your QOS is reached"),
    ("MaxGRESPerAccount", "your account's GPU limit in the QOS is reached"),
)
NO_ESTIMATE = ("", "N/A", "NONE", "UNKNOWN")  # squeue's %S before SLURM has estimated


@dataclass(frozen=True)
class Pending:
    """Why a pending job waits and when SLURM expects to start it."""

    reason: str  # SLURM's word: Priority, ReqNodeNotAvail...
    detail: str = ""  # what squeue adds after it (ReqNodeNotAvail's UnavailableNodes:...)
    start: str | None = None  # the expected start as squeue prints it; None: no estimate

    @property
    def meaning(self) -> str | None:
        """The reason in plain words (None for a reason the tables do not know)."""
        if self.reason in PENDING_REASONS:
            return PENDING_REASONS[self.reason]
        return next((m for prefix, m in PENDING_FAMILIES if self.reason.startswith(prefix)), None)

    def describe(self) -> str:
        """``Priority: other jobs are ahead of it in the queue`` (``[detail]`` after); a
        job SLURM has given no reason yet (its word ``None``) is just its meaning."""
        if self.reason == "None" and self.meaning:
            text = self.meaning
        else:
            text = self.reason + (f": {self.meaning}" if self.meaning else "")
        return text + (f" [{self.detail}]" if self.detail else "")


def _printable(text: str, limit: int = 200) -> str:
    return "".join(c for c in text if c.isprintable())[:limit].strip()


def parse_pending(text: str) -> Pending | None:
    """``squeue --start -o '%r|%S'`` (``Priority|2026-12-02T15:30:00``,
    ``ReqNodeNotAvail, UnavailableNodes:n[1-2]|N/A``) -> a Pending; None when squeue
    printed nothing (the job is not pending). Pure."""
    lines = text.strip().splitlines()
    if not lines:
        return None
    reason, sep, start = lines[0].rpartition("|")
    if not sep:
        reason, start = start, ""
    word, _, detail = _printable(reason).partition(",")
    start = _printable(start, 40)
    return Pending(
        reason=word.strip() or "None",
        detail=detail.strip(),
        start=None if start.upper() in NO_ESTIMATE else start,
    )


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


def pending(job_id: str) -> Pending | None:
    """Why pending job ``job_id`` waits and its expected start (one ``squeue`` call);
    None when SLURM does not say (the job is not pending, or squeue is missing)."""
    return parse_pending(_ask(["squeue", "--start", "-h", "-j", job_id, "-o", "%r|%S"], 20))


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
