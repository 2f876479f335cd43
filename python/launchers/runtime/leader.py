"""Rank 0: free ports (a typed move), the Ray head, ``leader.json``, ``vllm serve`` at
once while the Ray workers join, then supervision until the job ends.

A stop asked for (scancel's SIGTERM, the time-limit warning) is DRAINING in
``endpoint.json`` while vLLM finishes what it holds and the processes stop, and STOPPED
only once they have ended: every reader takes STOPPED for final (a follower leaves, a
service counts the replica gone once SLURM agrees). Both are written inside SLURM's
KillWait (the teardown's graces add up to TEARDOWN_SECONDS, less than it)."""

from __future__ import annotations

import contextlib
import shlex
import socket
from dataclasses import replace

from launchers import _proc, health, jobdir
from launchers.errors import RuntimeFailure, VllmHpcError
from launchers.jobdir import jobfiles
from launchers.runtime import preflight, ray_cluster, unexpected
from launchers.runtime.context import NodeContext, NodeLog, Stopped, require_vllm
from launchers.runtime.endpoint import EndpointWriter
from launchers.runtime.supervise import (
    LeaderProcs,
    node_failure,
    supervise,
    wait_nodes,
)
from launchers.runtime.tasks import LeaderTask

HEAD_TIMEOUT = 60.0
PORT_FIX = "choose another with --port / --ray-port, or stop what holds it"
# A fixed pre-flight port is one the nodes that plan on their own agree on (the wrapper's
# nodes, launch_vllm_node1/2.sh's): another is set on every node alike.
PREFLIGHT_PORT_FIX = (
    "choose another on every node with --preflight-port (PREFLIGHT_PORT for "
    "launch_vllm_node1/2.sh), or stop what holds it"
)


def choose_port(port: int, fixed: bool, what: str, log: NodeLog, fix: str = PORT_FIX) -> int:
    """Keep a free port; move an unfixed busy one to the next free port; refuse a fixed one
    (``fix``: how to choose another)."""
    if health.port_free(port):
        return port
    if fixed:
        raise RuntimeFailure(
            f"port: {what} port {port} is already in use on {socket.gethostname()}", fix=fix
        )
    chosen = health.pick_port(port + 1)
    log(f"{what} port {port} is in use on this node; using {chosen}")
    return chosen


def free_ports(ctx: NodeContext, task: LeaderTask, endpoint: EndpointWriter) -> LeaderTask:
    """The task with its API and Ray ports checked, an unfixed busy one moved."""
    if task.serve is not None and task.serve.port is not None:
        port = choose_port(task.serve.port, task.serve.port_fixed, "the API", ctx.log)
        if port != task.serve.port:
            task = replace(task, serve=task.serve.moved(port))
            endpoint.moved_port(port)
    if task.ray is not None:
        port = choose_port(task.ray.port, task.ray.port_fixed, "the Ray head", ctx.log)
        if port != task.ray.port:  # RAY_ADDRESS follows: @RAY_PORT@ is the typed port
            task = replace(task, ray=task.ray.moved(port))
    if task.preflight is not None:
        check = task.preflight
        port = choose_port(
            check.port, check.port_fixed, "the pre-flight", ctx.log, PREFLIGHT_PORT_FIX
        )
        if port != check.port:
            task = replace(task, preflight=check.model_copy(update={"port": port}))
    return task


def start_head(ctx: NodeContext, task: LeaderTask) -> _proc.Child:
    """Start the Ray head and wait (with a deadline) until its port answers."""
    assert task.ray is not None
    planned = ctx.start_argv(task.ray, task.known_values())
    argv, env = ctx.command(planned)
    head = ray_cluster.start_ray("ray-head", argv, env=env, log_path=ctx.logfile("ray"))
    ctx.started("ray", planned, argv, head.pid)
    ctx.log(f"Ray head starting on {ctx.node_ip}:{task.ray_port} (log {head.log_path})")

    def head_alive() -> bool:
        ctx.stopper.check()
        return head.poll() is None

    waited = health.wait_for_port(
        ctx.node_ip,
        task.ray_port,
        timeout=HEAD_TIMEOUT,
        what="the Ray head",
        log=head.log_path,
        alive=head_alive,
    )
    ctx.log(f"Ray head up after {waited:.1f} s")
    return head


def write_leader(ctx: NodeContext, task: LeaderTask) -> None:
    """``leader.json``: where the other ranks find the leader (its address and ports)."""
    jobfiles.write(
        ctx.leader_file,
        jobfiles.Leader(
            job_id=ctx.job_id,
            attempt=ctx.attempt,
            ip=ctx.node_ip,
            hostname=ctx.hostname,
            ray_port=task.ray_port if task.ray is not None else None,
            api_port=task.api_port,
            preflight_port=None if task.preflight is None else task.preflight.port,
            time=jobdir.now(),
        ),
    )


