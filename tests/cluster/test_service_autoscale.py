"""Autoscaling by load on the mini cluster (issue 34, item 3): a service between one and
two replicas that reads vLLM's own queue.

`--replicas 1 --max-replicas 2 --scale-up-waiting 2 --scale-up-after 15s
--scale-down-after 30s`, its replicas capped at 2 running sequences (`--max-num-seqs 2`,
so that a burst queues in vLLM at all on the bed: its default batch is larger than any
load two cores can send). A loop of 12 concurrent chat requests through the front (the
real `openai` client) keeps ~10 waiting: the front adds a second replica, routes it, and
it answers too; once the loop stops, the service drains one replica back to its
minimum (its leader logs why: scale down) and SLURM lets it go. Not one request fails
throughout, and the front's metrics count one decision each way.

Cost (measured on the bed): 4.2 minutes (service up 47 s; under the loop the front
scaled up after 16 s of queue, the second replica loaded and answered; the 30 s down
window, a drain of 8 s, a down 13 s): 440 requests answered, 0 failed.
"""

from __future__ import annotations

import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launchers import health, waits
from launchers.service.frontmetrics import SCALE_DECISIONS

from . import api, bed
from .services import REPLICA_ARGS, client, front_get, key_of, svc, wait_status

pytestmark = pytest.mark.cluster

NAME = "busy"
FRONT_PORT = "8600"  # not the other service modules' (8100-8500)
STREAMS = 12  # concurrent requests: two run in each replica, the rest wait in vLLM
SCALED_UP_WITHIN = 15.0 + float(bed.READY_TIMEOUT)  # the window, then a whole load
SCALED_DOWN_WITHIN = 30.0 + 150.0  # the down window, a drain and SLURM's teardown


class Loop:
    """``STREAMS`` threads asking through the front until stopped, every failure kept."""

    def __init__(self, c: openai.OpenAI, model: str) -> None:
        self.client, self.model = c, model
        self.ok = 0
        self.failed: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(STREAMS)]

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                answer = self.client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": "Tell me a story"}],
                    max_tokens=64, temperature=0,
                )  # fmt: skip
                assert answer.choices[0].message.content is not None
                with self.lock:
                    self.ok += 1
            except Exception as exc:
                with self.lock:
                    self.failed.append(f"{type(exc).__name__}: {exc}"[:300])

    def __enter__(self) -> Loop:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=120)


def _serving(row: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in row["replicas"] if r["state"] == "READY" and r["role"] == "serving"]


def _successes(replica: dict[str, Any], key: str) -> float:
    """vLLM's own count of finished requests on one replica (its /metrics, the key)."""
    request = urllib.request.Request(  # noqa: S310 - the replica's own URL
        f"{replica['url']}/metrics", headers={"Authorization": f"Bearer {key}"}
    )
    with health.urlopen(request, timeout=10) as answer:
        text = answer.read().decode("utf-8", "replace")
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "vllm:request_success_total"
    )


@pytest.fixture(scope="module")
def busy(minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path) -> Iterator[Any]:
    left = Path(env["VLLM_HPC_JOB_ROOT"], "services", NAME)
    if left.exists():  # from an earlier run on a kept bed
        api.cli(env, "service", "down", NAME, timeout=300)
        shutil.rmtree(left)
    args = [
        "up", NAME, "--model", str(tiny_model), "--nodes", "1", "--gpus-per-node", "1",
        "--partition", "debug", "--time", "00:20:00", "--handover", "15m", "--replicas", "1",
        "--max-replicas", "2", "--scale-up-waiting", "2", "--scale-up-after", "15s",
        "--scale-down-after", "30s", "--front-time", "00:20:00", "--front-port", FRONT_PORT,
        "--wait", "--wait-timeout", str(bed.READY_TIMEOUT),
        "--", *REPLICA_ARGS, "--max-num-seqs", "2",
    ]  # fmt: skip
    try:
        row = svc(env, *args, timeout=bed.READY_TIMEOUT + 120)
        assert row["state"] == "UP", row
        yield row
    finally:
        api.cli(env, "service", "down", NAME, timeout=300)
        for r in svc(env, "status", NAME)["replicas"]:
            minicluster.slurm(["scancel", r["job_id"]], check=False)


def test_a_queue_adds_a_replica_and_its_end_drains_one_without_a_failed_request(
    minicluster: bed.MiniCluster, env: dict[str, str], busy: dict[str, Any], tiny_model: Path
) -> None:
    key = key_of(busy)
    [first] = _serving(busy)
    with Loop(client(busy), tiny_model.name) as loop:
        up = wait_status(
            env, NAME, "a second replica READY and routed under load", SCALED_UP_WITHIN,
            lambda r: len(_serving(r)) == 2,
        )  # fmt: skip
        [second] = [r for r in _serving(up) if r["job_id"] != first["job_id"]]
        said = [e for e in up["events"] if "scaling up to 2 replicas" in e]
        assert said and "waiting per replica on average" in said[0], up["events"]
        waits.wait_for(
            lambda: True if _successes(second, key) > 0 else None,
            what="the second replica answering requests of the loop", timeout=120, interval=2.0,
        )  # fmt: skip
    print(f"under load: {loop.ok} answered, {len(loop.failed)} failed")
    assert loop.ok > 0 and loop.failed == [], loop.failed[:10]

    down = wait_status(
        env, NAME, "one replica again, the other's job gone", SCALED_DOWN_WITHIN,
        lambda r: len(r["replicas"]) == 1 and len(_serving(r)) == 1,
    )  # fmt: skip
    assert any("scaling down to 1 replica" in e for e in down["events"]), down["events"]
    [kept] = _serving(down)
    [gone] = [r for r in (first, second) if r["job_id"] != kept["job_id"]]
    listed = minicluster.slurm(["squeue", "-h", "-o", "%i"], check=False).stdout.split()
    assert gone["job_id"] not in listed, listed
    log = Path(gone["job_dir"], "node-0.log").read_text(errors="replace")
    assert "stopping: SIGUSR1 (scale down)" in log, log[-3000:]

    status, text = front_get(busy, "/metrics", key)
    assert status == 200, text[:2000]
    decided = {
        s.labels["direction"]: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"{SCALE_DECISIONS}_total"
    }
    assert decided == {"up": 1.0, "down": 1.0}, decided
