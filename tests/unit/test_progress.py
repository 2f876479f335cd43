"""``submit --wait``'s progress: vLLM's start-up step read from the tail of the leader's
vLLM log (a pure function, as a table of real vLLM 0.32 lines from the bed's PP=2 Ray
job), read only from a private job directory and only the log's last bytes, and shown
as plain lines (a pipe, ``--json``'s stderr) or one live line on a terminal."""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from launchers.cli import waiting
from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir
from launchers.jobdir.safe import UnsafePathError
from launchers.observe import progress
from launchers.observe.progress import Progress, line, read_tail, vllm_phase
from launchers.observe.status import JobStatus

from .helpers.cli import run

RAY = "\x1b[36m(RayWorkerProc pid=131, ip=10.77.0.12)\x1b[0m "
ARGS = (
    "(APIServer pid=81) INFO 12-02 14:48:04 [api_utils.py:286] non-default args: "
    "{'model_tag': '/var/tmp/vllm-hpc-bed/models/tiny-llama', 'host': '0.0.0.0'}"
)
# (a line of vLLM's log, the phrase it gives): from the bed unless marked.
LINES = [
    (ARGS, "vllm serve is starting"),
    (
        "(APIServer pid=81) INFO 12-02 14:48:10 [model.py:733] Resolved architecture: "
        "LlamaForCausalLM",
        "resolved LlamaForCausalLM",
    ),
    (
        "(EngineCore pid=267) INFO 12-02 14:48:15 [core.py:133] Initializing a V1 LLM engine "
        "(v0.32.0) with config: model='/var/tmp/vllm-hpc-bed/models/tiny-llama', "
        "speculative_config=None",
        "engine starting (vLLM 0.32.0)",
    ),
    (
        "(EngineCore pid=267) INFO 12-02 14:48:16 [ray_utils.py:607] No current placement "
        "group found. Creating a new placement group.",
        "placing the workers with Ray",
    ),
    (  # vLLM's Ray executor while a node is missing (FACTS.md; ray_utils.py's format)
        "(EngineCore pid=267) INFO 12-02 14:48:46 [ray_utils.py:468] Waiting for creating a "
        "placement group of specs for 30 seconds. specs=[{'vllm_cpu': 1.0, 'node:10.77.0.11'"
        ": 0.001}, {'vllm_cpu': 1.0}]. Check `ray status` and `ray list nodes`",
        "waited 30 s for Ray's placement group",
    ),
    (
        f"{RAY}(Worker_PP1 pid=130) INFO 12-02 14:48:24 [cpu_model_runner.py:68] Starting to "
        "load model /var/tmp/vllm-hpc-bed/models/tiny-llama...",
        "loading the model",
    ),
    (
        f"{RAY}\rLoading safetensors checkpoint shards:   0% Completed | 0/1 [00:00<?, ?it/s]",
        "loading safetensors checkpoint shards 0/1",
    ),
    (  # a big checkpoint part-way (the same tqdm bar, 8 shards)
        f"{RAY}\rLoading safetensors checkpoint shards:  38% Completed | 3/8 [00:41<01:09, "
        "13.80s/it]",
        "loading safetensors checkpoint shards 3/8",
    ),
    (
        f"{RAY}(Worker_PP0 pid=131) INFO 12-02 14:48:24 [default_loader.py:501] Loading "
        "weights took 0.00 seconds",
        "weights loaded in 0.00 s",
    ),
    (  # the GPU model runner (gpu_model_runner.py's format)
        "(EngineCore pid=267) (Worker_TP0 pid=301) INFO 12-02 10:01:07 [gpu_model_runner.py:"
        "5150] Model loading took 14.99 GiB memory and 41.271833 seconds",
        "model loaded (14.99 GiB in 41.2 s)",
    ),
    (
        f"{RAY}(Worker_PP1 pid=130) INFO 12-02 14:48:24 [cpu_model_runner.py:87] Warming up "
        "model for the compilation...",
        "compiling and warming up",
    ),
    (  # the GPU model runner's tqdm bar
        "(Worker_TP0 pid=301) Capturing CUDA graphs (mixed prefill-decode, PIECEWISE):  45%|"
        "\u2588\u2588\u2588\u2588\u258c     | 30/67 [00:02<00:02, 13.90it/s]",
        "capturing CUDA graphs 30/67",
    ),
    (
        "(EngineCore pid=267) INFO 12-02 14:48:49 [core.py:402] init engine (profile, create "
        "kv cache, warmup model) took 25.09 s",
        "engine up in 25.09 s",
    ),
    (
        "(APIServer pid=81) INFO 12-02 14:48:50 [entry.py:140] Starting vLLM server on "
        "http://0.0.0.0:8000",
        "starting the API server",
    ),
    ("INFO:     Application startup complete.", "API server started"),
    ("Triton is installed, but doesn't include CPU backend. Disabling Triton.", None),
    (f"{RAY}[W1202 14:48:23.809595423 socket.cpp:207] [c10d] The hostname of the ...", None),
]