def start_watcher(ctx: NodeContext, task: LeaderTask) -> ray_cluster.RayWatcher:
    address = f"{ctx.node_ip}:{task.ray_port}"
    watch = [*ctx.python_argv(), "-m", "launchers.runtime.ray_watch", address]
    argv, env = ctx.command(ctx.in_image(watch))
    return ray_cluster.RayWatcher(argv, env=env, log_path=ctx.logfile("ray-watch"))


def start_serve(ctx: NodeContext, task: LeaderTask) -> _proc.Child | None:
    if task.serve is None:
        return None
    planned = ctx.start_argv(task.serve, task.known_values())
    argv, env = ctx.command(planned, task.serve_environment())
    serve = _proc.start("vllm", argv, env=env, log_path=ctx.logfile("vllm"))
    ctx.started("serve", planned, argv, serve.pid)
    ctx.log(f"vllm serve started (pid {serve.pid}, log {serve.log_path})")
    ctx.log("  " + shlex.join(planned))
    return serve


def start_all(
    ctx: NodeContext, task: LeaderTask, endpoint: EndpointWriter, procs: LeaderProcs
) -> LeaderTask:
    """Everything rank 0 starts, in order: the pre-flight's check (its torch import
    overlaps the Ray head's start), the head, ``leader.json``, the watch of Ray's nodes,
    the check's verdict (before vLLM loads anything), ``vllm serve``. The task as started
    (its ports moved when taken)."""
    endpoint.set("STARTING", "starting on the leader")
    require_vllm(ctx, None if task.serve is None else task.serve.argv())
    task = free_ports(ctx, task, endpoint)
    check = None
    if task.preflight is not None:
        check = preflight.start(ctx, task.preflight, arrive_seconds=task.nodes_timeout)
    if task.ray is not None:
        procs.head = start_head(ctx, task)
    write_leader(ctx, task)
    if procs.head is not None:  # its import of Ray overlaps the check too
        procs.watcher = start_watcher(ctx, task)
    if check is not None:
        endpoint.set("WAITING_NODES", "the nodes check their collectives (pre-flight)")
        preflight.finish(ctx, check)
    if procs.head is not None and procs.watcher is not None:
        endpoint.set("WAITING_NODES", f"waiting for {task.expected_nodes} Ray node(s)")
        if not task.overlap or task.serve is None:
            wait_nodes(ctx, task, procs.watcher, procs.head)
    procs.serve = start_serve(ctx, task)
    if procs.serve is not None:
        endpoint.set("LOADING", "vllm serve is starting")
    return task


def lead(ctx: NodeContext, task: LeaderTask) -> int:
    """Run rank 0 until vLLM exits, a node is lost, or a stop is asked for."""
    log = ctx.log
    endpoint = EndpointWriter(ctx, task)
    procs = LeaderProcs()
    stopped_by: str | None = None  # the stop asked for, once one is
    try:
        task = start_all(ctx, task, endpoint, procs)
        return supervise(ctx, task, endpoint, procs)
    except Stopped as stop:
        failure = node_failure(ctx)
        if failure:  # SLURM ends the step when a rank fails: say which and why
            log(f"FAILED: {failure}")
            endpoint.set("FAILED", failure)
            return 1
        stopped_by = ctx.stopper.said(ctx.job_dir, ctx.created) if ctx.stopper.reason else str(stop)
        log(f"stopping: {stopped_by}")
        endpoint.set("DRAINING", f"stopping on {stopped_by}")
        return 0
    except VllmHpcError as exc:
        log(f"FAILED: {exc.one_line()}")
        logs = procs.log_path()
        endpoint.set("FAILED", exc.one_line(), log_tail=_proc.tail_lines(logs) if logs else [])
        return 1
    except Exception as exc:  # not the runtime's own: FAILED all the same, with the reason
        why = unexpected.failed(ctx, exc)
        logs = procs.log_path()
        with contextlib.suppress(OSError):  # a full disk: the node log and stderr say it
            endpoint.set("FAILED", why, log_tail=_proc.tail_lines(logs) if logs else [])
        return 1
    finally:
        try:
            procs.stop(log, asked=stopped_by is not None, time_limit=ctx.stopper.time_limit)
        finally:
            if stopped_by is not None:  # its processes have ended (or could not): final
                with contextlib.suppress(OSError):  # a full disk: the node log says it
                    endpoint.set("STOPPED", f"stopped by {stopped_by}")
            log(f"leader done ({endpoint.state})")
