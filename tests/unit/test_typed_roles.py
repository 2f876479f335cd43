"""The plan's roles are typed: the runtime reads their fields and builds argvs from them,
and a moved port is a typed update (no argv is parsed or patched)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import _proc, health, installed
from launchers.plan.commands import LEADER_IP, NODE_IP, RayStart, Rendezvous, ServeStart
from launchers.plan.launch import JobPaths, LaunchPlan
from launchers.runtime import ray_cluster
from launchers.runtime.context import NodeContext, NodeLog, Stopper
from launchers.runtime.follower import run_follower
from launchers.runtime.leader import lead
from launchers.runtime.tasks import FollowerTask, LeaderTask


def ctx_for(job_dir: Path, rank: int) -> NodeContext:
    return NodeContext(
        rank=rank, nodes=2, job_id="7", paths=JobPaths.at(str(job_dir)), attempt=0,
        node_ip=f"10.0.0.{rank + 1}", iface_reason="test", env={"PATH": "/usr/bin:/bin"},
        log=NodeLog(rank, None), stopper=Stopper(), host_env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip


class Exited:
    """A child that exits with ``code`` after ``running`` polls."""

    def __init__(
        self, name: str, argv: list[str], code: int, log_path: str, running: int = 0
    ) -> None:
        self.name, self.argv, self.code, self.log_path = name, argv, code, log_path
        self.pid, self.running = 4242, running

    def poll(self) -> int | None:
        if self.running > 0:
            self.running -= 1
            return None
        return self.code

    def stop(self, grace: float = 0.0) -> None:
        del grace


def test_a_plan_reads_back_as_the_same_typed_plan(make_plan: Callable[..., LaunchPlan]) -> None:
    for kwargs in (
        {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4},
        {"model": "llama-3.1-70b-instruct", "nodes": 2, "gpus_per_node": 4, "runtime": "native"},
        {"model": "deepseek-v3", "nodes": 2, "gpus_per_node": 8, "dp": 16, "ep": True},
    ):
        launch = make_plan(**kwargs)
        text = launch.model_dump_json()
        again = LaunchPlan.model_validate_json(text)
        assert again == launch
        # the argv in plan.json is what the typed fields build, for readers
        role = json.loads(text)["roles"][0]
        assert role["serve_argv"] == launch.leader.serve.argv()  # type: ignore[union-attr]


def test_the_leaders_ports_come_from_typed_fields(make_plan: Callable[..., LaunchPlan]) -> None:
    ray = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4)
    assert ray.leader_ports() == {"api": 8000, "ray": 6379}  # the pre-flight's is not one:
    native = make_plan(model="llama-3.1-70b-instruct", nodes=2, gpus_per_node=4, runtime="native")
    assert ray.preflight is not None  # it is open only while the check runs
    assert native.leader_ports() == {"api": 8000, "master": 29501}
    assert native.roles[1].serve is not None and native.roles[1].serve.rendezvous is not None
    assert native.roles[1].serve.rendezvous.port == 29501
    dp = make_plan(
        model="deepseek-v3", nodes=2, gpus_per_node=8, dp=16, ep=True,
        port=9000, dp_rpc_port=13400,
    )  # fmt: skip
    assert dp.leader_ports() == {"api": 9000, "dp-rpc": 13400}
    single = make_plan(model="llama-3.2-3b-instruct", nodes=1, gpus_per_node=1)
    assert single.leader_ports() == {"api": 8000} and single.preflight is None  # one node
    assert "13400" in (dp.roles[1].serve_argv or ())


def test_host_node_is_a_typed_placeholder(make_plan: Callable[..., LaunchPlan]) -> None:
    launch = make_plan(model="a/b", host="node")
    assert launch.leader.serve is not None and launch.leader.serve.host == NODE_IP


def test_a_taken_api_port_moves_the_serve_port_and_readiness_follows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[list[str]] = []

    def start(name: str, argv: list[str], **kwargs: Any) -> Exited:
        started.append(argv)
        return Exited(name, argv, 1, str(tmp_path / "vllm-0.log"))

    monkeypatch.setattr(installed, "installed_version", lambda *dists: None)
    monkeypatch.setattr(health, "port_free", lambda port: port != 8000)
    monkeypatch.setattr(health, "pick_port", lambda start: 8001)
    monkeypatch.setattr(_proc, "start", start)
    serve = ServeStart(model="m", host="0.0.0.0", port=8000, args=("--seed", "1"))
    task = LeaderTask(
        ray=None, serve=serve, serve_env={}, values={NODE_IP: "10.0.0.1"},
        served_model_name="m", expected_nodes=1, nodes_timeout=1, ready_timeout=1,
    )  # fmt: skip
    assert lead(ctx_for(tmp_path, 0), task) == 1
    assert started[0][-6:] == ["--host", "0.0.0.0", "--port", "8001", "--seed", "1"]
    endpoint = json.loads((tmp_path / "endpoint.json").read_text())
    assert (endpoint["port"], endpoint["url"]) == (8001, "http://10.0.0.1:8001/v1")


def fake_follower(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, leader: dict[str, Any], running: int
) -> tuple[list[tuple[str, int]], list[list[str]]]:
    """leader.json written; the ports a follower waits for and the argvs it starts are
    recorded; its child exits 0 after ``running`` polls."""
    (tmp_path / "leader.json").write_text(json.dumps(leader))
    waited: list[tuple[str, int]] = []
    started: list[list[str]] = []

    def wait_for_port(host: str, port: int, **kwargs: Any) -> float:
        waited.append((host, port))
        return 0.0

    def start(name: str, argv: list[str], **kwargs: Any) -> Exited:
        started.append(argv)
        return Exited(name, argv, 0, str(tmp_path / f"{name}.log"), running=running)

    monkeypatch.setattr(installed, "installed_version", lambda *dists: None)
    monkeypatch.setattr(health, "wait_for_port", wait_for_port)
    monkeypatch.setattr(ray_cluster, "start_ray", start)
    monkeypatch.setattr(_proc, "start", start)
    return waited, started


def test_a_worker_joins_the_port_the_leader_moved_its_ray_head_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = {"job_id": "7", "attempt": 0, "ip": "10.0.0.1", "ray_port": 6380}
    waited, started = fake_follower(tmp_path, monkeypatch, leader, running=0)
    worker = RayStart(head=False, port=6379, num_gpus=1, temp_dir="/tmp/ray-7-1")
    task = FollowerTask(
        ray=worker, serve=None, serve_env={}, values={NODE_IP: "10.0.0.2"}, leader_ip=None,
        nodes_timeout=1,
    )  # fmt: skip
    assert run_follower(ctx_for(tmp_path, 1), task) == 0
    assert waited == [("10.0.0.1", 6380)]
    assert "--address=10.0.0.1:6380" in started[0]
    assert f"--address={LEADER_IP}:6379" not in started[0]


def test_a_headless_rank_waits_for_the_typed_rendezvous_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = {"job_id": "7", "attempt": 0, "ip": "10.0.0.1", "api_port": 8000}
    # the child is still running at the first check of the leader, then done
    waited, started = fake_follower(tmp_path, monkeypatch, leader, running=1)
    serve = ServeStart(
        model="m",
        rendezvous=Rendezvous(name="dp-rpc", port=13400),
        args=("--data-parallel-address", LEADER_IP, "--headless"),
    )
    task = FollowerTask(
        ray=None, serve=serve, serve_env={}, values={NODE_IP: "10.0.0.2"}, leader_ip=None,
        nodes_timeout=1,
    )  # fmt: skip
    assert run_follower(ctx_for(tmp_path, 1), task) == 0
    assert waited == [("10.0.0.1", 13400)]
    assert started[0][-3:] == ["--data-parallel-address", "10.0.0.1", "--headless"]


def test_one_curl_example_for_the_leader_and_the_cli(tmp_path: Path) -> None:
    import subprocess

    from launchers.render.text import curl_example

    key = tmp_path / "my jobs" / "api_key"
    key.parent.mkdir()
    key.write_text("sk-test\n")
    line = curl_example("http://10.0.0.1:8000/v1", "m", str(key))
    assert "sk-test" not in line  # the shell reads the key; the line never holds it
    # what bash would hand curl, one word per line
    shown = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + line.removeprefix("curl ")],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert shown[0] == "http://10.0.0.1:8000/v1/chat/completions"
    assert "Authorization: Bearer sk-test" in shown
    assert json.loads(shown[-1])["model"] == "m"
    assert "Authorization" not in curl_example("http://h:1/v1", "m", None)
