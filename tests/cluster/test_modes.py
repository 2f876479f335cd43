"""The other ways vLLM spans nodes, on the mini cluster (issue: DP + EP, native, TKP):

1. data parallel across 2 nodes without Ray (node 0 serves, node 1 runs a headless DP
   rank), through slurm/multinode_dp_ep.sbatch and through ``launchers.submit``;
2. ``--runtime native`` (vLLM's own ``--nnodes``) with PP=2 across 2 nodes.

The tiny model is dense, so expert parallel itself is proven at the plan level only
(tests/unit golden files); these jobs run with EP=0.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from . import api, bed
from .test_runtime import READY_TIMEOUT, SLURM, VLLM_ARGS, cancel_and_check_clean, wait_endpoint

pytestmark = pytest.mark.cluster
PROMPT = [{"role": "user", "content": "How many nodes serve this model?"}]


def _job_dir(env: dict[str, str], job_id: str) -> Path:
    return Path(env["VLLM_HPC_JOB_ROOT"]) / job_id


def test_dp2_across_two_nodes_sbatch(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    job_id = minicluster.sbatch(
        SLURM / "multinode_dp_ep.sbatch",
        ["--nodes=2", "--gpus-per-node=1", "--time=10"],
        env={**env, "MODEL": str(tiny_model), "DP": "2", "EP": "0",
             "EXTRA_VLLM_ARGS": VLLM_ARGS},
    )  # fmt: skip
    job_dir = _job_dir(env, job_id)
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT, job_id)
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["runtime"], plan["layout"]["dp"]) == ("dp", 2)
        headless = (job_dir / "node-1.log").read_text()
        assert "headless vllm serve started" in headless
        assert "the leader's port 13345 answered" in headless
        assert api.chat(endpoint, PROMPT)
        # Both DP ranks are engines: the headless node's vLLM log shows its engine core.
        assert "EngineCore" in (job_dir / "vllm-1.log").read_text()
    finally:
        cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def submit_wait(
    testenv: bed.TestEnv, env: dict[str, str], model: Path, *more: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    """`python -m launchers.submit --wait --json` for DP=2 over 2 nodes, as a user runs it."""
    argv = [
        str(testenv.python), "-m", "launchers.submit", "--model", str(model),
        "--nodes", "2", "--gpus-per-node", "1", "--dp", "2", *more, "--partition", "debug",
        "--time", "00:10:00", "--wait", "--json", "--wait-timeout", str(READY_TIMEOUT),
        "--", *VLLM_ARGS.split(),
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT + 60, check=False
    )
    handle = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done, handle, str(handle.get("job_id", ""))


def test_dp2_through_submit(
    minicluster: bed.MiniCluster, testenv: bed.TestEnv, env: dict[str, str], tiny_model: Path
) -> None:
    done, handle, job_id = submit_wait(testenv, env, tiny_model)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        endpoint = json.loads((Path(handle["job_dir"]) / "endpoint.json").read_text())
        assert api.chat(endpoint, PROMPT)
    finally:
        if job_id:
            cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def test_dp2_over_the_ray_backend(
    minicluster: bed.MiniCluster, testenv: bed.TestEnv, env: dict[str, str], tiny_model: Path
) -> None:
    # `--dp-backend ray`: one vllm serve on the leader places a DP engine on each node
    # of the Ray cluster the runtime brought up.
    done, handle, job_id = submit_wait(testenv, env, tiny_model, "--dp-backend", "ray")
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        plan = json.loads((Path(handle["job_dir"]) / "plan.json").read_text())
        assert plan["runtime"] == "ray"
        for node in minicluster.job_nodes(job_id):
            procs = minicluster.node_processes(node)
            assert any("EngineCoreActor" in p.cmdline for p in procs), f"no DP engine on {node}"
        endpoint = json.loads((Path(handle["job_dir"]) / "endpoint.json").read_text())
        assert api.chat(endpoint, PROMPT)
    finally:
        if job_id:
            cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def test_native_pp2_across_two_nodes(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    job_id = minicluster.sbatch(
        SLURM / "multinode_native.sbatch",
        ["--nodes=2", "--gpus-per-node=1", "--time=10"],
        env={**env, "MODEL": str(tiny_model), "TP": "1", "PP": "2", "EXTRA_VLLM_ARGS": VLLM_ARGS},
    )
    job_dir = _job_dir(env, job_id)
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT, job_id)
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["runtime"], plan["layout"]["pp"]) == ("native", 2)
        assert "--nnodes" in plan["roles"][0]["serve_argv"]
        assert "the leader's port 29501 answered" in (job_dir / "node-1.log").read_text()
        assert api.chat(endpoint, PROMPT)
    finally:
        cancel_and_check_clean(minicluster, job_id, minicluster.nodes)
