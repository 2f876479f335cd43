"""The node runtime on the mini cluster, through its three doors, with real SLURM, Ray and
vLLM serving the tiny model (issue: the multi-node runtime).

1. ``sbatch slurm/multinode_tp_pp.sbatch`` on 2 nodes (PP=2 over Ray);
2. ``python -m launchers.submit --nodes 2 --wait`` (submitit);
3. ``bin/multi-node-serving.sh leader|worker`` started by hand on two nodes;
4. single node: one "GPU" and TP=2, through their sbatch files;
5. a worker that cannot reach its leader, and a leader whose worker never comes.

Every answer at temperature 0 must equal the single-node answer, and after each job no
process of it may be left on any node.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from . import api, bed
from .jobs import SLURM, VLLM_ARGS, cancel_and_check_clean, wait_endpoint

pytestmark = pytest.mark.cluster

REPO = bed.REPO_ROOT
BIN = REPO / "bin"
PROMPT = [{"role": "user", "content": "Which node runs the Ray head?"}]
READY_TIMEOUT, GONE_TIMEOUT = bed.READY_TIMEOUT, bed.GONE_TIMEOUT
GENERATION_JSON = '{"temperature": 0.5}'


def ask(cluster: bed.MiniCluster, endpoint: dict[str, Any]) -> str:
    """A temperature-0 chat completion from the login namespace, with the job's API key;
    the same request without the key must be refused, as must every other route and
    every listener of the job tried by a stranger (api.assert_no_open_door)."""
    key_file = endpoint.get("api_key_file")
    assert key_file, "the job should have an API key by default"
    assert os.stat(key_file).st_mode & 0o077 == 0, "the API key file must be private"
    body = {"model": endpoint["model"], "messages": PROMPT, "max_tokens": 4}
    status, _ = api.post_json(f"{endpoint['url']}/chat/completions", body, None)
    assert status == 401, "the endpoint must refuse requests without the key"
    api.assert_no_open_door(cluster, endpoint)
    return api.chat(endpoint, PROMPT)


def job_dir_of(env: dict[str, str], job_id: str) -> Path:
    return bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id)


@pytest.fixture(scope="module")
def reference(minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path) -> str:
    """The single-node, single-"GPU" answer, through slurm/single_gpu.sbatch (proof 4a)."""
    job_id = minicluster.sbatch(
        SLURM / "single_gpu.sbatch",
        ["--nodes=1", "--time=10"],
        env={**env, "MODEL": str(tiny_model), "EXTRA_VLLM_ARGS": VLLM_ARGS},
    )
    nodes = minicluster.job_nodes(job_id) or minicluster.nodes
    try:
        endpoint = wait_endpoint(minicluster, job_dir_of(env, job_id), READY_TIMEOUT, job_id)
        assert endpoint["nodes"] == 1
        answer = ask(minicluster, endpoint)
    finally:
        cancel_and_check_clean(minicluster, job_id, nodes)
    return answer


def test_single_gpu_sbatch(reference: str) -> None:
    assert reference.strip()


def test_single_node_tp2_sbatch(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, reference: str
) -> None:
    job_id = minicluster.sbatch(
        SLURM / "single_node_tp.sbatch",
        ["--nodes=1", "--gpus-per-node=2", "--time=10"],
        env={**env, "MODEL": str(tiny_model), "EXTRA_VLLM_ARGS": VLLM_ARGS},
    )
    job_dir = job_dir_of(env, job_id)
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT, job_id)
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["layout"]["tp"], plan["runtime"]) == (2, "single")
        assert ask(minicluster, endpoint) == reference
    finally:
        cancel_and_check_clean(minicluster, job_id, minicluster.nodes)


def newcomer_path(env: dict[str, str]) -> str:
    """The bed's PATH without any directory that holds vllm-hpc's bash wrappers (the
    checkout's bin/, or a venv they were installed into): no module, no PATH edit."""
    kept = [
        entry
        for entry in env["PATH"].split(os.pathsep)
        if entry and not (Path(entry) / "multi-node-serving.sh").exists()
    ]
    path = os.pathsep.join(kept)
    assert shutil.which("multi-node-serving.sh", path=path) is None
    return path


def test_multinode_sbatch_pp2_over_ray(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, reference: str
) -> None:
    """As a newcomer submits it: `sbatch slurm/multinode_tp_pp.sbatch` from the checkout
    root, with only VLLM_HPC_PYTHON (the nodes' Python) and no wrapper on PATH, and a
    JSON-valued vLLM argument in EXTRA_VLLM_ARGS (a default the temperature-0 request
    overrides, so the answer is the reference's)."""
    extra = f"{VLLM_ARGS} --override-generation-config '{GENERATION_JSON}'"
    job_id = minicluster.sbatch(
        Path("slurm") / "multinode_tp_pp.sbatch",
        ["--nodes=2", "--gpus-per-node=1", "--time=10"],
        env={**env, "PATH": newcomer_path(env), "MODEL": str(tiny_model), "TP": "1", "PP": "2"}
        | {"EXTRA_VLLM_ARGS": extra},
        cwd=REPO,
    )
    job_dir = job_dir_of(env, job_id)
    nodes = minicluster.job_nodes(job_id)
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT, job_id)
        nodes = minicluster.job_nodes(job_id)
        assert len(nodes) == 2
        assert endpoint["leader_ip"] == minicluster.addresses[nodes[0]]
        assert sorted(n["ip"] for n in endpoint["ray_nodes"]) == sorted(
            minicluster.addresses[n] for n in nodes
        )
        plan = json.loads((job_dir / "plan.json").read_text())
        assert (plan["layout"]["pp"], plan["runtime"]) == (2, "ray")
        for rank in (0, 1):  # the pre-flight ran on both nodes before vLLM loaded
            log = (job_dir / f"node-{rank}.log").read_text()
            assert "pre-flight passed" in log and "across 2 nodes" in log, log[-2000:]
        serve = plan["roles"][0]["serve_argv"]
        assert serve[serve.index("--override-generation-config") + 1] == GENERATION_JSON
        assert ask(minicluster, endpoint) == reference
    finally:
        cancel_and_check_clean(minicluster, job_id, nodes or minicluster.nodes)


