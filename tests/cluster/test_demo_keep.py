"""`make demo KEEP=1` on the live mini cluster (issue: the first ten minutes): the demo
submits its 2-node job, answers, and leaves the cluster and the job up; the shell lines it
prints work as printed (the export line, then `vllm-hpc status`), and `vllm-hpc stop`
from them ends the job with nothing left. ~40 s: one job start and an answer."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from . import bed

pytestmark = pytest.mark.cluster


def _shell(exports: str, command: str) -> subprocess.CompletedProcess[str]:
    """``command`` in a shell after the demo's export line, as a user pastes them."""
    script = f"{exports}\n{command}\n"
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          check=False, cwd=bed.REPO_ROOT)  # fmt: skip


def test_demo_keep_leaves_a_job_whose_printed_commands_work(
    minicluster: bed.MiniCluster, testenv: bed.TestEnv, tiny_model: Path, job_ids: list[str]
) -> None:
    env = {**os.environ, "VLLM_HPC_MC_STATE": str(minicluster.state)}
    done = subprocess.run([sys.executable, "-m", "tests.cluster.demo", "--keep"], env=env,
                          cwd=bed.REPO_ROOT, capture_output=True, text=True, timeout=900,
                          check=False)  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    found = re.search(r"vllm-hpc status (\d+)", out)
    assert found, out[-3000:]
    job_id = found.group(1)
    job_ids.append(job_id)
    assert "the cluster and the job stay up (KEEP=1)" in out
    assert "tearing the mini cluster down" not in out
    exports = next(line.split("demo:", 1)[-1].strip() for line in out.splitlines()
                   if "export SLURM_CONF=" in line)  # fmt: skip
    assert bed.cluster_node_count(minicluster.state) >= 2, "the demo took the cluster down"
    status = _shell(exports, f"vllm-hpc status {shlex.quote(job_id)} --json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "READY", status.stdout
    nodes = minicluster.job_nodes(job_id)
    stop = _shell(exports, f"vllm-hpc stop {shlex.quote(job_id)}")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120)
    minicluster.wait_for_no_processes(nodes, timeout=bed.GONE_TIMEOUT)