@pytest.mark.parametrize(("text", "phrase"), LINES, ids=[str(p) for _, p in LINES])
def test_a_vllm_log_line_gives_its_step(text: str, phrase: str | None) -> None:
    assert vllm_phase(text) == phrase


def test_the_furthest_step_wins_over_late_ray_lines() -> None:
    """Ray hands on its workers' lines late: after `init engine ... took` the log had
    PP0's `Starting to load model` and `Warming up` (the bed's PP=2 job, in that order)."""
    engine_up, load, warm = LINES[12][0], LINES[5][0], LINES[10][0]
    assert vllm_phase("\n".join([warm, engine_up, load, warm])) == "engine up in 25.09 s"


def test_the_later_line_of_one_step_wins() -> None:
    shards = "\n".join([LINES[6][0], LINES[7][0]])
    assert vllm_phase(shards) == "loading safetensors checkpoint shards 3/8"


def test_a_new_vllm_serve_in_the_same_log_starts_over() -> None:
    """A requeued job's log goes on: the last start counts, not the one before."""
    first_start = "\n".join(text for text, _ in LINES[:15])
    assert vllm_phase(first_start) == "API server started"
    assert vllm_phase(f"{first_start}\n{ARGS}\n{LINES[2][0]}") == "engine starting (vLLM 0.32.0)"


def test_nothing_known_yet_is_none() -> None:
    assert vllm_phase("") is None
    assert vllm_phase("\n".join(text for text, phrase in LINES if phrase is None)) is None


def test_the_status_line() -> None:
    loading = Progress("LOADING", "vllm serve is starting", 2, 2, "compiling and warming up")
    assert line(loading, 31.24) == (
        "[  31.2s] LOADING: vllm serve is starting | Ray nodes 2/2 | vLLM: compiling and warming up"
    )
    assert line(Progress("PENDING", "waiting for an allocation (PENDING)"), 0) == (
        "[   0.0s] PENDING: waiting for an allocation (PENDING)"
    )
    assert line(Progress("WAITING_NODES", "waiting for 2 Ray node(s)", 1, 2), 6.1).endswith(
        "| Ray nodes 1/2"
    )


# ---- reading: a private job directory, the log's tail only


def private_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "job"
    folder.mkdir(mode=0o700)
    return folder


def test_only_the_tail_is_read(tmp_path: Path) -> None:
    folder = private_dir(tmp_path)
    early = "\n".join(text for text, _ in LINES[:12])
    filler = "x" * 100 + "\n"
    (folder / "vllm-0.log").write_text(early + "\n" + filler * 2000 + LINES[2][0] + "\n")
    tail = read_tail(str(folder), limit=4096)
    assert len(tail.encode()) <= 4096
    assert tail.startswith("x" * 100)  # the cut line is dropped, whole lines are left
    assert tail.endswith(LINES[2][0] + "\n")
    assert vllm_phase(tail) == "engine starting (vLLM 0.32.0)"  # not the early steps
    assert read_tail(str(folder)).endswith(tail)


