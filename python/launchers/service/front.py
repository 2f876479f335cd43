"""The front of a service, on the node that runs it (a small CPU-only job, or here):
vllm-router on loopback, the authenticating proxy on the public port, and the
controller on a thread, all in one process.

A front that starts finds the replicas the last one recorded: those still READY go
straight into the router (no restart), the rest are watched as before. On SIGTERM,
SIGINT or the front job's own time-limit warning (USR1) the front stops and leaves the
replicas serving, for the next front to adopt; on ``service down`` it drains them first.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from launchers import _proc, health, waits
from launchers.client import Client
from launchers.defaults import (
    FRONT_HEARTBEAT_SECONDS,
    FRONT_MAX_CONNECTIONS,
    FRONT_STALE_SECONDS,
    FRONT_UPSTREAM_CONNECTIONS,
    FRONT_UPSTREAM_REPLICAS,
    SERVICE_COLD_START_WAIT_SECONDS,
    SERVICE_ROUTER_PORT_OFFSET,
)
from launchers.errors import InputError, RuntimeFailure, VllmHpcError
from launchers.jobdir.paths import ServiceDir
from launchers.jobdir.safe import read_private_text
from launchers.service import store
from launchers.service.controller import Controller
from launchers.service.decide import waking_news
from launchers.service.definition import Front
from launchers.service.frontjob import submit_front
from launchers.service.frontmetrics import FrontMetrics, replica_counts
from launchers.service.frontserver import start_site
from launchers.service.keys import KeyRing, ensure_keys
from launchers.service.proxy import make_app
from launchers.service.router import LOOPBACK, RouterAdmin, router_argv
from launchers.service.usage import UsageBook
from launchers.spec.config import ServeConfig
from launchers.spec.request import SubmitRequest

ROUTER_START_TIMEOUT = 60.0
TICK_SECONDS = 1.0  # the controller's cadence (SLURM is asked less often: controller.py)


def front_alive(front: Front | None, now: float) -> bool:
    """Is ``front``'s heartbeat fresh? Pure."""
    return front is not None and now - front.heartbeat < FRONT_STALE_SECONDS


def live_front(front: Front | None, now: float) -> Front | None:
    """``front`` if it is alive. A front that runs as a SLURM job is asked about first:
    RUNNING is alive whatever its heartbeat says (another `service up` must not start a
    second front), ended is dead though its heartbeat is fresh (a SIGKILLed front's last
    one stays fresh for a while). Otherwise (no job, not yet or no longer running, or no
    SLURM to ask here) its heartbeat decides."""
    if front is None:
        return None
    if front.job_id:
        from launchers.errors import SubmitError
        from launchers.submit import slurmctl

        try:
            state, raw = slurmctl.job_state(front.job_id)
        except SubmitError:  # no squeue on this machine: the heartbeat alone says
            state, raw = None, ""
        if state in slurmctl.ENDED:
            return None
        if raw.strip().split(" ")[0].rstrip("+") == "RUNNING":
            return front
    return front if front_alive(front, now) else None


def keep_beating(
    beat: Callable[[], None],
    stopping: threading.Event,
    *,
    log: Callable[[str], None] = print,
    clock: waits.Clock = waits.REAL,
) -> None:
    """The front's heartbeat, on its own thread: ``beat()`` (front.json) every
    FRONT_HEARTBEAT_SECONDS until ``stopping`` is set, whatever the controller's tick is
    doing (a tick slower than FRONT_STALE_SECONDS must not make a live front look dead).
    A failed write is logged; the next one tries again."""
    due = 0.0
    for elapsed in waits.ticks(TICK_SECONDS, clock=clock):
        if stopping.is_set():
            return
        if elapsed < due:
            continue
        due = elapsed + FRONT_HEARTBEAT_SECONDS
        try:
            beat()
        except Exception as exc:  # a shared file system hiccup: the next beat tries again
            log(f"heartbeat failed: {type(exc).__name__}: {exc}")


