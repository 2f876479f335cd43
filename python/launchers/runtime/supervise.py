"""The leader's watch over its job, once everything is started: its children alive, the
Ray node count kept (a lost node fails the job by name), and READY when ``/health`` and
``/v1/models`` answer. Time comes from the context's clock, so it is unit-tested."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from launchers import _proc, health, waits
from launchers.defaults import AUTH_MIDDLEWARE, DRAIN_SECONDS, KEYLESS_PROBE_PATH
from launchers.errors import RuntimeFailure, WaitTimeout
from launchers.jobdir import jobfiles
from launchers.runtime.context import NodeContext, read_key
from launchers.runtime.endpoint import EndpointWriter, banner
from launchers.runtime.ray_cluster import RayWatcher, Snapshot
from launchers.runtime.tasks import LeaderTask

# Graces of one stop (SIGTERM, then SIGKILL after this many seconds). With the waits
# after SIGKILL they add up to at most defaults.TEARDOWN_SECONDS, inside SLURM's KillWait.
SERVE_GRACE = 15.0  # a stop asked for: vLLM drains (in-flight requests finish)
FAIL_GRACE = 5.0  # a failure: nothing worth waiting for
RAY_GRACE = 4.0  # Ray keeps no state worth a longer wait
WATCH_GRACE = 1.0  # the Ray watch holds nothing
# The API port held by another process for this long (after vllm serve started) fails
# the job: a process that bound it first keeps it, and waiting cannot change that.
PORT_TAKEN_SECONDS = 30.0


@dataclass
class LeaderProcs:
    """What the leader started; stopped as trees, vLLM first."""

    head: _proc.Child | None = None
    serve: _proc.Child | None = None
    watcher: RayWatcher | None = None

    def log_path(self) -> str | None:
        """The log that says most about a failure: vLLM's, else the Ray head's."""
        child = self.serve or self.head
        return None if child is None else child.log_path

    def stop(self, log: Callable[[str], None], *, asked: bool, time_limit: bool = False) -> None:
        """``asked``: a stop, not a failure; ``time_limit``: the warning before the time
        limit (no SIGKILL follows soon), so in-flight requests get DRAIN_SECONDS."""
        if self.serve is not None and asked and time_limit:
            # vLLM drains when its API server alone is told (it stops its engine, which
            # stops its workers): a worker told directly ends mid-request.
            log(
                f"draining vllm serve: SIGTERM to the API server alone, up to "
                f"{DRAIN_SECONDS + SERVE_GRACE:.0f} s for in-flight requests "
                f"(--shutdown-timeout {DRAIN_SECONDS}), then the rest of its tree"
            )
            began = time.monotonic()
            code = self.serve.drain(DRAIN_SECONDS + SERVE_GRACE, FAIL_GRACE)
            how = "did not end after SIGKILL" if code is None else _proc.ended(code)
            log(f"vllm serve {how} after {time.monotonic() - began:.1f} s")
        elif self.serve is not None:
            grace = SERVE_GRACE if asked else FAIL_GRACE
            drain = " for in-flight requests" if asked else ""
            log(f"stopping vllm serve: SIGTERM, {grace:.0f} s{drain}, then SIGKILL")
            stop_logged(self.serve, "vllm serve", grace, log)
        if self.watcher is not None:
            self.watcher.stop(grace=WATCH_GRACE)
        if self.head is not None:
            log(f"stopping the Ray head: SIGTERM, {RAY_GRACE:.0f} s, then SIGKILL")
            stop_logged(self.head, "the Ray head", RAY_GRACE, log)


def stop_logged(child: _proc.Child, what: str, grace: float, log: Callable[[str], None]) -> None:
    """Stop ``child``'s tree and say how it ended and how long it took."""
    began = time.monotonic()
    code = child.stop(grace=grace)
    how = "did not end after SIGKILL" if code is None else _proc.ended(code)
    log(f"{what} {how} after {time.monotonic() - began:.1f} s")


def died(name: str, code: int, log_path: str) -> str:
    """``vllm serve exited with code 1: <the error from its log>``; for a killed process
    the log's last line is no reason, so only an error line found in it is added."""
    why = _proc.reason(log_path, fallback=code >= 0)
    return f"{name} {_proc.ended(code)}" + (f": {why}" if why else "")