def test_a_missing_log_or_one_that_is_not_a_regular_file_of_ours_reads_empty(
    tmp_path: Path,
) -> None:
    folder = private_dir(tmp_path)
    assert read_tail(str(folder)) == ""
    elsewhere = tmp_path / "elsewhere.log"
    elsewhere.write_text(LINES[12][0])
    (folder / "vllm-0.log").symlink_to(elsewhere)
    assert read_tail(str(folder)) == ""
    (folder / "vllm-0.log").unlink()
    os.mkfifo(folder / "vllm-0.log")  # would block a plain open()
    assert read_tail(str(folder)) == ""


def test_a_job_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    folder = private_dir(tmp_path)
    (folder / "vllm-0.log").write_text(LINES[12][0])
    folder.chmod(0o777)
    with pytest.raises(UnsafePathError, match="can be written by other users"):
        read_tail(str(folder))


def test_progress_counts_the_ray_nodes_and_reads_vllm_only_while_loading(
    tmp_path: Path,
) -> None:
    folder = private_dir(tmp_path)
    (folder / "vllm-0.log").write_text("\n".join([LINES[6][0], LINES[7][0]]))
    jobfiles.write(
        JobDir(str(folder)).endpoint,
        jobfiles.Endpoint(
            state="LOADING",
            message="vllm serve is starting",
            nodes=2,
            ray_nodes=(jobfiles.RayNode(ip="10.77.0.11"),),
        ),
    )
    loading = JobStatus("7", "LOADING", "vllm serve is starting")
    assert progress.read_progress(loading, str(folder)) == Progress(
        "LOADING", "vllm serve is starting", 1, 2, "loading safetensors checkpoint shards 3/8"
    )
    ready = JobStatus("7", "READY", "serving")
    assert progress.read_progress(ready, str(folder)).vllm is None


# ---- showing: plain lines, or one live line on a terminal


class FakeJob:
    """A job whose wait looks at ``looks`` in turn (status, progress), READY last."""

    def __init__(self, looks: list[Progress], clock: list[float]) -> None:
        self.looks = looks
        self.clock = clock
        self.asked: list[JobStatus] = []

    def wait_ready(
        self,
        timeout: float = 0,
        on_change: Callable[[JobStatus], None] | None = None,
        on_poll: Callable[[JobStatus], None] | None = None,
    ) -> JobStatus:
        assert on_poll is not None
        for look in self.looks:
            self.clock[0] += 0.5
            on_poll(JobStatus("7", look.state, look.message))
        return JobStatus("7", "READY", "serving", url="http://10.0.0.1:8000/v1")

    def progress(self, status: JobStatus | None = None) -> Progress:
        assert status is not None
        self.asked.append(status)
        return self.looks[len(self.asked) - 1]


LOOKS = [
    Progress("PENDING", "waiting for an allocation (PENDING)"),
    Progress("PENDING", "waiting for an allocation (PENDING)"),
    Progress("LOADING", "vllm serve is starting", 1, 2),
    Progress("LOADING", "vllm serve is starting", 2, 2, "loading the model"),
    Progress("LOADING", "vllm serve is starting", 2, 2, "loading the model"),
    Progress("LOADING", "vllm serve is starting", 2, 2, "engine up in 25.09 s"),
    Progress("READY", "serving", 2, 2),
]


def follow(live: bool, looks: list[Progress] = LOOKS) -> str:
    clock = [100.0]
    out = io.StringIO()
    status = waiting.follow(FakeJob(looks, clock), 60, live=live, file=out, now=lambda: clock[0])
    assert status.state == "READY"
    return out.getvalue()


def test_plain_output_is_a_timestamped_line_at_each_change() -> None:
    assert follow(live=False).splitlines() == [
        "  [   0.5s] PENDING: waiting for an allocation (PENDING)",
        "  [   1.5s] LOADING: vllm serve is starting | Ray nodes 1/2",
        "  [   2.0s] LOADING: vllm serve is starting | Ray nodes 2/2 | vLLM: loading the model",
        "  [   3.0s] LOADING: vllm serve is starting | Ray nodes 2/2 | vLLM: engine up in 25.09 s",
        "  [   3.5s] READY: serving | Ray nodes 2/2",
    ]


