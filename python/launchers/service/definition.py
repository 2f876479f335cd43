"""A service's files: what the user asked for and what the controller saw, each a
versioned model with one writer, in the service directory.

    <job root>/services/<NAME>/           0700, checked whenever it is opened
        service.json   ServiceSpec     `service up` / `scale` / `down` (the user's intent)
        state.json     ServiceState    the controller (what it saw and did)
        front.json     Front           the front (its address, pid, heartbeat)
        key            the service's internal API key (0600): the front and every replica
        keys.json      KeyFile         `service key add|revoke`: the users' keys (hashes)
        usage.json     UsageFile       the front: requests and tokens per key label
        front-<job>.log, router.log    the front's and the router's logs

The service directory lives in the job root (``jobdir.jobroot``'s one rule: per-user,
private, on the shared storage every node reads), so a front started on any node, or
again after it died, finds the same state. The names: ``jobdir.paths.ServiceDir``.
Pure: no I/O here but the path rules.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from launchers.defaults import (
    RAY_WORKER_PORTS,
    SERVICE_COLD_START_WAIT_SECONDS,
    SERVICE_IDLE_SECONDS,
    SERVICE_MAX_REPLICAS,
    SERVICE_PORT,
    SERVICE_ROUTER_PORT_OFFSET,
    SERVICE_SCALE_DOWN_SECONDS,
    SERVICE_SCALE_UP_SECONDS,
    SERVICE_SCALE_UP_WAITING,
    USER_PORTS,
)
from launchers.jobdir.jobfiles import FINAL_STATES, JobFile, Record
from launchers.jobdir.paths import JobRoot
from launchers.observe.status import SLURM_LIVE
from launchers.spec.config import SlurmOptions
from launchers.spec.fields import MAX_PARALLEL
from launchers.spec.request import SubmitRequest

FORMAT: Literal[1] = 1
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}", re.ASCII)
NAME_RULE = "a lowercase letter, then up to 30 lowercase letters, digits or '-'"

# IDLE: no request for the spec's idle time, so only its minimum of replicas is kept (all
# READY); the next request wakes it.
ServiceStateName = Literal["STARTING", "UP", "IDLE", "DEGRADED", "BACKING_OFF", "STOPPING", "DOWN"]
# serving: holds its slot; successor: loads to take its slot over; draining: asked to
# stop (drained or cancelled); ending: stopped or failed on its own (its job file says
# so) while SLURM still holds its job. A draining or ending replica is out of the
# service but still counted until SLURM has let go of its job.
Role = Literal["serving", "successor", "draining", "ending"]


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


def _minutes_text(seconds: float) -> str:
    return f"{int(seconds // 60)}m" if seconds >= 60 else f"{int(seconds)}s"


def check_handover(handover_seconds: float, slurm: SlurmOptions, time_flag: bool) -> None:
    """Refuse a ``--handover`` that leaves no room (README's rule): a successor is
    submitted that long before a replica's time limit, which must come before the
    time-limit warning, else every replica would get a successor once READY. The limit
    and the warning are the planned replica's SLURM options (``slurm.time``: --time,
    else the site's default, else none known: then any handover is taken; the warning
    ``slurm.signal_seconds``, ``defaults.SLURM_WARNING_SECONDS``); ``time_flag``: the
    limit is the user's --time (else the site's)."""
    from launchers.errors import InputError

    limit = slurm.time
    if limit is None:
        return
    from launchers.spec import slurmtime

    warning = slurm.signal_seconds
    room = slurmtime.minutes(limit) * 60 - warning
    if handover_seconds < room:
        return
    whose = "--time" if time_flag else "the site's default time"
    less = f" less its {warning} s time-limit warning" if warning else ""
    fix = (
        f"give --handover below {_minutes_text(room)}, e.g. --handover "
        f"{_minutes_text(room / 2)}, or a longer --time"
        if room >= 2
        else "give a longer --time"
    )
    raise InputError(
        f"--handover: {_minutes_text(handover_seconds)} does not leave room in the "
        f"replicas' time limit {limit} ({whose}){less}",
        fix=fix,
    )


def check_idle(replicas: int, min_replicas: int | None, idle_given: bool) -> None:
    """Refuse a scale-to-zero setting that makes no sense: a minimum above the count
    kept, or an idle time for a service that never idles (no minimum below ``replicas``)."""
    from launchers.errors import InputError

    if min_replicas is not None and min_replicas > replicas:
        raise InputError(
            f"--min-replicas: {min_replicas} is more than --replicas {replicas}",
            fix=f"give --min-replicas 0 to {replicas}",
        )
    if idle_given and (min_replicas is None or min_replicas >= replicas):
        raise InputError(
            "--idle: the service never idles without --min-replicas below --replicas",
            fix="add --min-replicas 0 (scale to zero when idle), or leave --idle out",
        )


def check_autoscale(replicas: int, max_replicas: int | None, load_given: tuple[str, ...]) -> None:
    """Refuse an autoscaling setting that makes no sense: a maximum below ``replicas`` or
    past the site's, one above a service of no replica (the load is read from READY
    replicas), or a load setting (``load_given``: its flags) for a service that does
    not autoscale (no ``--max-replicas`` above ``--replicas``)."""
    from launchers.errors import InputError

    if max_replicas is not None:
        check_replicas(max_replicas, "--max-replicas")
        if max_replicas < replicas:
            raise InputError(
                f"--max-replicas: {max_replicas} is less than --replicas {replicas}",
                fix=f"give --max-replicas {replicas} to {SERVICE_MAX_REPLICAS}",
            )
        if replicas == 0 and max_replicas > 0:
            raise InputError(
                "--max-replicas: a service of --replicas 0 has no replica to read its load from",
                fix="give --replicas 1 or more (the count it starts with)",
            )
    if load_given and (max_replicas is None or max_replicas <= replicas):
        raise InputError(
            f"{load_given[0]}: the service does not autoscale without --max-replicas above "
            "--replicas",
            fix=f"add --max-replicas N (at most {SERVICE_MAX_REPLICAS}), or leave "
            f"{load_given[0]} out",
        )


def check_replicas(count: int, flag: str = "--replicas") -> int:
    """How many replicas a service keeps: each is a whole job, and one controller tick
    submits every missing one, so a typo (10000) must not reach SLURM."""
    from launchers.errors import InputError

    if not 0 <= count <= SERVICE_MAX_REPLICAS:
        raise InputError(
            f"{flag}: {count} is out of range: a service keeps 0 to {SERVICE_MAX_REPLICAS} "
            "replicas (each one a whole job)",
            fix=f"give at most {SERVICE_MAX_REPLICAS}",
        )
    return count


# The ports a front may listen on: the port rule of every vllm-hpc port (1024-65535,
# outside Ray's worker range), for the front's port and for the two the router takes
# above it (front port + SERVICE_ROUTER_PORT_OFFSET, and its metrics port next to it).
FRONT_PORTS = (
    (USER_PORTS[0], RAY_WORKER_PORTS[0] - SERVICE_ROUTER_PORT_OFFSET - 2),
    (RAY_WORKER_PORTS[1] + 1, USER_PORTS[1] - SERVICE_ROUTER_PORT_OFFSET - 1),
)


def check_front_port(port: int) -> int:
    """The front's port (``--front-port``): one of ``FRONT_PORTS``. Pure."""
    low, high = RAY_WORKER_PORTS
    router = port + SERVICE_ROUTER_PORT_OFFSET
    fix = " or ".join(f"{a}-{b}" for a, b in FRONT_PORTS) + f", e.g. {SERVICE_PORT}"
    if not USER_PORTS[0] <= port <= USER_PORTS[1]:
        why = f"is not a usable port (ports are {USER_PORTS[0]}-{USER_PORTS[1]})"
    elif low <= port <= high:
        why = f"is inside Ray's worker port range {low}-{high}"
    elif router + 1 > USER_PORTS[1]:
        why = (
            f"leaves no room for the router above it ({router} and {router + 1}: past "
            f"{USER_PORTS[1]})"
        )
    elif router <= high and router + 1 >= low:
        why = (
            f"puts the router on {router} and {router + 1}, inside Ray's worker port "
            f"range {low}-{high}"
        )
    else:
        return port
    raise ValueError(f"--front-port: {port} {why} (choose {fix})")


