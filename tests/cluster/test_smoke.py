"""Smoke tests that prove the test bed (issue 3): real SLURM, real Ray, real vLLM.

1. a 3-node job reports hostname, SLURM_NODEID, CUDA_VISIBLE_DEVICES and ib0 from every node;
2. a 2-node Ray cluster (head on node 0, worker on node 1, over ib0) reaches 2 alive nodes,
   then the job ends and no process is left on either node;
3. `vllm serve` of the tiny model on one node answers the login namespace;
4. `scancel` of a running 2-node job leaves no process of the job on any node.
"""

from __future__ import annotations

import errno
import os
import re
import time
from pathlib import Path

import pytest

from .bed import BedError, MiniCluster, TestEnv

pytestmark = pytest.mark.cluster

RAY_PORT = 6379  # outside Ray's default worker port range 10002-19999

REPORT_JOB = """\
#!/bin/bash
#SBATCH --job-name=smoke-report
#SBATCH --nodes=3 --ntasks-per-node=1 --gres=gpu:4 --time=2
set -euo pipefail
# shellcheck disable=SC2016 # expanded on each node by the inner bash
srun bash -c '
  addr=$(ip -4 -o addr show dev ib0)
  addr=${addr#*inet }
  printf "REPORT host=%s nodeid=%s gpus=%s ib0=%s\\n" \\
    "$(hostname)" "${SLURM_NODEID}" "${CUDA_VISIBLE_DEVICES:-none}" "${addr%%/*}"
'
"""

# Ray head on the first node, worker on the second, both over their ib0 addresses (looked up
# in the node's own /etc/hosts). Steps overlap, as they must on a real cluster (FACTS pitfall
# 6). With RELEASE=1 the job waits until the test writes a line into the FIFO `release`
# (at most 300 s), then stops both steps and ends; otherwise it runs until cancelled.
# (`ray stop` alone is not enough: after a graceful stop `ray start --block` keeps blocking.)
RAY_JOB = """\
#!/bin/bash
#SBATCH --job-name=smoke-ray
#SBATCH --nodes=2 --ntasks-per-node=1 --gres=gpu:4 --time=10
set -euo pipefail
mapfile -t nodes < <(scontrol show hostnames "${SLURM_JOB_NODELIST}")
ip_of() { getent hosts "$1" | cut -d' ' -f1; }
head_ip=$(ip_of "${nodes[0]}")
worker_ip=$(ip_of "${nodes[1]}")
echo "RAY_ADDRESS ${head_ip}:@PORT@"
srun --overlap -N1 -n1 -w "${nodes[0]}" ray start --head --block --disable-usage-stats \\
  --node-ip-address="${head_ip}" --port=@PORT@ --include-dashboard=false &
head_step=$!
srun --overlap -N1 -n1 -w "${nodes[1]}" ray start --block --disable-usage-stats \\
  --address="${head_ip}:@PORT@" --node-ip-address="${worker_ip}" &
worker_step=$!
if [[ "${RELEASE:-0}" == 1 ]]; then
  read -r -t 300 _ <>release || echo "no release within 300 s"
  # `ray start --block` stops its Ray processes on SIGTERM; srun forwards it to the task.
  kill -TERM "${worker_step}" "${head_step}"
fi
wait
echo "RAY_JOB_DONE"
""".replace("@PORT@", str(RAY_PORT))

VLLM_JOB = """\
#!/bin/bash
#SBATCH --job-name=smoke-vllm
#SBATCH --nodes=1 --ntasks-per-node=1 --gres=gpu:4 --time=15
set -euo pipefail
addr=$(ip -4 -o addr show dev ib0)
addr=${addr#*inet }
export VLLM_HOST_IP=${addr%%/*}
exec vllm serve "${TINY_MODEL}" --host "${VLLM_HOST_IP}" --port 8000 \\
  --served-model-name tiny --max-model-len 512 --enforce-eager
"""


