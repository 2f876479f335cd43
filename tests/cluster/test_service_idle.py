"""Scale to zero on the mini cluster (issue 34, item 2): a service that holds no node
while nobody asks, and wakes on the next request.

1. A cold-start wait shorter than the load: a service of one replica that may idle
   (`--min-replicas 0`) with `--cold-start-wait 5s`, asked while its first replica is
   still queued or loading: the real `openai` client gets 503 with `Retry-After` and a
   body that says what the replica is doing; the front counts one cold start.
2. Idle, then woken: `--replicas 1 --min-replicas 0 --idle 30s`: 30 s after its
   replica is READY with no request, the replica drains (its leader logs why: idle) and
   its job leaves SLURM, only the front's job is left, `service status` says IDLE and the
   front's /health says 503; `GET /v1/models` is answered by the front with the model's
   name and starts no replica; then ONE chat request (no retry loop: the client waits)
   starts a replica and is answered, and the events say a request woke the service.

Cost (measured on the bed): ~30 s for the first (a front start, the 5 s wait, a down
that cancels a loading replica), ~2.3 minutes for the second (a load 42 s, the idle
30 s and a drain, a second load while the one request waits: answered 38 s after it
was sent; a down 16 s).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from launchers.errors import WaitTimeout
from launchers.service.frontmetrics import COLD_STARTS

from . import api, bed
from .services import REPLICA_ARGS, client, front_get, key_of, svc, wait_status

pytestmark = pytest.mark.cluster

IDLE_PORT, COLD_PORT = "8400", "8500"  # not the other service modules' (8100-8300)
IDLE_SECONDS = 30.0  # short for the bed: the rule is the same at any length (unit tests)
# A drained replica with nothing in flight ends within the runtime's teardown; the front
# ticks every few seconds: the replica is gone this long after the idle time.
GONE_WITHIN = IDLE_SECONDS + 150.0
ANSWER_TIMEOUT = float(bed.READY_TIMEOUT)  # the one request waits a whole load
LISTING_WAKES_NOTHING = 5.0  # five controller ticks


def _up(env: dict[str, str], name: str, model: Path, port: str, *extra: str) -> dict[str, Any]:
    left = Path(env["VLLM_HPC_JOB_ROOT"], "services", name)
    if left.exists():  # from an earlier run on a kept bed
        api.cli(env, "service", "down", name, timeout=300)
        shutil.rmtree(left)
    args = [
        "up", name, "--model", str(model), "--nodes", "1", "--gpus-per-node", "1",
        "--partition", "debug", "--time", "00:20:00", "--handover", "15m", "--replicas", "1",
        "--min-replicas", "0", "--front-time", "00:20:00", "--front-port", port, *extra,
        "--", *REPLICA_ARGS,
    ]  # fmt: skip
    return dict(svc(env, *args, timeout=bed.READY_TIMEOUT + 120))


def _down(minicluster: bed.MiniCluster, env: dict[str, str], name: str) -> list[str]:
    """`service down`, then what SLURM still lists of the service's jobs (none, said)."""
    api.cli(env, "service", "down", name, timeout=300)
    row = svc(env, "status", name)
    jobs = [r["job_id"] for r in row["replicas"]]
    for job in jobs:
        minicluster.slurm(["scancel", job], check=False)
    return jobs


def _squeue(minicluster: bed.MiniCluster) -> list[str]:
    done = minicluster.slurm(["squeue", "--noheader", "--format=%i %j %T"], check=False)
    return [line for line in done.stdout.splitlines() if line.strip()]


@pytest.fixture
def cold(minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path) -> Iterator[Any]:
    name = "cold"
    try:
        _up(env, name, tiny_model, COLD_PORT, "--cold-start-wait", "5s")
        # the front's URL once its job runs and beats (service up returns at submission)
        yield wait_status(env, name, "the front's URL", 120, lambda r: r["url"] is not None)
    finally:
        _down(minicluster, env, name)


