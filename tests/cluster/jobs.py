"""Jobs of the tiny model on the mini cluster, from the login namespace: the sbatch
templates, the vLLM arguments every job gets, waiting for READY, and cancelling a job
with a check that nothing of it is left. Used by several test modules."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from . import bed

SLURM = bed.REPO_ROOT / "slurm"
VLLM_ARGS = "--max-model-len 512"
# The same in eager mode: no torch.compile trace at each start (5-12 s a start here), for
# the tests about services and a job's end rather than vLLM's compile; never with PP
# (FACTS pitfall 5: the first request kills the engine).
EAGER_VLLM_ARGS = f"{VLLM_ARGS} --enforce-eager"
GONE_TIMEOUT = bed.GONE_TIMEOUT


def wait_endpoint(
    cluster: bed.MiniCluster, job_dir: Path, timeout: float, job_id: str | None = None
) -> dict[str, Any]:
    """Poll the leader's endpoint.json until READY; fail fast on FAILED or a dead job."""
    deadline = time.monotonic() + timeout
    path = job_dir / "endpoint.json"
    seen: dict[str, Any] = {}
    while True:
        try:
            seen = json.loads(path.read_text())
        except (OSError, ValueError):
            seen = {}
        if seen.get("state") == "READY":
            return seen
        if seen.get("state") in ("FAILED", "STOPPED"):
            pytest.fail(f"leader says {seen['state']}: {seen.get('message')} ({job_dir})")
        if job_id is not None:
            state = cluster.job_info(job_id).get("JobState", "UNKNOWN")
            if state in bed.TERMINAL_STATES:
                pytest.fail(f"job {job_id} ended {state} before READY; see {job_dir}")
        if time.monotonic() > deadline:
            pytest.fail(f"not READY after {timeout:.0f} s (last {seen}); see {job_dir}")
        time.sleep(0.5)  # poll


def cancel_and_check_clean(cluster: bed.MiniCluster, job_id: str, nodes: list[str]) -> None:
    """scancel the job, wait for it to end and for nothing of it to be left on ``nodes``."""
    cluster.slurm(["scancel", job_id])
    cluster.wait_for_state(job_id, ["CANCELLED", "COMPLETED", "FAILED"], timeout=GONE_TIMEOUT)
    cluster.wait_for_no_processes(nodes, timeout=GONE_TIMEOUT)
