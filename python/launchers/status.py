"""What a job is doing, from SLURM and the job directory, and waiting until it is ready.

``combine`` is pure: SLURM's view (is the allocation alive?) and the leader's view
(``endpoint.json``: STARTING, WAITING_NODES, LOADING, READY, FAILED, STOPPED).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from launchers import jobfiles
from launchers.errors import RuntimeFailure, WaitTimeout
from launchers.jobfiles import Endpoint

POLL = 0.5


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
    timeout: float,
    on_change: Callable[[JobStatus], None],
    log_hint: str,
) -> JobStatus:
    """Poll until READY (returned), or FAILED/STOPPED (RuntimeFailure), or the deadline."""
    start = time.monotonic()
    last: tuple[str, str] | None = None
    while True:
        status = read()
        if (status.state, status.message) != last:
            last = (status.state, status.message)
            on_change(status)
        if status.state == "READY":
            return status
        if status.final:
            raise RuntimeFailure(
                f"job {status.job_id} {status.state}: {status.message}", fix=f"read {log_hint}"
            )
        if time.monotonic() - start > timeout:
            raise WaitTimeout(
                f"waited {timeout:.0f} s for job {status.job_id} to be ready (now {status.state}: "
                f"{status.message})",
                fix=f"read {log_hint}; the job keeps running",
            )
        time.sleep(POLL)  # poll
