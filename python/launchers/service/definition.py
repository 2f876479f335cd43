"""A service's files: what the user asked for and what the controller saw, each a
versioned model with one writer, in the service directory.

    <job root>/services/<NAME>/           0700, checked whenever it is opened
        service.json   ServiceSpec     `service up` / `scale` / `down` (the user's intent)
        state.json     ServiceState    the controller (what it saw and did)
        front.json     Front           the front (its address, pid, heartbeat)
        key            the service's API key (0600): clients and every replica share it
        front-<job>.log, router.log    the front's and the router's logs

The service directory lives in the job root (``jobdir.jobroot``'s one rule: per-user,
private, on the shared storage every node reads), so a front started on any node, or
again after it died, finds the same state. Pure: no I/O here but the path rules.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from launchers.jobdir.jobfiles import FINAL_STATES, JobFile, Record
from launchers.spec.fields import MAX_PARALLEL

FORMAT: Literal[1] = 1
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}", re.ASCII)
NAME_RULE = "a lowercase letter, then up to 30 lowercase letters, digits or '-'"

SPEC_FILE = "service.json"
STATE_FILE = "state.json"
FRONT_FILE = "front.json"
KEY_FILE = "key"

ServiceStateName = Literal["STARTING", "UP", "DEGRADED", "BACKING_OFF", "STOPPING", "DOWN"]
Role = Literal["serving", "successor", "draining"]


def check_name(name: str) -> str:
    """A service name: it becomes a directory and part of job names."""
    from launchers.errors import InputError

    if not NAME_RE.fullmatch(name):
        raise InputError(
            f"NAME: {name[:40]!r} is not a service name ({NAME_RULE})", fix="e.g. llama-70b"
        )
    return name


def check_front_time(text: str) -> str:
    """The front job's ``--time`` (it lands in the front's batch script): a SLURM time."""
    from launchers.spec import slurmtime
    from launchers.spec.fields import MAX_TIME_MINUTES

    try:
        minutes = slurmtime.minutes(text)
    except ValueError as exc:
        raise ValueError(f"--front-time: {exc}") from None
    if not 0 < minutes <= MAX_TIME_MINUTES:
        raise ValueError(f"--front-time: {text!r} is out of range (1 minute to a year)")
    return text


def services_root(job_root: str) -> str:
    return f"{job_root.rstrip('/')}/services"


def service_dir(job_root: str, name: str) -> str:
    return f"{services_root(job_root)}/{check_name(name)}"


class ServiceSpec(JobFile):
    """What the user asked for. ``request`` holds the keyword arguments of a submit
    (``launchers.input.resolve.Request``'s fields), checked by planning one replica at
    ``service up``; every replica is submitted from it with the service's key."""

    name: str
    request: dict[str, Any]
    registries: tuple[str, ...] = ()
    replicas: int = Field(ge=0, le=MAX_PARALLEL)
    handover_seconds: float = Field(gt=0)
    front: Literal["job", "here"] = "job"
    front_port: int = Field(ge=1, le=65535)
    front_time: str
    desired: Literal["UP", "DOWN"] = "UP"

    @field_validator("front_time")
    @classmethod
    def _slurm_time(cls, value: str) -> str:
        return check_front_time(value)

    python: str  # the nodes' Python (with vllm-hpc and vllm-router): the front runs it
    key_file: str
    created_at: float


class Replica(Record):
    """One replica job as the controller last saw it."""

    job_id: str
    job_dir: str = ""
    slot: int  # which of the service's replicas this job is (a successor keeps the slot)
    generation: int = 1  # how many jobs have filled this slot, this one included
    role: Role = "serving"
    successor_of: str | None = None
    state: str = "PENDING"  # the job's state (launchers.observe.status.JobStatus.state)
    message: str = ""
    url: str | None = None  # vLLM's base URL (http://IP:PORT), once READY
    ever_ready: bool = False
    ends_at: float | None = None  # SLURM's end time (epoch seconds), once running
    submitted_at: float
    drain_asked_at: float | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def ready(self) -> bool:
        return self.state == "READY" and self.url is not None


class ServiceState(JobFile):
    """What the controller saw and did (it is the one writer while it runs; ``service
    down`` writes it only once no front is alive)."""

    name: str
    state: ServiceStateName = "STARTING"
    message: str = ""
    url: str | None = None  # the front's OpenAI base URL (http://IP:PORT/v1)
    replicas: tuple[Replica, ...] = ()
    failures_in_row: int = 0
    backoff_until: float | None = None
    events: tuple[str, ...] = ()  # the last few things that happened, newest last
    updated_at: float = 0.0


class Front(JobFile):
    """Where the front is and that it is alive (``heartbeat`` renewed every tick)."""

    url: str  # http://IP:PORT/v1
    host: str
    port: int
    hostname: str
    pid: int
    job_id: str | None = None  # the front's own SLURM job, when it runs as one
    started_at: float
    heartbeat: float


__all__ = [
    "FINAL_STATES",
    "Front",
    "Replica",
    "ServiceSpec",
    "ServiceState",
    "check_name",
    "service_dir",
    "services_root",
]
