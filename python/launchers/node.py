"""The per-node runtime: ``vllm-hpc node run --plan FILE`` on every node.

Rank 0 leads: it starts the Ray head (Ray runtimes), writes ``leader.json``, starts
``vllm serve`` at once while Ray workers join in parallel (it watches the Ray node
count itself and fails with the missing node's name when its deadline passes), waits
until ``/health`` and ``/v1/models`` answer, writes ``endpoint.json`` and prints the
endpoint. Other ranks wait for ``leader.json`` and join (``ray start --block``) or run
their headless ``vllm serve``; they stop when the leader is gone.

Every child runs in its own session and is stopped as a tree on exit, on SIGTERM/SIGINT
(scancel, Ctrl+C) and on SIGUSR1 (SLURM's warning before the time limit).

Every door reaches this code through ``run_plan``: the sbatch scripts and the local
executor (``vllm-hpc node run --plan``), submitit's job function, and
``bin/multi-node-serving.sh leader|worker`` (planned by ``launchers.wrapper``).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import ClassVar

from launchers import _proc, jobdir, jobfiles, probe, versions, waits
from launchers.commands import (
    DP_START_RANK,
    JOB_DIR,
    JOB_ID,
    LEADER_IP,
    NODE_IP,
    NODE_RANK,
    WILDCARD_HOSTS,
    RayStart,
    ServeStart,
    check_installed,
)
from launchers.config import ContainerSpec
from launchers.defaults import (
    DEFAULT_API_PORT,
    DEFAULT_RAY_PORT,
)
from launchers.errors import InputError, RuntimeFailure, VllmHpcError, WaitTimeout
from launchers.health import (
    http_get,
    models_served,
    pick_port,
    port_free,
    port_open,
    wait_for_port,
)
from launchers.plan import LaunchPlan, fill_placeholders
from launchers.ray_cluster import RayWatcher, Snapshot, start_ray

HEAD_TIMEOUT = 60.0
LEADER_GONE_AFTER = 3  # failed checks of the leader before a node leaves
SERVE_GRACE = 15.0  # a stop asked for: let vLLM finish what it is doing
FAIL_GRACE = 5.0  # a failure: nothing worth waiting for
RAY_GRACE = 5.0  # Ray keeps no state worth a longer wait


def leader_check_interval(nodes: int) -> float:
    """Seconds between a serving worker's checks of the leader (endpoint.json read and a
    TCP connect to its port): 1 s up to 100 nodes, then longer so the job's total stays
    near 100 checks a second, at most 5 s (a stopped leader is seen within 5 s)."""
    return min(5.0, max(1.0, nodes / 100))


class Stopped(Exception):
    """A stop was asked for (signal); not a failure."""


class Stopper:
    """Turns SIGTERM/SIGINT/SIGHUP/SIGUSR1 into a flag the runtime's loops check."""

    REASONS: ClassVar[dict[int, str]] = {
        signal.SIGTERM: "SIGTERM (scancel or shutdown)",
        signal.SIGINT: "SIGINT (Ctrl+C)",
        signal.SIGHUP: "SIGHUP",
        signal.SIGUSR1: "SIGUSR1 (time limit near)",
        signal.SIGUSR2: "SIGUSR2 (time limit near)",
    }

    def __init__(self) -> None:
        self.reason: str | None = None
        for sig in self.REASONS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        del frame
        if self.reason is None:
            self.reason = self.REASONS.get(signum, f"signal {signum}")

    def check(self) -> None:
        if self.reason is not None:
            raise Stopped(self.reason)


class NodeLog:
    """Lines to stderr (the job's output) and to the node's log in the job directory."""

    def __init__(self, rank: int, path: str | None) -> None:
        self.rank = rank
        self.path = path
        self.t0 = time.monotonic()

    def __call__(self, message: str) -> None:
        line = f"[vllm-hpc rank{self.rank} +{time.monotonic() - self.t0:6.1f}s] {message}"
        print(line, file=sys.stderr, flush=True)
        if self.path:
            try:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError:
                pass


