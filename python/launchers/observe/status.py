"""What a job is doing, from SLURM and the job directory, and waiting until it is ready.

``combine`` is pure: SLURM's view (is the allocation alive?) and the leader's view
(``endpoint.json``: STARTING, WAITING_NODES, LOADING, READY, DRAINING, FAILED, STOPPED).
DRAINING is a stop under way: not READY, and not final. FAILED and STOPPED are final
for the job's processes (``final``), but the job has *ended* only once SLURM has let go
of it too (``ended``): SLURM's word wins when the two disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from launchers import waits
from launchers.errors import RuntimeFailure
from launchers.jobdir import jobfiles
from launchers.jobdir.jobfiles import FINAL_STATES, Endpoint
from launchers.jobdir.paths import JobDir

if TYPE_CHECKING:
    from launchers.submit.slurmctl import Pending

# SLURM's states (launchers.submit.slurm's names) of a job it still holds.
SLURM_LIVE = ("PENDING", "RUNNING", "PREEMPTED")


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # PENDING STARTING WAITING_NODES LOADING READY DRAINING FAILED STOPPED
    message: str
    url: str | None = None
    model: str | None = None
    slurm: str = ""  # SLURM's own word for the job ("" when it does not know it)
    slurm_state: str | None = None  # that word in launchers.submit.slurm's names
    pending: Pending | None = None  # why SLURM has not started it, and when it expects to

    @property
    def final(self) -> bool:
        """The job's processes have ended or failed (its leader says so, or SLURM)."""
        return self.state in FINAL_STATES

    @property
    def ended(self) -> bool:
        """Final, and SLURM no longer holds the job: its nodes are free."""
        return self.final and self.slurm_state not in SLURM_LIVE


def combine(
    job_id: str,
    slurm_state: str | None,
    raw: str,
    endpoint: Endpoint | None,
    pending: Pending | None = None,
) -> JobStatus:
    """One status from SLURM's state (and, for a pending job, its reason and expected
    start) and the leader's endpoint.json. Pure."""
    url = endpoint.url if endpoint else None
    model = endpoint.model if endpoint else None
    live = slurm_state in (*SLURM_LIVE, None)
    if endpoint is not None:
        state: str = endpoint.state
        message = endpoint.message
        if not live and state not in FINAL_STATES:
            # The allocation ended while the leader still said it was up (or draining:
            # a stop cut short is a stop all the same).
            stopped = state == "DRAINING" or slurm_state in ("CANCELLED", "ENDED")
            state = "STOPPED" if stopped else "FAILED"
            message = f"the job ended ({raw})" + (f"; last: {message}" if message else "")
        return JobStatus(job_id, state, message, url, model, raw, slurm_state)
    if slurm_state in (None, "PENDING", "PREEMPTED"):
        why = pending.describe() if pending is not None else raw or "queued"
        return JobStatus(
            job_id, "PENDING", f"waiting for an allocation ({why})", slurm=raw,
            slurm_state=slurm_state, pending=pending,
        )  # fmt: skip
    if slurm_state == "RUNNING":
        return JobStatus(
            job_id, "STARTING", "the job started; the leader has not reported yet", slurm=raw,
            slurm_state=slurm_state,
        )  # fmt: skip
    final = "STOPPED" if slurm_state == "CANCELLED" else "FAILED"
    return JobStatus(job_id, final, f"the job ended ({raw}) before the leader reported",
                     slurm=raw, slurm_state=slurm_state)  # fmt: skip


def read_status(
    job_id: str,
    job_dir: str,
    slurm_state: Callable[[str], tuple[str | None, str]],
    pending: Callable[[str], Pending | None] | None = None,
) -> JobStatus:
    """The job's status; ``pending`` (SLURM's reason and expected start) is asked only
    of a job SLURM holds as PENDING whose leader has not reported."""
    state, raw = slurm_state(job_id)
    endpoint = jobfiles.read(JobDir(job_dir).endpoint, Endpoint)
    why = pending(job_id) if pending is not None and state == "PENDING" and not endpoint else None
    return combine(job_id, state, raw, endpoint, why)


def wait_ready(
    read: Callable[[], JobStatus],
    *,
    what: str,
    timeout: float,
    on_change: Callable[[JobStatus], None],
    log_hint: str,
    on_poll: Callable[[JobStatus], None] | None = None,
    clock: waits.Clock = waits.REAL,
) -> JobStatus:
    """Poll until READY (returned), or DRAINING/FAILED/STOPPED (RuntimeFailure: a job
    that is stopping never becomes READY), or the deadline. ``on_change`` hears of each
    new state or message, ``on_poll`` of every look."""
    last: list[JobStatus] = []

    def ready() -> JobStatus | None:
        status = read()
        if not last or (status.state, status.message) != (last[-1].state, last[-1].message):
            on_change(status)
        if on_poll is not None:
            on_poll(status)
        last[:] = [status]
        if status.final or status.state == "DRAINING":
            raise RuntimeFailure(
                f"job {status.job_id} {status.state}: {status.message}", fix=f"read {log_hint}"
            )
        return status if status.state == "READY" else None

    def now() -> str:
        return f" (now {last[-1].state}: {last[-1].message})" if last else ""

    found = waits.wait_for(
        ready,
        what=what,
        detail=now,
        timeout=timeout,
        fix=f"read {log_hint}; the job keeps running",
        clock=clock,
    )
    return found.value