def node_failure(ctx: NodeContext) -> str | None:
    """The first failure another rank recorded in this attempt, said as one line."""
    failures = jobfiles.failures(ctx.job_dir, ctx.attempt)
    if not failures:
        return None
    first = failures[0]
    return f"node {first.hostname} (rank {first.rank}) failed: {first.message}"


def missing_nodes(ctx: NodeContext, snap: Snapshot) -> str:
    """Which ranks are not in the Ray cluster, and why as far as the job directory says."""
    alive = {n.ip for n in snap.alive or ()}
    parts = []
    for rank in range(1, ctx.nodes):
        info = jobfiles.read(ctx.files.node(rank), jobfiles.NodeRecord)
        if info is None or info.attempt != ctx.attempt:
            parts.append(f"rank {rank} never started its runtime (see {ctx.files.node_log(rank)})")
        elif info.ip not in alive:
            parts.append(
                f"{info.hostname} ({info.ip}, rank {rank}) is not in the Ray "
                f"cluster (see {ctx.files.log('ray', rank)})"
            )
    return "; ".join(parts) or "no node is missing by name (Ray saw fewer nodes)"


def head_exited(head: _proc.Child) -> RuntimeFailure:
    return RuntimeFailure(f"the Ray head exited (code {head.poll()})", fix=f"read {head.log_path}")


def wait_nodes(
    ctx: NodeContext, task: LeaderTask, watcher: RayWatcher, head: _proc.Child
) -> Snapshot:
    """Wait (with the nodes deadline) until ``expected_nodes`` Ray nodes are alive."""
    last: list[Snapshot] = []

    def joined() -> Snapshot | None:
        ctx.stopper.check()
        if head.poll() is not None:
            raise head_exited(head)
        snap = watcher.latest()
        if not last or snap.count != last[-1].count:
            ctx.log(f"{snap.count}/{task.expected_nodes} Ray node(s) alive")
        last[:] = [snap]
        return snap if snap.count >= task.expected_nodes else None

    def missing() -> str:
        snap = last[-1]
        return f", {snap.count} joined: {missing_nodes(ctx, snap)}"

    return waits.wait_for(
        joined,
        what=f"{task.expected_nodes} Ray nodes",
        detail=missing,
        timeout=task.nodes_timeout,
        clock=ctx.clock,
    ).value


