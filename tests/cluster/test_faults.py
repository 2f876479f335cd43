"""Faults survived and secrets kept, on live jobs (issue: reliability and security).

- While a 2-node job (PP=2 over Ray) serves: its API key is in no process's command line on
  any node, nor in the rendered script, plan, endpoint file, logs or SLURM output; the job
  directory and secrets are private; an unauthenticated Ray client from the login node is
  refused. Then vLLM is killed on the leader: the job ends FAILED with the reason from the
  log, and nothing of it is left on any node.
- A worker's raylet is killed mid-serving: the job ends FAILED naming the worker, nothing left.
- The API port is taken on every node: the job moves to the next free port and answers
  there; with the port fixed by the user it fails at once, saying so.

Each of these jobs is the rerun of the one before on the same nodes: no manual cleanup.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import api, bed
from .jobs import EAGER_VLLM_ARGS

REPO = bed.REPO_ROOT
READY_TIMEOUT, GONE_TIMEOUT = bed.READY_TIMEOUT, bed.GONE_TIMEOUT
cli, cli_json, submit = api.cli, api.cli_json, api.submit

pytestmark = pytest.mark.cluster

FAIL_DEADLINE = 60.0  # the bound for noticing a lost node


def wait_state(env: dict[str, str], job_id: str, want: str, timeout: float) -> dict[str, Any]:
    """Poll `vllm-hpc status --json` until the job is in `want` (or another final state)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = cli(env, "status", job_id, "--json")
        status = json.loads(done.stdout) if done.stdout.startswith("{") else status
        if status.get("state") in (want, "FAILED", "STOPPED"):
            break
        time.sleep(0.5)  # poll
    assert status.get("state") == want, f"job {job_id} not {want} after {timeout:.0f} s: {status}"
    return status


def kill_matching(cluster: bed.MiniCluster, node: str, needle: str) -> list[int]:
    killed = []
    for proc in cluster.node_processes(node):
        # Not the guard that vllm-hpc starts each child under (its argv holds the child's).
        if needle in proc.cmdline and "_guard.py" not in proc.cmdline:
            os.kill(proc.pid, signal.SIGKILL)
            killed.append(proc.pid)
    assert killed, f"no process matching {needle!r} on {node}"
    return killed


def test_secrets_kept_and_a_leader_crash_fails_cleanly(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    tiny_model: Path,
    testenv: bed.TestEnv,
    job_ids: list[str],
) -> None:
    handle = submit(env, tiny_model, 2)
    job_id = str(handle["job_id"])
    job_ids.append(job_id)
    job_dir = Path(handle["job_dir"])
    nodes = minicluster.job_nodes(job_id)
    key = (job_dir / "api_key").read_text().strip()
    assert len(key) >= 32

    # Private files: the job directory 0700, the secrets 0600.
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    for secret in ("api_key", "ray_token"):
        assert stat.S_IMODE((job_dir / secret).stat().st_mode) == 0o600, secret

    # The key is in no command line on this machine (every node's processes included) ...
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert key not in cmdline, f"API key in the command line of pid {entry.name}"
    assert any("vllm serve" in p.cmdline for p in minicluster.node_processes(nodes[0]))
    # ... nor in any file of the job but the key file, nor in the SLURM output.
    stdout = Path(minicluster.job_info(job_id)["StdOut"])
    for path in [*job_dir.rglob("*"), stdout]:
        if path.is_file() and path.name != "api_key":
            assert key not in path.read_text(errors="replace"), f"API key in {path}"

    # Ray refuses a client without the job's token, from the login node.
    leader = json.loads((job_dir / "leader.json").read_text())
    api.assert_ray_refuses_a_stranger(testenv, f"{leader['ip']}:{leader['ray_port']}")
    stranger = {k: v for k, v in testenv.env.items() if not k.startswith("RAY_AUTH")}
    # Ray's client server (port 10001, started by `ray start --head`) does not serve a
    # client without the token either: it is refused or never answers. The client's three
    # tries wait 1-2 s each instead of 5-15 s (a served client is ready within a second
    # here: the cluster's own network).
    stranger |= {
        "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "1",
        "RAY_CLIENT_MAX_CONNECTION_TIMEOUT_S": "2",
    }
    code = f"import ray; ray.init('ray://{leader['ip']}:10001'); print('CONNECTED', flush=True)"
    try:
        done = subprocess.run(
            [str(testenv.python), "-c", code], env=stranger, capture_output=True, text=True,
            timeout=120, check=False, cwd="/",
        )  # fmt: skip
        assert "CONNECTED" not in done.stdout and done.returncode != 0, done.stdout
    except subprocess.TimeoutExpired:
        pass  # cannot connect: as good as refused

    # vLLM dies on the leader: FAILED with the log's reason, nothing left anywhere.
    kill_matching(minicluster, nodes[0], "vllm serve")
    start = time.monotonic()
    status = wait_state(env, job_id, "FAILED", FAIL_DEADLINE)
    assert status["message"].startswith("vllm serve was killed by SIGKILL"), status
    assert status["log_tail"] and all(isinstance(x, str) for x in status["log_tail"]), status
    minicluster.wait_for_no_processes(nodes, timeout=GONE_TIMEOUT)
    print(f"leader crash: FAILED and clean after {time.monotonic() - start:.1f} s")