def test_a_request_that_outwaits_the_cold_start_wait_gets_503_with_retry_after(
    cold: dict[str, Any], tiny_model: Path
) -> None:
    began = time.monotonic()
    with pytest.raises(openai.APIStatusError) as refused:
        client(cold).chat.completions.create(
            model=tiny_model.name, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
    waited = time.monotonic() - began
    answer = refused.value.response
    print(f"refused after {waited:.1f} s: {answer.status_code} {answer.text[:400]}")
    assert answer.status_code == 503, answer.text
    assert answer.headers.get("Retry-After", "").isdigit(), answer.headers
    message = str(answer.json()["error"]["message"])
    assert "no replica of the service is ready after waiting 5 s" in message, message
    assert any(state in message for state in ("PENDING", "STARTING", "LOADING")), message
    assert waited >= 5.0, f"answered after {waited:.1f} s, before the 5 s wait"
    status, text = front_get(cold, "/metrics", key_of(cold))
    assert status == 200, text[:2000]
    counted = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == f"{COLD_STARTS}_total"
    }
    assert counted == {f"{COLD_STARTS}_total": 1.0}, counted


@pytest.fixture
def idler(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> Iterator[dict[str, Any]]:
    name = "idler"
    try:
        row = _up(
            env, name, tiny_model, IDLE_PORT, "--idle", f"{IDLE_SECONDS:g}s",
            "--cold-start-wait", "10m", "--wait", "--wait-timeout", str(bed.READY_TIMEOUT),
        )  # fmt: skip
        assert row["state"] == "UP", row
        yield row
    finally:
        left = _down(minicluster, env, name)
        assert not [line for line in _squeue(minicluster) if f" {name}" in line or any(
            line.startswith(f"{job} ") for job in left)], _squeue(minicluster)  # fmt: skip


def test_an_idle_service_ends_its_replica_and_one_request_wakes_it(
    minicluster: bed.MiniCluster, env: dict[str, str], idler: dict[str, Any], tiny_model: Path
) -> None:
    [first] = idler["replicas"]
    idle = wait_status(
        env, "idler", "the service IDLE with its replica ended", GONE_WITHIN,
        lambda r: r["state"] == "IDLE" and not r["replicas"],
    )  # fmt: skip
    assert "wakes on the next request" in idle["message"], idle
    listed = _squeue(minicluster)
    assert not any(line.startswith(f"{first['job_id']} ") for line in listed), listed
    leader_log = Path(first["job_dir"], "node-0.log").read_text(errors="replace")
    assert "stopping: SIGUSR1 (idle)" in leader_log, leader_log[-3000:]
    status, _ = front_get(idle, "/health")
    assert status == 503, status
    # A model listing (what health checkers and UIs poll) is answered by the front and
    # wakes nothing: no replica within LISTING_WAKES_NOTHING (the controller ticks each s).
    models = client(idle).models.list()
    assert [m.id for m in models.data] == [tiny_model.name], models
    with pytest.raises(WaitTimeout):
        wait_status(
            env, "idler", "a replica started by the model listing", LISTING_WAKES_NOTHING,
            lambda r: bool(r["replicas"]) or r["state"] != "IDLE",
        )  # fmt: skip

    began = time.monotonic()
    answer = (
        client(idle)
        .with_options(timeout=ANSWER_TIMEOUT)
        .chat.completions.create(
            model=tiny_model.name, messages=[{"role": "user", "content": "Hello"}], max_tokens=4
        )
    )
    took = time.monotonic() - began
    print(f"woken: the one request answered {took:.1f} s after it was sent")
    assert answer.choices[0].message.content, answer
    woken = svc(env, "status", "idler")
    assert any("a request woke the service" in e for e in woken["events"]), woken["events"]
    [second] = [r for r in woken["replicas"] if r["state"] == "READY"]
    assert second["job_id"] != first["job_id"], woken