@dataclass
class NodeContext:
    rank: int
    nodes: int
    job_id: str
    job_dir: str
    attempt: int
    node_ip: str
    iface_reason: str
    env: dict[str, str]
    log: NodeLog
    stopper: Stopper
    hostname: str = field(default_factory=socket.gethostname)
    host_env: dict[str, str] = field(default_factory=dict)
    container: ContainerSpec | None = None
    binds: list[str] = field(default_factory=list)
    clock: waits.Clock = waits.REAL

    def logfile(self, name: str) -> str:
        return f"{self.job_dir}/{name}-{self.rank}.log"

    def command(
        self, argv: Sequence[str], extra: Mapping[str, str] | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment that run ``argv`` on this node: directly, or inside
        an Apptainer/Singularity image (enroot/pyxis wraps the whole step instead)."""
        env = {**self.env, **(extra or {})}
        if self.container is None or self.container.runtime == "enroot":
            return [_proc.resolve_executable(argv[0], env), *argv[1:]], env
        from launchers.containers import container_env, wrap_argv

        computed = {k: v for k, v in env.items() if self.host_env.get(k) != v}
        inner = container_env(self.host_env, computed)
        wrapped, child = wrap_argv(self.container, argv, env=inner, binds=self.binds)
        return wrapped, {**self.host_env, **child}

    def python_argv(self) -> list[str]:
        """The interpreter for helper processes (inside the image when there is one)."""
        if self.container is None or self.container.runtime == "enroot":
            return [sys.executable]
        return ["python3"]


@dataclass(frozen=True)
class LeaderTask:
    """Rank 0's part of a plan: typed starts, and the placeholder values this node knows.
    A moved port is a new typed start (``ray.moved(port)``); argvs are built from them."""

    ray: RayStart | None
    serve: ServeStart | None
    serve_env: dict[str, str]
    values: dict[str, str]
    served_model_name: str | None
    expected_nodes: int
    nodes_timeout: float
    ready_timeout: float
    overlap: bool = True
    api_key_file: str | None = None
    health_path: str = "/health"
    models_path: str = "/v1/models"

    def ray_argv(self) -> list[str] | None:
        return None if self.ray is None else fill_placeholders(self.ray.argv(), self.values)

    def serve_argv(self) -> list[str] | None:
        return None if self.serve is None else fill_placeholders(self.serve.argv(), self.values)

    @property
    def api_port(self) -> int:
        port = self.serve.port if self.serve is not None else None
        return DEFAULT_API_PORT if port is None else port

    @property
    def ray_port(self) -> int:
        return DEFAULT_RAY_PORT if self.ray is None else self.ray.port

    def api_host(self) -> str:
        """The address the API binds (placeholders filled)."""
        host = self.serve.host if self.serve is not None else None
        return fill_placeholders([host if host is not None else "0.0.0.0"], self.values)[0]  # noqa: S104

    def probe_host(self) -> str:
        """Where the leader asks its own API: the bound address, loopback for a wildcard."""
        host = self.api_host()
        return "127.0.0.1" if host in WILDCARD_HOSTS else host


@dataclass(frozen=True)
class FollowerTask:
    """A rank > 0: a Ray worker (``ray.port`` is the head's port, taken from leader.json
    when the leader has to be looked up) or a headless ``vllm serve``."""

    ray: RayStart | None
    serve: ServeStart | None
    serve_env: dict[str, str]
    values: dict[str, str]
    leader_ip: str | None  # None: read leader.json
    nodes_timeout: float


# --- the leader -------------------------------------------------------------------


class EndpointWriter:
    """The one writer of ``endpoint.json``: the job's state as the leader sees it."""

    def __init__(self, ctx: NodeContext, task: LeaderTask) -> None:
        self.path = jobfiles.endpoint_file(ctx.job_dir)
        self.record = jobfiles.Endpoint(
            state="PENDING",
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            hostname=ctx.hostname,
            leader_ip=ctx.node_ip,
            port=task.api_port,
            url=f"http://{ctx.node_ip}:{task.api_port}/v1",
            model=task.served_model_name,
            nodes=task.expected_nodes,
            api_key_file=task.api_key_file,
            started=jobdir.now(),
        )

    @property
    def state(self) -> str:
        return self.record.state

    def set(self, state: jobfiles.State, message: str, **facts: object) -> None:
        self.note(state=state, message=message, **facts)

    def note(self, **facts: object) -> None:
        """Record more facts (kept across state changes) and rewrite the file."""
        update = {**facts, "updated": jobdir.now()}
        self.record = jobfiles.Endpoint.model_validate({**self.record.model_dump(), **update})
        jobfiles.write(self.path, self.record)


def _require_vllm(ctx: NodeContext, serve_argv: Sequence[str] | None) -> None:
    """Refuse to start a vllm serve whose flags this node's vLLM lacks (a plan made for
    a newer target), before anything starts. Inside a container vLLM is the image's."""
    if serve_argv is None or ctx.container is not None:
        return
    installed = probe.installed_version(*probe.VLLM_DISTS)
    if installed is not None:
        check_installed(serve_argv, installed)


def _choose_port(port: int, fixed: bool, what: str, log: NodeLog) -> int:
    """Keep a free port; move an unfixed busy one to the next free port; refuse a fixed one."""
    if port_free(port):
        return port
    if fixed:
        raise RuntimeFailure(
            f"port: {what} port {port} is already in use on {socket.gethostname()}",
            fix="choose another with --port / --ray-port, or stop what holds it",
        )
    chosen = pick_port(port + 1)
    log(f"{what} port {port} is in use on this node; using {chosen}")
    return chosen


def _missing_nodes(ctx: NodeContext, snap: Snapshot) -> str:
    alive = {n.ip for n in snap.alive or ()}
    parts = []
    for rank in range(1, ctx.nodes):
        info = jobfiles.read(jobdir.node_file(ctx.job_dir, rank), jobfiles.NodeRecord)
        if info is None or info.attempt != ctx.attempt:
            parts.append(
                f"rank {rank} never started its runtime (see {ctx.job_dir}/node-{rank}.log)"
            )
        elif info.ip not in alive:
            parts.append(
                f"{info.hostname} ({info.ip}, rank {rank}) is not in the Ray "
                f"cluster (see {ctx.job_dir}/ray-{rank}.log)"
            )
    return "; ".join(parts) or "no node is missing by name (Ray saw fewer nodes)"


def _banner(ctx: NodeContext, task: LeaderTask, seconds: float) -> str:
    from launchers.render import curl_example

    url = f"http://{ctx.node_ip}:{task.api_port}/v1"
    return (
        f"READY after {seconds:.1f} s: {url} serves {task.served_model_name!r} "
        f"(on {ctx.hostname})\n"
        f"  {curl_example(url, task.served_model_name, task.api_key_file)}\n"
        f"  {_who_can_reach(ctx, task)}"
    )


def _who_can_reach(ctx: NodeContext, task: LeaderTask) -> str:
    """Say plainly who can call the API: the bound address and whether a key guards it."""
    host = task.api_host()
    if host in WILDCARD_HOSTS:
        where = (
            f"every interface of {ctx.hostname}: anyone who reaches {ctx.hostname}:{task.api_port}"
        )
    elif host in ("127.0.0.1", "localhost", "::1"):
        where = f"loopback only: processes on {ctx.hostname}"
    else:
        where = f"{host}: anyone who reaches {host}:{task.api_port}"
    guard = (
        f"with the API key in {task.api_key_file}"
        if task.api_key_file
        else "with no API key (anyone who reaches it can use the model)"
    )
    return f"reachable on {where}, {guard}"


def lead(ctx: NodeContext, task: LeaderTask) -> int:
    """Run rank 0 until vLLM exits, a node is lost, or a stop is asked for."""
    log, stopper = ctx.log, ctx.stopper
    endpoint = EndpointWriter(ctx, task)
    endpoint.set("STARTING", "starting on the leader")
    head: _proc.Child | None = None
    serve: _proc.Child | None = None
    watcher: RayWatcher | None = None
    try:
        _require_vllm(ctx, task.serve_argv())
        if task.serve is not None and task.serve.port is not None:
            port = _choose_port(task.serve.port, task.serve.port_fixed, "the API", log)
            if port != task.serve.port:
                task = replace(task, serve=task.serve.moved(port))
                endpoint.note(port=port, url=f"http://{ctx.node_ip}:{port}/v1")
        if task.ray is not None:
            port = _choose_port(task.ray.port, task.ray.port_fixed, "the Ray head", log)
            if port != task.ray.port:
                serve_env = dict(task.serve_env)
                if "RAY_ADDRESS" in serve_env:
                    serve_env["RAY_ADDRESS"] = f"{ctx.node_ip}:{port}"
                task = replace(task, ray=task.ray.moved(port), serve_env=serve_env)
            argv, env = ctx.command(task.ray_argv() or [])
            head = start_ray("ray-head", argv, env=env, log_path=ctx.logfile("ray"))
            log(f"Ray head starting on {ctx.node_ip}:{task.ray_port} (log {head.log_path})")
            ray_head = head

            def head_alive() -> bool:
                stopper.check()
                return ray_head.poll() is None

            waited = wait_for_port(
                ctx.node_ip,
                task.ray_port,
                timeout=HEAD_TIMEOUT,
                what="the Ray head",
                log=head.log_path,
                alive=head_alive,
            )
            log(f"Ray head up after {waited:.1f} s")
        jobfiles.write(
            jobfiles.leader_file(ctx.job_dir),
            jobfiles.Leader(
                job_id=ctx.job_id,
                attempt=ctx.attempt,
                ip=ctx.node_ip,
                hostname=ctx.hostname,
                ray_port=task.ray_port if task.ray is not None else None,
                api_port=task.api_port,
                time=jobdir.now(),
            ),
        )
        if head is not None:
            address = f"{ctx.node_ip}:{task.ray_port}"
            argv, env = ctx.command([*ctx.python_argv(), "-m", "launchers.ray_watch", address])
            watcher = RayWatcher(argv, env=env, log_path=ctx.logfile("ray-watch"))
            endpoint.set("WAITING_NODES", f"waiting for {task.expected_nodes} Ray node(s)")
            if not task.overlap or task.serve is None:
                _wait_nodes(ctx, task, watcher, head)
        serve_argv = task.serve_argv()
        if serve_argv is not None:
            argv, env = ctx.command(serve_argv, task.serve_env)
            serve = _proc.start("vllm", argv, env=env, log_path=ctx.logfile("vllm"))
            log(f"vllm serve started (pid {serve.pid}, log {serve.log_path})")
            log("  " + shlex.join(serve_argv))
            endpoint.set("LOADING", "vllm serve is starting")
        return _supervise(ctx, task, endpoint, head, serve, watcher)
    except Stopped as stop:
        failure = _node_failure(ctx)
        if failure:  # SLURM ends the step when a rank fails: say which and why
            log(f"FAILED: {failure}")
            endpoint.set("FAILED", failure)
            return 1
        log(f"stopping: {stop}")
        endpoint.set("STOPPED", f"stopped by {stop}")
        return 0
    except VllmHpcError as exc:
        log(f"FAILED: {exc.one_line()}")
        logs = serve.log_path if serve is not None else head.log_path if head else None
        endpoint.set("FAILED", exc.one_line(), log_tail=_proc.tail_lines(logs) if logs else [])
        return 1
    finally:
        if serve is not None:
            log("stopping vllm serve")
            serve.stop(grace=SERVE_GRACE if endpoint.state == "STOPPED" else FAIL_GRACE)
        if watcher is not None:
            watcher.stop()
        if head is not None:
            log("stopping the Ray head")
            head.stop(grace=RAY_GRACE)
        log(f"leader done ({endpoint.state})")


def _died(name: str, code: int, log_path: str) -> str:
    """``vllm serve exited with code 1: <the error from its log>``; for a killed process
    the log's last line is no reason, so only an error line found in it is added."""
    why = _proc.reason(log_path, fallback=code >= 0)
    return f"{name} {_proc.ended(code)}" + (f": {why}" if why else "")


def _node_failure(ctx: NodeContext) -> str | None:
    failures = jobfiles.failures(ctx.job_dir, ctx.attempt)
    if not failures:
        return None
    first = failures[0]
    return f"node {first.hostname} (rank {first.rank}) failed: {first.message}"


def _wait_nodes(
    ctx: NodeContext, task: LeaderTask, watcher: RayWatcher, head: _proc.Child
) -> Snapshot:
    last: list[Snapshot] = []

    def joined() -> Snapshot | None:
        ctx.stopper.check()
        if head.poll() is not None:
            raise RuntimeFailure(
                f"the Ray head exited (code {head.poll()})", fix=f"read {head.log_path}"
            )
        snap = watcher.latest()
        if not last or snap.count != last[-1].count:
            ctx.log(f"{snap.count}/{task.expected_nodes} Ray node(s) alive")
        last[:] = [snap]
        return snap if snap.count >= task.expected_nodes else None

    def missing() -> str:
        snap = last[-1]
        return f", {snap.count} joined: {_missing_nodes(ctx, snap)}"

    return waits.wait_for(
        joined,
        what=f"{task.expected_nodes} Ray nodes",
        detail=missing,
        timeout=task.nodes_timeout,
        clock=ctx.clock,
    ).value


def _supervise(
    ctx: NodeContext,
    task: LeaderTask,
    endpoint: EndpointWriter,
    head: _proc.Child | None,
    serve: _proc.Child | None,
    watcher: RayWatcher | None,
) -> int:
    log = ctx.log
    nodes_ok = watcher is None or not task.overlap or serve is None
    ready = serve is None
    if serve is None and watcher is not None:
        log(
            f"Ray cluster ready with {task.expected_nodes} node(s) at {ctx.node_ip}:{task.ray_port}"
        )
        endpoint.set("READY", "Ray cluster ready (no model given)")
    last_count = -1
    for elapsed in waits.ticks(clock=ctx.clock):  # until a child exits or a stop
        ctx.stopper.check()
        if serve is not None:
            code = serve.poll()
            if code is not None:
                raise RuntimeFailure(
                    _died("vllm serve", code, serve.log_path),
                    fix=f"read {serve.log_path}",
                )
        if head is not None and head.poll() is not None:
            raise RuntimeFailure(
                f"the Ray head exited (code {head.poll()})", fix=f"read {head.log_path}"
            )
        if watcher is not None:
            snap = watcher.latest()
            if snap.alive is not None and snap.count != last_count:
                last_count = snap.count
                log(f"{snap.count}/{task.expected_nodes} Ray node(s) alive")
                endpoint.note(
                    ray_nodes=[{"ip": n.ip, "name": n.name, "gpus": n.gpus} for n in snap.alive]
                )  # validated into jobfiles.RayNode
            if not nodes_ok:
                if snap.count >= task.expected_nodes:
                    nodes_ok = True
                elif elapsed > task.nodes_timeout:
                    raise WaitTimeout(
                        f"waited {task.nodes_timeout:.0f} s for {task.expected_nodes} Ray nodes, "
                        f"{snap.count} joined: {_missing_nodes(ctx, snap)}"
                    )
            elif snap.alive is not None and snap.count < task.expected_nodes:
                raise RuntimeFailure(
                    f"lost a node: {snap.count}/{task.expected_nodes} Ray nodes alive; "
                    + _missing_nodes(ctx, snap)
                )
        if not ready and serve is not None:
            base = f"http://{task.probe_host()}:{task.api_port}"
            key = _read_key(task.api_key_file)
            if http_get(f"{base}{task.health_path}", api_key=key, timeout=1.0).ok:
                models = http_get(f"{base}{task.models_path}", api_key=key, timeout=2.0)
                if models.ok and task.served_model_name in models_served(models.detail):
                    ready = True
                    seconds = time.monotonic() - ctx.log.t0
                    endpoint.set("READY", "serving", ready_seconds=round(seconds, 2))
                    log(_banner(ctx, task, seconds))
            if not ready and elapsed > task.ready_timeout:
                raise WaitTimeout(
                    f"waited {task.ready_timeout:.0f} s for vllm serve to answer /health and "
                    f"/v1/models",
                    fix=f"read {serve.log_path}",
                )
    raise AssertionError("unreachable: ticks() never ends")


def _read_key(path: str | None) -> str | None:
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


# --- the other nodes ---------------------------------------------------------------


def _wait_leader(ctx: NodeContext, timeout: float) -> jobfiles.Leader:
    path = jobfiles.leader_file(ctx.job_dir)

    def written() -> jobfiles.Leader | None:
        ctx.stopper.check()
        leader = jobfiles.read(path, jobfiles.Leader)
        if leader and leader.attempt == ctx.attempt and leader.job_id == ctx.job_id:
            return leader
        ending = jobfiles.read(jobfiles.endpoint_file(ctx.job_dir), jobfiles.Endpoint)
        if ending and ending.attempt == ctx.attempt and ending.final:
            raise RuntimeFailure(f"the leader ended ({ending.state}): {ending.message}")
        return None

    return waits.wait_for(
        written,
        what=f"the leader (rank 0) to write {path}",
        timeout=timeout,
        log=f"{ctx.job_dir}/node-0.log",
        clock=ctx.clock,
    ).value


def _stop_check(ctx: NodeContext) -> Callable[[], bool]:
    def alive() -> bool:
        ctx.stopper.check()
        return True

    return alive


def _leader_ended(ctx: NodeContext) -> str | None:
    ending = jobfiles.read(jobfiles.endpoint_file(ctx.job_dir), jobfiles.Endpoint)
    if ending and ending.attempt == ctx.attempt and ending.final:
        return f"the leader is {ending.state}"
    return None


def follow(ctx: NodeContext, task: FollowerTask) -> int:
    """Run a rank > 0: a Ray worker, or a headless vLLM rank."""
    log = ctx.log
    child: _proc.Child | None = None
    try:
        serve_argv = None if task.serve is None else task.serve.argv()
        _require_vllm(ctx, serve_argv)
        ray, leader_ip = task.ray, task.leader_ip
        if leader_ip is None:
            info = _wait_leader(ctx, task.nodes_timeout)
            leader_ip = info.ip
            if ray is not None and info.ray_port is not None:
                ray = ray.moved(info.ray_port)
            log(f"leader is {info.hostname} at {leader_ip}")
        values = {**task.values, LEADER_IP: leader_ip}
        # A Ray worker also watches the head's port: the leader is gone when it closes.
        leader_port = None if ray is None else ray.port
        if ray is not None:
            waited = wait_for_port(
                leader_ip,
                ray.port,
                timeout=task.nodes_timeout,
                what="the Ray head of the leader",
                log=f"{ctx.job_dir}/node-0.log on the leader",
                alive=_stop_check(ctx),
            )
            log(f"the Ray head at {leader_ip}:{ray.port} answered after {waited:.1f} s")
            argv, env = ctx.command(fill_placeholders(ray.argv(), values))
            child = start_ray("ray-worker", argv, env=env, log_path=ctx.logfile("ray"))
            log(f"joining Ray at {leader_ip}:{ray.port} (log {child.log_path})")
        elif task.serve is not None and serve_argv is not None:
            argv = fill_placeholders(serve_argv, values)
            rendezvous = task.serve.rendezvous
            if rendezvous is not None:
                waited = wait_for_port(
                    leader_ip,
                    rendezvous.port,
                    timeout=task.nodes_timeout,
                    what="the leader's vLLM rendezvous port",
                    log=f"{ctx.job_dir}/vllm-0.log on the leader",
                    alive=_stop_check(ctx),
                )
                log(f"the leader's port {rendezvous.port} answered after {waited:.1f} s")
            extra = {k: fill_placeholders([v], values)[0] for k, v in task.serve_env.items()}
            argv, env = ctx.command(argv, extra)
            child = _proc.start("vllm", argv, env=env, log_path=ctx.logfile("vllm"))
            log(f"headless vllm serve started (log {child.log_path})")
        else:
            raise InputError(f"node rank {ctx.rank} has nothing to run in this plan")
        misses = 0
        interval = leader_check_interval(ctx.nodes)
        next_check = 0.0
        for elapsed in waits.ticks(clock=ctx.clock):  # until the child or the leader ends
            ctx.stopper.check()
            code = child.poll()
            if code is not None:
                ended = _leader_ended(ctx)
                if ended or code == 0:
                    log(f"{child.name} exited ({code}); {ended or 'done'}")
                    return 0
                raise RuntimeFailure(
                    _died(child.name, code, child.log_path),
                    fix=f"read {child.log_path}",
                )
            if elapsed >= next_check:
                next_check = elapsed + interval
                ended = _leader_ended(ctx)
                gone = leader_port is not None and not port_open(leader_ip, leader_port)
                misses = misses + 1 if gone else 0
                if ended or misses >= LEADER_GONE_AFTER:
                    log(f"{ended or 'the leader is gone'}; leaving")
                    return 0
        raise AssertionError("unreachable: ticks() never ends")
    except Stopped as stop:
        log(f"stopping: {stop}")
        return 0
    except VllmHpcError as exc:
        log(f"FAILED: {exc.one_line()}")
        jobfiles.write(
            jobdir.failure_file(ctx.job_dir, ctx.rank),
            jobfiles.Failure(rank=ctx.rank, hostname=ctx.hostname, attempt=ctx.attempt,
                             message=exc.one_line(), time=jobdir.now()),
        )  # fmt: skip
        return 1
    finally:
        if child is not None:
            child.stop(grace=RAY_GRACE if task.ray is not None else SERVE_GRACE)
        log("node done")


# --- from a plan (sbatch and submitit doors) -------------------------------------


def node_rank(environ: Mapping[str, str]) -> int:
    for key in ("SLURM_NODEID", "SLURM_PROCID", "VLLM_HPC_RANK"):
        if environ.get(key, "").isdigit():
            return int(environ[key])
    return 0


def _network(iface: str | None, environ: Mapping[str, str]) -> tuple[dict[str, str], str]:
    from launchers.network import detect

    override = iface or environ.get("VLLM_HPC_IFACE") or None
    given = None if override else (environ.get("VLLM_HOST_IP") or None)
    return detect(override, given)


def context(
    *,
    rank: int,
    nodes: int,
    job_id: str,
    job_dir: str,
    iface: str | None,
    extra_env: Mapping[str, str],
    environ: Mapping[str, str],
    node_log: str | None,
) -> NodeContext:
    net_env, reason = _network(iface, environ)  # a bad --iface: nothing created yet
    jobdir.ensure_dir(job_dir)
    log = NodeLog(rank, node_log)
    attempt = int(environ.get("SLURM_RESTART_COUNT", "0") or 0)
    env = {**environ, **extra_env, **net_env}
    ctx = NodeContext(
        rank=rank,
        nodes=nodes,
        job_id=job_id,
        job_dir=job_dir,
        attempt=attempt,
        node_ip=net_env["VLLM_HOST_IP"],
        iface_reason=reason,
        env=env,
        log=log,
        stopper=Stopper(),
        host_env=dict(environ),
    )
    of = f"/{nodes}" if nodes else ""  # a wrapper's worker does not know the cluster size
    log(f"{ctx.hostname} rank {rank}{of} job {job_id}; network: {reason}")
    log("exports: " + " ".join(f"{k}={v}" for k, v in net_env.items()))
    jobfiles.write(
        jobdir.node_file(job_dir, rank),
        jobfiles.NodeRecord(
            rank=rank,
            hostname=ctx.hostname,
            ip=ctx.node_ip,
            attempt=attempt,
            pid=os.getpid(),
            time=jobdir.now(),
        ),
    )
    return ctx


def run_plan(
    plan: LaunchPlan,
    *,
    rank: int | None = None,
    job_id: str | None = None,
    iface: str | None = None,
    environ: Mapping[str, str] | None = None,
    leader_ip: str | None = None,
) -> int:
    """Play ``rank``'s role in ``plan``. Followers find the leader in ``leader.json``
    unless ``leader_ip`` is given (nodes without a shared job directory)."""
    env_in = dict(os.environ if environ is None else environ)
    rank = node_rank(env_in) if rank is None else rank
    job_id = job_id or env_in.get("SLURM_JOB_ID") or f"local-{os.getpid()}"
    job_dir = plan.paths.job_dir.replace(JOB_ID, job_id)
    node_log = plan.paths.node_log.replace(JOB_ID, job_id).replace("{rank}", str(rank))
    ctx = context(
        rank=rank,
        nodes=plan.layout.nodes,
        job_id=job_id,
        job_dir=job_dir,
        iface=iface or plan.env.get("VLLM_HPC_IFACE"),
        extra_env=plan.env,
        environ=env_in,
        node_log=node_log,
    )
    key_file = plan.api_key_file.replace(JOB_ID, job_id) if plan.api_key_file else None
    token_file = plan.ray_token_file.replace(JOB_ID, job_id) if plan.ray_token_file else None
    if rank == 0:
        jobdir.remove_stale(job_dir)
        if plan.generate_api_key and key_file and jobdir.ensure_secret(key_file):
            ctx.log(f"new API key in {key_file} (0600)")
        if token_file and jobdir.ensure_secret(token_file):
            ctx.log(f"new Ray auth token in {token_file} (0600)")
    if token_file:
        ctx.env.update(ray_auth_env(token_file, ctx.log))
    if plan.container is not None:
        from launchers.containers import required_binds

        ctx.container = plan.container
        ctx.binds = list(plan.container_binds) or required_binds(plan, env_in)
        ctx.log(f"processes run in {plan.container} (binds: {', '.join(ctx.binds)})")
    role = plan.role_for_rank(rank)
    values = {
        NODE_IP: ctx.node_ip,
        LEADER_IP: ctx.node_ip if rank == 0 else LEADER_IP,
        JOB_ID: job_id,
        JOB_DIR: job_dir,
        NODE_RANK: str(rank),
        DP_START_RANK: str(rank * plan.layout.dp_local),
    }

    if rank == 0:
        role_env = {k: fill_placeholders([v], values)[0] for k, v in role.env.items()}
        task = LeaderTask(
            ray=role.ray,
            serve=role.serve,
            serve_env={**role_env, **_api_key_env(key_file)},
            values=values,
            served_model_name=plan.served_model_name or None,  # a Ray-only plan serves none
            expected_nodes=plan.ready.expected_nodes,
            nodes_timeout=plan.ready.nodes_timeout,
            ready_timeout=plan.ready.ready_timeout,
            api_key_file=key_file,
            health_path=plan.ready.health_path,
            models_path=plan.ready.models_path,
        )
        return lead(ctx, task)
    follower = FollowerTask(
        ray=role.ray,
        serve=role.serve,
        serve_env=dict(role.env),
        values={k: v for k, v in values.items() if k != LEADER_IP},
        leader_ip=leader_ip,
        nodes_timeout=plan.ready.nodes_timeout,
    )
    return follow(ctx, follower)


RAY_AUTH_SINCE = (2, 52)


def ray_auth_env(token_file: str, log: Callable[[str], None]) -> dict[str, str]:
    """Ray token authentication for every ``ray start``, ``vllm serve`` and watch."""
    version = probe.installed_version("ray") or ""
    try:
        old = bool(version) and versions.release(version)[:2] < RAY_AUTH_SINCE
    except ValueError:
        old = False  # an unreadable version: assume a current Ray
    if old:
        log(f"Ray {version} has no token authentication (2.52+): the Ray ports are open")
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}


def _api_key_env(path: str | None) -> dict[str, str]:
    key = _read_key(path)
    return {"VLLM_API_KEY": key} if key else {}


def load_plan(path: str) -> LaunchPlan:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--plan: cannot read {path}: {exc.strerror}") from None
    return LaunchPlan.model_validate_json(text)