def test_a_lost_worker_fails_the_job_naming_it(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, job_ids: list[str]
) -> None:
    handle = submit(env, tiny_model, 2)
    job_id = str(handle["job_id"])
    job_ids.append(job_id)
    nodes = minicluster.job_nodes(job_id)
    kill_matching(minicluster, nodes[1], "raylet")
    start = time.monotonic()
    status = wait_state(env, job_id, "FAILED", FAIL_DEADLINE)
    assert f"node {nodes[1]} (rank 1) failed" in status["message"], status
    assert "raylet [exit code=-9]" in status["message"], status
    minicluster.wait_for_no_processes(nodes, timeout=GONE_TIMEOUT)
    print(f"lost worker: FAILED and clean after {time.monotonic() - start:.1f} s")


@pytest.fixture
def port_8000_taken(minicluster: bed.MiniCluster) -> Iterator[None]:
    """A listener on 0.0.0.0:8000 in every node's network (in the login PID namespace, so
    it is not one of the job's processes)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('0.0.0.0', 8000)); s.listen(); print('listening', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holders = []
    try:
        for node in minicluster.nodes:
            argv = ["nsenter", "-t", str(minicluster.init_pid(node)), "-n", "--",
                    sys.executable, "-c", code]  # fmt: skip
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            holders.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield
    finally:
        for proc in holders:
            proc.kill()
            proc.wait(timeout=10)


def test_a_taken_api_port_moves_or_fails_when_fixed(
    minicluster: bed.MiniCluster,
    env: dict[str, str],
    tiny_model: Path,
    port_8000_taken: None,
    job_ids: list[str],
) -> None:
    # Also bound to the node's chosen address only (--host node): it answers there, and
    # not on the leader's loopback; the READY line says who can reach it.
    handle = submit(env, tiny_model, 1, "--host", "node")
    job_id = str(handle["job_id"])
    job_ids.append(job_id)
    assert handle["url"].endswith(":8001/v1"), handle
    endpoint = json.loads((Path(handle["job_dir"]) / "endpoint.json").read_text())
    assert api.chat(endpoint, [{"role": "user", "content": "Hello"}])
    leader = minicluster.job_nodes(job_id)[0]
    probe = "import socket; socket.create_connection(('127.0.0.1', 8001), timeout=5)"
    loopback = minicluster.node_exec(leader, ["python3", "-c", probe])
    assert loopback.returncode != 0 and "ConnectionRefusedError" in loopback.stderr, loopback
    log = (Path(handle["job_dir"]) / "node-0.log").read_text()
    assert f"reachable on {handle['url'].split('/')[2].split(':')[0]}: anyone who reaches" in log
    minicluster.slurm(["scancel", job_id])

    done = cli(
        env, "submit", "--model", str(tiny_model), "--nodes", "1", "--gpus-per-node", "1",
        "--partition", "debug", "--port", "8000", "--via", "sbatch", "--wait", "--json",
        "--wait-timeout", str(READY_TIMEOUT), timeout=READY_TIMEOUT + 60,
    )  # fmt: skip
    found = re.search(r"Submitted job (\d+)", done.stderr)
    assert found, done.stderr
    job_ids.append(found.group(1))
    assert done.returncode == 1 and not done.stdout, done.stdout
    message = done.stderr.strip().splitlines()[-1]
    assert "FAILED" in message and "port 8000 is already in use" in message, message
    assert f"on {minicluster.job_nodes(found.group(1))[0]}" in message, message


def endpoint_of(env: dict[str, str], job_id: str) -> dict[str, Any]:
    path = bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id) / "endpoint.json"
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def wait_endpoint(
    env: dict[str, str], job_id: str, what: str, ok: Any, timeout: float
) -> dict[str, Any]:
    """Poll the job's endpoint.json until `ok(data)`."""
    deadline = time.monotonic() + timeout
    data: dict[str, Any] = {}
    while time.monotonic() < deadline:
        data = endpoint_of(env, job_id)
        if ok(data):
            return data
        time.sleep(0.5)  # poll
    pytest.fail(f"job {job_id}: no {what} after {timeout:.0f} s (last {data})")


