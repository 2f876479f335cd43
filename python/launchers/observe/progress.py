"""How far a starting job has come, for ``submit --wait``: the leader's state, the Ray
nodes joined, and vLLM's own progress read from the tail of the leader's vLLM log.

``vllm_phase`` is pure (log text in, a short phrase out) and ``line`` renders one status
line; only ``read_tail`` touches the disk, and it reads at most ``TAIL_BYTES`` from the
end of a log in a job directory of ours that no other user can write (``observe.trust``'s
rule), never through a symlink, never from anything but a regular file of ours.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

from launchers.jobdir import jobfiles
from launchers.jobdir.paths import JobDir, log_name
from launchers.jobdir.safe import check_private, open_nofollow
from launchers.observe.status import JobStatus

TAIL_BYTES = 64 * 1024  # vLLM's last start-up lines, even after a long traceback
VLLM_LOG = log_name("vllm", 0)  # the leader's `vllm serve` output

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_START = re.compile(r"non-default args: ")  # a new `vllm serve` (a requeued job's log goes on)

# vLLM's start-up, in the order it happens: (step, the line, the phrase with its groups
# as \1, \2...). Checked against vLLM 0.32 leader logs from the bed (Ray TP/PP, single
# node); the "Model loading took" and CUDA-graph lines are the GPU runner's (vLLM's
# source). Ray delivers its workers' lines late and out of order, so the furthest step
# seen wins, not simply the last line.
_RULES: tuple[tuple[int, re.Pattern[str], str], ...] = tuple(
    (step, re.compile(pattern), phrase)
    for step, pattern, phrase in (
        (1, r"Resolved architecture: (\w{1,80})", r"resolved \1"),
        (2, r"Initializing a V1 LLM engine \(v([\w.+-]{1,40})\)", r"engine starting (vLLM \1)"),
        (3, r"Creating a new placement group", "placing the workers with Ray"),
        (
            3,
            r"Waiting for creating a placement group of specs for (\d{1,9}) seconds",
            r"waited \1 s for Ray's placement group",
        ),
        (4, r"Starting to load model", "loading the model"),
        (
            5,
            r"Loading (\w{1,20}) checkpoint shards(?: \(\w+\))?:\s+\d+% Completed \| (\d+)/(\d+)",
            r"loading \1 checkpoint shards \2/\3",
        ),
        (6, r"Loading weights took (\d+\.\d+) seconds", r"weights loaded in \1 s"),
        (
            6,
            r"Model loading took (\d+(?:\.\d+)?) GiB memory and (\d+\.\d)\d* seconds",
            r"model loaded (\1 GiB in \2 s)",
        ),
        (
            7,
            r"Warming up model for the compilation|Dynamo bytecode transform time",
            "compiling and warming up",
        ),
        (
            8,
            r"Capturing CUDA graphs[^:]{0,80}:\s+\d+%\|[^|]*\| (\d+)/(\d+)",
            r"capturing CUDA graphs \1/\2",
        ),
        (
            9,
            r"init engine \(profile, create kv cache, warmup model\) took (\d+\.\d+) s",
            r"engine up in \1 s",
        ),
        (10, r"Starting vLLM (?:API )?server", "starting the API server"),
        (11, r"Application startup complete", "API server started"),
    )
)


def vllm_phase(text: str) -> str | None:
    """The furthest step of vLLM's start-up that ``text`` (the end of its log) shows, as
    a short phrase ("loading safetensors checkpoint shards 3/8"), or None. Of two lines
    of one step the later wins (the shard count goes up). Pure."""
    best: tuple[int, str] | None = None
    for raw in re.split(r"[\r\n]", _ANSI.sub("", text)):
        if _START.search(raw):
            best = (0, "vllm serve is starting")
        for rank, pattern, phrase in _RULES:
            found = pattern.search(raw)
            if found is not None and (best is None or rank >= best[0]):
                best = (rank, found.expand(phrase))
    return best[1] if best is not None else None


@dataclass(frozen=True)
class Progress:
    """One look at a starting job."""

    state: str
    message: str
    ray_joined: int | None = None  # Ray nodes alive (None: no Ray, or not counted yet)
    ray_expected: int | None = None
    vllm: str | None = None  # vllm_phase of the leader's vLLM log


def line(progress: Progress, elapsed: float) -> str:
    """``[  12.5s] LOADING: vllm serve is starting | Ray nodes 2/2 | vLLM: ...``. Pure."""
    parts = [f"[{elapsed:6.1f}s] {progress.state}: {progress.message}"]
    if progress.ray_joined is not None and progress.ray_expected:
        parts.append(f"Ray nodes {progress.ray_joined}/{progress.ray_expected}")
    if progress.vllm:
        parts.append(f"vLLM: {progress.vllm}")
    return " | ".join(parts)


def read_tail(job_dir: str, name: str = VLLM_LOG, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of ``job_dir/name`` as text ("" when it is missing, or
    is not a regular file of ours). The job directory must be ours and closed to others
    (UnsafePathError otherwise): another user could have planted the file."""
    check_private(job_dir, "job directory")
    try:
        fd = open_nofollow(f"{job_dir}/{name}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:  # missing, or a symlink
        return ""
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            return ""
        start = max(info.st_size - limit, 0)
        fh.seek(start)
        data = fh.read(limit)
    text = data.decode("utf-8", errors="replace")
    if start:  # the first line was cut: drop it
        text = text.partition("\n")[2]
    return text


def read_progress(status: JobStatus, job_dir: str) -> Progress:
    """``status`` with the Ray nodes the leader counted and vLLM's own phase."""
    info = jobfiles.read(JobDir(job_dir).endpoint, jobfiles.Endpoint)
    joined = expected = None
    if info is not None and info.ray_nodes is not None:
        joined, expected = len(info.ray_nodes), info.nodes
    phase = vllm_phase(read_tail(job_dir)) if status.state == "LOADING" else None
    return Progress(status.state, status.message, joined, expected, phase)
