"""The files of a job directory, as versioned models, each with one writer.

    plan.json          LaunchPlan      written at submission (or by the template's plan)
    leader.json        Leader          rank 0, once its Ray head (if any) is up
    endpoint.json      Endpoint        rank 0, at every state change
    nodes/<rank>.json  NodeRecord      each rank, when its runtime starts and each process
    failed/<rank>.json Failure         a rank > 0 that failed, for the leader to report
    local.json         LocalProcess    ``submit --executor local``: the process started
    stop.json          StopReason      a service's controller, just before it drains the job

Their paths: ``jobdir.paths.JobDir``. Readers get a model or None (missing,
half-written or not this format): never a dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from launchers import jobdir
from launchers.jobdir.paths import JobDir

FORMAT: Literal[1] = 1
State = Literal[
    "PENDING", "STARTING", "WAITING_NODES", "LOADING", "READY", "DRAINING", "FAILED", "STOPPED"
]
# DRAINING: a stop was asked for and the leader is stopping its processes (vLLM finishes
# what it holds); STOPPED is written only once they have ended. Neither says the SLURM
# job has ended: its batch step, the other ranks and the epilog may still run.
FINAL_STATES = ("FAILED", "STOPPED")
# Why a service drains one of its replica jobs (what its leader says with the signal).
StopWhy = Literal["handover", "scale down", "service down", "duplicate", "idle"]
M = TypeVar("M", bound=BaseModel)


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class JobFile(Record):
    """A whole file: versioned by ``format``."""

    format: Literal[1] = FORMAT


class RayNode(Record):
    ip: str
    name: str = ""
    gpus: float = 0.0


class Endpoint(JobFile):
    """The job's state as the leader sees it, and where its API is."""

    state: State
    message: str = ""
    job_id: str = ""
    attempt: int = 0
    hostname: str = ""
    leader_ip: str = ""
    port: int = 0
    url: str | None = None
    model: str | None = None
    nodes: int = 1
    api_key_file: str | None = None
    started: float = 0.0
    updated: float = 0.0
    ready_seconds: float | None = None
    ray_nodes: tuple[RayNode, ...] | None = None
    log_tail: tuple[str, ...] = ()

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class Leader(JobFile):
    """Where the other ranks find rank 0 (the rendezvous)."""

    job_id: str
    attempt: int
    ip: str
    hostname: str = ""
    ray_port: int | None = None
    api_port: int | None = None
    preflight_port: int | None = None  # the pre-flight's rendezvous, while it runs
    time: float = 0.0


class Process(Record):
    """A process a rank started: ``argv`` as it was built (the dry run's line for this
    node with the running job's values filled in, the image's wrapping included; never
    a secret, which goes by environment) and ``executable``, the program it was started
    as (``argv[0]`` found next to the runtime's Python or on PATH)."""

    name: Literal["ray", "serve"]
    argv: tuple[str, ...]
    executable: str
    pid: int = 0
    time: float = 0.0


class NodeRecord(JobFile):
    """Who a rank is: its host, its chosen address, its runtime's process, and the
    processes it started (rewritten as each starts)."""

    rank: int
    hostname: str
    ip: str
    attempt: int = 0
    pid: int = 0
    time: float = 0.0
    processes: tuple[Process, ...] = ()

    def argv(self, name: Literal["ray", "serve"]) -> tuple[str, ...] | None:
        """The argv of the last ``name`` process this rank started (None: none)."""
        found = [p.argv for p in self.processes if p.name == name]
        return found[-1] if found else None


class Failure(JobFile):
    """Why a rank > 0 failed, for the leader to report with its name."""

    rank: int
    hostname: str
    attempt: int
    message: str
    time: float = 0.0


class LocalProcess(JobFile):
    """The runtime of a local job: the leader of its own process group. ``created`` (its
    create time) tells it from a later process that got the same pid (0: not recorded)."""

    pid: int
    pgid: int = 0
    created: float = 0.0
    time: float = 0.0


class StopReason(JobFile):
    """Why the time-limit warning (SIGUSR1) the job is about to get was sent: a
    service's controller writes it just before it drains one of its replicas, and the
    leader names it when it stops (``stopping: SIGUSR1 (handover)``). ``time``: when it
    was written (a file older than the runtime is not about this run)."""

    reason: StopWhy
    time: float


def read(path: str | Path, model: type[M]) -> M | None:
    data = jobdir.read_json(path)
    if data is None:
        return None
    try:
        return model.model_validate(data)
    except ValidationError:
        return None


def write(path: str | Path, record: Record) -> None:
    jobdir.write_json(path, record.model_dump(mode="json"))


def nodes(job_dir: str) -> list[NodeRecord]:
    """Every rank's record, lowest rank first."""
    found = [read(path, NodeRecord) for path in Path(job_dir).glob(JobDir.NODE_RECORDS)]
    return sorted((n for n in found if n is not None), key=lambda n: n.rank)


def failures(job_dir: str, attempt: int) -> list[Failure]:
    """The failures other ranks recorded in this attempt, lowest rank first."""
    found = [read(path, Failure) for path in Path(job_dir).glob(JobDir.FAILURES)]
    return sorted(
        (f for f in found if f is not None and f.attempt == attempt), key=lambda f: f.rank
    )
