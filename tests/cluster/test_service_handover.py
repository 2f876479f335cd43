"""A service outlives its replicas' time limit (issue: services that outlive the walltime).

A 2-replica service whose replicas have a 12-minute limit and a 9.9-minute handover (the
longest `service up` takes: below the limit less the 120 s warning): the replica that
ends first gets a successor about two minutes after it starts (after it is READY), the
successor is routed once READY and the old replica drains; then the other
replica's handover starts (handovers roll, unless half the window has gone by). Under a
steady request loop through the front with the real `openai` client: no request fails,
the URL stays, both first replicas end COMPLETED well before their limit, and nothing of
theirs is left on any node.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from launchers import waits

from . import api, bed
from .services import Load, client, ready_jobs, svc

pytestmark = pytest.mark.cluster

NAME = "relay"
# A successor loads in about 3 minutes here while both replicas serve the loop on the
# bed's 2 CPUs; handovers roll, so the window holds two loads and the 120 s warning. The
# limit leaves no steady minute before the first handover (the steady state is the
# bench's business).
LIMIT_MINUTES = 12
HANDOVER_SECONDS = 594  # below the limit less the 120 s warning, as service up requires
HANDED_OVER_WITHIN = 720.0  # both first replicas replaced by READY successors


@pytest.fixture(scope="module")
def relay(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> Iterator[dict[str, Any]]:
    left = Path(env["VLLM_HPC_JOB_ROOT"], "services", NAME)
    if left.exists():
        api.cli(env, "service", "down", NAME, timeout=300)
        shutil.rmtree(left)
    try:
        row = svc(
            env, "up", NAME, "--model", str(tiny_model), "--nodes", "1", "--gpus-per-node", "1",
            "--partition", "debug", "--time", f"00:{LIMIT_MINUTES:02d}:00", "--handover",
            f"{HANDOVER_SECONDS}s", "--replicas", "2", "--front-port", "8200", "--wait",
            "--wait-timeout", str(bed.READY_TIMEOUT), "--", "--max-model-len", "512",
            timeout=bed.READY_TIMEOUT + 120,
        )  # fmt: skip
        assert row["state"] == "UP", row
        yield row
    finally:
        api.cli(env, "service", "down", NAME, timeout=300)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_replicas_are_handed_over_before_their_time_limit_with_no_failed_request(
    relay: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path
) -> None:
    first = ready_jobs(relay)
    assert len(first) == 2

    def handed_over() -> dict[str, Any] | None:
        row = svc(env, "status", NAME)
        now = ready_jobs(row)
        return row if len(now) == 2 and not set(now) & set(first) else None

    with Load(client(relay), tiny_model.name) as load:
        row = waits.wait_for(
            handed_over, what="both first replicas handed over", timeout=HANDED_OVER_WITHIN,
            interval=2.0, detail=lambda: f"; last: {svc(env, 'status', NAME)}",
        ).value  # fmt: skip
        for job in first:  # the old ones drain: their in-flight requests finish
            minicluster.wait_for_state(job, bed.TERMINAL_STATES, timeout=180)
        answered = load.ok
        waits.wait_for(lambda: waits.seen(load.ok >= answered + 3), what="answers", timeout=60)
    assert load.failed == [], load.failed[:5]
    assert load.ok > 20, load.ok
    assert row["url"] == relay["url"]
    for job in first:
        info = minicluster.job_info(job)
        assert info["JobState"] == "COMPLETED", info
        ended_early = _seconds(info["StartTime"]) + LIMIT_MINUTES * 60 - _seconds(info["EndTime"])
        assert ended_early > 60, info  # before the limit, and before its 120 s warning
        minicluster.wait_for_no_processes(
            minicluster.nodes, timeout=bed.GONE_TIMEOUT, match=f"-{job}/"
        )
    events = " | ".join(row["events"])
    assert all(f"replica {job}" in events and "handed over" in events for job in first), events
    _assert_rolled(list(row["events"]), first)


def _assert_rolled(events: list[str], first: list[str]) -> None:
    """The second of the first replicas' successors was asked for after the first
    handover, or once less than half of its replica's handover window was left (the
    rule's deadline). Successors get successors of their own later; they do not count."""
    asked = [
        i for i, e in enumerate(events)
        if e.endswith(": successor") and any(f"replica {job} " in e for job in first)
    ]  # fmt: skip
    handed = [i for i, e in enumerate(events) if "drains: handed over to" in e]
    assert len(asked) == 2 and handed, events
    left = float(events[asked[1]].split(" ends in ")[1].split(" s:")[0])
    assert asked[1] > handed[0] or left <= HANDOVER_SECONDS / 2, events
