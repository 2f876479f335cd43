"""The controller: every tick it looks at the replicas (the job directories and SLURM,
as ``vllm-hpc status`` does) and the router's worker list, asks ``decide`` what to do,
does it, and writes ``state.json``. It runs inside the front's process (one process to
start, adopt and lose: without a front there is no URL to keep, and everything it
knows is in files, so a new front carries on where a dead one stopped).

Replicas are ordinary vllm-hpc jobs, submitted through the same plan -> submit path as
``vllm-hpc submit --via sbatch`` (their batch shell takes the time-limit warning, which
is how a drain is asked: ``scancel --batch --signal=USR1``), each with the service's key.

A service that autoscales has its replicas' queue read every SERVICE_LOAD_SAMPLE_SECONDS:
each READY replica's own ``/metrics`` (vLLM's ``vllm:num_requests_waiting``), with the
service's internal key, over the HTTP helper that ignores proxy variables, all replicas
at once and each for at most SERVICE_LOAD_READ_TIMEOUT seconds; one that does not answer
is left out of the sample (``decide``'s rule 7).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from launchers import health
from launchers.client import Client
from launchers.defaults import (
    DEFAULT_API_PORT,
    SERVICE_LOAD_READ_TIMEOUT,
    SERVICE_LOAD_SAMPLE_SECONDS,
)
from launchers.errors import VllmHpcError
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import read_private_text
from launchers.observe.job import Job
from launchers.observe.metrics import waiting_requests
from launchers.observe.status import read_status
from launchers.service import store
from launchers.service.activity import Activity
from launchers.service.decide import Action, decide
from launchers.service.definition import Replica, ServiceSpec, ServiceState, event_stamp
from launchers.spec.request import SubmitRequest
from launchers.submit import slurmctl

SLURM_EVERY = 5.0  # seconds between two SLURM queries about one replica job
LOAD_READERS = 8  # replicas whose /metrics are read at once


class Workers(Protocol):
    def workers(self) -> set[str]: ...
    def add(self, url: str) -> None: ...
    def remove(self, url: str) -> None: ...


@dataclass
class Slurm:
    """What the controller asks of SLURM (a seam, so a unit test can stand in)."""

    state: Callable[[str], tuple[str | None, str]] = slurmctl.job_state
    end_time: Callable[[str], float | None] = slurmctl.end_time
    drain: Callable[[str], None] = slurmctl.signal_batch
    cancel: Callable[[str], None] = slurmctl.scancel


def read_waiting(url: str, key: str, timeout: float = SERVICE_LOAD_READ_TIMEOUT) -> float | None:
    """The waiting requests of the replica at ``url`` (vLLM's base URL), from its own
    /metrics with the service's key; None when it does not answer 200 in time or does
    not say."""
    answer = health.http_get(f"{url.rstrip('/')}/metrics", api_key=key, timeout=timeout)
    return waiting_requests(answer.detail) if answer.ok else None


def replica_request(spec: ServiceSpec, slot: int, generation: int) -> SubmitRequest:
    """One replica's request: the service's, with its key, a job name that says whose it
    is, and its own API port to start from (replicas and their successors may share a
    node and start at the same moment: ports chosen there would race), moved by the node
    if taken."""
    base = spec.request.port or DEFAULT_API_PORT
    return spec.request.model_copy(
        update={
            "api_key_file": spec.key_file,
            "no_api_key": False,
            "job_name": f"{spec.name}-{slot}",
            "port": base + 2 * slot + generation % 2,
            "port_fixed": False,
        }
    )


class Controller:
    def __init__(
        self,
        service_dir: str,
        client: Client,
        router: Workers,
        *,
        url: str | None,
        slurm_seam: Slurm | None = None,
        submit: Callable[[ServiceSpec, int, int], Job] | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = print,
        activity: Activity | None = None,
    ):
        self.dir = service_dir
        self.client = client
        self.router = router
        self.url = url
        self.slurm = slurm_seam or Slurm()
        self._submit = submit or self._submit_job
        self.clock = clock
        self.log = log
        self.routed_count = 0
        self.last: ServiceState | None = None  # what the last tick wrote (the front's metrics)
        self.handovers = 0  # replicas drained after their successor took over, since start
        self.scale_decisions = {"up": 0, "down": 0}  # by the load (rule 7), since start
        # a replica's queue: (its URL, the key) -> its waiting requests, None if not read
        self.read_waiting: Callable[[str, str], float | None] = read_waiting
        self._sampled = float("-inf")  # when the replicas' queue was last read
        self._unread: set[str] = set()  # replicas whose last read failed (said once)
        # the proxy's requests (when it last forwarded one, whether one waits for a
        # replica); told after each tick whether a replica is routed
        self.activity = activity or Activity(clock)
        self._states: dict[str, tuple[float, tuple[str | None, str]]] = {}

    def _submit_job(self, spec: ServiceSpec, slot: int, generation: int) -> Job:
        request = replica_request(spec, slot, generation)
        return self.client.submit(request, executor="slurm", via="sbatch")

    def _slurm_state(self, job_id: str) -> tuple[str | None, str]:
        """SLURM's state of a replica job, asked at most every SLURM_EVERY seconds per
        job (the job directory, read every tick, says most; SLURM says when it ended)."""
        now = self.clock()
        cached = self._states.get(job_id)
        if cached is not None and now - cached[0] < SLURM_EVERY:
            return cached[1]
        answer = self.slurm.state(job_id)
        self._states[job_id] = (now, answer)
        return answer

    def observe(self, r: Replica) -> Replica:
        """``r`` as SLURM and its job directory say it is now (both: ``decide`` counts it
        ended only when they agree). When they cannot be read, FAILED, SLURM's last word
        kept: a job SLURM held is waited for (and cancelled when overdue), not forgotten."""
        try:
            status = read_status(r.job_id, r.job_dir, self._slurm_state)
        except VllmHpcError as exc:
            return r.model_copy(update={"state": "FAILED", "message": exc.one_line()})
        update: dict[str, Any] = {
            "state": status.state, "message": status.message, "slurm_state": status.slurm_state,
        }  # fmt: skip
        if status.state == "READY" and status.url:
            update["url"] = status.url.removesuffix("/v1").rstrip("/")
            update["ever_ready"] = True
        if r.ends_at is None and status.state != "PENDING" and not status.final:
            update["ends_at"] = self.slurm.end_time(r.job_id)
        return r.model_copy(update=update)

    def tick(self) -> ServiceState:
        spec = store.read_spec(self.dir)
        previous = store.read_state(self.dir) or ServiceState(name=spec.name)
        observed = [self.observe(r) for r in previous.replicas]
        routed = self.router.workers()
        queue = self.read_queue(spec, observed) if spec.autoscales else None
        now = self.clock()
        step = decide(spec, previous, observed, routed, now, self.activity.demand(), queue)
        assert step.state is not None
        if step.scaled is not None:
            self.scale_decisions[step.scaled] += 1
        replicas = list(step.state.replicas)
        events = list(step.state.events)
        for action in step.actions:
            try:
                new = self._do(action, spec, now)
            except VllmHpcError as exc:
                what = action.url or action.job_id or action.slot
                events.append(f"{event_stamp(now)} {action.kind} {what}: {exc.one_line()}")
                self.log(f"controller: {events[-1]}")
                continue
            if new is not None:
                replicas.append(new)
        state = step.state.model_copy(
            update={
                "replicas": tuple(replicas),
                "events": tuple(events[-20:]),
                "url": self.url if step.state.state != "DOWN" else None,
            }
        )
        store.write_state(self.dir, state)
        self.last = state
        self.routed_count = len(self.router.workers()) if state.state != "DOWN" else 0
        self.activity.routed(self.routed_count > 0)
        return state

    def read_queue(self, spec: ServiceSpec, replicas: Iterable[Replica]) -> dict[str, float] | None:
        """The waiting requests of each READY replica that answered, by job id, every
        SERVICE_LOAD_SAMPLE_SECONDS (None between: no sample this tick). Read all at
        once, each for at most SERVICE_LOAD_READ_TIMEOUT seconds, so a replica that
        hangs holds the tick that long at most; one that fails is said once."""
        now = self.clock()
        if now - self._sampled < SERVICE_LOAD_SAMPLE_SECONDS:
            return None
        self._sampled = now
        ready = [r for r in replicas if r.ready and not r.leaving]
        if not ready:
            return {}
        try:
            key = read_private_text(spec.key_file, "service key").strip()
        except (OSError, VllmHpcError) as exc:
            self.log(f"controller: the replicas' queue is not read: {exc}")
            return {}

        def one(r: Replica) -> tuple[Replica, float | None]:
            return r, self.read_waiting(str(r.url), key)

        with ThreadPoolExecutor(min(len(ready), LOAD_READERS), "queue") as pool:
            answers = list(pool.map(one, ready))
        queue: dict[str, float] = {}
        for r, waiting in answers:
            if waiting is None:
                if r.job_id not in self._unread:
                    self.log(f"controller: replica {r.job_id}: {r.url}/metrics did not say its "
                             "waiting requests: left out of the load")  # fmt: skip
                self._unread.add(r.job_id)
                continue
            self._unread.discard(r.job_id)
            queue[r.job_id] = waiting
        return queue

    def _say_why(self, action: Action, now: float) -> None:
        """``stop.json`` in the replica's job directory, before it is signalled: its
        leader then logs ``stopping: SIGUSR1 (handover)``, not a time limit. A file that
        cannot be written stops no drain (the leader says "time limit near")."""
        if action.reason is None or not action.job_dir:
            return
        try:
            jobfiles.write(JobDir(action.job_dir).stop,
                           jobfiles.StopReason(reason=action.reason, time=now))  # fmt: skip
        except (OSError, VllmHpcError) as exc:
            self.log(f"controller: {action.job_id}: cannot say why it stops: {exc}")

    def _do(self, action: Action, spec: ServiceSpec, now: float) -> Replica | None:
        self.log(f"controller: {action.kind} {action.url or action.job_id or action.slot}")
        if action.kind == "add":
            self.router.add(action.url)
        elif action.kind == "remove":
            self.router.remove(action.url)
        elif action.kind == "drain":
            self._say_why(action, now)
            self.slurm.drain(action.job_id)
            if action.reason == "handover":
                self.handovers += 1
        elif action.kind == "cancel":
            self.slurm.cancel(action.job_id)
        else:
            job = self._submit(spec, action.slot, action.generation)
            return Replica(
                job_id=job.job_id,
                job_dir=job.job_dir,
                slot=action.slot,
                generation=action.generation,
                role="successor" if action.successor_of else "serving",
                successor_of=action.successor_of,
                submitted_at=now,
                since=now,
            )
        return None