def replica_seqs(config: ServeConfig) -> int | None:
    """The sequences one replica of ``config`` runs at once: its ``--max-num-seqs`` (the
    last one its extra arguments give, else the registry's or the request's) times its
    data-parallel ranks; None when not given (vLLM's own default depends on its version
    and the GPU). Pure."""
    seqs = config.spec.max_num_seqs
    args = config.extra_args
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name != "--max-num-seqs":
            continue
        if not value and i + 1 < len(args):
            value = args[i + 1]
        seqs = int(value) if value.isdigit() else None
    return None if seqs is None else seqs * config.layout.dp


def upstream_limit(seqs_per_replica: int | None) -> int:
    """The front's connections to vllm-router at once (aiohttp's connector limit, 0 for
    none): ``seqs_per_replica`` for each of the FRONT_UPSTREAM_REPLICAS replicas the
    service may route at once; none (FRONT_UPSTREAM_CONNECTIONS) when that is not known
    or not below FRONT_MAX_CONNECTIONS, the front's own bound. Pure."""
    if seqs_per_replica is None:
        return FRONT_UPSTREAM_CONNECTIONS
    limit = seqs_per_replica * FRONT_UPSTREAM_REPLICAS
    return limit if limit < FRONT_MAX_CONNECTIONS else FRONT_UPSTREAM_CONNECTIONS


@dataclass(frozen=True)
class ReplicaFacts:
    """What the front takes from the replicas' request, resolved here: its connections
    to the router (``upstream_limit``) and the model name the replicas serve (the front
    lists it at ``GET /v1/models`` while none is routed; empty: not known)."""

    upstream_limit: int = FRONT_UPSTREAM_CONNECTIONS
    models: tuple[str, ...] = ()


def replica_facts(client: Client, request: SubmitRequest) -> ReplicaFacts:
    """``ReplicaFacts`` for the service's replicas, as its request resolves here."""
    try:
        config = client.config(request)
    except VllmHpcError as exc:  # checked at `service up`; here only these facts are lost
        _log(f"the replicas' --max-num-seqs and model name are not known here "
             f"({exc.one_line()})")  # fmt: skip
        return ReplicaFacts()
    return ReplicaFacts(upstream_limit(replica_seqs(config)), (config.served_model_name,))


def _address(host: str | None) -> str:
    if host:
        return host
    from launchers.runtime.network import detect

    env, _ = detect()
    return env["VLLM_HOST_IP"]


def _log(text: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] vllm-hpc front: {text}", flush=True)


