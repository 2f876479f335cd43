"""Trust boundaries and teardown on live jobs (issue: trust boundaries on a shared cluster).

- The time-limit warning (what `--signal=B:USR1@N` sends, here at once with
  `scancel --batch --signal=USR1`) arrives while a streaming request is being answered:
  the request completes, the job ends COMPLETED, nothing is left.
- The node runtime itself is SIGKILLed (what the OOM killer or SLURM's KillWait does), on
  the leader and then on a worker: nothing of the job is left on any node.
- A job directory planted by another user for the next job id is refused before
  anything starts; a key file emptied after submission stops the job before vLLM starts.

The wrapper door's Ray token check is in test_runtime (test_wrapper_by_hand_on_two_nodes).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from launchers import waits

from . import api, bed
from .api import submit

READY_TIMEOUT, GONE_TIMEOUT = bed.READY_TIMEOUT, bed.GONE_TIMEOUT
NOBODY = 65534

pytestmark = pytest.mark.cluster


def _endpoint(job_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((job_dir / "endpoint.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class Stream(threading.Thread):
    """One streaming completion, read chunk by chunk, with the time of each chunk.

    ``at_first_chunk`` runs in the reading thread as soon as the first chunk is read (no
    polling delay: on a fast machine the tiny model streams 400 tokens in well under a
    poll interval), its time in ``warned``."""

    def __init__(
        self, handle: dict[str, Any], max_tokens: int, at_first_chunk: Callable[[], object]
    ) -> None:
        super().__init__(daemon=True)
        self.handle, self.max_tokens, self.at_first_chunk = handle, max_tokens, at_first_chunk
        self.chunks: list[float] = []
        self.warned: float | None = None
        self.finish: str | None = None
        self.error: str | None = None

    def run(self) -> None:
        body = {"model": self.handle["model"], "prompt": "Once upon a time", "stream": True,
                "max_tokens": self.max_tokens, "min_tokens": self.max_tokens,
                "ignore_eos": True, "temperature": 0}  # fmt: skip
        request = urllib.request.Request(  # noqa: S310 - the bed's own address
            f"{self.handle['url']}/completions", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json",
                     "Authorization": f"Bearer {api.api_key(self.handle)}"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
                for raw in response:
                    line = raw.decode().strip()
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    self.chunks.append(time.monotonic())
                    if self.warned is None:
                        self.warned = time.monotonic()
                        self.at_first_chunk()
                    choice = json.loads(line[6:])["choices"][0]
                    self.finish = choice.get("finish_reason") or self.finish
        except Exception as exc:  # the assertion says what broke the stream
            self.error = f"{type(exc).__name__}: {exc}"


def test_a_streaming_request_in_flight_at_the_time_limit_warning_completes(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, job_ids: list[str]
) -> None:
    # The longest answer the tiny model can give (1024 positions): the warning travels
    # scancel -> slurmctld -> slurmd -> the runtime -> vLLM while it is generated.
    handle = submit(env, tiny_model, 1, max_model_len=1024)
    job_id = str(handle["job_id"])
    job_ids.append(job_id)
    warn = ["scancel", "--batch", "--signal=USR1", job_id]
    stream = Stream(_endpoint(Path(handle["job_dir"])), max_tokens=1000,
                    at_first_chunk=lambda: minicluster.slurm(warn))  # fmt: skip
    stream.start()
    stream.join(timeout=240)
    assert not stream.is_alive(), "the stream did not end"
    assert stream.error is None, stream.error
    assert stream.finish == "length", (stream.finish, len(stream.chunks))
    assert stream.warned is not None
    after = [t for t in stream.chunks if t > stream.warned]
    print(f"drain: {len(after)} of {len(stream.chunks)} chunks after the warning")

    def ended() -> dict[str, Any] | None:
        now = _endpoint(Path(handle["job_dir"]))
        return now if now.get("state") in ("STOPPED", "FAILED") else None

    final = waits.wait_for(ended, what="the job's final state", timeout=180).value
    assert (final["state"], final["message"]) == ("STOPPED", "stopped by SIGUSR1 (time limit near)")
    # vLLM's own word that the request was still being generated when it was told to stop.
    vllm_log = (Path(handle["job_dir"]) / "vllm-0.log").read_text(errors="replace")
    assert "draining in-flight requests count=1" in vllm_log, (
        "vLLM had no request in flight at the warning: the drain was not exercised"
    )
    assert minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120) == "COMPLETED"
    minicluster.wait_for_no_processes(minicluster.job_nodes(job_id), timeout=GONE_TIMEOUT)


def _runtime_pid(cluster: bed.MiniCluster, node: str) -> int:
    # srun's own argv (on the leader's node) names the runtime too: the runtime is the
    # Python that runs it, not srun, not a guard.
    found = [p.pid for p in cluster.node_processes(node)
             if "launchers node run" in p.cmdline and "_guard.py" not in p.cmdline
             and not p.cmdline.split()[0].endswith("srun")]  # fmt: skip
    assert len(found) == 1, f"runtime processes on {node}: {found}"
    return found[0]


@pytest.mark.parametrize("rank", [0, 1], ids=["leader", "worker"])
def test_a_sigkilled_runtime_leaves_nothing_on_any_node(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, job_ids: list[str],
    rank: int,
) -> None:  # fmt: skip
    handle = submit(env, tiny_model, 2)
    job_id = str(handle["job_id"])
    job_ids.append(job_id)
    nodes = minicluster.job_nodes(job_id)
    assert any("vllm serve" in p.cmdline for p in minicluster.node_processes(nodes[0]))
    os.kill(_runtime_pid(minicluster, nodes[rank]), signal.SIGKILL)
    start = time.monotonic()
    minicluster.wait_for_no_processes(nodes, timeout=GONE_TIMEOUT)
    print(f"runtime of rank {rank} SIGKILLed: nothing left after {time.monotonic() - start:.1f} s")
    state = minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120)
    assert state != "COMPLETED", state


def test_a_job_directory_planted_by_another_user_is_refused(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, job_ids: list[str]
) -> None:
    # The next job id, learnt from a held job (ids are sequential; the bed runs one test).
    held = minicluster.sbatch("#!/bin/bash\ntrue\n", ["--hold", "--nodes=1"])
    minicluster.slurm(["scancel", held])
    root = Path(env["VLLM_HPC_JOB_ROOT"])
    planted = bed.vllm_job_dir(root, str(int(held) + 1))
    planted.mkdir(mode=0o700)
    (planted / "plan.json").write_text("{}\n")
    os.chown(planted, NOBODY, NOBODY)
    try:
        args = ["--model", str(tiny_model), "--partition", "debug", "--time", "00:05:00",
                "--via", "sbatch", "--", "--max-model-len", "512"]  # fmt: skip
        handle = api.cli_json(env, "submit", *args)
        job_id = str(handle["job_id"])
        job_ids.append(job_id)
        assert job_id == str(int(held) + 1), (held, job_id)
        assert minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120) == "FAILED"
        output = Path(minicluster.job_info(job_id)["StdOut"]).read_text()
        assert f"Error: job directory: {planted} already exists for a new job" in output, output
        assert (planted / "plan.json").read_text() == "{}\n"  # nothing written into it
        assert not any("vllm" in p.cmdline for n in minicluster.nodes
                       for p in minicluster.node_processes(n))  # fmt: skip
    finally:
        shutil.rmtree(planted, ignore_errors=True)


def test_a_key_file_emptied_after_submission_stops_the_job_before_vllm_starts(
    minicluster: bed.MiniCluster, env: dict[str, str], tiny_model: Path, tmp_path: Path,
    job_ids: list[str],
) -> None:  # fmt: skip
    key = Path(env["VLLM_HPC_JOB_ROOT"]) / "emptied.key"
    key.write_text("sk-a-key-that-will-be-gone\n")
    key.chmod(0o600)
    args = ["--model", str(tiny_model), "--partition", "debug", "--time", "00:05:00",
            "--api-key-file", str(key), "--", "--max-model-len", "512"]  # fmt: skip
    done = api.cli(env, "render", "sbatch", *args)
    assert done.returncode == 0, done.stderr
    key.write_text("")  # a full quota leaves a 0-byte file
    job_id = minicluster.sbatch(done.stdout)
    job_ids.append(job_id)
    assert minicluster.wait_for_state(job_id, bed.TERMINAL_STATES, timeout=120) == "FAILED"
    job_dir = bed.vllm_job_dir(env["VLLM_HPC_JOB_ROOT"], job_id)
    final = _endpoint(job_dir)
    assert final.get("state") == "FAILED", final
    assert final["message"].startswith(f"API key: {key} is empty"), final
    assert not list(job_dir.glob("vllm*.log")), "vllm serve was started"
    key.unlink()