def single_gpu_job(
    cluster: bed.MiniCluster, env: dict[str, str], model: Path, *sbatch_args: str
) -> str:
    """`sbatch slurm/single_gpu.sbatch` as a user runs it, with extra sbatch options (vLLM
    in eager mode: these tests are about the job's end and return, not vLLM's compile)."""
    return cluster.sbatch(
        REPO / "slurm" / "single_gpu.sbatch",
        ["--nodes=1", *sbatch_args],
        env={**env, "MODEL": str(model), "EXTRA_VLLM_ARGS": EAGER_VLLM_ARGS},
    )


def test_time_limit_drains_and_stops_before_slurm_kills(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    # A 2-minute job asked to be warned 60 s before its end: the runtime stops vLLM and
    # says why, and the job ends on its own before SLURM's limit (not TIMEOUT).
    job_id = single_gpu_job(minicluster, env, tiny_model, "--time=2", "--signal=B:USR1@60")
    final = wait_endpoint(
        env, job_id, "final state", lambda d: d.get("state") in ("STOPPED", "FAILED"), 180
    )
    assert final["state"] == "STOPPED", final
    assert final["message"] == "stopped by SIGUSR1 (time limit near)", final
    state = minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120)
    assert state == "COMPLETED", state
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)


def test_a_requeued_job_comes_back_ready_in_the_same_directory(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    job_id = single_gpu_job(minicluster, env, tiny_model, "--time=15", "--requeue")
    first = wait_endpoint(env, job_id, "READY", lambda d: d.get("state") == "READY", READY_TIMEOUT)
    assert first["attempt"] == 0
    minicluster.slurm(["scontrol", "requeue", job_id])
    again = wait_endpoint(
        env, job_id, "READY on the second attempt",
        lambda d: d.get("attempt") == 1 and d.get("state") == "READY", READY_TIMEOUT,
    )  # fmt: skip
    endpoint = {
        **again,
        "api_key_file": str(bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id) / "api_key"),
    }
    assert api.chat(endpoint, [{"role": "user", "content": "Hello"}])
    leader = json.loads(
        (bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id) / "leader.json").read_text()
    )
    assert leader["attempt"] == 1
