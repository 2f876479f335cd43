"""What a user does with a service: up, status, list, scale, down, url, its users' keys
and the front's metrics; the CLI's
``vllm-hpc service`` commands are thin over these, and Python code uses them directly:

    from launchers.service.manage import Services
    svc = Services().get("llama")
    print(svc.url())                 # http://10.0.0.5:8100/v1
    chat = svc.openai().chat.completions.create(...)

``service.json`` is the user's (written here), ``state.json`` the controller's (written
here only when no front is alive), ``front.json`` the front's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from launchers import jobdir, waits
from launchers.client import Client
from launchers.defaults import (
    FRONT_LOG_LINES,
    SERVICE_COLD_START_WAIT_SECONDS,
    SERVICE_DOWN_TIMEOUT,
)
from launchers.errors import FrontEnded, InputError, RuntimeFailure, SubmitError
from launchers.input import probe as node_probe
from launchers.input.planner import plan_for
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import read_private_text
from launchers.observe.job import direct_openai
from launchers.observe.progress import read_tail
from launchers.observe.status import SLURM_LIVE
from launchers.plan.launch import LaunchPlan
from launchers.service import keys as user_keys
from launchers.service import store
from launchers.service.definition import (
    Front,
    ServiceSpec,
    ServiceState,
    check_autoscale,
    check_front_port,
    check_front_time,
    check_handover,
    check_idle,
    check_name,
    check_replicas,
    event_stamp,
    service_dir,
    services_root,
)
from launchers.service.front import live_front
from launchers.service.frontjob import front_script, submit_front
from launchers.service.usage import KeyUsage, read_usage
from launchers.spec.request import FLAG_NAMES, SubmitRequest
from launchers.submit import slurmctl

# Request fields a service decides for itself.
OWNED = ("api_key_file", "no_api_key", "job_name")
SLURM_POLL = 1.0  # seconds between two looks at SLURM while `down` waits for the jobs to end


ROUTER_MODULE = "vllm_router"  # what the front runs (the [service] extra)


def can_import(python: str, module: str) -> bool | None:
    """Whether ``python`` can import ``module`` (found, not imported): this interpreter
    is asked directly, another one in a child process (``input.probe.has_module``).
    None: it cannot be asked from here (no such interpreter on this machine)."""
    return node_probe.has_module(python, module)


def check_front_python(python: str) -> None:
    """Refuse (bad input, before anything is written) a front whose Python has no
    vllm-router: its job would fail at once. One that cannot be asked from here (the
    nodes' Python is not on this machine) is let through."""
    if can_import(python, ROUTER_MODULE) is False:
        raise InputError(
            f"service up: the front's Python ({python}) cannot import {ROUTER_MODULE}: "
            "install vllm-hpc[service] there",
            fix="pip install 'vllm-hpc[service]'",
        )


def in_slurm(job_ids: Iterable[str]) -> list[str]:
    """Those of ``job_ids`` SLURM still holds (pending, running, completing)."""
    return [j for j in job_ids if slurmctl.job_state(j)[0] in SLURM_LIVE]


@dataclass
class Service:
    name: str
    directory: str
    clock: waits.Clock = dataclasses.field(default=waits.REAL, repr=False, compare=False)

    def spec(self) -> ServiceSpec:
        return store.read_spec(self.directory)

    def state(self) -> ServiceState | None:
        return store.read_state(self.directory)

    def front(self) -> Front | None:
        """The live front (see ``service.front.live_front``), or None."""
        return live_front(store.read_front(self.directory), time.time())

    def front_ended(self) -> FrontEnded | None:
        """Why no front will come: the front job submitted last has left SLURM (or SLURM
        says it ended) and no front is alive; the error names its end and, if it never
        wrote a heartbeat, says so, with the last lines of its log. None while that job
        is pending or running, when no front job was submitted, when the service is
        asked down (its front's end is no news), or when SLURM cannot be asked here."""
        state = self.state()
        if state is None or not state.front_job or self.spec().desired == "DOWN":
            return None
        if self.front() is not None:
            return None
        job = state.front_job
        try:
            ours, raw = slurmctl.job_state(job)
        except SubmitError:  # no SLURM on this machine
            return None
        if ours in SLURM_LIVE:
            return None
        word = raw.strip().split(" ")[0].rstrip("+")
        how = f"ended ({word})" if word else "left SLURM"
        when = "" if state.front_job_beat else " before its first heartbeat"
        log = ServiceDir(self.directory).front_log(job)
        lines = _last_lines(self.directory, os.path.basename(log))
        said = f"last lines of {log}:" if lines else f"its log {log} has nothing to show"
        return FrontEnded(f"service {self.name}: the front job {job} {how}{when}; {said}",
                          lines=lines)  # fmt: skip

    def url(self) -> str:
        front = self.front()
        if front is None:
            raise RuntimeFailure(
                f"service {self.name}: no front is running",
                fix=f"vllm-hpc service up {self.name} (it adopts the replicas still serving)",
            )
        return front.url

    def api_key(self) -> str:
        """The service's internal key (the owner's: the key ``default`` until revoked)."""
        return read_private_text(self.spec().key_file, "service key").strip()

    def add_key(self, label: str, kind: user_keys.KeyKind = "user") -> str:
        """A new key for ``label`` (``scrape``: it reads the front's /metrics only); the
        key is returned once and only its hash is kept."""
        return user_keys.add_key(self.directory, self.api_key(), label, kind)

    def revoke_key(self, label: str) -> user_keys.KeyRecord:
        """Revoke ``label``'s key: the front refuses it from its next request on."""
        return user_keys.revoke_key(self.directory, self.api_key(), label)

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key (revoked ones too): label, kind, created, revoked, and its usage
        (requests, errors, tokens in and out, last used) as the front last saved it."""
        held = user_keys.ensure_keys(self.directory, self.api_key())
        used = read_usage(ServiceDir(self.directory).usage).keys
        rows = []
        for record in held.keys:
            row = record.model_dump(mode="json", exclude={"sha256"})
            row.update(used.get(record.label, KeyUsage()).model_dump(mode="json"))
            rows.append(row)
        return rows

    def metrics_text(self) -> str:
        """The front's own /metrics (Prometheus text), asked with the internal key, of
        the front this service's files name (ours, private)."""
        from launchers.health import http_get

        url = self.url().removesuffix("/v1") + "/metrics"
        answer = http_get(url, api_key=self.api_key(), timeout=10)
        if not answer.ok:
            raise RuntimeFailure(f"service {self.name}: {url} answered {answer.detail[:100]}",
                                 fix=f"vllm-hpc service status {self.name}")  # fmt: skip
        return answer.detail

    def metrics(self) -> dict[str, Any]:
        """The front's metrics, summed up (``service.frontmetrics.summarize``)."""
        from launchers.service.frontmetrics import summarize

        return summarize(self.metrics_text())

    def openai(self) -> Any:
        """An ``openai.OpenAI`` for the service's front, its key filled in (its HTTP
        client ignores proxy variables: ``observe.job.direct_openai``)."""
        key = self.api_key()
        if not key:
            raise RuntimeFailure(f"service {self.name}: its key file is empty")
        return direct_openai(base_url=self.url(), api_key=key)

    def summary(self) -> dict[str, Any]:
        spec, state, front = self.spec(), self.state(), self.front()
        ended = self.front_ended() if front is None else None
        why_no_front = None if ended is None else {
            "message": ended.detail.removeprefix(f"service {self.name}: "),
            "lines": list(ended.lines),
        }  # fmt: skip
        return {
            "name": self.name,
            "state": state.state if state else "STARTING",
            "message": state.message if state else "",
            "desired": spec.desired,
            "replicas_wanted": spec.replicas,
            "min_replicas": spec.least,
            "idle_seconds": spec.idle_seconds if spec.idles else None,
            "max_replicas": spec.most,
            "replicas_now": state.wanted if state and state.wanted is not None else spec.replicas,
            "autoscaling": _autoscaling(spec, state),
            "last_request": state.last_request if state else None,
            "url": front.url if front else None,
            "front": None if front is None else front.model_dump(mode="json"),
            "front_ended": why_no_front,
            "replicas": []
            if state is None
            else [r.model_dump(mode="json") for r in state.replicas],
            "failures_in_row": state.failures_in_row if state else 0,
            "events": list(state.events) if state else [],
            "directory": self.directory,
        }

    def scale(self, replicas: int) -> ServiceSpec:
        """Keep ``replicas`` replicas from now on. Checked before service.json is written:
        a refused scale (too many, the service down, no front to act on it) changes
        nothing."""
        check_replicas(replicas, "REPLICAS")
        spec = self.spec()
        if spec.max_replicas is not None and not 1 <= replicas <= spec.max_replicas:
            raise InputError(
                f"REPLICAS: {replicas} is outside the range of service {self.name}, which "
                f"autoscales up to --max-replicas {spec.max_replicas} (its load is read from "
                "READY replicas: one at least)",
                fix=f"give 1 to {spec.max_replicas}: the load moves it from there",
            )
        if spec.desired == "DOWN":
            raise InputError(f"service {self.name} is down", fix=f"vllm-hpc service up {self.name}")
        if self.front() is None:
            raise RuntimeFailure(
                f"service {self.name}: no front is running to act on it, so nothing changed",
                fix=f"vllm-hpc service up {self.name}, then scale it",
            )
        updated = spec.model_copy(update={"replicas": replicas})
        store.write_spec(self.directory, updated)
        return updated

    def wait(
        self,
        states: tuple[str, ...],
        timeout: float,
        what: str,
        seen: Callable[[ServiceState], None] | None = None,
    ) -> ServiceState:
        """Wait until state.json says one of ``states``; ``seen`` hears of each look. A
        service backing off will not come UP soon: a wait for UP stops there and says why
        (a wait for DOWN goes on: the front stops backing off once it is asked down). Nor
        will one whose front job has ended: a wait for UP stops at once (``FrontEnded``,
        with the last lines of the front's log); SLURM is asked every SLURM_POLL s."""
        asked = [float("-inf")]  # when SLURM was last asked about the front

        def reached() -> ServiceState | None:
            state = self.state()
            if state is not None and seen is not None:
                seen(state)
            if state is not None and state.state == "BACKING_OFF" and "UP" in states:
                raise RuntimeFailure(
                    f"service {self.name}: {state.message}",
                    fix=f"vllm-hpc service status {self.name}; read the replicas' logs",
                )
            if state is not None and state.state in states:
                return state
            if "UP" in states and self.clock.now() - asked[0] >= SLURM_POLL:
                asked[0] = self.clock.now()
                ended = self.front_ended()
                if ended is not None:
                    raise ended
            return None

        return waits.wait_for(
            reached, what=f"service {self.name} {what}", timeout=timeout,
            log=ServiceDir(self.directory).front_logs,
            detail=lambda: f" (now: {_said(self.state() or ServiceState(name=self.name))})",
            clock=self.clock,
        ).value  # fmt: skip

    def down(self, timeout: float = SERVICE_DOWN_TIMEOUT) -> ServiceState:
        """Drain and stop every replica, then the front; DOWN in state.json. Returns once
        every replica job and the front's job have left SLURM (their files may say
        STOPPED earlier: the jobs' nodes are free only then); after ``timeout`` seconds
        in all, ``WaitTimeout`` names the jobs SLURM still holds."""
        began = self.clock.now()
        spec = self.spec()
        store.write_spec(self.directory, spec.model_copy(update={"desired": "DOWN"}))
        replicas: dict[str, None] = {}  # every replica job seen, in order

        def note(state: ServiceState) -> None:
            replicas.update(dict.fromkeys(r.job_id for r in state.replicas))

        state = self.state() or ServiceState(name=self.name)
        note(state)
        recorded = store.read_front(self.directory)
        front_job = recorded.job_id if recorded is not None and recorded.job_id else None
        alive = self.front()
        if alive is not None:  # the front drains the replicas and says DOWN, then stops
            front_job = alive.job_id or front_job
            state = self.wait(("DOWN",), timeout, "to go down", seen=note)
        else:  # no front: stop what the files name, here
            for job in in_slurm(replicas):
                slurmctl.scancel(job)
        self._wait_left_slurm(list(replicas), front_job, timeout - (self.clock.now() - began))
        if alive is None:
            state = state.model_copy(
                update={"state": "DOWN", "message": "down", "replicas": (), "url": None,
                        "updated_at": time.time()}
            )  # fmt: skip
            store.write_state(self.directory, state)
        return state

    def _wait_left_slurm(self, replicas: list[str], front_job: str | None, timeout: float) -> None:
        jobs = [*replicas, *([front_job] if front_job else [])]
        left: list[str] = []

        def gone() -> bool | None:
            left[:] = in_slurm(jobs)
            return waits.seen(not left)

        def still() -> str:
            named = [f"replica job {j}" for j in left if j in replicas]
            named += [f"front job {j}" for j in left if j == front_job]
            return f" (still in SLURM: {', '.join(named)})"

        waits.wait_for(
            gone, what=f"the jobs of service {self.name} to leave SLURM", detail=still,
            timeout=max(timeout, 0.0), interval=SLURM_POLL, clock=self.clock,
            fix=f"squeue -j {','.join(left or jobs)}; scancel the ones still there",
        )  # fmt: skip


class Services:
    """Every service of this user, in the job root's ``services/``."""

    def __init__(self, client: Client | None = None):
        self.client = client or Client()

    @property
    def root(self) -> str:
        return services_root(self.client.job_root)

    def get(self, name: str) -> Service:
        directory = service_dir(self.client.job_root, name)
        store.open_dir(directory)
        return Service(name, directory)

    def list(self) -> list[Service]:
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return []
        found = []
        for name in names:
            try:
                found.append(self.get(name))
            except InputError:
                continue
        return found

    def up(
        self,
        name: str,
        request: SubmitRequest | None,
        settings: UpSettings,
    ) -> Service:
        """Create (or start again) service ``name`` and start its front: as a SLURM job
        (``settings.front == "job"``), or return for the caller to run it here (``"here"``). A
        service that exists is adopted: its replicas still serving are kept; one that
        never started is replaced when ``request`` asks for other settings. Everything
        is checked before anything is written, and a failure after that takes back
        what this call wrote (a corrected retry finds nothing in its way)."""
        got = self._checked_up(name, request, settings)
        svc = Service(name, got.directory)
        if got.action == "adopt":
            store.write_spec(got.directory, got.spec)
            return self._start_front(svc, got.spec, settings.front)
        made = _Made(got.directory, existed=os.path.isdir(got.directory),
                     key_existed=os.path.exists(got.spec.key_file))  # fmt: skip
        try:
            store.make_dir(self.client.job_root, got.directory)
            jobdir.ensure_secret(got.spec.key_file, "service key")
            internal = read_private_text(got.spec.key_file, "service key").strip()
            user_keys.ensure_keys(got.directory, internal)
            now = time.time()
            replaced = got.action == "replace"
            events = (f"{event_stamp(now)} {REPLACED}",) if replaced else ()
            store.write_spec(got.directory, got.spec)
            store.write_state(got.directory,
                              ServiceState(name=name, updated_at=now, events=events))  # fmt: skip
            return self._start_front(svc, got.spec, settings.front)
        except BaseException:
            made.undo()  # a failed up leaves nothing that blocks the corrected retry
            raise

    def plan_up(
        self,
        name: str,
        request: SubmitRequest | None,
        settings: UpSettings,
    ) -> UpPlan:
        """What ``up`` would do, checked as ``up`` checks it; nothing written or
        submitted (``service up --dry-run``)."""
        got = self._checked_up(name, request, settings)
        directory, spec = got.directory, got.spec
        from launchers.service.controller import replica_request

        asked = replica_request(spec, 0, 1)
        if os.path.exists(spec.key_file):
            replica = self.client.plan(asked)
        else:  # a new service's key is made by `up`: planned as one the replicas read
            unkeyed = self.client.plan(asked.model_copy(update={"api_key_file": None}))
            replica = unkeyed.model_copy(
                update={"api_key_file": spec.key_file, "generate_api_key": False}
            )
        writes: list[str] = []
        files = ServiceDir(directory)
        if got.action == "create":
            writes += [f"{directory}/ (0700)", f"{spec.key_file} (0600: the service's key)",
                       f"{files.keys} (0600: the users' keys, hashed; the service's key "
                       "as `default`)"]  # fmt: skip
        writes.append(files.spec)
        if got.action != "adopt":
            writes.append(files.state)
        script = front_script(spec, directory) if settings.front == "job" else None
        return UpPlan(name=name, directory=directory, action=got.action, spec=spec,
                      replica=replica, front_script=script, writes=tuple(writes))  # fmt: skip

    def _checked_up(self, name: str, request: SubmitRequest | None, settings: UpSettings) -> _Up:
        """What ``up`` would do with ``request``, everything checked; nothing written."""
        check_name(name)
        check_replicas(settings.replicas)
        check_idle(settings.replicas, settings.min_replicas, settings.idle_seconds is not None)
        check_autoscale(settings.replicas, settings.max_replicas, settings.load_flags())
        try:
            check_front_port(settings.front_port)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        directory = service_dir(self.client.job_root, name)
        existing = store.read_spec(directory) if os.path.isfile(
            ServiceDir(directory).spec) else None  # fmt: skip
        action: Literal["create", "replace"] = "create"
        if existing is not None:
            store.open_dir(directory)
            svc = Service(name, directory)
            if svc.front() is not None:
                raise InputError(
                    f"service {name} is already up at {svc.url()}",
                    fix=f"vllm-hpc service status {name}",
                )
            if request and existing.desired == "UP" and _differs(existing.request, request):
                if not never_started(svc):
                    raise InputError(
                        f"service {name} exists with other settings",
                        fix=f"vllm-hpc service up {name} (no options) adopts it; "
                        f"vllm-hpc service down {name} first to change it",
                    )
                action = "replace"  # nothing of it ever ran: the new settings take its place
            elif existing.desired == "UP" or not request:
                here = settings.front == "here"
                check_front_python(sys.executable if here else existing.python)
                return _Up("adopt", directory, existing.model_copy(update={"desired": "UP"}))
        if request is None or not request.model:
            raise InputError(
                f"service {name} does not exist yet: give the model",
                fix=f"vllm-hpc service up {name} -m MODEL [submit's options]",
            )
        spec = self._new_spec(name, request, directory, settings)
        return _Up(action, directory, spec)

    def _new_spec(
        self, name: str, request: SubmitRequest, directory: str, settings: UpSettings
    ) -> ServiceSpec:
        """A new service's spec, checked (one replica planned); nothing written."""
        try:
            check_front_time(settings.front_time)
        except ValueError as exc:
            raise InputError(str(exc), fix="e.g. --front-time 1-00:00:00") from None
        for field in OWNED:
            flag = FLAG_NAMES[field]
            if getattr(request, field):
                raise InputError(
                    f"{flag}: a service sets it for its replicas",
                    fix=f"leave {flag} out (the service keeps its own key in {directory})",
                )
        request = request.model_copy(update={"job_root": self.client.job_root})
        # Bad input fails here, before anything is written: plan one replica.
        config = self.client.config(request.model_copy(update={"no_api_key": True}))
        probe = plan_for(config)
        check_handover(settings.handover_seconds, config.slurm, request.time is not None)
        check_front_python(sys.executable if settings.front == "here" else probe.python)
        given = {k: v for k, v in dataclasses.asdict(settings).items() if v is not None}
        if given.get("max_replicas") == settings.replicas:  # --replicas: no autoscaling
            del given["max_replicas"]
        return ServiceSpec(
            name=name, request=request, python=probe.python,
            key_file=store.key_file(directory), created_at=time.time(), **given,
        )  # fmt: skip

    def _start_front(self, svc: Service, spec: ServiceSpec, front: str) -> Service:
        if front == "here":
            return svc
        submit_front(spec, svc.directory)
        return svc


REPLACED = (
    "replaced the settings of a service that never started (no replica was submitted, no front ran)"
)


def never_started(svc: Service) -> bool:
    """Whether nothing of service ``svc`` ever ran: no replica in state.json, no front
    that wrote a heartbeat, and no front job SLURM still holds (one pending would start
    with whatever service.json says by then). A front job SLURM cannot be asked about
    here counts as started."""
    state = svc.state()
    if state is None:
        return True
    if state.replicas or state.front_job_beat or state.failures_in_row:
        return False
    if not state.front_job:
        return True
    try:
        return slurmctl.job_state(state.front_job)[0] not in SLURM_LIVE
    except SubmitError:
        return False


@dataclass(frozen=True)
class UpSettings:
    """A service's own settings, given to ``up`` beside the replicas' request (``service
    up``'s --replicas, --handover, --front, --front-port, --front-time, --min-replicas,
    --idle, --cold-start-wait, --max-replicas, --scale-up-waiting, --scale-up-after and
    --scale-down-after); checked by ``up``, and kept in the service's spec.
    ``min_replicas`` None: as many as ``replicas`` (never idle); ``max_replicas`` None:
    as many as ``replicas`` (no autoscaling); ``idle_seconds`` and the load's settings
    None: not given (the spec's defaults)."""

    replicas: int
    handover_seconds: float
    front: Literal["job", "here"]
    front_port: int
    front_time: str
    min_replicas: int | None = None
    idle_seconds: float | None = None
    cold_start_wait_seconds: float = SERVICE_COLD_START_WAIT_SECONDS
    max_replicas: int | None = None
    scale_up_waiting: float | None = None
    scale_up_seconds: float | None = None
    scale_down_seconds: float | None = None

    def load_flags(self) -> tuple[str, ...]:
        """The load's settings given, by their flags (refused without autoscaling)."""
        flags = (("scale_up_waiting", "--scale-up-waiting"),
                 ("scale_up_seconds", "--scale-up-after"),
                 ("scale_down_seconds", "--scale-down-after"))  # fmt: skip
        return tuple(flag for name, flag in flags if getattr(self, name) is not None)


@dataclass(frozen=True)
class _Up:
    """What ``up`` will do: create a service, replace one that never started, or adopt
    one (start its front again, its spec as it was)."""

    action: Literal["create", "replace", "adopt"]
    directory: str
    spec: ServiceSpec


@dataclass(frozen=True)
class UpPlan:
    """``service up --dry-run``: what would be done, written and submitted."""

    name: str
    directory: str
    action: Literal["create", "replace", "adopt"]
    spec: ServiceSpec
    replica: LaunchPlan  # the first replica's plan, as the front would submit it
    front_script: str | None  # the front job's batch script (None: --front here)
    writes: tuple[str, ...]


@dataclass(frozen=True)
class _Made:
    """What a new service's ``up`` may create, to take back when it fails after it has
    begun writing: service.json and state.json, the key and the users' keys made from it
    (unless the key was there before), the directory (if it was not)."""

    directory: str
    existed: bool
    key_existed: bool

    def undo(self) -> None:
        files = ServiceDir(self.directory)
        made_keys = [] if self.key_existed else [files.key, files.keys]
        for path in (files.spec, files.state, *made_keys):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if not self.existed:
            with contextlib.suppress(OSError):  # not empty: something else is in it
                os.rmdir(self.directory)


def _autoscaling(spec: ServiceSpec, state: ServiceState | None) -> dict[str, Any] | None:
    """``status``'s word on autoscaling: the range, the thresholds and windows, and the
    last decision (None: the service does not autoscale)."""
    if not spec.autoscales:
        return None
    return {
        "fewest": spec.fewest,
        "most": spec.most,
        "scale_up_waiting": spec.scale_up_waiting,
        "scale_down_waiting": spec.scale_down_waiting,
        "scale_up_seconds": spec.scale_up_seconds,
        "scale_down_seconds": spec.scale_down_seconds,
        "last_decision": state.scaling.last if state else "",
    }


def _said(state: ServiceState) -> str:
    """``UP: 2/2 replicas READY``, or the state alone when it has no message."""
    return f"{state.state}: {state.message}" if state.message else state.state


def _last_lines(directory: str, name: str) -> tuple[str, ...]:
    """The last FRONT_LOG_LINES non-empty lines of ``directory/name`` (ours, not followed
    through a symlink), each printable and at most 300 characters."""
    text = read_tail(directory, name)
    lines = ["".join(c for c in line if c.isprintable())[:300] for line in text.splitlines()]
    return tuple(line for line in lines if line.strip())[-FRONT_LOG_LINES:]


def _differs(stored: SubmitRequest, given: SubmitRequest) -> bool:
    """Whether ``given`` asks for other settings than the service was made with (the job
    root is the service's own)."""
    same = {"job_root": None}
    return stored.model_copy(update=same) != given.model_copy(update=same)


__all__ = ["Service", "Services", "UpPlan", "never_started"]