def start_front(service_dir: str, *, host: str | None = None) -> ServiceFront:
    """Check that this front may run (the service is up, no other front lives, the key
    is there, the port is free), start vllm-router on loopback with the READY replicas
    the last front recorded, and return the front, ready to ``serve``."""
    store.open_dir(service_dir)
    spec = store.read_spec(service_dir)
    if spec.desired == "DOWN":
        raise InputError(f"service {spec.name} is down", fix=f"vllm-hpc service up {spec.name}")
    now = time.time()
    earlier = live_front(store.read_front(service_dir), now)
    if earlier is not None and earlier.job_id != os.environ.get("SLURM_JOB_ID"):
        raise RuntimeFailure(
            f"service {spec.name}: a front already runs at {earlier.url} "
            f"(pid {earlier.pid} on {earlier.hostname})",
            fix=f"vllm-hpc service status {spec.name}",
        )
    key = read_private_text(spec.key_file, "service key").strip()
    if not key:
        raise RuntimeFailure(f"service key: {spec.key_file} is empty", fix="service down, up")
    files = ServiceDir(service_dir)
    ensure_keys(service_dir, key)  # a service from before per-user keys: its key is `default`
    keys = KeyRing(files.keys, key, log=_log)
    usage = UsageBook.load(files.usage)
    address = _address(host)
    if not health.port_free(spec.front_port):
        raise RuntimeFailure(
            f"--front-port: {spec.front_port} is taken on {socket.gethostname()}",
            fix="choose another --front-port",
        )
    router_port = health.pick_port(spec.front_port + SERVICE_ROUTER_PORT_OFFSET)
    metrics_port = health.pick_port(router_port + 1)
    state = store.read_state(service_dir)
    adopted = [str(r.url) for r in (state.replicas if state else ()) if r.ready and not r.leaving]
    _log(f"service {spec.name}: adopting {len(adopted)} READY replica(s): {adopted}")
    router_log = files.router_log
    router = _proc.start(
        "vllm-router",
        router_argv(sys.executable, router_port, metrics_port, adopted),
        env=health.without_proxies(os.environ),  # reqwest would send prompts to a proxy
        log_path=router_log,
    )
    try:
        health.wait_for_port(
            LOOPBACK, router_port, timeout=ROUTER_START_TIMEOUT, what="vllm-router",
            log=router_log, alive=lambda: router.poll() is None,
        )  # fmt: skip
        url = f"http://{address}:{spec.front_port}/v1"
        client = Client(job_root=spec.request.job_root)
        controller = Controller(service_dir, client, RouterAdmin(router_port), url=url, log=_log)
        controller.routed_count = len(adopted)
        facts = replica_facts(client, spec.request)
    except BaseException:
        router.stop(grace=5.0)
        raise
    return ServiceFront(
        service_dir=service_dir, name=spec.name, address=address, port=spec.front_port,
        router_port=router_port, key=key, controller=controller, router=router,
        upstream_limit=facts.upstream_limit, models=facts.models,
        cold_start_wait=spec.cold_start_wait_seconds if spec.idles else 0.0,
        keys=keys, usage=usage,
    )  # fmt: skip


def run_front(service_dir: str, *, host: str | None = None) -> int:
    """Run the front until it is stopped (0) or the service is down (0); when its own
    job's time limit stopped it, submit the next front job first."""
    front = start_front(service_dir, host=host)
    try:
        code = front.serve()
    finally:
        front.router.stop(grace=5.0)
        store.remove_front(service_dir, os.getpid())
    if front.successor and os.environ.get("SLURM_JOB_ID"):
        # The front job's own limit: a new front job adopts the replicas (front.json is
        # gone first, so it does not take this one for alive).
        spec = store.read_spec(service_dir)
        if spec.desired == "UP":
            _log(f"the front's time limit is near: next front is job "
                 f"{submit_front(spec, service_dir)}")  # fmt: skip
    return code