def test_submit_wait_through_submitit(
    minicluster: bed.MiniCluster,
    testenv: bed.TestEnv,
    env: dict[str, str],
    tiny_model: Path,
    reference: str,
) -> None:
    options = [
        "--model", str(tiny_model), "--nodes", "2", "--gpus-per-node", "1", "--tp", "1",
        "--pp", "2", "--partition", "debug", "--time", "00:10:00",
    ]  # fmt: skip
    dry = api.dry_run_nodes(testenv.python, env, options, VLLM_ARGS.split())
    argv = [
        str(testenv.python), "-m", "launchers.submit", *options, "--wait", "--json",
        "--wait-timeout", str(READY_TIMEOUT), "--", *VLLM_ARGS.split(),
    ]  # fmt: skip
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=READY_TIMEOUT + 60, check=False
    )
    handle = json.loads(done.stdout) if done.stdout.strip().startswith("{") else {}
    job_id = str(handle.get("job_id", ""))
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        assert handle["state"] == "READY" and handle["executor"] == "slurm"
        endpoint = json.loads((Path(handle["job_dir"]) / "endpoint.json").read_text())
        assert len(endpoint["ray_nodes"]) == 2
        assert ask(minicluster, endpoint) == reference
        # each node ran its dry-run lines (ray start, vllm serve), the job's values filled in
        api.assert_nodes_ran_the_dry_run(Path(handle["job_dir"]), dry)
        stop = subprocess.run(
            [str(testenv.python), "-m", "launchers", "stop", job_id],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert stop.returncode == 0, stop.stderr
        assert "STOPPED" in stop.stdout
        minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)
    finally:
        if job_id:
            minicluster.slurm(["scancel", job_id], check=False)