def event_stamp(now: float) -> str:
    """The time an event of ``state.json`` happened, with its zone: ``07:12:03 UTC``
    (the front's node and the reader's machine may not share a local zone). Pure."""
    from time import gmtime, strftime

    return strftime("%H:%M:%S UTC", gmtime(now))


def services_root(job_root: str) -> str:
    return JobRoot(job_root).services


def service_dir(job_root: str, name: str) -> str:
    """The directory of service ``name`` (the name checked: it becomes a path)."""
    return JobRoot(job_root).service(check_name(name)).root


# 1: the request as a loose dict, its registries beside it; 2: the request typed, one key
# for everyone; 3: keys per user (keys.json; the key file is the internal key). A front
# of an older vllm-hpc must not run a service of format 3: it would accept the internal
# key alone, revoked or not, and no user's key. 4: scale to zero (min_replicas,
# idle_seconds, cold_start_wait_seconds); a format 3 file reads as one that never idles.
# 5: autoscaling by load (max_replicas, scale_up_waiting, scale_up_seconds,
# scale_down_seconds); a format 4 file reads as one that does not autoscale.
SERVICE_FORMAT: Literal[5] = 5


class ServiceSpec(Record):
    """What the user asked for: the request every replica is submitted from (with the
    service's key), checked by planning one replica at ``service up``."""

    format: Literal[5] = SERVICE_FORMAT
    name: str
    request: SubmitRequest
    replicas: int = Field(ge=0, le=MAX_PARALLEL)
    handover_seconds: float = Field(gt=0)
    # Scale to zero: kept after idle_seconds without a request (None: ``replicas``, never
    # idle); a request that finds no replica routed waits cold_start_wait_seconds for one.
    min_replicas: int | None = Field(default=None, ge=0, le=MAX_PARALLEL)
    idle_seconds: float = Field(default=SERVICE_IDLE_SECONDS, gt=0)
    cold_start_wait_seconds: float = Field(default=SERVICE_COLD_START_WAIT_SECONDS, gt=0)
    # Autoscaling by load (None: never past ``replicas``, no autoscaling): one replica
    # more after scale_up_seconds with more than scale_up_waiting requests waiting per
    # READY replica, one less after scale_down_seconds with at most half of that.
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_PARALLEL)
    scale_up_waiting: float = Field(default=SERVICE_SCALE_UP_WAITING, gt=0)
    scale_up_seconds: float = Field(default=SERVICE_SCALE_UP_SECONDS, gt=0)
    scale_down_seconds: float = Field(default=SERVICE_SCALE_DOWN_SECONDS, gt=0)
    front: Literal["job", "here"] = "job"
    front_port: int
    front_time: str
    desired: Literal["UP", "DOWN"] = "UP"

    @model_validator(mode="before")
    @classmethod
    def _from_older_formats(cls, data: Any) -> Any:
        """A service.json of format 1 (written before the request was typed): its
        registries move into the request, and the request's ``python`` (never set: the
        nodes' Python is the spec's own) goes. Format 2 (one key for everyone) reads as it
        is: its key becomes the internal key and the users' key ``default``
        (``service.keys.ensure_keys``, at the front's start or the first ``service key``).
        Format 3 (before scale to zero) reads as it is: it never idles. Format 4 (before
        autoscaling) reads as it is: it does not autoscale."""
        if not isinstance(data, dict) or data.get("format") not in (1, 2, 3, 4):
            return data
        old = dict(data)
        if old["format"] == 1:
            request = dict(old.get("request") or {})
            request.pop("python", None)
            request["registry"] = old.pop("registries", ())
            old["request"] = request
        return {**old, "format": SERVICE_FORMAT}

    @field_validator("front_port")
    @classmethod
    def _front_port(cls, value: int) -> int:
        return check_front_port(value)

    @field_validator("front_time")
    @classmethod
    def _slurm_time(cls, value: str) -> str:
        return check_front_time(value)

    python: str  # the nodes' Python (with vllm-hpc and vllm-router): the front runs it
    key_file: str
    created_at: float

    @property
    def least(self) -> int:
        """The replicas kept while idle: ``min_replicas``, never above ``replicas`` (a
        ``scale`` below the minimum lowers it too)."""
        if self.min_replicas is None:
            return self.replicas
        return min(self.min_replicas, self.replicas)

    @property
    def idles(self) -> bool:
        """Whether the service keeps fewer replicas while no request comes."""
        return self.least < self.replicas

    @property
    def most(self) -> int:
        """The most replicas the load may ask for: ``max_replicas``, never below
        ``replicas``."""
        return max(self.max_replicas or 0, self.replicas)

    @property
    def fewest(self) -> int:
        """The fewest replicas the load may leave: the idle minimum, but at least one
        (fewer than one is the idle rule's: only no request at all scales to zero)."""
        return max(self.least, 1)

    @property
    def autoscales(self) -> bool:
        """Whether the load moves the count between ``fewest`` and ``most``."""
        return self.max_replicas is not None and self.most > self.fewest

    @property
    def scale_down_waiting(self) -> float:
        """At most this many requests waiting per READY replica count as low load:
        half of ``scale_up_waiting``, so that one replica fewer (of two or more) still
        keeps the queue under the threshold that adds one."""
        return self.scale_up_waiting / 2


