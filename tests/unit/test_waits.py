"""The one wait helper, and the runtime's supervision driven by a fake clock (no test
here sleeps: the clock's sleep moves its time forward)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from launchers import health, waits
from launchers.errors import RuntimeFailure, WaitTimeout
from launchers.health import HttpAnswer
from launchers.plan.commands import NODE_IP, RayStart
from launchers.runtime import ray_cluster
from launchers.runtime.endpoint import EndpointWriter
from launchers.runtime.follower import run_follower
from launchers.runtime.ray_cluster import RayMember, Snapshot
from launchers.runtime.supervise import LeaderProcs, supervise
from launchers.runtime.tasks import FollowerTask

from .helpers.runtime import FakeClock, Running, ctx_for, leader_task


def test_wait_for_returns_the_value_and_the_seconds_waited() -> None:
    fake = FakeClock()
    answers = iter([None, None, "up"])
    found = waits.wait_for(lambda: next(answers), what="x", timeout=10, clock=fake.clock())
    assert (found.value, found.seconds) == ("up", 1.0)


def test_wait_for_names_what_it_waited_for_and_the_log() -> None:
    fake = FakeClock()
    with pytest.raises(WaitTimeout) as caught:
        waits.wait_for(
            lambda: None, what="the leader", detail=lambda: ", 1 of 2 joined",
            timeout=5, log="/j/node-0.log", clock=fake.clock(),
        )  # fmt: skip
    assert caught.value.one_line() == (
        "waited 5 s for the leader, 1 of 2 joined (read /j/node-0.log)"
    )
    assert 5 < fake.slept <= 5.5


def test_a_condition_that_raises_ends_the_wait_at_once() -> None:
    fake = FakeClock()

    def died() -> None:
        raise RuntimeFailure("the Ray head exited")

    with pytest.raises(RuntimeFailure):
        waits.wait_for(died, what="x", timeout=60, clock=fake.clock())
    assert fake.slept == 0


def test_ticks_count_elapsed_seconds() -> None:
    fake = FakeClock()
    seen = []
    for elapsed in waits.ticks(0.5, clock=fake.clock()):
        seen.append(elapsed)
        if len(seen) == 3:
            break
    assert seen == [0.0, 0.5, 1.0]


# --- the leader's and a worker's supervision, on a fake clock ----------------------------


class Watcher:
    def __init__(self, *counts: int) -> None:
        self.counts = list(counts)

    def latest(self) -> Snapshot:
        count = self.counts.pop(0) if len(self.counts) > 1 else self.counts[0]
        nodes = tuple(RayMember(f"10.0.0.{i + 1}", f"node{i + 1}", 1.0) for i in range(count))
        return Snapshot(nodes, None, 0.0)


def test_the_leader_gives_up_on_a_server_that_never_answers_at_ready_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClock()
    asked: list[str] = []

    def http_get(url: str, **kwargs: Any) -> HttpAnswer:
        asked.append(url)
        return HttpAnswer(False, None, "connection refused")

    monkeypatch.setattr(health, "http_get", http_get)
    ctx, task = ctx_for(tmp_path, 0, fake), leader_task(ray=False)
    serve: Any = Running("vllm serve", str(tmp_path / "vllm-0.log"))
    with pytest.raises(WaitTimeout, match="waited 30 s for vllm serve to answer /health"):
        supervise(ctx, task, EndpointWriter(ctx, task), LeaderProcs(serve=serve))
    assert 30 < fake.slept <= 31
    assert asked[0] == "http://127.0.0.1:8000/health"


def test_the_leader_fails_naming_the_node_it_lost_after_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClock()
    models = json.dumps({"data": [{"id": "m"}]})
    monkeypatch.setattr(health, "http_get", lambda url, **k: HttpAnswer(True, 200, models))
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "1.json").write_text(
        json.dumps({"rank": 1, "hostname": "node2", "ip": "10.0.0.2", "attempt": 0})
    )
    ctx, task = ctx_for(tmp_path, 0, fake), leader_task(ray=True)
    endpoint = EndpointWriter(ctx, task)
    serve: Any = Running("vllm serve", str(tmp_path / "vllm-0.log"))
    head: Any = Running("ray-head", str(tmp_path / "ray-0.log"))
    watcher: Any = Watcher(2, 2, 2, 1)
    with pytest.raises(RuntimeFailure) as caught:
        supervise(ctx, task, endpoint, LeaderProcs(head, serve, watcher))
    assert caught.value.one_line().startswith(
        "lost a node: 1/2 Ray nodes alive; node2 (10.0.0.2, rank 1) is not in the Ray cluster"
    )
    assert endpoint.record.state == "READY"  # it was serving when the node went


def test_a_worker_leaves_after_three_missed_checks_of_the_leader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeClock()
    monkeypatch.setattr(health, "wait_for_port", lambda *a, **k: 0.0)
    monkeypatch.setattr(health, "port_open", lambda host, port: False)
    child = Running("ray-worker", str(tmp_path / "ray-1.log"))
    monkeypatch.setattr(ray_cluster, "start_ray", lambda *a, **k: child)
    task = FollowerTask(
        ray=RayStart(head=False, port=6379, num_gpus=1, temp_dir="/tmp/r"), serve=None,
        serve_env={},
        values={NODE_IP: "10.0.0.2"}, leader_ip="10.0.0.1", nodes_timeout=5,
    )  # fmt: skip
    assert run_follower(ctx_for(tmp_path, 1, fake), task) == 0
    # checks at 0, 1 and 2 s (one a second on a 2-node job): gone at the third miss
    assert fake.slept == 2.0