def _start_on_node(
    cluster: bed.MiniCluster, node: str, argv: list[str], env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """Start a long-running command inside a node's namespaces (as a user's shell would)."""
    full = ["nsenter", "-t", str(cluster.init_pid(node)), "-n", "-u", "-m", "-p", "--", *argv]
    with log.open("ab") as out:
        return subprocess.Popen(full, env=env, stdout=out, stderr=subprocess.STDOUT, cwd="/")


def _runtime_pids(cluster: bed.MiniCluster, node: str, what: str) -> list[int]:
    mark = f"launchers node wrapper {what}"
    return [p.pid for p in cluster.node_processes(node) if mark in p.cmdline]


def test_wrapper_by_hand_on_two_nodes(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    tiny_model: Path,
    reference: str,
    testenv: bed.TestEnv,
) -> None:
    lead_node, work_node = minicluster.nodes[0], minicluster.nodes[1]
    job_dir = minicluster.new_job_dir("wrapper")
    wrapper = str(BIN / "multi-node-serving.sh")
    # One Ray token for both nodes, on the storage they share (the leader would make it
    # when absent; made here so the worker, started at once, finds it).
    token = job_dir / "ray_token"
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    leader = _start_on_node(
        minicluster,
        lead_node,
        [wrapper, "leader", "--ray_port=6379", "--ray_cluster_size=2", "--num-gpus=1",
         "--temp-dir=/tmp/ray-wrapper", "--include-dashboard=False", f"--model={tiny_model}",
         f"--job-dir={job_dir}", f"--ray-token-file={token}", "--", *VLLM_ARGS.split()],
        env,
        job_dir / "leader.out",
    )  # fmt: skip
    worker = _start_on_node(
        minicluster,
        work_node,
        [wrapper, "worker", f"--ray_address={minicluster.addresses[lead_node]}",
         "--ray_port=6379", "--num-gpus=1", "--temp-dir=/tmp/ray-wrapper", f"--job-dir={job_dir}",
         f"--ray-token-file={token}"],
        env,
        job_dir / "worker.out",
    )  # fmt: skip
    try:
        endpoint = wait_endpoint(minicluster, job_dir, READY_TIMEOUT)
        assert endpoint["leader_ip"] == minicluster.addresses[lead_node]
        assert len(endpoint["ray_nodes"]) == 2
        for rank in (0, 1):  # each planned it on its own; they met at the leader's fixed port
            log = (job_dir / f"node-{rank}.log").read_text()
            assert "pre-flight passed" in log and "across 2 nodes" in log, log[-2000:]
        assert ask(minicluster, endpoint) == reference
        # The wrapper door's Ray runs with token auth: a client without it is refused.
        api.assert_ray_refuses_a_stranger(testenv, f"{minicluster.addresses[lead_node]}:6379")
        for pid in _runtime_pids(minicluster, lead_node, "leader"):
            os.kill(pid, signal.SIGTERM)
        assert leader.wait(timeout=60) == 0
        assert worker.wait(timeout=60) == 0
        minicluster.wait_for_no_processes([lead_node, work_node], timeout=GONE_TIMEOUT)
        assert json.loads((job_dir / "endpoint.json").read_text())["state"] == "STOPPED"
    finally:
        for proc in (leader, worker):
            if proc.poll() is None:
                proc.kill()
        for node in (lead_node, work_node):
            for pid in _runtime_pids(minicluster, node, ""):
                os.kill(pid, signal.SIGKILL)


def test_worker_that_cannot_reach_its_leader(
    minicluster: bed.MiniCluster, env: dict[str, str]
) -> None:
    node = minicluster.nodes[1]
    job_dir = minicluster.new_job_dir("lonely-worker")
    nobody = minicluster.addresses[minicluster.nodes[2]]
    token = job_dir / "ray_token"  # the worker has its token: only the leader is missing
    token.write_text(secrets.token_urlsafe(32) + "\n")
    token.chmod(0o600)
    start = time.monotonic()
    done = minicluster.node_exec(
        node,
        [str(BIN / "multi-node-serving.sh"), "worker", f"--ray_address={nobody}",
         "--nodes-timeout=8", f"--job-dir={job_dir}", f"--ray-token-file={token}"],
        env=env,
        timeout=90,
    )  # fmt: skip
    took = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    # the pre-flight comes first: it meets the leader at its fixed port, before Ray
    assert f"pre-flight: cannot reach the pre-flight's rendezvous {nobody}:29510: " in done.stderr
    assert took < 30
    minicluster.wait_for_no_processes([node], timeout=GONE_TIMEOUT)


def test_leader_whose_worker_never_comes(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    node = minicluster.nodes[0]
    job_dir = minicluster.new_job_dir("lonely-leader")
    start = time.monotonic()
    done = minicluster.node_exec(
        node,
        [str(BIN / "multi-node-serving.sh"), "leader", "--ray_cluster_size=2", "--num-gpus=1",
         "--nodes-timeout=20", f"--model={tiny_model}", f"--job-dir={job_dir}", "--",
         *VLLM_ARGS.split()],
        env=env,
        timeout=180,
    )  # fmt: skip
    took = time.monotonic() - start
    assert done.returncode == 1, done.stderr
    # the pre-flight, which the worker would have joined first, names it
    lead_ip = minicluster.addresses[node]
    assert (
        f"pre-flight: 1 of 2 nodes reached the pre-flight at {lead_ip}:29510 within 20 s: "
        "rank 1 never started its runtime"
    ) in done.stderr
    assert took < 90, f"took {took:.0f} s"
    endpoint = json.loads((job_dir / "endpoint.json").read_text())
    assert endpoint["state"] == "FAILED" and "rank 1" in endpoint["message"]
    minicluster.wait_for_no_processes([node], timeout=GONE_TIMEOUT)