class Replica(Record):
    """One replica job as the controller last saw it."""

    job_id: str
    job_dir: str = ""
    slot: int  # which of the service's replicas this job is (a successor keeps the slot)
    generation: int = 1  # how many jobs have filled this slot, this one included
    role: Role = "serving"
    successor_of: str | None = None
    state: str = "PENDING"  # the job's state (launchers.observe.status.JobStatus.state)
    slurm_state: str | None = None  # SLURM's (JobStatus.slurm_state); None: not known
    message: str = ""
    url: str | None = None  # vLLM's base URL (http://IP:PORT), once READY
    ever_ready: bool = False
    ends_at: float | None = None  # SLURM's end time (epoch seconds), once running
    submitted_at: float
    drain_asked_at: float | None = None  # also: since when an ending one was seen ending
    waiting_for: str = ""  # why its successor is not submitted yet (said once in the events)
    since: float | None = None  # when the controller saw it come to its state (None: not known)

    @property
    def final(self) -> bool:
        """Its job file (or SLURM) says its processes have ended or failed."""
        return self.state in FINAL_STATES

    @property
    def ended(self) -> bool:
        """Gone for the service: its job file says final and SLURM no longer holds its
        job (SLURM's word wins: STOPPED while SLURM says RUNNING is still there)."""
        return self.final and self.slurm_state not in SLURM_LIVE

    @property
    def leaving(self) -> bool:
        """Out of the service (drained, cancelled or ending), its job not ended yet."""
        return self.role in ("draining", "ending")

    @property
    def ready(self) -> bool:
        return self.state == "READY" and self.url is not None


