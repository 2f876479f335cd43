"""How the node runtime builds each child's argv and environment (no process started)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from launchers import _proc, installed
from launchers.errors import InputError, RuntimeFailure
from launchers.plan.commands import NODE_IP, ServeStart
from launchers.plan.launch import JobPaths
from launchers.runtime.context import NodeContext, NodeLog, Stopper, require_vllm
from launchers.runtime.endpoint import who_can_reach
from launchers.runtime.follower import leader_check_interval, run_follower
from launchers.runtime.leader import lead
from launchers.runtime.tasks import FollowerTask, LeaderTask
from launchers.spec.config import ContainerSpec


def context(container: ContainerSpec | None) -> NodeContext:
    host = {"PATH": "/usr/bin:/bin", "HOME": "/home/alice", "SLURM_JOB_ID": "7"}
    return NodeContext(
        rank=0,
        nodes=2,
        job_id="7",
        paths=JobPaths.at("/shared/jobs/7"),
        attempt=0,
        node_ip="10.0.0.1",
        iface_reason="test",
        env={**host, "VLLM_HOST_IP": "10.0.0.1", "NCCL_SOCKET_IFNAME": "ib0"},
        log=NodeLog(0, None),
        stopper=Stopper(),
        host_env=host,
        container=container,
        binds=["/shared/jobs", "/shared/models/m"],
    )


def test_direct_command_keeps_the_environment() -> None:
    argv, env = context(None).command(["vllm", "serve", "m"], {"VLLM_API_KEY": "sk-1"})
    assert argv[1:] == ["serve", "m"] and argv[0].endswith("vllm")
    assert env["VLLM_API_KEY"] == "sk-1" and env["VLLM_HOST_IP"] == "10.0.0.1"


def test_apptainer_wraps_and_hides_secrets() -> None:
    ctx = context(ContainerSpec.parse("apptainer:/images/vllm.sif"))
    serve = ServeStart(model="m", host="0.0.0.0", port=8000, args=("--node-rank", "@NODE_RANK@"))
    planned = ctx.start_argv(serve, {"@NODE_RANK@": "0", "@API_PORT@": "8000"})
    argv, env = ctx.command(planned, {"VLLM_API_KEY": "sk-1"})
    assert argv == planned  # the builder's argv, as it is: the image is in it
    assert argv[:4] == ["apptainer", "exec", "--nv", "--cleanenv"]
    assert argv[-10:] == [
        "/images/vllm.sif", "vllm", "serve", "m", "--host", "0.0.0.0", "--port", "8000",
        "--node-rank", "0",
    ]  # fmt: skip
    assert "--bind" in argv and "/shared/jobs:/shared/jobs" in argv
    assert not any("sk-1" in item or "10.0.0.1" in item for item in argv)
    assert env["APPTAINERENV_VLLM_API_KEY"] == "sk-1"
    assert env["APPTAINERENV_VLLM_HOST_IP"] == "10.0.0.1"
    assert env["APPTAINERENV_NCCL_SOCKET_IFNAME"] == "ib0"
    assert ctx.python_argv() == ["python3"]
    with pytest.raises(RuntimeFailure, match="no value for @API_PORT@"):
        ctx.start_argv(serve, {"@NODE_RANK@": "0"})


def test_enroot_runs_the_step_in_the_image_so_no_wrapping() -> None:
    ctx = context(ContainerSpec.parse("enroot:nvcr.io#nvidia/vllm:25.10"))
    argv, _ = ctx.command(ctx.in_image(["ray", "start", "--head"]))
    assert argv[1:] == ["start", "--head"]


def _task(host: str | None, key: str | None, *args: str) -> LeaderTask:
    serve = ServeStart(model="m", host=host or "0.0.0.0", port=8000, args=args)
    return LeaderTask(
        ray=None, serve=serve, serve_env={}, values={NODE_IP: "10.0.0.1"},
        served_model_name="m", expected_nodes=1, nodes_timeout=1, ready_timeout=1,
        api_key_file=key,
    )  # fmt: skip


def test_the_ready_banner_says_who_can_reach_the_api() -> None:
    ctx = context(None)
    host = ctx.hostname
    assert who_can_reach(ctx, _task("0.0.0.0", "/j/api_key")) == (
        f"reachable on every interface of {host}: anyone who reaches {host}:8000, "
        "with the API key in /j/api_key"
    )
    assert who_can_reach(ctx, _task(None, None)).endswith(
        "with no API key (anyone who reaches it can use the model)"
    )
    assert who_can_reach(ctx, _task("127.0.0.1", None)).startswith(
        f"reachable on loopback only: processes on {host}"
    )
    assert who_can_reach(ctx, _task("10.0.0.5", "k")).startswith(
        "reachable on 10.0.0.5: anyone who reaches 10.0.0.5:8000"
    )
    # --host node: the address is the node's, filled in from the plan's placeholder
    assert who_can_reach(ctx, _task(NODE_IP, None)).startswith(
        "reachable on 10.0.0.1: anyone who reaches 10.0.0.1:8000"
    )
    assert _task(NODE_IP, None).self_address() == "10.0.0.1"
    assert _task("0.0.0.0", None).self_address() == "127.0.0.1"


NATIVE_ARGS = ("--nnodes", "2", "--node-rank", "0")
NATIVE = ["vllm", "serve", "m", "--port", "8000", *NATIVE_ARGS]
HEADLESS_SERVE = ServeStart(model="m", args=("--data-parallel-start-rank", "1", "--headless"))
HEADLESS = HEADLESS_SERVE.argv()
TOO_OLD = (
    "vllm_version: multi-node without Ray (--runtime native) needs vLLM >= 0.11.1, this "
    "node has 0.10.2 (load vLLM 0.11.1 or newer on the nodes (the plan assumed a newer one))"
)


def test_a_node_with_an_older_vllm_than_the_plan_stops_before_starting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(installed, "installed_version", lambda *dists: "0.10.2")
    started: list[object] = []
    monkeypatch.setattr(_proc, "start", lambda *a, **k: started.append(a))
    ctx = replace(context(None), paths=JobPaths.at(str(tmp_path)))
    task = _task(None, None, *NATIVE_ARGS)
    assert lead(ctx, task) == 1
    endpoint = json.loads((tmp_path / "endpoint.json").read_text())
    assert (endpoint["state"], endpoint["message"]) == ("FAILED", TOO_OLD)
    monkeypatch.setattr(installed, "installed_version", lambda *dists: "0.8.5")
    follower = FollowerTask(
        ray=None, serve=HEADLESS_SERVE, serve_env={}, values={}, leader_ip="10.0.0.1",
        nodes_timeout=1,
    )  # fmt: skip
    assert run_follower(replace(ctx, rank=1), follower) == 1
    failed = json.loads((tmp_path / "failed" / "1.json").read_text())
    assert failed["message"].startswith(
        "vllm_version: headless data-parallel ranks needs vLLM >= 0.9.0, this node has 0.8.5"
    )
    assert started == []


def test_a_node_with_a_new_enough_vllm_or_a_container_is_not_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(installed, "installed_version", lambda *dists: "0.32.0+cpu")
    require_vllm(context(None), NATIVE)
    monkeypatch.setattr(installed, "installed_version", lambda *dists: "0.8.5")
    require_vllm(context(ContainerSpec.parse("apptainer:/images/vllm.sif")), NATIVE)
    require_vllm(context(None), ["vllm", "serve", "m"])
    with pytest.raises(InputError, match="headless data-parallel ranks needs vLLM >= 0.9.0"):
        require_vllm(context(None), HEADLESS)


def test_workers_check_the_leader_less_often_on_big_jobs() -> None:
    check = leader_check_interval
    assert [check(n) for n in (1, 2, 100)] == [1.0, 1.0, 1.0]
    assert check(256) == 2.56 and check(512) == 5.0 and check(4096) == 5.0
    # the job's total stays near 100 checks a second from 100 to 500 nodes
    assert all(99 <= n / check(n) <= 101 for n in range(100, 501, 50))
