"""A service outlives its replicas' time limit (issue: services that outlive the walltime).

A 1-replica service whose replica has a 12-minute limit and a 9.9-minute handover (the
longest `service up` takes: below the limit less the 120 s warning): about two minutes
after the replica starts (after it is READY) it gets a successor, the successor is routed
once READY and the old replica drains. Under a steady request loop through the front with
the real `openai` client: no request fails, the URL stays, the first replica ends
COMPLETED well before its limit, and nothing of it is left on any node.

One replica, not two: a second replica's handover is the same path once more, ~3 minutes
of CI; the rule that handovers roll (one successor loading at a time, or half the window
left) is the controller's, unit-tested tick by tick in tests/unit/test_service_decide.py.

Cost (measured on the mini cluster): see the module's line in the issue notes (~2.5 min
after `service up`).
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
from .services import REPLICA_ARGS, Load, client, ready_jobs, svc

pytestmark = pytest.mark.cluster

NAME = "relay"
# A successor loads in 2-3 minutes here while the old replica serves the loop on the
# 2 CPUs; the window holds that load and the 120 s warning. The limit leaves no steady
# minute before the handover (the steady state is the bench's business).
LIMIT_MINUTES = 12
HANDOVER_SECONDS = 594  # below the limit less the 120 s warning, as service up requires
HANDED_OVER_WITHIN = 600.0  # the first replica replaced by a READY successor


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
            f"{HANDOVER_SECONDS}s", "--replicas", "1", "--front-port", "8200", "--wait",
            "--wait-timeout", str(bed.READY_TIMEOUT), "--", *REPLICA_ARGS,
            timeout=bed.READY_TIMEOUT + 120,
        )  # fmt: skip
        assert row["state"] == "UP", row
        yield row
    finally:
        api.cli(env, "service", "down", NAME, timeout=300)


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_a_replica_is_handed_over_before_its_time_limit_with_no_failed_request(
    relay: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path
) -> None:
    first = ready_jobs(relay)
    assert len(first) == 1

    def handed_over() -> dict[str, Any] | None:
        row = svc(env, "status", NAME)
        now = ready_jobs(row)
        return row if len(now) == 1 and not set(now) & set(first) else None

    with Load(client(relay), tiny_model.name) as load:
        row = waits.wait_for(
            handed_over, what="the first replica handed over", timeout=HANDED_OVER_WITHIN,
            interval=2.0, detail=lambda: f"; last: {svc(env, 'status', NAME)}",
        ).value  # fmt: skip
        for job in first:  # the old one drains: its in-flight requests finish
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