class LoadRun(Record):
    """Samples of the replicas' queue on one side of a threshold, in a row: since when,
    and their sum (for the average the decision says)."""

    side: Literal["above", "below"]
    since: float  # the first sample of the run (epoch seconds)
    last: float | None = None  # the latest sample of the run
    total: float = 0.0  # the samples' sum (each: waiting requests per READY replica)
    samples: int = 0


class Scaling(Record):
    """What the load rule keeps between ticks (``decide``, rule 7), in state.json: a new
    front carries on counting."""

    replicas: int | None = None  # the count the load asked for (None: the spec's replicas)
    base: int | None = None  # the spec's replicas then: a `service scale` since wins
    run: LoadRun | None = None
    last: str = ""  # the last decision, as its event says it (with its time)


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
    front_job: str | None = None  # the front job submitted last (its log: front-<job>.log)
    front_job_beat: bool = False  # that job has written its first heartbeat
    last_request: float | None = None  # the front's last forwarded request (epoch seconds)
    wanted: int | None = None  # the replicas wanted at the last tick (None: not known yet)
    scaling: Scaling = Scaling()  # autoscaling by load: its memory and last decision


class Front(JobFile):
    """Where the front is and that it is alive (``heartbeat`` renewed every
    FRONT_HEARTBEAT_SECONDS by its own thread, whatever the controller's tick is doing)."""

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
    "LoadRun",
    "Replica",
    "Scaling",
    "ServiceSpec",
    "ServiceState",
    "check_autoscale",
    "check_front_port",
    "check_handover",
    "check_idle",
    "check_name",
    "check_replicas",
    "service_dir",
    "services_root",
]