def screen(output: str) -> list[str]:
    """What a terminal shows after ``output``: text, CR, LF, erase line, cursor up."""
    rows, row, col = [""], 0, 0
    for piece in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", output):
        if piece == "\r":
            col = 0
        elif piece == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif piece == "\x1b[2K":
            rows[row] = ""
        elif (up := re.fullmatch(r"\x1b\[(\d*)A", piece)) is not None:
            row = max(row - int(up[1] or 1), 0)
        elif not piece.startswith("\x1b"):
            rows[row] = rows[row][:col].ljust(col) + piece + rows[row][col + len(piece) :]
            col += len(piece)
    return [r for r in rows if r.strip()]


def test_a_terminal_gets_the_states_and_one_live_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: a terminal, whatever runs the tests
    monkeypatch.setenv("COLUMNS", "200")
    out = follow(live=True)
    # While it waits, the last line is the live one, redrawn in place at every look.
    middle = out[: out.index("engine up in 25.09 s")] + "engine up in 25.09 s"
    assert screen(middle) == [
        "  [   0.5s] PENDING: waiting for an allocation (PENDING)",
        "  [   1.5s] LOADING: vllm serve is starting",
        "  [   3.0s] LOADING: vllm serve is starting | Ray nodes 2/2 | vLLM: engine up in 25.09 s",
    ]
    assert "vLLM: loading the model" in out
    # When it ends, the live line is gone: the states are left, as before.
    assert screen(out) == [
        "  [   0.5s] PENDING: waiting for an allocation (PENDING)",
        "  [   1.5s] LOADING: vllm serve is starting",
        "  [   3.5s] READY: serving",
    ]


def test_submit_wait_json_prints_the_same_json_and_progress_to_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Scripts read `submit --wait --json`'s stdout: one JSON object, as before."""
    from launchers.observe.job import Job
    from launchers.submit import slurm

    class Handle:
        job_id, job_dir, executor = "7", str(tmp_path), "slurm"

        def as_dict(self) -> dict[str, str]:
            return {"job_id": self.job_id, "job_dir": self.job_dir}

    monkeypatch.setattr(slurm, "submit", lambda *a, **k: Handle())
    fake = FakeJob(LOOKS, [0.0])
    ready = JobStatus("7", "READY", "serving", url="http://10.0.0.1:8000/v1", model="m")
    monkeypatch.setattr(Job, "wait_ready", lambda self, **k: _looked(fake, k, ready))
    monkeypatch.setattr(Job, "progress", lambda self, status=None: fake.progress(status))
    code, out, err = run(["submit", "-m", "llama-3.2-3b-instruct", "--wait", "--json"])
    assert code == 0, err
    assert json.loads(out) == {
        "job_id": "7",
        "job_dir": str(tmp_path),
        "state": "READY",
        "url": "http://10.0.0.1:8000/v1",
        "model": "m",
    }
    assert "vLLM: engine up in 25.09 s" in err and "Submitted job 7" in err


def _looked(job: FakeJob, options: dict[str, object], ready: JobStatus) -> JobStatus:
    poll = options["on_poll"]
    assert callable(poll)
    for look in job.looks:
        poll(JobStatus("7", look.state, look.message))
    return ready


def test_the_wait_tells_every_look_and_each_change() -> None:
    """``status.wait_ready`` (through ``waits.wait_for``, a fake clock): ``on_poll`` at
    every look, ``on_change`` only when the state or message changes."""
    from launchers import waits
    from launchers.observe.status import wait_ready

    t = [0.0]
    states = iter(["PENDING", "LOADING", "LOADING", "LOADING", "READY"])
    polled: list[str] = []
    changed: list[str] = []
    ready = wait_ready(
        lambda: JobStatus("7", next(states), ""),
        what="job 7 to be ready",
        timeout=60,
        on_change=lambda s: changed.append(s.state),
        on_poll=lambda s: polled.append(s.state),
        log_hint="node-0.log",
        clock=waits.Clock(now=lambda: t[0], sleep=lambda dt: t.__setitem__(0, t[0] + dt)),
    )
    assert ready.state == "READY"
    assert polled == ["PENDING", "LOADING", "LOADING", "LOADING", "READY"]
    assert changed == ["PENDING", "LOADING", "READY"]
