"""What a job is doing, from SLURM and the job directory, and waiting until it is ready.

``combine`` is pure: SLURM's view (is the allocation alive?) and the leader's view
(``endpoint.json``: STARTING, WAITING_NODES, LOADING, READY, FAILED, STOPPED).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from launchers import waits
from launchers.errors import RuntimeFailure
from launchers.jobdir import jobfiles
from launchers.jobdir.jobfiles import Endpoint


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    state: str  # PENDING STARTING WAITING_NODES LOADING READY FAILED STOPPED
    message: str
    url: str | None = None
    model: str | None = None
    slurm: str = ""

    @property
    def final(self) -> bool:
        return self.state in ("FAILED", "STOPPED")


def combine(job_id: str, slurm_state: str | None, raw: str, endpoint: Endpoint | None) -> JobStatus:
    """One status from SLURM's state and the leader's endpoint.json. Pure."""
    url = endpoint.url if endpoint else None
    model = endpoint.model if endpoint else None
    live = slurm_state in ("PENDING", "RUNNING", "PREEMPTED", None)
    if endpoint is not None:
        state: str = endpoint.state
        message = endpoint.message
        if not live and state not in ("FAILED", "STOPPED"):
            # The allocation ended while the leader still said it was up.
            state = "STOPPED" if slurm_state in ("CANCELLED", "ENDED") else "FAILED"
            message = f"the job ended ({raw})" + (f"; last: {message}" if message else "")
        return JobStatus(job_id, state, message, url, model, raw)
    if slurm_state in (None, "PENDING", "PREEMPTED"):
        return JobStatus(
            job_id, "PENDING", f"waiting for an allocation ({raw or 'queued'})", slurm=raw
        )
    if slurm_state == "RUNNING":
        return JobStatus(
            job_id, "STARTING", "the job started; the leader has not reported yet", slurm=raw
        )
    final = "STOPPED" if slurm_state == "CANCELLED" else "FAILED"
    return JobStatus(job_id, final, f"the job ended ({raw}) before the leader reported", slurm=raw)


def read_status(
    job_id: str, job_dir: str, slurm_state: Callable[[str], tuple[str | None, str]]
) -> JobStatus:
    state, raw = slurm_state(job_id)
    endpoint = jobfiles.read(jobfiles.endpoint_file(job_dir), Endpoint)
    return combine(job_id, state, raw, endpoint)


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
    """Poll until READY (returned), or FAILED/STOPPED (RuntimeFailure), or the deadline.
    ``on_change`` hears of each new state or message, ``on_poll`` of every look."""
    last: list[JobStatus] = []

    def ready() -> JobStatus | None:
        status = read()
        if not last or (status.state, status.message) != (last[-1].state, last[-1].message):
            on_change(status)
        if on_poll is not None:
            on_poll(status)
        last[:] = [status]
        if status.final:
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