@dataclass
class ServiceFront:
    """One running front: the authenticating proxy on the public port (asyncio), the
    controller and the heartbeat (one thread each), vllm-router (a child process).
    ``stop`` ends it from a signal handler or a thread; ``successor`` says whether its
    own job's time limit stopped it (then the next front job takes over)."""

    service_dir: str
    name: str
    address: str
    port: int
    router_port: int
    key: str
    controller: Controller
    router: _proc.Child
    upstream_limit: int = FRONT_UPSTREAM_CONNECTIONS  # upstream_limit(): 0 for none
    models: tuple[str, ...] = ()  # the served model name (GET /v1/models while none is routed)
    # A request's wait for a replica when none is routed: a service that idles only (0:
    # none, the router answers as it does without workers).
    cold_start_wait: float = SERVICE_COLD_START_WAIT_SECONDS
    keys: KeyRing | None = None  # the users' keys (None: the internal key alone)
    usage: UsageBook = field(default_factory=UsageBook)
    log: Callable[[str], None] = _log
    clock: waits.Clock = waits.REAL
    started: float = field(default_factory=time.time)
    stopping: threading.Event = field(default_factory=threading.Event)
    successor: bool = False
    _wake: Callable[[], None] | None = None  # sets the serving loop's done event

    def beat(self) -> None:
        """Write front.json: where clients reach the service, and that the front lives."""
        store.write_front(
            self.service_dir,
            Front(
                url=str(self.controller.url), host=self.address, port=self.port,
                hostname=socket.gethostname(), pid=os.getpid(),
                job_id=os.environ.get("SLURM_JOB_ID"), started_at=self.started,
                heartbeat=time.time(),
            ),
        )  # fmt: skip
        self.usage.save(ServiceDir(self.service_dir).usage)

    def stop(self, why: str, *, successor: bool = False) -> None:
        """End ``serve`` (from a signal handler or any thread): the proxy closes, the
        controller's and the heartbeat's threads end; replicas keep serving."""
        self.log(why)
        if successor:
            self.successor = True
        self.stopping.set()
        if self._wake is not None:
            self._wake()

    def control(self) -> None:
        """The controller's loop (its own thread): a tick every TICK_SECONDS until the
        front stops, the router exits or the service is down. A failed tick is logged;
        the next one tries again."""
        for _ in waits.ticks(TICK_SECONDS, clock=self.clock):
            if self.stopping.is_set():
                return
            code = self.router.poll()
            if code is not None:
                self.stop(f"vllm-router exited ({_proc.ended(code)})")
                return
            try:
                state = self.controller.tick()
            except Exception as exc:  # a bad tick is logged; the next one tries again
                self.log(f"controller tick failed: {type(exc).__name__}: {exc}")
                continue
            if state.state == "DOWN":
                self.stop(f"service {self.name} is down")
                return

    def serve(self) -> int:
        """Serve until ``stop``; 0."""
        # The heartbeat has its own thread, so a slow controller tick never ages it.
        heart = threading.Thread(
            target=keep_beating, args=(self.beat, self.stopping), kwargs={"log": self.log},
            name="heartbeat", daemon=True,
        )  # fmt: skip
        try:
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                return runner.run(self._serve(heart))
        finally:
            # No heartbeat once the front stops: run_front removes front.json next.
            self.stopping.set()
            if heart.is_alive():
                heart.join(FRONT_STALE_SECONDS)
            try:
                self.usage.save(ServiceDir(self.service_dir).usage)
            except Exception as exc:  # the last counts are lost; the front stops anyway
                self.log(f"usage not saved: {type(exc).__name__}: {exc}")

    async def _serve(self, heart: threading.Thread) -> int:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(done.set)

        self._wake = wake
        if self.stopping.is_set():
            done.set()
        for sig, why in ((signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "SIGINT")):
            loop.add_signal_handler(sig, self.stop, f"stopping on {why}; replicas keep serving")
        loop.add_signal_handler(
            signal.SIGUSR1, lambda: self.stop(
                "stopping on SIGUSR1 (the front's time limit is near); replicas keep serving",
                successor=True,
            ),
        )  # fmt: skip
        controller = self.controller
        metrics = FrontMetrics(
            replicas=lambda: replica_counts(controller.last),
            routed=lambda: controller.routed_count, handovers=lambda: controller.handovers,
            scale_decisions=lambda: controller.scale_decisions,
            wanted=lambda: None if controller.last is None else controller.last.wanted,
        )  # fmt: skip
        app = make_app(
            f"http://{LOOPBACK}:{self.router_port}", self.key,
            healthy=lambda: controller.routed_count > 0, upstream_limit=self.upstream_limit,
            keys=self.keys, usage=self.usage, metrics=metrics, activity=controller.activity,
            cold_start_wait=self.cold_start_wait,
            waking=lambda: waking_news(controller.last, time.time()), models=self.models,
        )  # fmt: skip
        site = await start_site(app, self.address, self.port)
        self.beat()
        store.note_front_beat(self.service_dir, os.environ.get("SLURM_JOB_ID"))
        self.log(f"service {self.name}: {controller.url} (router on {LOOPBACK}:{self.router_port})")
        thread = threading.Thread(target=self.control, name="controller", daemon=True)
        heart.start()
        thread.start()
        await done.wait()
        await site.cleanup()
        await asyncio.to_thread(thread.join, 30.0)
        return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop where it is installed (it comes with vLLM), else asyncio's:
    the proxy spends most of its time in the loop."""
    import importlib

    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
