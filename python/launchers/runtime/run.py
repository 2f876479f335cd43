"""``run_plan``: play one rank's role in a plan. Every door ends here: the sbatch
scripts and the local executor (``vllm-hpc node run --plan``), submitit's job function,
and ``bin/multi-node-serving.sh`` (planned by ``launchers.input.wrapper``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from launchers import _proc, installed, jobdir
from launchers.errors import InputError, VllmHpcError
from launchers.jobdir import compilecache, jobroot
from launchers.plan.commands import JOB_DIR, JOB_ID, JOB_KEY, LEADER_IP, NODE_IP
from launchers.plan.launch import LaunchPlan
from launchers.runtime import fsprobe, unexpected
from launchers.runtime.context import NodeContext, context, node_rank, read_key
from launchers.runtime.follower import run_follower
from launchers.runtime.leader import lead
from launchers.runtime.secret_env import forget, node_secret_env
from launchers.runtime.tasks import FollowerTask, LeaderTask
from launchers.spec import versions


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
    given = "--job-id" if job_id else "SLURM_JOB_ID"
    job_id = job_id or env_in.get("SLURM_JOB_ID") or f"local-{os.getpid()}"
    cluster = jobroot.cluster_name(env_in)
    key = jobroot.job_key(job_id, cluster, given)  # SLURM_JOB_ID=../../x stops here
    paths = plan.paths.for_job(job_id, cluster)
    node_log = paths.node_log_of(rank)
    secret_env = node_secret_env(plan)  # no secrets, no start: before anything is made
    ctx = context(
        rank=rank,
        nodes=plan.layout.nodes,
        job_id=job_id,
        paths=paths,
        iface=iface or plan.env.get("VLLM_HPC_IFACE"),
        extra_env={**plan.env, **secret_env},
        environ=env_in,
        node_log=node_log,
    )
    try:
        return _play(plan, ctx, key=key, leader_ip=leader_ip, environ=env_in)
    except VllmHpcError as exc:  # before the role started: recorded, then as before
        _record(ctx, exc.one_line())
        raise
    except Exception as exc:  # not ours: FAILED with the reason all the same
        _record(ctx, unexpected.failed(ctx, exc))
        return 1


def _record(ctx: NodeContext, why: str) -> None:
    if ctx.rank == 0:
        unexpected.record_leader_failure(ctx, why)
    else:
        unexpected.record_failure(ctx, why)


def _play(
    plan: LaunchPlan,
    ctx: NodeContext,
    *,
    key: str,
    leader_ip: str | None,
    environ: Mapping[str, str],
) -> int:
    """Prepare this rank's task (secrets, Ray's auth, the image) and play it."""
    rank, job_id, job_dir, env_in = ctx.rank, ctx.job_id, ctx.job_dir, environ
    ctx.log(_proc.guard_note())
    key_file = _for_job(plan.api_key_file, job_id, key)
    token_file = _for_job(plan.ray_token_file, job_id, key)
    if rank == 0:
        jobdir.remove_stale(job_dir)
        if plan.generate_api_key and key_file and jobdir.ensure_secret(key_file, "API key"):
            ctx.log(f"new API key in {key_file} (0600)")
        if token_file and jobdir.ensure_secret(token_file, "Ray token"):
            ctx.log(f"new Ray auth token in {token_file} (0600)")
    if token_file:
        ctx.env.update(ray_token_env(token_file, ctx.log))
    if plan.container is not None:
        from launchers.plan.argv import required_binds

        ctx.container = plan.container
        ctx.binds = list(plan.container_binds) or required_binds(plan, env_in)
        ctx.log(f"processes run in {plan.container} (binds: {', '.join(ctx.binds)})")
    if plan.compile_cache is not None:  # before anything compiles (or binds it)
        cache = plan.compile_cache
        compilecache.prepare(cache.path)
        ctx.log(f"compile cache: {cache.path} (0700; {cache.version_note})")
    role = plan.role_for_rank(rank)
    # Every node reads the weights: one offline without them stops here, not in vLLM.
    serve = role.serve or plan.leader.serve
    if serve is not None:
        fsprobe.check_offline_source(serve.model, serve.args, ctx.env)
    if role.serve is not None:  # how vLLM reads the checkpoint: from this node's file system
        role = role.model_copy(
            update={"serve": fsprobe.tuned(role.serve, plan.vllm_version, ctx.env, ctx.log)}
        )
    # What the plan decided for this rank (its rank, its first DP rank), then what only
    # the node knows; the ports are the typed starts' (the tasks add them).
    values = {
        **plan.node_values(rank),
        NODE_IP: ctx.node_ip,
        JOB_ID: job_id,
        JOB_DIR: job_dir,
        JOB_KEY: key,
    }

    if rank == 0:
        task = LeaderTask(
            ray=role.ray,
            serve=role.serve,
            serve_env=dict(role.env),
            secret_env=_api_key_env(key_file),
            values={**values, LEADER_IP: ctx.node_ip},
            served_model_name=plan.served_model_name or None,  # a Ray-only plan serves none
            expected_nodes=plan.ready.expected_nodes,
            nodes_timeout=plan.ready.nodes_timeout,
            ready_timeout=plan.ready.ready_timeout,
            api_key_file=key_file,
            health_path=plan.ready.health_path,
            models_path=plan.ready.models_path,
            preflight=plan.preflight,
        )
        try:
            return lead(ctx, task)
        finally:
            forget(plan, stopped_by_signal=ctx.stopper.reason is not None)
    follower = FollowerTask(
        ray=role.ray,
        serve=role.serve,
        serve_env=dict(role.env),
        values=values,
        leader_ip=leader_ip,
        nodes_timeout=plan.ready.nodes_timeout,
        preflight=plan.preflight,
    )
    return run_follower(ctx, follower)


def _for_job(path: str | None, job_id: str, key: str) -> str | None:
    return path.replace(JOB_KEY, key).replace(JOB_ID, job_id) if path else None


RAY_AUTH_SINCE = (2, 52)


def ray_token_env(token_file: str, log: Callable[[str], None]) -> dict[str, str]:
    """Ray token authentication for every ``ray start``, ``vllm serve`` and watch."""
    version = installed.installed_version("ray") or ""
    try:
        old = bool(version) and versions.release(version)[:2] < RAY_AUTH_SINCE
    except ValueError:
        old = False  # an unreadable version: assume a current Ray
    if old:
        log(f"Ray {version} has no token authentication (2.52+): the Ray ports are open")
        return {}
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_file}


def _api_key_env(path: str | None) -> dict[str, str]:
    key = read_key(path)
    return {"VLLM_API_KEY": key} if key else {}


def load_plan(path: str) -> LaunchPlan:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--plan: cannot read {path}: {exc.strerror}") from None
    return LaunchPlan.model_validate_json(text)
