"""A rank > 0: find the leader (``leader.json``, or the address given), join its Ray
cluster or run a headless ``vllm serve``, and leave when the leader is gone."""

from __future__ import annotations

import signal
from dataclasses import replace
from types import FrameType

from launchers import _proc, health, jobdir, waits
from launchers.errors import InputError, RuntimeFailure, VllmHpcError
from launchers.jobdir import jobfiles
from launchers.jobdir.safe import check_private
from launchers.runtime import preflight, ray_cluster, unexpected
from launchers.runtime.context import NodeContext, Stopped, require_vllm
from launchers.runtime.supervise import RAY_GRACE, SERVE_GRACE, died, stop_logged
from launchers.runtime.tasks import FollowerTask, fill_env

LEADER_GONE_AFTER = 3  # failed checks of the leader before a node leaves


def leader_check_interval(nodes: int) -> float:
    """Seconds between a serving worker's checks of the leader (endpoint.json read and a
    TCP connect to its port): 1 s up to 100 nodes, then longer so the job's total stays
    near 100 checks a second, at most 5 s (a stopped leader is seen within 5 s)."""
    return min(5.0, max(1.0, nodes / 100))


def wait_leader(ctx: NodeContext, timeout: float) -> jobfiles.Leader:
    """``leader.json`` of this job and attempt; fails early when the leader has ended."""
    path = ctx.leader_file
    check_private(ctx.job_dir, "job directory")  # leader.json only from a dir of ours

    def written() -> jobfiles.Leader | None:
        ctx.stopper.check()
        leader = jobfiles.read(path, jobfiles.Leader)
        if leader and leader.attempt == ctx.attempt and leader.job_id == ctx.job_id:
            return leader
        ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
        if ending and ending.attempt == ctx.attempt and ending.final:
            if ending.state == "STOPPED":  # asked to stop (a time-limit drain): not a failure
                raise Stopped(f"the leader stopped ({ending.message})")
            raise RuntimeFailure(f"the leader ended ({ending.state}): {ending.message}")
        return None

    return waits.wait_for(
        written,
        what=f"the leader (rank 0) to write {path}",
        timeout=timeout,
        log=ctx.files.node_log(0),
        clock=ctx.clock,
    ).value


def leader_ended(ctx: NodeContext) -> str | None:
    """Why the leader has ended (its endpoint.json says FAILED or STOPPED), or None. A
    leader that is DRAINING has not: its vLLM may still need this node to finish."""
    ending = jobfiles.read(ctx.endpoint_file, jobfiles.Endpoint)
    if ending and ending.attempt == ctx.attempt and ending.final:
        return f"the leader is {ending.state}"
    return None


def _find_leader(ctx: NodeContext, task: FollowerTask) -> FollowerTask:
    """The task with the leader's address, its Ray port moved to leader.json's."""
    if task.leader_ip is not None:
        return task
    info = wait_leader(ctx, task.nodes_timeout)
    ctx.log(f"leader is {info.hostname} at {info.ip}")
    ray = task.ray
    if ray is not None and info.ray_port is not None:
        ray = ray.moved(info.ray_port)
    return replace(task, ray=ray, leader_ip=info.ip)


def _wait_leader_port(
    ctx: NodeContext, task: FollowerTask, leader_ip: str, port: int, what: str, log: str
) -> float:
    """Wait (the nodes deadline) until the leader's ``port`` opens; ``log`` (on the
    leader) says why not. Returns the seconds waited."""
    return health.wait_for_port(
        leader_ip,
        port,
        timeout=task.nodes_timeout,
        what=what,
        log=f"{log} on the leader",
        alive=ctx.stop_check,
    )


def _join_ray(ctx: NodeContext, task: FollowerTask, leader_ip: str) -> _proc.Child:
    assert task.ray is not None
    ray = task.ray
    what = "the Ray head of the leader"
    waited = _wait_leader_port(ctx, task, leader_ip, ray.port, what, ctx.files.node_log(0))
    ctx.log(f"the Ray head at {leader_ip}:{ray.port} answered after {waited:.1f} s")
    planned = ctx.start_argv(ray, task.known_values())
    argv, env = ctx.command(planned)
    child = ray_cluster.start_ray("ray-worker", argv, env=env, log_path=ctx.logfile("ray"))
    ctx.started("ray", planned, argv, child.pid)
    ctx.log(f"joining Ray at {leader_ip}:{ray.port} (log {child.log_path})")
    return child


def _join_ray_or_verdict(
    ctx: NodeContext, task: FollowerTask, leader_ip: str, check: preflight.Running | None
) -> _proc.Child:
    """Join Ray without waiting for the pre-flight's verdict: vLLM's workers come to this
    node from the leader's ``vllm serve``, which waits for the leader's verdict, the check
    this node's is part of. When the Ray head never answers, a failed check's verdict
    (which names the link) is the error."""
    try:
        return _join_ray(ctx, task, leader_ip)
    except VllmHpcError:
        if check is not None:
            preflight.finish(ctx, check)
        raise


