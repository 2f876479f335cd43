"""A service on the mini cluster (issue: services that outlive the walltime).

One 2-replica service of the tiny model (each replica a 1-node job), its front a small
CPU-only job, driven with the real `openai` client from the login namespace, in order:
the front answers with the key only and exposes no admin route, from another node
either; a replica cancelled under load is replaced; the front SIGKILLed and started
again adopts both replicas (same job ids); scale 2 -> 1 -> 2, then down leaves nothing.
The tests share the one service (each replica costs a vLLM start on 2 shared CPUs).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from launchers import waits

from . import api, bed, listeners
from .services import REPLICA_ARGS, Load, client, key_of, ready_jobs, svc, wait_status

pytestmark = pytest.mark.cluster

NAME = "tiny"
READY_TIMEOUT = bed.READY_TIMEOUT
REPLACED_WITHIN = 300.0  # a lost replica -> its replacement READY and routed
ADOPTED_WITHIN = 30.0  # a new front -> serving the adopted replicas


@pytest.fixture(scope="module")
def service(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> Iterator[dict[str, Any]]:
    left = Path(env["VLLM_HPC_JOB_ROOT"], "services", NAME)
    if left.exists():  # from an earlier run on a kept bed
        api.cli(env, "service", "down", NAME, timeout=300)
        shutil.rmtree(left)
    try:
        row = svc(
            env, "up", NAME, "--model", str(tiny_model), "--nodes", "1", "--gpus-per-node", "1",
            "--partition", "debug", "--time", "00:40:00", "--replicas", "2", "--front-time",
            "00:40:00", "--wait", "--wait-timeout", str(READY_TIMEOUT), "--",
            *REPLICA_ARGS, timeout=READY_TIMEOUT + 120,
        )  # fmt: skip
        assert row["state"] == "UP", row
        yield row
    finally:
        api.cli(env, "service", "down", NAME, timeout=300)
        for r in svc(env, "status", NAME)["replicas"]:
            minicluster.slurm(["scancel", r["job_id"]], check=False)


def test_the_front_serves_with_the_key_only_and_exposes_no_admin_route(
    service: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path
) -> None:
    c = client(service)
    assert [m.id for m in c.models.list().data] == [tiny_model.name]
    chat = c.chat.completions.create(
        model=tiny_model.name, messages=[{"role": "user", "content": "Hello"}],
        temperature=0, max_tokens=8,
    )  # fmt: skip
    assert chat.choices[0].message.content
    chunks = list(
        c.chat.completions.create(
            model=tiny_model.name, messages=[{"role": "user", "content": "Hello"}],
            temperature=0, max_tokens=8, stream=True,
        )
    )  # fmt: skip
    assert len(chunks) > 2
    with pytest.raises(openai.AuthenticationError):
        client(service, key="not-the-key").models.list()
    front = service["front"]
    base = f"http://{front['host']}:{front['port']}"
    # From another node: the router's admin routes are not reachable through the front,
    # and the router itself listens on the front's loopback only.
    other = next(n for n in minicluster.nodes if n != front["hostname"])
    stranger = "http://10.77.0.99:8000"
    for method, path in (
        ("POST", f"/add_worker?url={stranger}"),
        ("POST", f"/remove_worker?url={stranger}"),
        ("GET", "/list_workers"),
    ):
        done = minicluster.node_exec(other, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                             "-X", method, base + path])  # fmt: skip
        assert done.stdout == "404", (path, done.stdout, done.stderr)
    listening = minicluster.node_exec(front["hostname"], ["ss", "-ltnpH"]).stdout
    router = [line for line in listening.splitlines() if "vllm::router" in line]
    assert router and all(" 127.0.0.1:" in line for line in router), listening
    # With the key, an encoded path does not reach the router's admin API either (the
    # front decides on the raw path and forwards exactly it); without it, no client route.
    key = key_of(service)
    for path in (
        "/v1/%252e%252e/list_workers",
        "/v1/%2e%2e/list_workers",
        "/v1/..%2flist_workers",
        "/v1/models/../../list_workers",
        "//list_workers",
    ):
        assert api.raw_request(base, "GET", path, api_key=key) == 404, path
    assert api.raw_request(base, "GET", "/v1/models") == 401
    assert api.raw_request(base, "GET", "/v1/models", api_key=key) == 200
    row = svc(env, "status", NAME)
    assert len(ready_jobs(row)) == 2
    # Every replica's API and every socket of the service, as a stranger meets them.
    for replica in row["replicas"]:
        api.assert_a_stranger_gets_only_health({"url": replica["url"]})
    nodes = sorted(
        {front["hostname"]}.union(*(minicluster.job_nodes(r["job_id"]) for r in row["replicas"]))
    )
    listeners.assert_every_listener_accounted(
        minicluster, str(bed.testenv_dir() / "bin" / "python"), nodes,
        fronts=[(front["hostname"], int(front["port"]))],
    )  # fmt: skip


def kill_vllm(minicluster: bed.MiniCluster, replica: dict[str, Any]) -> None:
    """SIGKILL the replica's vLLM (the program its guard started), as the OOM killer would."""
    port = replica["url"].rsplit(":", 1)[1]
    node = minicluster.job_nodes(replica["job_id"])[0]
    guards = [p for p in minicluster.node_processes(node)
              if "_guard" in p.cmdline and f"--port {port}" in p.cmdline]  # fmt: skip
    assert len(guards) == 1, guards
    pid = guards[0].pid  # a host pid: node_processes reads the host's /proc
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert len(children) == 1, children
    os.kill(int(children[0]), signal.SIGKILL)