class _Watch:
    """One leader's supervision state; ``tick`` raises when the job must end."""

    def __init__(
        self, ctx: NodeContext, task: LeaderTask, endpoint: EndpointWriter, procs: LeaderProcs
    ) -> None:
        self.ctx, self.task, self.endpoint, self.procs = ctx, task, endpoint, procs
        # With overlap, vLLM starts while the nodes join: their deadline is watched here.
        self.nodes_ok = procs.watcher is None or not task.overlap or procs.serve is None
        self.ready = procs.serve is None
        self.last_count = -1
        self.not_ours = ""  # why the API port is not known to be vllm serve's
        self.taken_since: float | None = None  # since when another process holds it

    def tick(self, elapsed: float) -> None:
        self.ctx.stopper.check()
        self._children()
        if self.procs.watcher is not None:
            self._nodes(self.procs.watcher.latest(), elapsed)
        if not self.ready and self.procs.serve is not None:
            self._readiness(self.procs.serve, elapsed)

    def _children(self) -> None:
        serve, head = self.procs.serve, self.procs.head
        if serve is not None:
            code = serve.poll()
            if code is not None:
                raise RuntimeFailure(
                    died("vllm serve", code, serve.log_path), fix=f"read {serve.log_path}"
                )
        if head is not None and head.poll() is not None:
            raise head_exited(head)

    def _nodes(self, snap: Snapshot, elapsed: float) -> None:
        expected = self.task.expected_nodes
        if snap.alive is not None and snap.count != self.last_count:
            self.last_count = snap.count
            self.ctx.log(f"{snap.count}/{expected} Ray node(s) alive")
            self.endpoint.note(
                ray_nodes=[{"ip": n.ip, "name": n.name, "gpus": n.gpus} for n in snap.alive]
            )  # validated into jobfiles.RayNode
        if not self.nodes_ok:
            if snap.count >= expected:
                self.nodes_ok = True
            elif elapsed > self.task.nodes_timeout:
                raise WaitTimeout(
                    f"waited {self.task.nodes_timeout:.0f} s for {expected} Ray nodes, "
                    f"{snap.count} joined: {missing_nodes(self.ctx, snap)}"
                )
        elif snap.alive is not None and snap.count < expected:
            raise RuntimeFailure(
                f"lost a node: {snap.count}/{expected} Ray nodes alive; "
                + missing_nodes(self.ctx, snap)
            )

    def _ours(self, task: LeaderTask, serve: _proc.Child) -> bool:
        """Whether the API port is held by ``serve``'s process tree (said once in the log
        each time the answer changes: waiting goes on until it is)."""
        owner = health.listener_owner(task.self_address(), task.api_port, serve.pid)
        if not owner.ours and owner.why != self.not_ours:
            self.ctx.log(f"not sending the API key yet: {owner.why}")
        self.not_ours = "" if owner.ours else owner.why
        if not owner.taken:
            self.taken_since = None
        elif self.taken_since is None:
            self.taken_since = self.ctx.clock.now()
        elif self.ctx.clock.now() - self.taken_since > PORT_TAKEN_SECONDS:
            raise RuntimeFailure(
                f"port: the API port {task.api_port} on {self.ctx.hostname} is held by another "
                f"process ({owner.why}); this job's vllm serve cannot serve on it",
                fix="resubmit (a free port is chosen at start), or pass a free --port",
            )
        return bool(owner.ours)

    def _serving(self, task: LeaderTask, serve: _proc.Child, base: str) -> bool:
        """``/v1/models`` lists the served model (asked with the key only when the API
        port is held by the vllm serve we started)."""
        key = read_key(task.api_key_file)
        if key is not None and not self._ours(task, serve):
            return False
        models = health.http_get(f"{base}{task.models_path}", api_key=key, timeout=2.0)
        if not (models.ok and task.served_model_name in health.models_served(models.detail)):
            return False
        if key is not None:
            self._door_shut(base, serve)
        return True

    def _door_shut(self, base: str, serve: _proc.Child) -> None:
        """Fail closed: a keyed job whose vLLM answers a route other than /health
        without the key (its key middleware is not in place) never says READY."""
        keyless = health.http_get(f"{base}{KEYLESS_PROBE_PATH}", timeout=2.0)
        if keyless.status != 401:
            raise RuntimeFailure(
                f"vllm serve answers {KEYLESS_PROBE_PATH} without the API key "
                f"({keyless.status or keyless.detail}): the key middleware "
                f"({AUTH_MIDDLEWARE}) is not in place, so the job does not serve",
                fix=f"read {serve.log_path}; keep --middleware {AUTH_MIDDLEWARE} in the "
                "serve command (it comes with vllm-hpc)",
            )

    def _readiness(self, serve: _proc.Child, elapsed: float) -> None:
        task = self.task
        base = f"http://{task.self_address()}:{task.api_port}"
        # /health needs no key: another user on this node may bind the port first.
        if health.http_get(f"{base}{task.health_path}", timeout=1.0).ok and self._serving(
            task, serve, base
        ):
            self.ready = True
            seconds = time.monotonic() - self.ctx.log.t0
            self.endpoint.set("READY", "serving", ready_seconds=round(seconds, 2))
            self.ctx.log(banner(self.ctx, task, seconds))
            return
        if elapsed > task.ready_timeout:
            unsent = f" (the API key was not sent: {self.not_ours})" if self.not_ours else ""
            raise WaitTimeout(
                f"waited {task.ready_timeout:.0f} s for vllm serve to answer /health and "
                f"/v1/models{unsent}",
                fix=f"read {serve.log_path}",
            )


def supervise(
    ctx: NodeContext, task: LeaderTask, endpoint: EndpointWriter, procs: LeaderProcs
) -> int:
    """Watch until a child exits, a node is lost, a deadline passes (raises) or a stop
    is asked for (``Stopped``)."""
    watch = _Watch(ctx, task, endpoint, procs)
    if procs.serve is None and procs.watcher is not None:
        ctx.log(
            f"Ray cluster ready with {task.expected_nodes} node(s) at {ctx.node_ip}:{task.ray_port}"
        )
        endpoint.set("READY", "Ray cluster ready (no model given)")
    for elapsed in waits.ticks(clock=ctx.clock):  # until a child exits or a stop
        watch.tick(elapsed)
    raise AssertionError("unreachable: ticks() never ends")