def _start_headless(ctx: NodeContext, task: FollowerTask, leader_ip: str) -> _proc.Child:
    assert task.serve is not None
    values = task.known_values()
    rendezvous = task.serve.rendezvous
    if rendezvous is not None:
        what = "the leader's vLLM rendezvous port"
        waited = _wait_leader_port(
            ctx, task, leader_ip, rendezvous.port, what, ctx.files.log("vllm", 0)
        )
        ctx.log(f"the leader's port {rendezvous.port} answered after {waited:.1f} s")
    planned = ctx.start_argv(task.serve, values)
    argv, env = ctx.command(planned, fill_env(task.serve_env, values))
    child = _proc.start("vllm", argv, env=env, log_path=ctx.logfile("vllm"))
    ctx.started("serve", planned, argv, child.pid)
    ctx.log(f"headless vllm serve started (log {child.log_path})")
    return child


def _watch(ctx: NodeContext, child: _proc.Child, leader_ip: str, leader_port: int | None) -> int:
    """Until the child or the leader ends: 0 when the leader ended or the child was done,
    a failure when the child died on its own."""
    misses = 0
    interval = leader_check_interval(ctx.nodes)
    next_check = 0.0
    for elapsed in waits.ticks(clock=ctx.clock):
        ctx.stopper.check()
        code = child.poll()
        if code is not None:
            ended = leader_ended(ctx)
            if ended or code == 0:
                ctx.log(f"{child.name} exited ({code}); {ended or 'done'}")
                return 0
            raise RuntimeFailure(
                died(child.name, code, child.log_path), fix=f"read {child.log_path}"
            )
        if elapsed >= next_check:
            next_check = elapsed + interval
            ended = leader_ended(ctx)
            gone = leader_port is not None and not health.port_open(leader_ip, leader_port)
            misses = misses + 1 if gone else 0
            if ended or misses >= LEADER_GONE_AFTER:
                ctx.log(f"{ended or 'the leader is gone'}; leaving")
                return 0
    raise AssertionError("unreachable: ticks() never ends")


WARNINGS = (signal.SIGUSR1, signal.SIGUSR2)  # SLURM's (or submitit's) time-limit warning


def leave_the_drain_to_the_leader(ctx: NodeContext) -> None:
    """The time-limit warning reaches every rank; only the leader acts on it (it drains
    vLLM: in-flight requests finish). A follower keeps its Ray worker or headless vLLM
    rank, which the leader's requests may still need, and leaves when the leader has
    ended, as it always does; SIGTERM still stops it at once."""

    def noted(signum: int, frame: FrameType | None) -> None:
        del signum, frame

    for sig in WARNINGS:
        signal.signal(sig, noted)
    ctx.log("a time-limit warning (SIGUSR1/SIGUSR2) is the leader's: this node stays until it ends")


def run_follower(ctx: NodeContext, task: FollowerTask) -> int:
    """Run a rank > 0: a Ray worker, or a headless vLLM rank."""
    log = ctx.log
    child: _proc.Child | None = None
    leave_the_drain_to_the_leader(ctx)
    try:
        require_vllm(ctx, None if task.serve is None else task.serve.argv())
        if task.ray is None and task.serve is None:
            raise InputError(f"node rank {ctx.rank} has nothing to run in this plan")
        check = None
        if task.preflight is not None:  # at once: torch's import overlaps the leader's start
            check = preflight.start(
                ctx,
                task.preflight,
                arrive_seconds=task.nodes_timeout,
                leader=preflight.meeting_address(task.preflight, task.leader_ip),
            )
        task = _find_leader(ctx, task)
        assert task.leader_ip is not None
        if task.ray is not None:  # joins while the check runs (a Ray worker loads nothing)
            child = _join_ray_or_verdict(ctx, task, task.leader_ip, check)
        if check is not None:  # before anything of vLLM's starts on this node
            preflight.finish(ctx, check)  # failed: a joined Ray worker is stopped below
        if child is None:
            child = _start_headless(ctx, task, task.leader_ip)
        # A Ray worker also watches the head's port: the leader is gone when it closes.
        return _watch(ctx, child, task.leader_ip, None if task.ray is None else task.ray.port)
    except Stopped as stop:
        log(f"stopping: {stop}")
        return 0
    except VllmHpcError as exc:
        log(f"FAILED: {exc.one_line()}")
        jobfiles.write(
            ctx.files.failure(ctx.rank),
            jobfiles.Failure(rank=ctx.rank, hostname=ctx.hostname, attempt=ctx.attempt,
                             message=exc.one_line(), time=jobdir.now()),
        )  # fmt: skip
        return 1
    except Exception as exc:  # not the runtime's own: a failure record all the same
        unexpected.record_failure(ctx, unexpected.failed(ctx, exc))
        return 1
    finally:
        if child is not None:
            grace = RAY_GRACE if task.ray is not None else SERVE_GRACE
            log(f"stopping {child.name}: SIGTERM, {grace:.0f} s, then SIGKILL")
            stop_logged(child, child.name, grace, log)
        log("node done")