@pytest.mark.parametrize("how", ["scancel", "sigkill-vllm"])
def test_a_lost_replica_is_replaced_under_load(
    service: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path,
    how: str,
) -> None:  # fmt: skip
    row = svc(env, "status", NAME)
    victim = ready_jobs(row)[0]
    with Load(client(service), tiny_model.name) as load:
        waits.wait_for(lambda: waits.seen(load.ok >= 3), what="3 answers", timeout=60)
        if how == "scancel":
            minicluster.slurm(["scancel", victim])
        else:
            kill_vllm(minicluster, next(r for r in row["replicas"] if r["job_id"] == victim))
        start = time.monotonic()
        row = wait_status(
            env, NAME, "a replacement READY and routed", REPLACED_WITHIN,
            lambda r: len(ready_jobs(r)) == 2 and victim not in ready_jobs(r),
        )  # fmt: skip
        replaced_in = time.monotonic() - start
        after = load.ok
        waits.wait_for(lambda: waits.seen(load.ok >= after + 3), what="answers", timeout=60)
    assert replaced_in < REPLACED_WITHIN
    assert len(load.failed) <= 1, load.failed  # at most the one in flight on the victim
    assert row["url"] == service["url"]
    assert any(f"replica {victim}" in e for e in row["events"]), row["events"]


def test_a_killed_front_started_again_adopts_the_replicas(
    service: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster, tiny_model: Path
) -> None:
    row = svc(env, "status", NAME)
    jobs = ready_jobs(row)
    front = row["front"]
    front_job = front["job_id"]
    # SIGKILL: no handler runs, front.json keeps a fresh heartbeat; the router, a guarded
    # child, ends with it
    minicluster.node_exec(front["hostname"], ["kill", "-KILL", str(front["pid"])], check=True)
    minicluster.wait_for_state(front_job, bed.TERMINAL_STATES, timeout=60)
    minicluster.wait_for_no_processes([front["hostname"]], timeout=bed.GONE_TIMEOUT,
                                      match="vllm_router")  # fmt: skip
    assert svc(env, "status", NAME)["front"] is None  # its job ended: not taken for alive
    start = time.monotonic()
    again = svc(env, "up", NAME, "--wait", "--wait-timeout", str(ADOPTED_WITHIN), timeout=180)
    assert time.monotonic() - start < ADOPTED_WITHIN + 30
    assert ready_jobs(again) == jobs  # adopted, not restarted
    assert again["front"]["job_id"] != front_job
    c = client(again)
    assert c.models.list().data[0].id == tiny_model.name
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=again["url"], api_key="wrong", max_retries=0).models.list()
    # The front job's own time-limit warning: it hands itself over to a new front job.
    minicluster.slurm(["scancel", "--batch", "--signal=USR1", again["front"]["job_id"]])
    relayed = wait_status(
        env, NAME, "a new front job", 120,
        lambda r: r["front"] is not None and r["front"]["job_id"] != again["front"]["job_id"],
    )  # fmt: skip
    assert ready_jobs(relayed) == jobs
    assert client(relayed).models.list().data[0].id == tiny_model.name


def test_scale_down_and_up_then_down_leaves_nothing(
    service: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster
) -> None:
    jobs = ready_jobs(svc(env, "status", NAME))
    assert svc(env, "scale", NAME, "1")["replicas"] == 1
    row = wait_status(env, NAME, "one replica left", 180,
                      lambda r: len(r["replicas"]) == 1 and len(ready_jobs(r)) == 1)  # fmt: skip
    assert ready_jobs(row)[0] in jobs
    gone = next(j for j in jobs if j not in ready_jobs(row))
    minicluster.wait_for_state(gone, bed.TERMINAL_STATES, timeout=120)
    svc(env, "scale", NAME, "2")
    wait_status(env, NAME, "two replicas READY again", READY_TIMEOUT,
                lambda r: len(ready_jobs(r)) == 2)  # fmt: skip
    row = svc(env, "status", NAME)
    all_jobs = [r["job_id"] for r in row["replicas"]] + [row["front"]["job_id"]]
    down = svc(env, "down", NAME, timeout=400)
    assert down["state"] == "DOWN"
    # `down` returns once SLURM has let go of every job of the service, not before
    left = minicluster.slurm(["squeue", "-h", "-o", "%i %T", "-j", ",".join(all_jobs)],
                             check=False).stdout.split("\n")  # fmt: skip
    assert [line for line in left if line.strip()] == [], left
    for job in all_jobs:
        minicluster.wait_for_state(job, bed.TERMINAL_STATES, timeout=120)
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=bed.GONE_TIMEOUT)
    final = svc(env, "status", NAME)
    assert final["state"] == "DOWN" and final["replicas"] == [] and final["front"] is None