def _release(fifo: Path) -> None:
    """Write one line into the job's FIFO (the job holds it open; never blocks)."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise BedError(f"nobody reads {fifo}: the job is no longer waiting") from exc
        raise
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def _alive_ray_nodes(status_text: str) -> int:
    """Count the nodes listed under `Active:` in `ray status` output."""
    m = re.search(r"Active:\n(.*?)\n\s*(?:Pending|Idle|Recent failures):", status_text, re.S)
    if m is None:
        return 0
    return len(re.findall(r"^\s*\d+\s+node_", m.group(1), re.M))


def _wait_for_ray_nodes(
    cluster: MiniCluster, testenv: TestEnv, node: str, address: str, want: int, timeout: float
) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        proc = cluster.node_exec(
            node, ["ray", "status", f"--address={address}"], env=testenv.env, timeout=60
        )
        last = proc.stdout + proc.stderr
        if proc.returncode == 0 and _alive_ray_nodes(proc.stdout) >= want:
            return proc.stdout
        if time.monotonic() >= deadline:
            raise BedError(
                f"`ray status --address={address}` on {node} did not show {want} alive nodes "
                f"within {timeout:.0f} s; last output:\n{last[-3000:]}"
            )
        time.sleep(1.0)  # poll


def _ray_address(cluster: MiniCluster, job_id: str, timeout: float) -> str:
    """The head address the Ray job printed into its output."""
    out = cluster.job_output(job_id)
    deadline = time.monotonic() + timeout
    while True:
        text = out.read_text() if out.exists() else ""
        m = re.search(r"^RAY_ADDRESS (\S+)$", text, re.M)
        if m:
            return m.group(1)
        if time.monotonic() >= deadline:
            raise BedError(f"job {job_id} printed no RAY_ADDRESS in {timeout:.0f} s; read {out}")
        time.sleep(0.2)  # poll


def test_three_node_report(minicluster: MiniCluster) -> None:
    job_id = minicluster.sbatch(REPORT_JOB, job_dir=minicluster.new_job_dir("report"))
    minicluster.wait_for_state(job_id, {"COMPLETED"}, timeout=60)
    text = minicluster.job_output(job_id).read_text()
    reports = [
        dict(kv.split("=", 1) for kv in line.split()[1:])
        for line in text.splitlines()
        if line.startswith("REPORT ")
    ]
    assert len(reports) == 3, text
    hosts = {r["host"] for r in reports}
    addrs = {r["ib0"] for r in reports}
    assert len(hosts) == 3, reports
    assert len(addrs) == 3, reports
    assert {r["nodeid"] for r in reports} == {"0", "1", "2"}, reports
    for r in reports:
        assert r["host"] in minicluster.nodes, r
        assert r["ib0"] == minicluster.addresses[r["host"]], r
        assert r["gpus"].split(",") == ["0", "1", "2", "3"], r
        assert r["ib0"] != minicluster.login_address


def test_ray_two_nodes(minicluster: MiniCluster, testenv: TestEnv) -> None:
    job_dir = minicluster.new_job_dir("ray")
    os.mkfifo(job_dir / "release")
    job_id = minicluster.sbatch(RAY_JOB, env={**testenv.env, "RELEASE": "1"}, job_dir=job_dir)
    minicluster.wait_for_state(job_id, {"RUNNING"}, timeout=60)
    nodes = minicluster.job_nodes(job_id)
    assert len(nodes) == 2
    address = _ray_address(minicluster, job_id, timeout=30)
    assert address.split(":")[0] == minicluster.addresses[nodes[0]]
    status = _wait_for_ray_nodes(minicluster, testenv, nodes[0], address, want=2, timeout=120)
    assert _alive_ray_nodes(status) == 2, status

    _release(job_dir / "release")
    minicluster.wait_for_state(job_id, {"COMPLETED"}, timeout=90)
    assert "RAY_JOB_DONE" in minicluster.job_output(job_id).read_text()
    minicluster.wait_for_no_processes(nodes, timeout=30)


def test_vllm_serve_one_node(minicluster: MiniCluster, testenv: TestEnv, tiny_model: Path) -> None:
    job_id = minicluster.sbatch(
        VLLM_JOB,
        env={**testenv.env, "TINY_MODEL": str(tiny_model)},
        job_dir=minicluster.new_job_dir("vllm"),
    )
    minicluster.wait_for_state(job_id, {"RUNNING"}, timeout=60)
    (node,) = minicluster.job_nodes(job_id)
    base = f"http://{minicluster.addresses[node]}:8000"
    try:
        models = minicluster.wait_for_http(f"{base}/v1/models", job_id, timeout=240)
        assert '"tiny"' in models, models

        request = {
            "model": "tiny",
            "messages": [{"role": "user", "content": "Hello! How are you today?"}],
            "temperature": 0,
            "max_tokens": 16,
        }
        texts = []
        for _ in range(2):
            status, body = minicluster.http_post_json(f"{base}/v1/chat/completions", request)
            assert status == 200, body
            assert isinstance(body, dict), body
            texts.append(body["choices"][0]["message"]["content"])
        assert texts[0], texts
        assert texts[0] == texts[1], texts  # temperature 0 is deterministic

        status_code, metrics = minicluster.http_get(f"{base}/metrics")
        assert status_code == 200
        series = {line.split("{")[0].split()[0] for line in metrics.splitlines() if line}
        assert any(s.startswith("vllm:") for s in series), metrics[:2000]
    finally:
        minicluster.slurm(["scancel", job_id], check=False)
    minicluster.wait_for_state(job_id, {"CANCELLED"}, timeout=60)
    minicluster.wait_for_no_processes([node], timeout=30)


def test_scancel_two_node_job_leaves_nothing(minicluster: MiniCluster, testenv: TestEnv) -> None:
    job_id = minicluster.sbatch(RAY_JOB, env=testenv.env, job_dir=minicluster.new_job_dir("cancel"))
    minicluster.wait_for_state(job_id, {"RUNNING"}, timeout=60)
    nodes = minicluster.job_nodes(job_id)
    assert len(nodes) == 2
    # Cancel while the job is fully up: a raylet on both nodes.
    deadline = time.monotonic() + 120
    while not all(any("raylet" in p.cmdline for p in minicluster.node_processes(n)) for n in nodes):
        if time.monotonic() >= deadline:
            raise BedError(f"job {job_id}: no raylet on both of {nodes} within 120 s")
        time.sleep(0.2)  # poll

    minicluster.slurm(["scancel", job_id])
    minicluster.wait_for_state(job_id, {"CANCELLED"}, timeout=30)
    minicluster.wait_for_no_processes(nodes, timeout=30)
